"""Values decoders produce, and the one shared finishing step.

Decoders are pure: output arrays in, :class:`RawDetections` out, in coordinates normalised to the
model input. :func:`finish` applies the score threshold, class filter and limit, maps boxes to
original-frame pixels through the preprocessing :class:`~edge.vision.preprocess.Transform`, and
attaches labels, giving frozen :class:`Detection` values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

from edge.runtime.model import TensorInfo
from edge.vision.preprocess import Transform


@dataclass(frozen=True, slots=True)
class Detection:
    label: str
    class_id: int
    score: float
    box: tuple[float, float, float, float]   # xmin, ymin, xmax, ymax in original-frame pixels

    def as_dict(self) -> dict:
        return {"label": self.label, "class_id": self.class_id, "score": round(self.score, 4),
                "box": [round(v, 1) for v in self.box]}


class RawDetections(NamedTuple):
    boxes: np.ndarray      # [N, 4] float32 xmin, ymin, xmax, ymax normalised to the model input
    scores: np.ndarray     # [N] float32
    class_ids: np.ndarray  # [N] int


EMPTY = RawDetections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


class Decoder(Protocol):
    layout: str

    def __call__(self, outputs: tuple[np.ndarray, ...]) -> RawDetections: ...


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
    labels = params.labels
    return tuple(
        Detection(labels.get(int(c), str(int(c))), int(c), float(s), tuple(float(v) for v in b))
        for b, s, c in zip(boxes, raw.scores[idx], raw.class_ids[idx]))
