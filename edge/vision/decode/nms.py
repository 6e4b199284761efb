"""Non-maximum suppression, vectorised with numpy; class-aware by offsetting boxes per class.

Greedy NMS as TensorFlow's ``tf.image.non_max_suppression`` defines it: boxes in descending score
order, a box is kept unless its IoU with an already kept box is *greater* than the threshold.
Each iteration suppresses against one kept box with one vectorised IoU over the remaining boxes,
so the cost is O(kept × candidates) array work, not a Python loop over pairs.
"""

from __future__ import annotations

import numpy as np


def _areas(boxes: np.ndarray) -> np.ndarray:
    return np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)


def iou(box: np.ndarray, boxes: np.ndarray, area: float | None = None, areas: np.ndarray | None = None) -> np.ndarray:
    """IoU of one [4] box with [N, 4] boxes (xmin, ymin, xmax, ymax); 0 where the union is empty."""
    w = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    h = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    inter = np.maximum(w, 0) * np.maximum(h, 0)
    if area is None:
        area = max(box[2] - box[0], 0) * max(box[3] - box[1], 0)
    union = area + (_areas(boxes) if areas is None else areas) - inter
    out = np.zeros(len(boxes), np.float32)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_output: int = 0) -> np.ndarray:
    """Indices of the boxes kept, highest score first (ties: lower index first). ``max_output`` 0: no limit."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-np.asarray(scores), kind="stable")
    boxes = np.asarray(boxes, np.float32)[order]          # sorted once: the loop works on contiguous rows
    areas = _areas(boxes)
    alive = np.arange(len(order))
    keep: list[int] = []
    limit = max_output or len(order)
    while alive.size and len(keep) < limit:
        best = alive[0]
        keep.append(int(order[best]))
        rest = alive[1:]
        if rest.size == 0:
            break
        alive = rest[iou(boxes[best], boxes[rest], areas[best], areas[rest]) <= iou_threshold]
    return np.asarray(keep, np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float,
                max_output: int = 0) -> np.ndarray:
    """Class-aware NMS: boxes of different classes never suppress each other.

    Shifts each class's boxes by a distinct offset larger than the extent of all boxes, so one
    NMS pass over the shifted boxes equals a separate NMS per class.
    """
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    boxes = np.asarray(boxes, np.float32)
    extent = float(boxes.max() - min(boxes.min(), 0.0)) + 1.0
    shifted = boxes + (np.asarray(class_ids, np.float32) * extent)[:, None]
    return nms(shifted, scores, iou_threshold, max_output)
