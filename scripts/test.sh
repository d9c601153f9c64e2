#!/usr/bin/env bash
# Sets up (if needed) and runs every check CI runs: formatting, clippy with
# warnings as errors, and the whole test suite (unit + integration tests
# against the real server, the PostgreSQL storage against a throwaway
# PostgreSQL server) with cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test: installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== cargo check --features cuda (the GPU backend and the server with it build without CUDA installed)"
cargo check --locked -p huashen-inference -p huashen --features cuda --all-targets
echo "== web-demo: unit tests, and the committed console bundle matches its sources"
(cd web-demo && npm test --silent && npm run --silent check)
echo "== train-visemes --quick (the lip-sync training program still runs end to end: data, training, evaluation)"
cargo run --locked -q -p huashen-train -- --quick --out target/tmp/lipsync-quick.bin >/dev/null
echo "== PostgreSQL for the shared-storage tests (a throwaway server on a Unix socket)"
pg_dir=$(mktemp -d /tmp/huashen-pg.XXXXXX)
pg_env=$(bash scripts/test-postgres.sh start "$pg_dir")
eval "$pg_env"
trap 'bash scripts/test-postgres.sh stop "$pg_dir" || true; rm -rf "$pg_dir"' EXIT
echo "== cargo nextest"
cargo nextest run --locked --workspace --no-fail-fast "$@"
