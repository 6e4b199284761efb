"""YOLO raw heads: v5 ([1, N, 5+nc], objectness) and v8/v11 ([1, 4+nc, N] or transposed).

Both carry boxes as (cx, cy, w, h), normalised to the input by the TFLite exports of the YOLOv5
repository and of Ultralytics (``box_units = "pixels"`` for exports that keep input pixels; for an
Ultralytics export without that key the metadata's version and export arguments decide, see
:mod:`edge.runtime.ultralytics`), and
per-class scores that are already sigmoid-activated. v5 multiplies them by an objectness column.

An int8/uint8 output is dequantised with its own scale and zero point, but only for the
candidates: the score threshold is first turned into a quantized code and compared with the raw
integers (the affine map is monotonic for a positive scale), so an [1, 84, 8400] int8 head costs
one max over 80×8400 int8 values plus the dequantisation of a few hundred columns.

Which axis holds the channels comes from the class count (manifest ``num_classes``, Ultralytics
metadata or the labels): the axis of size 4+nc (v8) or 5+nc (v5). When both axes could be it the
manifest must say ``channels_first``.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from edge.errors import ModelError
from edge.runtime.manifest import Manifest
from edge.runtime import ultralytics
from edge.runtime.model import ModelInfo, TensorInfo
from edge.vision.decode.base import EMPTY, DecodeParams, RawDetections, dequantize, first_set, output_params
from edge.vision.decode.nms import batched_nms, nms

log = logging.getLogger(__name__)

V5, V8 = "yolov5", "yolov8"
SPEC = {"num_classes": 0, "box_units": "normalized", "channels_first": None, "iou_threshold": 0.0,
        "max_detections": 0, "agnostic_nms": False, "candidate_threshold": 0.0}
DEFAULT_IOU = 0.45
DEFAULT_MAX = 100


def quantized_threshold(threshold: float, tensor: TensorInfo) -> int | None:
    """Smallest raw code whose real value is ≥ threshold; None for float tensors."""
    if not tensor.quantized:
        return None
    scale, zero_point = tensor.quantization.scalar()
    info = np.iinfo(tensor.dtype)
    return int(np.clip(math.ceil(threshold / scale + zero_point - 1e-6), info.min, info.max + 1))


class YoloDecoder:
    task = "detection"

    def __init__(self, layout: str, tensor: TensorInfo, num_classes: int, channels_first: bool,
                 pixels: bool, input_size: tuple[int, int], candidate_threshold: float, iou_threshold: float,
                 max_detections: int, agnostic: bool):
        self.layout = layout
        self.tensor = tensor
        self.num_classes = num_classes
        self.channels_first = channels_first
        self.first_class = 5 if layout == V5 else 4
        self.box_divisor = np.array([*input_size, *input_size], np.float32) if pixels else None
        self.threshold = candidate_threshold
        self.raw_threshold = quantized_threshold(candidate_threshold, tensor)
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections
        self.agnostic = agnostic

    def _candidates(self, out: np.ndarray) -> np.ndarray:
        """Rows (anchors) whose best score can reach the threshold, dequantised, as [M, C]."""
        limit = self.raw_threshold if self.raw_threshold is not None else self.threshold
        if self.channels_first:                                # [C, N]: reduce along the contiguous axis
            gate = out[4] if self.layout == V5 else out[self.first_class:].max(axis=0)
            return dequantize(out[:, np.flatnonzero(gate >= limit)].T, self.tensor)
        gate = out[:, 4] if self.layout == V5 else out[:, self.first_class:].max(axis=1)
        return dequantize(out[np.flatnonzero(gate >= limit)], self.tensor)

    def __call__(self, outputs: tuple[np.ndarray, ...]) -> RawDetections:
        out = outputs[0].reshape(outputs[0].shape[-2:])
        cand = self._candidates(out)
        if cand.shape[0] == 0:
            return EMPTY
        scores_all = cand[:, self.first_class:]
        if self.layout == V5:
            scores_all = scores_all * cand[:, 4:5]
        class_ids = scores_all.argmax(axis=1)
        scores = scores_all[np.arange(len(cand)), class_ids]
        keep = scores >= self.threshold
        if not keep.any():
            return EMPTY
        cand, scores, class_ids = cand[keep], scores[keep], class_ids[keep]
        cx, cy, w, h = cand[:, 0], cand[:, 1], cand[:, 2], cand[:, 3]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        if self.box_divisor is not None:
            boxes /= self.box_divisor
        if self.agnostic:
            idx = nms(boxes, scores, self.iou_threshold, self.max_detections)
        else:
            idx = batched_nms(boxes, scores, class_ids, self.iou_threshold, self.max_detections)
        return RawDetections(boxes[idx], scores[idx].astype(np.float32), class_ids[idx].astype(np.int64))


def num_classes(model: ModelInfo, opts: dict, params: DecodeParams, meta: ultralytics.UltralyticsMeta | None) -> int:
    """Class count: manifest ``num_classes``, else the Ultralytics metadata's names, else the labels."""
    if opts["num_classes"]:
        return int(opts["num_classes"])
    if meta is not None:
        return max(meta.names) + 1
    if params.num_classes:
        return params.num_classes
    raise ModelError(f"cannot tell how many classes {model.path.name} has",
                     "set output.num_classes in its manifest, or give a labels file")


