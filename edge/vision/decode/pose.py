"""Ultralytics pose heads (YOLOv8/YOLO11 ``-pose``): one [1, 4+nc+K·D, N] output (or transposed).

Per anchor: cx, cy, w, h; nc sigmoid class scores (nc = 1, "person", for COCO pose); then K
keypoints of D values each, keypoint-major (x0, y0, v0, x1, y1, v1, ...; D = 3 with a sigmoid
visibility, 2 without). K and D come from the metadata's ``kpt_shape`` (or ``output.kpt_shape``).
Boxes and keypoints are normalised to the input by today's TFLite exports; keypoints are input
pixels before ultralytics 8.3.26 (``output.keypoint_units`` overrides, as ``box_units``).

As for the detection head, an int8 output is compared with the threshold as raw integers and only
the candidates are dequantised. Keypoints come out as [N, K, 2] x, y normalised to the input; the
visibility is not carried (``RawDetections`` keeps x, y only).
"""

from __future__ import annotations

import numpy as np

from edge.errors import ModelError
from edge.runtime import ultralytics
from edge.runtime.manifest import Manifest
from edge.runtime.model import ModelInfo, TensorInfo
from edge.vision.decode import yolo
from edge.vision.decode.base import EMPTY, DecodeParams, RawDetections, dequantize, first_set, output_params
from edge.vision.decode.nms import batched_nms, nms

LAYOUT = yolo.POSE
SPEC = {**yolo.SPEC, "kpt_shape": [], "keypoint_units": "normalized"}


class PoseDecoder:
    layout = LAYOUT
    task = "detection"

    def __init__(self, tensor: TensorInfo, num_classes: int, kpt_shape: tuple[int, int], channels_first: bool,
                 box_pixels: bool, keypoint_pixels: bool, input_size: tuple[int, int], candidate_threshold: float,
                 iou_threshold: float, max_detections: int, agnostic: bool):
        self.tensor = tensor
        self.num_classes = num_classes
        self.kpt_shape = kpt_shape
        self.channels_first = channels_first
        width, height = input_size
        self.box_divisor = np.array([width, height] * 2, np.float32) if box_pixels else None
        self.point_divisor = np.array([width, height], np.float32) if keypoint_pixels else None
        self.threshold = candidate_threshold
        self.raw_threshold = yolo.quantized_threshold(candidate_threshold, tensor)
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections
        self.agnostic = agnostic

    def _candidates(self, out: np.ndarray) -> np.ndarray:
        """Anchors whose best class score can reach the threshold, dequantised, as [M, C] float32."""
        limit = self.raw_threshold if self.raw_threshold is not None else self.threshold
        scores = slice(4, 4 + self.num_classes)
        if self.channels_first:                               # [C, N]
            gate = out[scores].max(axis=0)
            return dequantize(out[:, np.flatnonzero(gate >= limit)].T, self.tensor)
        gate = out[:, scores].max(axis=1)
        return dequantize(out[np.flatnonzero(gate >= limit)], self.tensor)

    def _boxes(self, cand: np.ndarray) -> np.ndarray:
        """[M, 4] xmin, ymin, xmax, ymax normalised to the input, from cx, cy, w, h."""
        cx, cy, w, h = cand[:, 0], cand[:, 1], cand[:, 2], cand[:, 3]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        return boxes / self.box_divisor if self.box_divisor is not None else boxes

    def _keypoints(self, cand: np.ndarray) -> np.ndarray:
        """[M, K, 2] x, y normalised to the input."""
        k, d = self.kpt_shape
        points = cand[:, 4 + self.num_classes:].reshape(-1, k, d)[:, :, :2].astype(np.float32)
        return points / self.point_divisor if self.point_divisor is not None else points

    def __call__(self, outputs: tuple[np.ndarray, ...]) -> RawDetections:
        cand = self._candidates(outputs[0].reshape(outputs[0].shape[-2:]))
        if cand.shape[0] == 0:
            return EMPTY
        scores_all = cand[:, 4:4 + self.num_classes]
        class_ids = scores_all.argmax(axis=1)
        scores = scores_all[np.arange(len(cand)), class_ids]
        keep = scores >= self.threshold
        if not keep.any():
            return EMPTY
        cand, scores, class_ids = cand[keep], scores[keep], class_ids[keep]
        boxes = self._boxes(cand)
        if self.agnostic or self.num_classes == 1:
            idx = nms(boxes, scores, self.iou_threshold, self.max_detections)
        else:
            idx = batched_nms(boxes, scores, class_ids, self.iou_threshold, self.max_detections)
        return RawDetections(boxes[idx].astype(np.float32), scores[idx].astype(np.float32),
                             class_ids[idx].astype(np.int64), self._keypoints(cand[idx]))


def _kpt_shape(opts: dict, meta: ultralytics.UltralyticsMeta | None, model: ModelInfo) -> tuple[int, int]:
    """(K, D) from ``output.kpt_shape``, else the metadata; an error otherwise (never guessed)."""
    given = opts["kpt_shape"]
    if given:
        if len(given) != 2 or not all(isinstance(v, int) for v in given) or given[1] not in (2, 3) or given[0] < 1:
            raise ModelError(f"output.kpt_shape = {given!r} is not [keypoints, 2 or 3]", "e.g. [17, 3] for COCO")
        return given[0], given[1]
    if meta is not None and meta.kpt_shape is not None:
        return meta.kpt_shape
    raise ModelError(f"cannot tell the keypoint layout of {model.path.name}",
                     "set output.kpt_shape in its manifest, e.g. [17, 3]")


def build(model: ModelInfo, manifest: Manifest, params: DecodeParams) -> PoseDecoder:
    opts = output_params(manifest, LAYOUT, SPEC)
    meta = ultralytics.read_metadata(model)
    if meta is not None:
        ultralytics.refuse_unsupported(meta, model.path.name)
    if len(model.outputs) != 1:
        raise ModelError(f"{model.path.name} has {len(model.outputs)} outputs; layout {LAYOUT} needs one "
                         "[1, 4+nc+K*D, N] output", "check --layout / output.layout")
    nc = yolo.num_classes(model, opts, params, meta)
    k, d = _kpt_shape(opts, meta, model)
    channels = 4 + nc + k * d
    channels_first = yolo.channels_first_of(model, LAYOUT, channels, opts, f"{nc} classes and {k}x{d} keypoints")
    box_pixels = yolo.units(model, manifest, opts, "box_units", meta, ultralytics.box_units) == "pixels"
    point_pixels = yolo.units(model, manifest, opts, "keypoint_units", meta, ultralytics.keypoint_units) == "pixels"
    _, height, width, _ = model.inputs[0].shape
    return PoseDecoder(
        model.outputs[0], nc, (k, d), channels_first, box_pixels, point_pixels, (width, height),
        candidate_threshold=first_set(params.score_threshold, opts["candidate_threshold"], 0.25),
        iou_threshold=first_set(params.iou_threshold, opts["iou_threshold"], yolo.DEFAULT_IOU),
        max_detections=int(first_set(params.max_detections, opts["max_detections"], yolo.DEFAULT_MAX)),
        agnostic=bool(opts["agnostic_nms"]))


def identify(model: ModelInfo) -> bool:
    """Ultralytics pose exports: metadata task ``pose`` and one output."""
    meta = ultralytics.read_metadata(model)
    return meta is not None and meta.task == "pose" and len(model.outputs) == 1
