"""Multi-object tracking: this frame's detections to tracks with stable ids.

One tracker, ByteTrack-style association (Zhang et al., 2022) on IoU, written here in numpy:

- every track predicts its box at the frame's timestamp with a constant-velocity Kalman filter per
  axis of the box centre (noises relative to the box size, as in SORT and ByteTrack), the box size
  smoothed, so coasting through a missed detection or a short occlusion follows the motion;
- detections match tracks of their own label only (a person track never takes a car), the confident
  ones (score >= ``high_score``) first unless a weak one overlaps the track clearly better (by 0.3
  IoU), and the weak ones never start a track (ByteTrack's two associations: weak boxes keep tracks
  alive through partial occlusion, without their false positives starting tracks);
- matching is greedy on IoU (best pair first, pairs under ``iou_threshold`` never match), a track
  matched at the previous update ahead of one coasting by 0.1 IoU (when two boxes of one class
  cover each other and only one is detected, the detection stays with the track it was following):
  with the few objects of one class a camera sees, it scores as the Hungarian assignment does
  (``scripts/bench_tracker.py`` measures both) without needing scipy on the device;
- a box cut by the frame's edge on one side (when ``update`` is given the frame's size): the filter
  follows its uncut side, which moves with the object, and takes its size on that axis as it is
  (the centre of a box growing from the edge as its object enters moves at half the object's speed);
- a detection far from its track's prediction (a false positive taken, a box cut by the frame's
  edge) moves the filter by at most two standard deviations of the expected innovation;
- a new track is tentative until ``min_hits`` matched frames; a tentative track that misses a frame
  ends there (a flicker is not an object), a confirmed one coasts for up to ``max_age`` seconds
  without a match and then ends. Ages are in seconds of the frames' timestamps, so they hold at
  any and at a varying frame rate.

Ids count from 1 for the tracker's life and are never reused, across labels.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, fields
from typing import Sequence

import numpy as np

from edge.errors import ConfigError
from edge.events.types import Box, Tracker, TrackedObject, TrackUpdate
from edge.vision.decode import Detection

KINDS = ("bytetrack",)

# The centre's filter, per axis a constant-velocity Kalman filter with noises relative to the box
# size on that axis (width for x, height for y), as ByteTrack's and SORT's are:
_MEASURE = 0.05     # a detection's centre: standard deviation, in box sizes
_VELOCITY0 = 1.5    # a new track's velocity: standard deviation, in box sizes per second
_ACCEL = 0.5        # random acceleration: spectral density, in box sizes per second squared
_SIZE_ALPHA = 0.3   # box width and height: exponential smoothing, no velocity
# the same in box sizes (the covariance is kept in box sizes, so one serves both axes)
_R, _Q, _Q2, _Q3 = _MEASURE ** 2, _ACCEL ** 2, _ACCEL ** 2 / 2, _ACCEL ** 2 / 3
_EDGE = 0.01        # a box side within this fraction of the frame's size from its edge is cut by it
_GATE = 2.0         # a detection moves the filter by at most this many innovation standard deviations

# Association ranks a (track, detection) pair by its IoU, plus these margins:
_CONFIDENT = 0.3    # for a confident detection (ByteTrack's first stage, unless a weak box fits much better)
_COASTING = -0.1    # for a track that missed the previous update (a fresh track keeps its detection)


def _help(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class TrackerSettings:
    """How detections become tracks; the ``[events]`` section of the configuration."""

    kind: str = field(default="bytetrack", metadata=_help(
        "tracker algorithm: bytetrack (IoU association of confident then weak detections)"))
    min_hits: int = field(default=3, metadata=_help(
        "matched frames before a track is confirmed (and reported as an object)"))
    max_age: float = field(default=1.5, metadata=_help(
        "seconds a confirmed track survives without a matching detection (occlusions shorter "
        "than this keep their id)"))
    iou_threshold: float = field(default=0.2, metadata=_help(
        "smallest overlap (IoU, 0-1) between a track's predicted box and a detection to match them"))
    high_score: float = field(default=0.5, metadata=_help(
        "score from which a detection may start a track; weaker ones only keep existing tracks alive"))

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"tracker kind {self.kind!r} is unknown: expected one of {', '.join(KINDS)}")
        if isinstance(self.min_hits, bool) or not isinstance(self.min_hits, int) or self.min_hits < 1:
            raise ConfigError(f"tracker min_hits {self.min_hits!r} is invalid: expected a whole number >= 1")
        _number("max_age", self.max_age, "a number of seconds > 0", lambda v: v > 0)
        _number("iou_threshold", self.iou_threshold, "a number > 0 and < 1", lambda v: 0 < v < 1)
        _number("high_score", self.high_score, "a number from 0 to 1", lambda v: 0 <= v <= 1)


def _number(name: str, value, expected: str, ok) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
        raise ConfigError(f"tracker {name} {value!r} is invalid: expected {expected}")


FIELD_HELP: dict[str, str] = {f.name: f.metadata["help"] for f in fields(TrackerSettings)}


def make_tracker(settings: TrackerSettings | None = None) -> Tracker:
    """The tracker ``settings`` describe (the defaults when None)."""
    settings = settings or TrackerSettings()
    return ByteTracker(settings)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` [N, 4] with every box of ``b`` [M, 4] (xmin, ymin, xmax, ymax)."""
    ax0, ay0, ax1, ay1 = a.T[:, :, None]
    bx0, by0, bx1, by1 = b.T[:, None, :]
    iw = np.minimum(ax1, bx1) - np.maximum(ax0, bx0)
    ih = np.minimum(ay1, by1) - np.maximum(ay0, by0)
    np.maximum(iw, 0.0, out=iw)
    np.maximum(ih, 0.0, out=ih)
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    np.maximum(union, 1e-12, out=union)   # no overlap (inter 0) where a box is empty
    return inter / union


