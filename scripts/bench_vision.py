#!/usr/bin/env python3
"""Per-frame cost of pre-processing and decoding (with NMS), on this machine, as a table.

    .venv/bin/python scripts/bench_vision.py [--repeat 300]

Pre-processing writes a real frame of the sample clip (resized to the source size) into an input
tensor of the given type, as the pipeline does. Decoders get model-shaped outputs synthesised
with a realistic score distribution (a few hundred candidates above a 0.25 threshold out of
8400 anchors for YOLOv8, clustered around objects so NMS has work). The "full dequantise" row
decodes the same YOLO tensor after dequantising all of it first: the ratio between the two rows,
measured side by side in one run, is what thresholding the raw integers saves. Medians and 90th
percentiles of ``time.perf_counter_ns`` per call; nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.capture.base import Frame  # noqa: E402
from edge.resources import sample_clip  # noqa: E402
from edge.runtime.manifest import InputSpec, Manifest  # noqa: E402
from edge.runtime.model import ModelInfo, Quantization, TensorInfo  # noqa: E402
from edge.vision.decode import DecodeParams, make_decoder  # noqa: E402
from edge.vision.decode import nms as nms_module  # noqa: E402
from edge.vision.preprocess import Preprocessor  # noqa: E402


def timed(fn, repeat: int) -> tuple[float, float]:
    for _ in range(10):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    samples.sort()
    return statistics.median(samples) / 1e6, samples[int(len(samples) * 0.9)] / 1e6


@functools.cache
def _clip_image() -> np.ndarray:
    """Frame 120 of the sample clip, decoded once for every case."""
    cap = cv2.VideoCapture(str(sample_clip()))
    for _ in range(120):
        ok, image = cap.read()
    cap.release()
    return image


def clip_frame(width: int, height: int) -> np.ndarray:
    return cv2.resize(_clip_image(), (width, height))


def preprocess_cases(repeat: int) -> list[tuple[str, float, float]]:
    mobilenet = dict(mean=(127.5,) * 3, std=(127.5,) * 3)
    cases = [
        ("640x480 → 300x300 uint8 stretch (Coral zoo)", (640, 480), 300, "UINT8", (2 / 255, 128), "stretch", mobilenet),
        ("640x480 → 300x300 int8 stretch (zero point)", (640, 480), 300, "INT8", (2 / 255, 0), "stretch", mobilenet),
        ("640x480 → 320x320 int8 letterbox (YOLO)", (640, 480), 320, "INT8", (1 / 255, -128), "letterbox",
         dict(std=(255.0,) * 3)),
        ("640x480 → 300x300 float32 stretch", (640, 480), 300, "FLOAT32", None, "stretch", mobilenet),
        ("1280x720 → 640x640 int8 letterbox (YOLO)", (1280, 720), 640, "INT8", (1 / 255, -128), "letterbox",
         dict(std=(255.0,) * 3)),
    ]
    rows = []
    for name, (w, h), size, type_, q, resize, norm in cases:
        tensor = TensorInfo(0, "in", (1, size, size, 3), type_, Quantization((q[0],), (q[1],)) if q else None)
        pre = Preprocessor(InputSpec(colour="RGB", resize=resize, pad_value=114, **norm), tensor, tensor.shape)
        out = np.zeros(tensor.shape, tensor.dtype)
        frame = Frame(clip_frame(w, h), 0, 0.0, 0)
        rows.append((name, *timed(lambda: pre(frame, out), repeat)))
    return rows


def _model(outputs, size=640) -> ModelInfo:
    tensors = tuple(outputs)
    inp = TensorInfo(99, "in", (1, size, size, 3), "INT8", None)
    return ModelInfo(Path("bench.tflite"), 0, "", (inp,), tensors, tensors, (), 1, (), (), ())


def yolo_logits(rng, n_classes: int, objects: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [8400, 4] (cx, cy, w, h normalised) and class probabilities [8400, nc]."""
    centres = []
    for stride in (8, 16, 32):
        g = 640 // stride
        ys, xs = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
        centres.append(np.stack([(xs.ravel() + 0.5) / g, (ys.ravel() + 0.5) / g], 1))
    centres = np.concatenate(centres)                       # [8400, 2]
    n = len(centres)
    logits = rng.normal(-9.0, 1.5, (n, n_classes))
    objs = rng.uniform(0.1, 0.9, (objects, 2))
    sizes = rng.uniform(0.05, 0.3, (objects, 2))
    boxes = np.concatenate([centres, rng.uniform(0.02, 0.2, (n, 2))], 1)
    for (ox, oy), (sw, sh) in zip(objs, sizes):
        # Like a trained head: the anchors near an object's centre score high, not its whole area.
        near = np.flatnonzero((np.abs(centres[:, 0] - ox) < sw / 5) & (np.abs(centres[:, 1] - oy) < sh / 5))
        cls = rng.integers(n_classes)
        logits[near, cls] = rng.normal(1.0, 1.5, len(near))
        boxes[near, :2] = [ox, oy] + rng.normal(0, 0.01, (len(near), 2))
        boxes[near, 2:] = [sw, sh] * rng.uniform(0.85, 1.15, (len(near), 2))
    return boxes.astype(np.float32), (1 / (1 + np.exp(-logits))).astype(np.float32)


