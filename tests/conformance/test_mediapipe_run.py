"""`edge run -m <MediaPipe detector>` with no manifest and no flags, end to end, against plain LiteRT.

The reference letterboxes grace_hopper.bmp as MediaPipe's ImageToTensorCalculator does
(keep_aspect_ratio, BORDER_ZERO), scales it to the graph's float range, invokes the model with
plain LiteRT and decodes with the reference of test_mediapipe.py (written from MediaPipe's
calculators, no edge import), then maps the boxes back to frame pixels. edge must find the same
objects at its default score threshold (0.5), with the same scores, boxes and keypoints.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from tests.conformance.conftest import mediapipe_model, plain_invoke, read_rgb
from tests.conformance.test_mediapipe import SPECS, box_iou, reference_decode
from tests.helpers import run_edge

THRESHOLD = 0.5      # edge run's default --score-threshold


def _letterboxed(spec, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """[1, S, S, 3] float input, the (x, y) scale of the resized picture (its integer size over the
    frame's), and its padding (x, y) in input pixels."""
    h, w = image.shape[:2]
    s = min(spec.size / w, spec.size / h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    x, y = (spec.size - nw) // 2, (spec.size - nh) // 2
    canvas = np.zeros((spec.size, spec.size, 3), np.uint8)
    canvas[y:y + nh, x:x + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    low, high = spec.float_range
    tensor = (canvas.astype(np.float32) / 255.0 * (high - low) + low)[None]
    return tensor.astype(np.float32), np.array([nw / w, nh / h]), x, y


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.model.rsplit("/", 1)[1])
def test_edge_run_matches_plain_litert(spec, coral, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "grace_hopper.bmp").write_bytes((coral / "grace_hopper.bmp").read_bytes())
    model = mediapipe_model(spec.model)
    out = tmp_path / "events.jsonl"
    result = run_edge("run", "-m", str(model), "-s", str(folder), "--jsonl", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "letterbox (pad 0)" in result.stderr
    got = [d for line in out.read_text().splitlines() for d in json.loads(line)["detections"]] \
        if out.exists() else []

    tensor, s, x, y = _letterboxed(spec, read_rgb(coral / "grace_hopper.bmp"))
    regressors, logits = sorted(plain_invoke(model, tensor), key=lambda o: -o.shape[-1])
    boxes, scores, points = reference_decode(spec, regressors, logits, THRESHOLD)
    assert len(got) == len(boxes), (result.stderr, got, scores.tolist())
    for det, box, score, kps in zip(got, boxes, scores, points):
        frame_box = (box - [x, y, x, y]) / np.tile(s, 2)
        frame_box = np.clip(frame_box, 0, [512, 600, 512, 600])
        assert det["label"] == spec.label
        assert det["score"] == pytest.approx(score, abs=1e-4)
        assert box_iou(np.array(det["box"]), frame_box) >= 0.99, (det["box"], frame_box.tolist())
        frame_points = (kps - [x, y]) / s
        assert np.abs(np.array(det["keypoints"]) - frame_points).max() <= 0.6      # JSONL rounds to 0.1 px