def channels_first_of(model: ModelInfo, layout: str, channels: int, opts: dict, what: str) -> bool:
    """Whether the single [1, C, N] / [1, N, C] output has its ``channels`` on axis 1."""
    tensor = model.outputs[0]
    shape = tensor.shape
    if len(shape) != 3 or shape[0] != 1 or channels not in shape[1:]:
        raise ModelError(f"{model.path.name} output {tensor.name!r} has shape {list(shape)}; layout {layout} "
                         f"with {what} expects [1, {channels}, N] or [1, N, {channels}]",
                         "pick the layout that matches the export (yolov5 has an objectness column) or fix "
                         "output.num_classes")
    if opts["channels_first"] is not None:
        channels_first = bool(opts["channels_first"])
        if shape[1 if channels_first else 2] != channels:
            raise ModelError(f"output.channels_first = {channels_first} but {list(shape)} has no {channels} "
                             f"channels on that axis")
        return channels_first
    if shape[1] == channels and shape[2] == channels:
        raise ModelError(f"{model.path.name} output {list(shape)} could be channels-first or -last",
                         "set output.channels_first in the manifest")
    return shape[1] == channels


def units(model: ModelInfo, manifest: Manifest, opts: dict, key: str, meta: ultralytics.UltralyticsMeta | None,
          from_meta) -> str:
    """``normalized`` or ``pixels`` for ``output.<key>``: the manifest's, else what the Ultralytics
    metadata implies (``from_meta(meta)`` → (units, why), logged), else normalised."""
    if key in manifest.output or meta is None:
        value = opts[key]
    else:
        value, why = from_meta(meta)
        log.info("%s: %s %s (%s; output.%s overrides)", model.path.name, key, value, why, key)
    if value not in ("normalized", "pixels"):
        raise ModelError(f"output.{key} = {value!r} is not one of normalized, pixels")
    return value


def _single_output(model: ModelInfo, layout: str) -> None:
    if len(model.outputs) != 1:
        raise ModelError(f"{model.path.name} has {len(model.outputs)} outputs; layout {layout} needs one "
                         "[1, C, N] or [1, N, C] output", "check --layout / output.layout")


def build(layout: str, model: ModelInfo, manifest: Manifest, params: DecodeParams) -> YoloDecoder:
    opts = output_params(manifest, layout, SPEC)
    meta = ultralytics.read_metadata(model)
    if meta is not None:
        ultralytics.refuse_unsupported(meta, model.path.name)
    _single_output(model, layout)
    nc = num_classes(model, opts, params, meta)
    channels = nc + (5 if layout == V5 else 4)
    channels_first = channels_first_of(model, layout, channels, opts, f"{nc} classes")
    pixels = units(model, manifest, opts, "box_units", meta, ultralytics.box_units) == "pixels"
    _, height, width, _ = model.inputs[0].shape
    return YoloDecoder(
        layout, model.outputs[0], nc, channels_first, pixels, (width, height),
        candidate_threshold=first_set(params.score_threshold, opts["candidate_threshold"], 0.25),
        iou_threshold=first_set(params.iou_threshold, opts["iou_threshold"], DEFAULT_IOU),
        max_detections=int(first_set(params.max_detections, opts["max_detections"], DEFAULT_MAX)),
        agnostic=bool(opts["agnostic_nms"]))


def build_v5(model: ModelInfo, manifest: Manifest, params: DecodeParams) -> YoloDecoder:
    return build(V5, model, manifest, params)


def build_v8(model: ModelInfo, manifest: Manifest, params: DecodeParams) -> YoloDecoder:
    return build(V8, model, manifest, params)


def identify_v8(model: ModelInfo) -> bool:
    """Ultralytics detect exports (v8, v11, v5u) say so in their metadata; their head is the v8 one.

    Segment and obb exports (and in-model NMS) are refused here with a ModelError, so that no
    other layout decodes them wrongly.
    """
    meta = ultralytics.read_metadata(model)
    if meta is None or meta.source == ultralytics.YOLOV5_FILE:
        return False
    ultralytics.refuse_unsupported(meta, model.path.name)
    return meta.task == "detect" and _one_3d_output(model)


def _one_3d_output(model: ModelInfo) -> bool:
    return len(model.outputs) == 1 and len(model.outputs[0].shape) == 3


def identify_v5(model: ModelInfo) -> bool:
    """The YOLOv5 repository's TFLite exports carry ``meta.txt`` (stride, names); others need the
    manifest or --layout."""
    meta = ultralytics.read_metadata(model)
    return meta is not None and meta.source == ultralytics.YOLOV5_FILE and _one_3d_output(model)


POSE = "yolov8_pose"


def build_pose(model: ModelInfo, manifest: Manifest, params: DecodeParams):
    """The pose head's decoder, :mod:`edge.vision.decode.pose` (which builds on this module)."""
    from edge.vision.decode import pose
    return pose.build(model, manifest, params)


def identify_pose(model: ModelInfo) -> bool:
    from edge.vision.decode import pose
    return pose.identify(model)