def greedy_assign(rank: np.ndarray, threshold: float, iou: np.ndarray | None = None) -> list[tuple[int, int]]:
    """(row, column) pairs, highest ``rank`` first, each row and column used once, none whose
    ``iou`` (``rank`` itself when None) is under ``threshold``."""
    rows, cols = np.nonzero((rank if iou is None else iou) >= threshold)
    if len(rows) == 0:
        return []
    order = np.argsort(-rank[rows, cols], kind="stable")
    pairs, used_r, used_c = [], set(), set()
    for r, c in zip(rows[order].tolist(), cols[order].tolist()):
        if r not in used_r and c not in used_c:
            pairs.append((r, c))
            used_r.add(r)
            used_c.add(c)
    return pairs


class _Track:
    """One track: its centre's position and velocity (pixels, pixels per second), their covariance
    in box sizes (a = var p, b = cov p v, c = var v: the same on both axes, the noises being
    relative to the size on each), its smoothed size, its last match."""

    __slots__ = ("id", "label", "px", "py", "vx", "vy", "a", "b", "c", "w", "h", "t", "box", "score",
                 "hits", "age", "confirmed")

    def __init__(self, track_id: int, det: Detection, t: float, confirmed: bool):
        xmin, ymin, xmax, ymax = det.box
        self.id, self.label = track_id, det.label
        self.w, self.h = xmax - xmin, ymax - ymin
        self.px, self.py, self.vx, self.vy = (xmin + xmax) / 2, (ymin + ymax) / 2, 0.0, 0.0
        self.a, self.b, self.c = _MEASURE ** 2, 0.0, _VELOCITY0 ** 2
        self.t = t
        self.box: Box = det.box
        self.score = det.score
        self.hits = self.age = 1
        self.confirmed = confirmed

    def predict(self, t: float) -> Box:
        dt = t - self.t
        cx, cy, hw, hh = self.px + self.vx * dt, self.py + self.vy * dt, self.w / 2, self.h / 2
        return (cx - hw, cy - hh, cx + hw, cy + hh)

    def correct(self, det: Detection, t: float, frame_size: tuple[int, int] | None = None) -> None:
        dt = t - self.t
        if dt < 0.0:
            dt = 0.0
        xmin, ymin, xmax, ymax = box = det.box
        # A box cut by the frame's edge on one side: its other side moves with the object, its
        # centre does not (it moves at half the speed while the object enters or leaves). The
        # filter then follows the uncut side, the size on that axis is the box's own.
        cut_x = cut_y = 0
        if frame_size is not None:
            fw, fh = frame_size
            mx, my = _EDGE * fw, _EDGE * fh
            cut_x = (xmin <= mx) - (xmax >= fw - mx)
            cut_y = (ymin <= my) - (ymax >= fh - my)
        w0, h0 = self.w, self.h
        if cut_x:
            self.w = xmax - xmin
        else:
            self.w += _SIZE_ALPHA * ((xmax - xmin) - self.w)
        if cut_y:
            self.h = ymax - ymin
        else:
            self.h += _SIZE_ALPHA * ((ymax - ymin) - self.h)
        b0, c0 = self.b, self.c
        a = self.a + dt * (2 * b0 + dt * c0) + _Q3 * dt * dt * dt
        b = b0 + dt * c0 + _Q2 * dt * dt
        c = c0 + _Q * dt
        s = a + _R
        gain_p, gain_v = a / s, b / s
        x, y = self.px + self.vx * dt, self.py + self.vy * dt
        # residual of the centre, or of the uncut side (the left one when the right is cut: cut -1)
        rx = (xmin + xmax) / 2 - x if not cut_x else (xmax - x - w0 / 2 if cut_x > 0 else xmin - x + w0 / 2)
        ry = (ymin + ymax) / 2 - y if not cut_y else (ymax - y - h0 / 2 if cut_y > 0 else ymin - y + h0 / 2)
        # an outlier (a false positive taken, a box cut by the frame's edge) bends the track less
        lim = _GATE * math.sqrt(s)
        lx, ly = lim * self.w, lim * self.h
        if rx > lx or rx < -lx or ry > ly or ry < -ly:
            rx = lx if rx > lx else (-lx if rx < -lx else rx)
            ry = ly if ry > ly else (-ly if ry < -ly else ry)
        self.px, self.py = x + gain_p * rx, y + gain_p * ry
        # the uncut side where the filter puts it, the box's size inwards from it
        if cut_x:
            self.px += (w0 - self.w) / 2 * cut_x
        if cut_y:
            self.py += (h0 - self.h) / 2 * cut_y
        self.vx += gain_v * rx
        self.vy += gain_v * ry
        self.a, self.b, self.c = (1 - gain_p) * a, (1 - gain_p) * b, c - gain_v * b
        self.hits += 1
        self.t = t
        self.box, self.score = box, det.score