def decode_cases(repeat: int) -> list[tuple[str, float, float]]:
    rng = np.random.default_rng(0)
    rows = []
    params = DecodeParams(score_threshold=0.25, iou_threshold=0.45, max_detections=100)
    boxes, probs = yolo_logits(rng, 80)
    real = np.concatenate([boxes, probs], 1).T[None]        # [1, 84, 8400]
    scale, zp = 1 / 255, -128
    q = np.clip(np.round(real / scale + zp), -128, 127).astype(np.int8)
    t8 = TensorInfo(0, "out", (1, 84, 8400), "INT8", Quantization((scale,), (zp,)))
    dec = make_decoder(_model([t8]), Manifest(None, "b", output={"layout": "yolov8", "num_classes": 80}), params)
    candidates = int(((q[0, 4:].max(axis=0)) >= dec.raw_threshold).sum())
    detections = len(dec((q,)).scores)
    rows.append((f"YOLOv8 [1,84,8400] int8 decode + NMS ({candidates} candidates → {detections})",
                 *timed(lambda: dec((q,)), repeat)))
    full = make_decoder(_model([TensorInfo(0, "out", (1, 84, 8400), "FLOAT32", None)]),
                        Manifest(None, "b", output={"layout": "yolov8", "num_classes": 80}), params)
    rows.append(("  same, full dequantise first (for comparison)",
                 *timed(lambda: full(((scale * (q.astype(np.float32) - zp)),)), repeat)))
    f32 = real.astype(np.float32)
    rows.append(("YOLOv8 [1,84,8400] float32 decode + NMS", *timed(lambda: full((f32,)), repeat)))

    b5, p5 = yolo_logits(rng, 80)
    b5 = np.repeat(b5, 3, axis=0)
    p5 = np.repeat(p5, 3, axis=0)
    obj = p5.max(axis=1, keepdims=True)
    v5 = np.concatenate([b5, obj, p5 / np.maximum(obj, 1e-6)], 1)[None]     # [1, 25200, 85]
    s5 = 1 / 255
    q5 = np.clip(np.round(v5 / s5), 0, 255).astype(np.uint8)
    t5 = TensorInfo(0, "out", (1, 25200, 85), "UINT8", Quantization((s5,), (0,)))
    dec5 = make_decoder(_model([t5]), Manifest(None, "b", output={"layout": "yolov5", "num_classes": 80}), params)
    rows.append(("YOLOv5 [1,25200,85] uint8 decode + NMS", *timed(lambda: dec5((q5,)), repeat)))

    n = 1917
    anchors = np.stack([rng.uniform(0, 1, n), rng.uniform(0, 1, n), rng.uniform(0.05, 0.5, n),
                        rng.uniform(0.05, 0.5, n)], 1).round(4).tolist()
    enc = rng.normal(0, 1, (1, n, 4)).astype(np.float32)
    logits = rng.normal(-7, 2, (1, n, 91)).astype(np.float32)
    candidates = int((logits[0, :, 1:].max(axis=1) >= 0).sum())
    ssd = make_decoder(_model([TensorInfo(0, "box_encodings", (1, n, 4), "FLOAT32", None),
                               TensorInfo(1, "class_predictions", (1, n, 91), "FLOAT32", None)], 300),
                       Manifest(None, "b", output={"layout": "ssd_anchors", "anchors": anchors,
                                                   "background_class": True}), DecodeParams(0.5, 0.6, 100))
    rows.append((f"raw SSD 1917 anchors × 91 classes float decode + NMS ({candidates} candidates)",
                 *timed(lambda: ssd((enc, logits)), repeat)))

    rows += nms_cases(rng, repeat)

    cls = rng.integers(0, 256, (1, 1001)).astype(np.uint8)
    tc = TensorInfo(0, "out", (1, 1001), "UINT8", Quantization((1 / 255,), (0,)))
    classify = make_decoder(_model([tc], 224), Manifest(None, "b"), DecodeParams(max_detections=5))
    rows.append(("classification [1,1001] uint8 top-5", *timed(lambda: classify((cls,)), repeat)))
    return rows


def nms_cases(rng, repeat: int) -> list[tuple[str, float, float]]:
    """NMS alone on 315 boxes scattered over the frame and 80 classes, and on 315 clustered boxes."""
    n = 315
    centres = rng.uniform(0, 1, (n, 2))
    sizes = rng.uniform(0.02, 0.3, (n, 2))
    scattered = np.concatenate([centres - sizes / 2, centres + sizes / 2], 1).astype(np.float32)
    objects = rng.uniform(0.1, 0.9, (8, 2))[rng.integers(0, 8, n)] + rng.normal(0, 0.01, (n, 2))
    clustered = np.concatenate([objects - 0.05, objects + 0.05], 1).astype(np.float32)
    scores = rng.uniform(0.25, 1, n).astype(np.float32)
    classes = rng.integers(0, 80, n)
    return [
        (f"NMS class-aware, {n} scattered boxes, 80 classes",
         *timed(lambda: nms_module.batched_nms(scattered, scores, classes, 0.45), repeat)),
        (f"NMS agnostic, {n} scattered boxes", *timed(lambda: nms_module.nms(scattered, scores, 0.45), repeat)),
        (f"NMS class-aware, {n} boxes clustered on 8 objects",
         *timed(lambda: nms_module.batched_nms(clustered, scores, classes, 0.45), repeat)),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    print("| stage | median ms | p90 ms |\n|---|---|---|")
    for name, median, p90 in preprocess_cases(args.repeat) + decode_cases(args.repeat):
        print(f"| {name} | {median:.3f} | {p90:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
