#!/usr/bin/env bash
# Measures what docs/BENCHMARKS.md reports, on this machine, release build:
#  1. per-frame encode cost (criterion: cargo bench -p huashen --bench media)
#  2. server CPU and memory for one session with 0, 10 and 25 WebRTC viewers
#     (huashen-loadtest in its own process, viewers counting packets only);
#  3. speech: TTS stage timings, and 1/2/4 sessions speaking with a decoding
#     viewer each (Speak → on air, Speak → heard, Interrupt → idle, CPU);
#  4. face: enrollment analysis and per-frame rendering (criterion).
# Prints the figures; copy them into docs/BENCHMARKS.md with the date.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
DURATION=${DURATION:-15s}
VIEWERS=${VIEWERS:-"0 10 25"}

echo "== machine"
nproc; grep -m1 'model name' /proc/cpuinfo || true; free -g | head -2

echo "== face: analysis, rig, render per frame (criterion)"
cargo bench --locked -p huashen-inference --bench face 2>&1 \
  | grep -B1 'time:' | grep -v '^--' | paste - - | sed 's/\s\+/ /g'

echo "== encode cost per frame and enrollment (criterion)"
cargo bench --locked -p huashen --bench media -- --measurement-time 3 --warm-up-time 1 2>&1 \
  | grep -B1 'time:' | grep -v '^--' | paste - - | sed 's/\s\+/ /g'

echo "== CPU per viewer (release server, loadtest in another process)"
cargo build --locked --release -p huashen -p huashen-loadtest
data=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$data"' EXIT
HUASHEN_STORAGE__DATA_DIR="$data" HUASHEN_SPEECH__MODELS_DIR="$PWD/models" HUASHEN_FACE__MODELS_DIR="$PWD/models" HUASHEN_SERVER__LISTEN=127.0.0.1:0 HUASHEN_LOG=warn \
  target/release/huashen serve > "$data/out" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "listening on" "$data/out" && break; sleep 0.1; done
addr=$(sed -n 's/^huashen listening on //p' "$data/out")
key=$(cat "$data/dev-api-key")
for m in $VIEWERS; do
  echo "-- 1 session, $m viewers, $DURATION"
  target/release/huashen-loadtest --addr "$addr" --api-key "$key" -n 1 -m "$m" \
    --duration "$DURATION" --rate 1 --json "$data/m$m.json" | grep -E 'server:|viewers:|first video'
done

echo "== speech: stage timings of the English voice (release, burn flex CPU)"
cargo run --locked --release -q -p huashen-inference --example piper_timing

SPEAK_TEXT=${SPEAK_TEXT:-"Welcome back everyone, today we look at three new products. The first one is a lamp."}
for n in ${SPEAKERS:-"1 2 4"}; do
  echo "-- $n speaking session(s), 1 decoding viewer each, 20s"
  target/release/huashen-loadtest --addr "$addr" --api-key "$key" -n "$n" -m 1 --decode \
    --duration 20s --rate 0.4 --speak "$SPEAK_TEXT" --json "$data/speak$n.json" \
    | grep -E 'Speak|Interrupt→|server:|viewers:'
done
