"""NMS through OpenCV keeps exactly the indices of the pure numpy greedy NMS kept here as the reference.

The reference is the loop edge used before (TensorFlow's semantics: score order, ties by lower
index, IoU strictly greater than the threshold suppresses, IoU 0 where the union is empty); the
class-aware reference is that loop run once per class, merged by score order.
"""

import numpy as np
import pytest

from edge.vision.decode.nms import batched_nms, nms


def ref_areas(boxes):
    return np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)


def ref_iou(box, boxes):
    w = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    h = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    inter = np.maximum(w, 0) * np.maximum(h, 0)
    union = ref_areas(box[None])[0] + ref_areas(boxes) - inter
    out = np.zeros(len(boxes), np.float32)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def ref_nms(boxes, scores, iou_threshold, max_output=0):
    order = np.argsort(-np.asarray(scores), kind="stable")
    boxes = np.asarray(boxes, np.float32)[order]
    alive = np.arange(len(order))
    keep = []
    limit = max_output or len(order)
    while alive.size and len(keep) < limit:
        best = alive[0]
        keep.append(int(order[best]))
        rest = alive[1:]
        alive = rest[ref_iou(boxes[best], boxes[rest]) <= iou_threshold]
    return keep


def ref_batched_nms(boxes, scores, class_ids, iou_threshold, max_output=0):
    keep = []
    for c in np.unique(class_ids):
        members = np.flatnonzero(class_ids == c)
        keep += [int(members[i]) for i in ref_nms(boxes[members], scores[members], iou_threshold)]
    order = {int(i): r for r, i in enumerate(np.argsort(-np.asarray(scores), kind="stable"))}
    keep.sort(key=order.__getitem__)
    return keep[:max_output] if max_output else keep


def test_by_hand():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    assert ref_iou(boxes[0], boxes[1:]).tolist() == pytest.approx([90 / 110, 0.0, 1.0])
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    assert nms(boxes, scores, 0.5).tolist() == [3, 2]           # 0 and 1 overlap 3 by > 0.5
    assert nms(boxes, scores, 0.95).tolist() == [3, 1, 2]       # 0 equals 3 (IoU 1.0 > 0.95)
    assert nms(boxes, scores, 0.5, max_output=1).tolist() == [3]
    # Class-aware: the same box in another class survives.
    assert batched_nms(boxes, scores, np.array([0, 1, 0, 0]), 0.5).tolist() == [3, 1, 2]


def test_iou_exactly_at_the_threshold_keeps():
    boxes = np.array([[0, 0, 0.5, 0.5], [0, 0, 0.25, 0.5], [0, 0, 0.5, 0.5]], np.float32)   # IoU 0.5, then 1
    scores = np.array([0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, np.nextafter(np.float32(0.5), np.float32(0))).tolist() == [0]
    assert nms(boxes, scores, 1.0).tolist() == [0, 1, 2]


def test_empty_boxes_neither_suppress_nor_are_suppressed():
    boxes = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [0.2, 0.2, 0.1, 0.3], [0, 0, 1, 1], [np.nan, 0, 1, 1]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.95])
    assert nms(boxes, scores, 0.0).tolist() == ref_nms(boxes, scores, 0.0) == [4, 0, 1, 2, 3]
    assert nms(boxes, scores, 0.0, max_output=2).tolist() == [4, 0]


def test_ties_keep_the_lower_index_first():
    boxes = np.array([[0, 0, 1, 1], [0.5, 0, 1.5, 1], [0, 0, 1, 1], [5, 5, 6, 6]], np.float32)
    scores = np.array([0.5, 0.5, 0.5, 0.5])
    assert nms(boxes, scores, 0.3).tolist() == ref_nms(boxes, scores, 0.3) == [0, 3]


def test_empty_input_and_bad_arguments():
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0), 0.5).tolist() == []
    assert batched_nms(np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0, int), 0.5).tolist() == []
    with pytest.raises(ValueError, match="iou_threshold"):
        nms(np.zeros((1, 4)), np.zeros(1), 1.5)
    with pytest.raises(ValueError, match="max_output"):
        nms(np.zeros((1, 4)), np.zeros(1), 0.5, max_output=-1)


def random_case(rng, kind):
    """Boxes, scores, classes, threshold for one case of the given kind."""
    n = int(rng.integers(1, 150))
    if kind == "grid":            # coordinates on a 1/16 grid: many IoUs exactly equal to the threshold
        a = rng.integers(0, 17, (n, 2)) / 16
        b = np.clip(a + rng.integers(0, 9, (n, 2)) / 16, 0, 1)
        boxes = np.concatenate([a, b], 1)
        thresholds = (0.0, 0.25, 0.5, 0.75, 1 / 3, 0.6, 1.0)
    else:
        c = rng.uniform(-0.05, 1.05, (n, 2))
        if kind == "clustered":   # a few objects, many near-duplicates: NMS has work
            objects = rng.uniform(0, 1, (int(rng.integers(1, 10)), 2))
            c = objects[rng.integers(0, len(objects), n)] + rng.normal(0, 0.01, (n, 2))
        wh = rng.uniform(0.0, 0.3, (n, 2))
        boxes = np.concatenate([c - wh / 2, c + wh / 2], 1)
        thresholds = (float(rng.uniform(0, 1)), 0.45, 0.5, 0.7)
    boxes = boxes.astype(np.float32)
    degenerate = rng.random(n) < 0.05
    boxes[degenerate, 2] = boxes[degenerate, 0] - rng.choice([0.0, 0.1], int(degenerate.sum()))
    if rng.random() < 0.5:        # ties: scores on a coarse grid
        scores = rng.integers(0, 20, n) / 20
    else:
        scores = rng.uniform(0, 1, n)
    scores = scores.astype(np.float32)
    classes = rng.integers(0, int(rng.choice([1, 3, 80])), n)
    return boxes, scores, classes, float(rng.choice(thresholds))


@pytest.mark.parametrize("kind", ["grid", "uniform", "clustered"])
def test_identical_to_the_reference_on_random_cases(kind):
    rng = np.random.default_rng(["grid", "uniform", "clustered"].index(kind))
    for _ in range(1000):
        boxes, scores, classes, threshold = random_case(rng, kind)
        limit = int(rng.choice([0, 0, 1, 10, 100]))
        assert nms(boxes, scores, threshold, limit).tolist() == ref_nms(boxes, scores, threshold, limit)
        assert (batched_nms(boxes, scores, classes, threshold, limit).tolist()
                == ref_batched_nms(boxes, scores, classes, threshold, limit))
