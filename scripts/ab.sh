#!/usr/bin/env bash
# Before/after figures for a change: scenario 1 (Speak → on air, one
# session, one decoding viewer) and scenario 3 (idle sessions) of
# scripts/bench.sh, against two release builds in turn, one run each, on the
# same machine. Prints one table (Markdown) to stdout.
#
#   scripts/ab.sh BEFORE_DIR AFTER_DIR
#
# Each DIR holds a release build's `huashen` and `huashen-loadtest`
# (e.g. `git worktree add /tmp/before <rev>` and
# `CARGO_TARGET_DIR=/tmp/before-target cargo build --release -p huashen
# -p huashen-loadtest`, then DIR=/tmp/before-target/release). The models
# are this checkout's `models/`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: $0 BEFORE_DIR AFTER_DIR" >&2; exit 2; }
RUN=${RUN:-20s}
TEXT="Welcome back everyone, today we look at three new products. The first one is a lamp, the second a kettle, and the third a tea set."
out=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$out"' EXIT
log() { echo "== $*" >&2; }

measure() { # label dir
  local label=$1 dir=$2 data="$out/$1/data"
  mkdir -p "$data"
  HUASHEN_STORAGE__DATA_DIR="$data" HUASHEN_SPEECH__MODELS_DIR="$PWD/models" \
    HUASHEN_FACE__MODELS_DIR="$PWD/models" HUASHEN_SERVER__LISTEN=127.0.0.1:0 \
    HUASHEN_LIMITS__MAX_SESSIONS=64 HUASHEN_LIMITS__CPU_BUDGET=64 HUASHEN_LOG=warn \
    "$dir/huashen" serve > "$out/$label/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do grep -q "listening on" "$out/$label/server.log" && break; sleep 0.1; done
  local addr key
  addr=$(sed -n 's/^huashen listening on //p' "$out/$label/server.log")
  key=$(cat "$data/dev-api-key")
  lt() { local name=$1; shift
    log "$label $name: huashen-loadtest $*"
    "$dir/huashen-loadtest" --addr "$addr" --api-key "$key" --json "$out/$label/$name.json" "$@" >/dev/null
  }
  lt s1 -n 1 -m 1 --decode --duration 30s --rate 0.4 --speak "$TEXT"
  for n in 4 8 12 16; do lt "s3_$n" -n "$n" -m 0 --duration "$RUN" --rate 0.2; done
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
}
measure before "$1"
measure after "$2"
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
def rep(side, name):
    return json.load(open(os.path.join(out, side, name + ".json")))
def srv(r, k):
    return (r.get("server") or {}).get(k, 0.0)
print("| measure | before | after |")
print("|---|---|---|")
for label, k in [("Speak → on air (SpeechStarted), p50", "speech_started"),
                 ("Speak → speech heard by the viewer, p50", "speech_heard"),
                 ("Speak → mouth seen moving by the viewer, p50", "speech_seen")]:
    b, a = rep("before", "s1")[k], rep("after", "s1")[k]
    print(f"| {label} | {b['p50_ms']:.0f} ms (n={b['count']}) | {a['p50_ms']:.0f} ms (n={a['count']}) |")
for n in (4, 8, 12, 16):
    b, a = rep("before", f"s3_{n}"), rep("after", f"s3_{n}")
    cell = lambda r: (f"{srv(r,'cpu_percent'):.0f} % CPU, {srv(r,'frames_late'):.0f} late, "
                      f"{srv(r,'rss_mb_after'):.0f} MB, {len(r['errors'])} errors")
    print(f"| {n} idle sessions | {cell(b)} | {cell(a)} |")
PY
