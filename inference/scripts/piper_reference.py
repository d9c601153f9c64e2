#!/usr/bin/env python3
"""Reference outputs of the Piper voice under onnxruntime, for the burn port's
fidelity test (inference/tests/piper.rs). Dev tool only: not needed to build
or run Huashen.

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install onnx==1.23.2 onnxruntime==1.32.0 numpy
    /tmp/ref/bin/python inference/scripts/piper_reference.py models/piper/en_US-joe-medium.onnx

Writes inference/tests/data/piper_ref.json: the phoneme ids of a fixed phrase,
the per-id frame counts (the graph's Ceil node) and the waveform (noise
scales 0, so the graph is deterministic), as float32 little-endian base64.
"""
import base64
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort

model_path = sys.argv[1]
out = sys.argv[2] if len(sys.argv) > 2 else "inference/tests/data/piper_ref.json"
config = json.load(open(model_path + ".json"))
id_map = config["phoneme_id_map"]

# espeak-ng 1.51 `-q --ipa -v en-us "Hello world."` with Piper's punctuation.
phonemes = "həlˈoʊ wˈɜːld."
ids = [id_map["^"][0], id_map["_"][0]]
for ch in phonemes:
    ids += id_map[ch] + id_map["_"]
ids.append(id_map["$"][0])

m = onnx.load(model_path)
ceil = [n for n in m.graph.node if n.op_type == "Ceil"][0].output[0]
m.graph.output.append(onnx.helper.make_tensor_value_info(ceil, onnx.TensorProto.FLOAT, None))
sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
audio, w_ceil = sess.run(
    None,
    {
        "input": np.array([ids], dtype=np.int64),
        "input_lengths": np.array([len(ids)], dtype=np.int64),
        "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32),
    },
)
audio = audio.reshape(-1).astype("<f4")
json.dump(
    {
        "phonemes": phonemes,
        "ids": ids,
        "frames": [int(v) for v in w_ceil.reshape(-1)],
        "audio_f32le_b64": base64.b64encode(audio.tobytes()).decode(),
    },
    open(out, "w"),
    indent=1,
)
print(f"{len(ids)} ids, {int(w_ceil.sum())} frames, {audio.size} samples -> {out}")
