#!/usr/bin/env bash
# Sets up (if needed), builds and runs the server on its embedded defaults:
# SQLite + files under ./.huashen, gRPC/gRPC-Web/HTTP on 127.0.0.1:8700, a
# dev tenant whose API key is printed at start. Extra arguments go to
# `huashen serve` (e.g. --config huashen.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
exec cargo run --release --locked -p huashen -- serve "$@"
