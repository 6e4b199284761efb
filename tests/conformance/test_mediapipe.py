"""MediaPipe's face, palm and pose detectors decoded by edge without a manifest, against a reference.

The reference is written here from MediaPipe's calculator descriptions, without importing edge:
the anchors as SsdAnchorsCalculator generates them (ssd_anchors_calculator.cc), the decoding of
TensorsToDetectionsCalculator (tensors_to_detections_calculator.cc: reverse_output_order → x, y,
w, h then keypoints x, y; every value divided by the input size, times the anchor size, plus the
anchor centre; sigmoid of the logit clipped to ±100; boxes of negative size dropped) and a plain
greedy NMS at IoU 0.3. The options are copied from MediaPipe's graph configs (.pbtxt) here too.
edge (the code under test) gives only the detections compared; the reference never calls it.
The model outputs come from plain LiteRT (``plain_invoke``) on Coral's grace_hopper.bmp.

The input tensor is prepared in the test: stretched to the model input, RGB, scaled to the float
range MediaPipe's ImageToTensorCalculator gives each model ([-1, 1] for face and pose, [0, 1] for
palm, as each graph's ``output_tensor_float_range`` and the models' TFLite metadata say).
MediaPipe's own NMS is WEIGHTED (it averages overlapping boxes); edge and this reference keep the
best box, so the boxes are not MediaPipe's to the last pixel, but the detections are the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from edge.runtime.manifest import Manifest
from edge.runtime.model import read_model
from edge.vision.decode import DecodeParams, FinishParams, finish, identify_layout, make_decoder
from edge.vision.decode.mediapipe_presets import preset_labels
from edge.vision.preprocess import Transform
from tests.conformance.conftest import mediapipe_model, plain_invoke, read_rgb


@dataclass(frozen=True)
class Spec:
    """One detector's graph options (the .pbtxt named in ``source``)."""

    model: str
    size: int                   # input width = height, and every x/y/w/h scale
    strides: tuple[int, ...]    # SsdAnchorsCalculatorOptions.strides (fixed_anchor_size: true)
    interpolated: float         # interpolated_scale_aspect_ratio
    num_keypoints: int
    min_score: float            # min_score_thresh
    float_range: tuple[float, float]
    label: str
    source: str


SPECS = [
    Spec("modules/face_detection/face_detection_short_range.tflite", 128, (8, 16, 16, 16), 1.0, 6, 0.5,
         (-1.0, 1.0), "face", "face_detection.pbtxt + face_detection_short_range.pbtxt"),
    Spec("modules/face_detection/face_detection_full_range_sparse.tflite", 192, (4,), 0.0, 6, 0.6,
         (-1.0, 1.0), "face", "face_detection.pbtxt + face_detection_full_range.pbtxt"),
    Spec("modules/palm_detection/palm_detection_lite.tflite", 192, (8, 16, 16, 16), 1.0, 7, 0.5,
         (0.0, 1.0), "palm", "palm_detection_cpu.pbtxt"),
    Spec("modules/palm_detection/palm_detection_full.tflite", 192, (8, 16, 16, 16), 1.0, 7, 0.5,
         (0.0, 1.0), "palm", "palm_detection_cpu.pbtxt"),
    Spec("modules/pose_detection/pose_detection.tflite", 224, (8, 16, 32, 32, 32), 1.0, 4, 0.2,
         (-1.0, 1.0), "person", "pose_detection_cpu.pbtxt"),
]
IOU = 0.3                       # NonMaxSuppressionCalculatorOptions.min_suppression_threshold
CLIP = 100.0                    # score_clipping_thresh


def reference_anchors(spec: Spec) -> np.ndarray:
    """[N, 2] anchor centres (x, y), normalised, in SsdAnchorsCalculator's order.

    Consecutive layers of one stride share a feature map; each layer adds one anchor per aspect
    ratio (here only 1.0) and one interpolated anchor when the ratio is > 0; fixed_anchor_size makes
    every anchor 1 x 1, so only the centres ((col + 0.5) / width, (row + 0.5) / height) matter.
    """
    centres = []
    layer = 0
    while layer < len(spec.strides):
        last = layer
        while last < len(spec.strides) and spec.strides[last] == spec.strides[layer]:
            last += 1
        per_cell = (last - layer) * (2 if spec.interpolated > 0 else 1)
        cells = math.ceil(spec.size / spec.strides[layer])
        for row in range(cells):
            for col in range(cells):
                centres += [((col + 0.5) / cells, (row + 0.5) / cells)] * per_cell
        layer = last
    return np.array(centres, np.float64)


