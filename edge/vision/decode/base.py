"""Values decoders produce, and the one shared finishing step.

Decoders are pure: output arrays in, :class:`RawDetections` out, in coordinates normalised to the
model input. :func:`finish` applies the score threshold, class filter and limit, maps boxes to
original-frame pixels through the preprocessing :class:`~edge.vision.preprocess.Transform`, and
attaches labels, giving frozen :class:`Detection` values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

from edge.bounded import show
from edge.errors import ModelError
from edge.runtime.manifest import Manifest
from edge.runtime.model import TensorInfo
from edge.vision.labels import label_name
from edge.vision.preprocess import Transform


@dataclass(frozen=True, slots=True)
class Detection:
    label: str
    class_id: int
    score: float
    box: tuple[float, float, float, float]   # xmin, ymin, xmax, ymax in original-frame pixels
    keypoints: tuple[tuple[float, float], ...] = ()   # (x, y) in original-frame pixels, model order

    def as_dict(self) -> dict:
        out = {"label": self.label, "class_id": self.class_id, "score": round(self.score, 4),
               "box": [round(v, 1) for v in self.box]}
        if self.keypoints:
            out["keypoints"] = [[round(x, 1), round(y, 1)] for x, y in self.keypoints]
        return out


class RawDetections(NamedTuple):
    boxes: np.ndarray      # [N, 4] float32 xmin, ymin, xmax, ymax normalised to the model input
    scores: np.ndarray     # [N] float32
    class_ids: np.ndarray  # [N] int
    keypoints: np.ndarray | None = None   # [N, K, 2] float32 x, y normalised to the model input


EMPTY = RawDetections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


@dataclass(frozen=True, slots=True)
class Classification:
    label: str
    class_id: int
    score: float

    def as_dict(self) -> dict:
        return {"label": self.label, "class_id": self.class_id, "score": round(self.score, 4)}


class RawClasses(NamedTuple):
    class_ids: np.ndarray  # [K] int, best first
    scores: np.ndarray     # [K] float32


class Decoder(Protocol):
    layout: str
    task: str              # "detection" (returns RawDetections) or "classification" (RawClasses)

    def __call__(self, outputs: tuple[np.ndarray, ...]) -> RawDetections | RawClasses: ...


@dataclass(frozen=True)
class DecodeParams:
    """Run-time settings every decoder may use; 0 means "the manifest's value, else the layout's"."""

    score_threshold: float = 0.0   # candidates below it are dropped before NMS (cheaper)
    iou_threshold: float = 0.0
    max_detections: int = 0
    num_classes: int = 0           # from the labels, when the model and manifest do not say


# Ranges of output keys shared by several layouts; values outside them are errors naming the value.
OUTPUT_RANGES: dict[str, tuple[float, float]] = {
    "iou_threshold": (0.0, 1.0), "candidate_threshold": (0.0, 1.0), "max_detections": (0, 100_000),
    "num_classes": (0, 100_000), "top_k": (0, 100_000), "num_keypoints": (-1, 1000),
    "score_clipping_thresh": (0.0, 1e6),
}
# Types of the keys whose default is None (unset): checked here like the others.
NONE_DEFAULT_TYPES: dict[str, type] = {"channels_first": bool, "anchors": list, "anchor_options": dict}
MAX_LIST = 4_000_000      # numbers in one output value (inline anchors: N×4)


def _non_finite(value: Any, budget: list[int]) -> Any:
    """The first non-finite number inside ``value`` (nested lists/objects), else None; counts numbers
    into ``budget`` so an absurdly large value is refused before anything allocates from it."""
    if isinstance(value, float):
        budget[0] += 1
        return None if math.isfinite(value) else value
    if isinstance(value, (list, dict)):
        for item in value.values() if isinstance(value, dict) else value:
            bad = _non_finite(item, budget)
            if bad is not None or budget[0] > MAX_LIST:
                return bad
    else:
        budget[0] += 1
    return None


def output_params(manifest: Manifest, layout: str, spec: dict[str, Any]) -> dict[str, Any]:
    """``manifest.output`` checked against ``spec`` ({key: default}); defaults fill the gaps.

    A value must have the default's type (ints are accepted for floats), be finite (NaN would pass
    every threshold comparison silently) and lie in :data:`OUTPUT_RANGES`; unknown keys are errors
    that list the valid ones, so a typo never silently falls back to a default.
    """
    given = {k: v for k, v in manifest.output.items() if k != "layout"}
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise ModelError(f"output.{unknown[0][:60]} is not a parameter of layout {layout}",
                         f"valid: {', '.join(sorted(spec))}")
    values = dict(spec)
    for key, value in given.items():
        default = spec[key]
        kind = type(default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if default is None and key in NONE_DEFAULT_TYPES:
            kind = NONE_DEFAULT_TYPES[key]
            if value is not None and not isinstance(value, kind):
                raise ModelError(f"output.{key} = {show(value)} in the manifest is not a {kind.__name__}")
        elif default is not None and not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ModelError(f"output.{key} = {show(value)} in the manifest is not a {kind.__name__}",
                             f"layout {layout} expects e.g. {default!r}")
        budget = [0]
        bad = _non_finite(value, budget)
        if bad is not None:
            raise ModelError(f"output.{key} = {show(value)} in the manifest holds {bad!r}, not a finite number")
        if budget[0] > MAX_LIST:
            raise ModelError(f"output.{key} in the manifest holds more than {MAX_LIST} values")
        if key in OUTPUT_RANGES and isinstance(value, (int, float)) and not isinstance(value, bool):
            low, high = OUTPUT_RANGES[key]
            if not low <= value <= high:
                raise ModelError(f"output.{key} = {show(value)} in the manifest is not from {low:g} to {high:g}")
        values[key] = value
    return values


def first_set(*values: float) -> float:
    """The first non-zero value (run-time flag, then manifest, then layout default)."""
    return next((v for v in values if v), values[-1])


@dataclass(frozen=True)
class FinishParams:
    score_threshold: float
    max_detections: int            # 0: no limit
    labels: dict[int, str]
    keep: frozenset[int] | None    # class ids to keep; None: all


def dequantize(array: np.ndarray, tensor: TensorInfo) -> np.ndarray:
    """Real values of an output tensor; float tensors pass through (widened before subtracting)."""
    if not tensor.quantized:
        return array.astype(np.float32, copy=False)
    scale, zero_point = tensor.quantization.scalar()
    return (scale * (array.astype(np.int32) - zero_point)).astype(np.float32)


def finish_classes(raw: RawClasses, params: FinishParams) -> tuple[Classification, ...]:
    """Top classes above the threshold (and in ``keep``), at most ``max_detections`` of them."""
    out = []
    for c, s in zip(raw.class_ids, raw.scores):
        c = int(c)
        if s < params.score_threshold or (params.keep is not None and c not in params.keep):
            continue
        out.append(Classification(label_name(params.labels, c), c, float(s)))
        if params.max_detections and len(out) >= params.max_detections:
            break
    return tuple(out)


def finish(raw: RawDetections, transform: Transform, params: FinishParams) -> tuple[Detection, ...]:
    keep = raw.scores >= params.score_threshold
    if params.keep is not None:
        keep &= np.isin(raw.class_ids, list(params.keep))
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        return ()
    idx = idx[np.argsort(-raw.scores[idx], kind="stable")]
    if params.max_detections:
        idx = idx[:params.max_detections]
    boxes = transform.boxes_to_frame(raw.boxes[idx])
    points: list = [()] * len(idx)
    if raw.keypoints is not None and raw.keypoints.shape[1]:
        points = [tuple((float(x), float(y)) for x, y in p) for p in transform.points_to_frame(raw.keypoints[idx])]
    return tuple(
        Detection(label_name(params.labels, int(c)), int(c), float(s), tuple(float(v) for v in b), k)
        for b, s, c, k in zip(boxes, raw.scores[idx], raw.class_ids[idx], points))