class ByteTracker:
    """ByteTrack-style IoU tracker, per label; see the module's description."""

    def __init__(self, settings: TrackerSettings):
        self.settings = settings
        self._tracks: list[_Track] = []
        self._ids = itertools.count(1)
        self._label_ids: dict[str, int] = {}
        self._last = -math.inf

    def _assign(self, rank: np.ndarray, iou: np.ndarray) -> list[tuple[int, int]]:
        """(track, detection) pairs, greedy on ``rank``, none whose ``iou`` is under the threshold."""
        return greedy_assign(rank, self.settings.iou_threshold, iou)

    def update(self, detections: Sequence[Detection], timestamp: float, *,
               frame_size: tuple[int, int] | None = None) -> TrackUpdate:
        s = self.settings
        horizon = timestamp - s.max_age
        ended = [_state(tr, tr.box, 0.0, None) for tr in self._tracks if tr.t < horizon]
        tracks = [tr for tr in self._tracks if tr.t >= horizon] if ended else self._tracks
        matched: dict[int, int] = {}   # track position -> detection index
        predicted: list[Box] = []
        if tracks and detections:
            predicted = [tr.predict(timestamp) for tr in tracks]
            labels = self._label_ids
            high = s.high_score
            iou = iou_matrix(_array(predicted), _array([d.box for d in detections]))
            same = (np.array([labels[tr.label] for tr in tracks])[:, None]
                    == np.array([labels.setdefault(d.label, len(labels)) for d in detections]))
            strong = np.array([d.score >= high for d in detections])
            # one greedy pass over the pairs ranked by IoU, confident detections ahead of weak ones
            # that fit no better (ByteTrack's two stages), fresh tracks ahead of coasting ones
            iou *= same
            rank = iou + _CONFIDENT * strong
            rank += _COASTING * np.array([tr.t < self._last for tr in tracks])[:, None]
            matched = dict(self._assign(rank, iou))
        self._last = timestamp
        active, kept = [], []
        min_hits = s.min_hits
        for r, tr in enumerate(tracks):
            tr.age += 1
            index = matched.get(r)
            if index is not None:
                tr.correct(detections[index], timestamp, frame_size)
                if not tr.confirmed and tr.hits >= min_hits:
                    tr.confirmed = True
                active.append(TrackedObject(tr.id, tr.label, tr.box, tr.score, index, tr.hits, tr.age, tr.confirmed))
                kept.append(tr)
            elif tr.confirmed:
                box = predicted[r] if predicted else tr.predict(timestamp)
                active.append(TrackedObject(tr.id, tr.label, box, 0.0, None, tr.hits, tr.age, True))
                kept.append(tr)
            else:
                ended.append(_state(tr, tr.box, 0.0, None))
        taken = set(matched.values())
        for i, det in enumerate(detections):
            if i not in taken and det.score >= s.high_score:
                self._label_ids.setdefault(det.label, len(self._label_ids))
                tr = _Track(next(self._ids), det, timestamp, confirmed=min_hits <= 1)
                active.append(_state(tr, tr.box, tr.score, i))
                kept.append(tr)
        self._tracks = kept
        return TrackUpdate(tuple(active), tuple(ended))

    def drain(self) -> tuple[TrackedObject, ...]:
        ended = tuple(_state(tr, tr.box, 0.0, None) for tr in self._tracks)
        self._tracks = []
        return ended


def _array(boxes: list[Box]) -> np.ndarray:
    return np.fromiter(itertools.chain.from_iterable(boxes), np.float64, 4 * len(boxes)).reshape(-1, 4)


def _state(tr: _Track, box: Box, score: float, index: int | None) -> TrackedObject:
    return TrackedObject(tr.id, tr.label, box, score, index, tr.hits, tr.age, tr.confirmed)
