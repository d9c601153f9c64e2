#!/usr/bin/env bash
# Coverage-guided fuzzing of what Huashen takes from the outside, with
# afl.rs (AFL++): builds the targets of fuzz/ instrumented (release), runs
# each from its corpus (fuzz/corpus/<target>) for FUZZ_TIME seconds (600),
# two at a time, and prints each run's figures (executions, paths found,
# crashes, hangs) from AFL's fuzzer_stats. Findings stay in
# target/fuzz/<target>/; copy a crash into fuzz/corpus/<target>/ once it is
# fixed, so the test command replays it. Not part of CI (it takes the
# machine): CI replays the corpora instead (fuzz/tests/replay.rs).
#   scripts/fuzz.sh                 every target, 10 minutes each
#   FUZZ_TIME=60 scripts/fuzz.sh sdp proto
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
FUZZ_TIME=${FUZZ_TIME:-600}
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(image sdp tflite proto moderation audio)

command -v cargo-afl >/dev/null || cargo install --locked cargo-afl --version 0.18.2
cargo afl config --build >/dev/null 2>&1 || true   # AFL++'s runtime, once per toolchain
cargo afl build --locked --release -p huashen-fuzz --features afl

export AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
  AFL_NO_AFFINITY=1 AFL_SKIP_CRASHES=1
run() {
  local t=$1 out=target/fuzz/$1
  rm -rf "$out"
  mkdir -p "$out"
  # -V: stop after FUZZ_TIME seconds; -t: 5 s per input before it is a hang.
  cargo afl fuzz -V "$FUZZ_TIME" -t 5000 -i "fuzz/corpus/$t" -o "$out" \
    "target/release/fuzz_$t" >"$out/afl.log" 2>&1 || true
}
report() {
  local t=$1 stats=target/fuzz/$1/default/fuzzer_stats
  if [ ! -f "$stats" ]; then
    echo "$t: AFL did not run; see target/fuzz/$t/afl.log"
    return
  fi
  awk -v t="$t" -F' *: ' '
    { v[$1] = $2 }
    END { printf "%-10s %s s, %s executions (%s/s), %s paths, %s crashes, %s hangs\n",
          t, v["run_time"], v["execs_done"], v["execs_per_sec"], v["corpus_count"],
          v["saved_crashes"], v["saved_hangs"] }' "$stats"
}
# Two at a time (this project's machines have two cores).
i=0
for t in "${targets[@]}"; do
  run "$t" &
  i=$((i + 1))
  if [ $((i % 2)) -eq 0 ]; then wait; fi
done
wait
echo "== fuzzing, ${FUZZ_TIME} s per target"
for t in "${targets[@]}"; do report "$t"; done