def reference_decode(spec: Spec, regressors: np.ndarray, logits: np.ndarray, threshold: float):
    """(boxes [M, 4] xmin, ymin, xmax, ymax, scores [M], keypoints [M, K, 2]) in input pixels, best first."""
    anchors = reference_anchors(spec)
    raw = regressors.reshape(len(anchors), -1).astype(np.float64)
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1).astype(np.float64), -CLIP, CLIP)))
    xc = raw[:, 0] / spec.size + anchors[:, 0]
    yc = raw[:, 1] / spec.size + anchors[:, 1]
    w, h = raw[:, 2] / spec.size, raw[:, 3] / spec.size
    boxes = np.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], axis=1)
    points = raw[:, 4:4 + 2 * spec.num_keypoints].reshape(len(raw), spec.num_keypoints, 2) / spec.size
    points = points + anchors[:, None, :]
    candidates = np.flatnonzero((scores >= threshold) & (w >= 0) & (h >= 0))
    keep = plain_nms(boxes, scores, candidates)
    pixels = np.clip(boxes[keep] * spec.size, 0, spec.size)
    return pixels, scores[keep], points[keep] * spec.size


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def plain_nms(boxes: np.ndarray, scores: np.ndarray, candidates: np.ndarray) -> list[int]:
    """Greedy: best score first; a box goes when its IoU with a kept box is above IOU."""
    kept: list[int] = []
    for i in sorted(candidates, key=lambda i: -scores[i]):
        if all(box_iou(boxes[i], boxes[k]) <= IOU for k in kept):
            kept.append(int(i))
    return kept


def model_input(spec: Spec, coral) -> np.ndarray:
    """grace_hopper.bmp stretched to the input, RGB, scaled to the spec's float range: [1, S, S, 3]."""
    low, high = spec.float_range
    rgb = read_rgb(coral / "grace_hopper.bmp", (spec.size, spec.size)).astype(np.float32)
    return (rgb / 255.0 * (high - low) + low)[None].astype(np.float32)


def edge_detections(spec: Spec, outputs: list[np.ndarray], score_threshold: float = 0.0):
    """edge's detections from the same outputs, no manifest, boxes in input pixels."""
    model = read_model(mediapipe_model(spec.model))
    bare = Manifest(path=None, name=model.path.stem)
    assert identify_layout(model, bare) == "ssd_anchors"
    decoder = make_decoder(model, bare, DecodeParams(score_threshold=score_threshold))
    labels = preset_labels(model)
    assert labels == {0: spec.label}
    identity = Transform(spec.size, spec.size, spec.size, spec.size, 1.0, 1.0, 0.0, 0.0)
    return finish(decoder(tuple(outputs)), identity, FinishParams(0.0, 0, labels, None))


def compare(spec: Spec, got, ref) -> None:
    boxes, scores, points = ref
    assert len(got) == len(boxes), (spec.model, [d.score for d in got], scores.tolist())
    for det, box, score, kps in zip(got, boxes, scores, points):
        assert det.label == spec.label and det.class_id == 0
        assert det.score == pytest.approx(score, abs=1e-5)
        assert box_iou(np.array(det.box), box) >= 0.95, (det.box, box.tolist())
        assert np.abs(np.array(det.keypoints) - kps).max() <= 1.0, (det.keypoints, kps.tolist())


def run(spec: Spec, coral):
    return plain_invoke(mediapipe_model(spec.model), model_input(spec, coral))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.model.rsplit("/", 1)[1])
def test_detections_match_the_reference_at_the_graph_threshold(spec, coral):
    outputs = run(spec, coral)
    regressors, logits = sorted(outputs, key=lambda o: -o.shape[-1])   # [1, N, 4 + 2K], [1, N, 1]
    assert regressors.shape[-1] == 4 + 2 * spec.num_keypoints and logits.shape[-1] == 1
    assert regressors.shape[1] == len(reference_anchors(spec))
    got = edge_detections(spec, outputs)
    compare(spec, got, reference_decode(spec, regressors, logits, spec.min_score))
    if spec.label == "face":
        # Grace Hopper's face: one detection, eyes above the nose, all inside the box.
        assert len(got) == 1 and got[0].score > 0.8
        (x0, y0, x1, y1), kps = got[0].box, np.array(got[0].keypoints)
        assert kps[0, 1] < kps[2, 1] and kps[1, 1] < kps[2, 1]
        assert (kps[:3, 0] > x0).all() and (kps[:3, 0] < x1).all() and (kps[:3, 1] > y0).all()
    if spec.label == "person":
        assert len(got) == 1    # one upper body in the frame


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.model.rsplit("/", 1)[1])
def test_low_threshold_candidates_match_the_reference(spec, coral):
    # The palm detectors find no palm in grace_hopper.bmp (right: no hand shows); at 0.05 every
    # detector has candidates, so the decoding and NMS are compared on real outputs anyway.
    outputs = run(spec, coral)
    regressors, logits = sorted(outputs, key=lambda o: -o.shape[-1])
    ref = reference_decode(spec, regressors, logits, 0.05)
    assert len(ref[0]) > 0
    compare(spec, edge_detections(spec, outputs, score_threshold=0.05), ref)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.model.rsplit("/", 1)[1])
def test_edge_generates_the_anchors_ssd_anchors_calculator_does(spec):
    model = read_model(mediapipe_model(spec.model))
    decoder = make_decoder(model, Manifest(path=None, name=model.path.stem), DecodeParams())
    centres = reference_anchors(spec)
    assert decoder.anchors.shape == (len(centres), 4)
    assert np.allclose(decoder.anchors[:, [1, 0]], centres, atol=1e-6)    # edge stores y, x, h, w
    assert (decoder.anchors[:, 2:] == 1.0).all()                          # fixed_anchor_size: true
