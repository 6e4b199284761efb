"""Synthetic multi-object tracking sequences, and their scoring with py-motmetrics.

``generate(scenario, seed)`` makes a deterministic sequence: a 1280x720 scene at 25 fps with mixed
classes (person, bicycle, car, each with its own size and speed) where objects enter from the
edges, move with a slowly wandering velocity and leave. The detections of each frame are what an
imperfect detector would give: each visible object missed with probability ``miss`` (10 %), the
box corners moved by Gaussian noise of ``noise`` (4 %) of the box size, scores from 0.35 to 0.95
(some under the tracker's high-score line), and false positives (``false_positives`` new ones per
frame on average, random class, size and place, lasting one or two frames, scores 0.3-0.6).

Scenarios:

- ``many``: 25 objects at once, moving in every direction (overlaps and crossings of all kinds);
- ``crossings``: pairs of the same class walking towards each other on one lane until their boxes
  cover each other, plus vertical movers crossing the lanes; when two boxes of one class overlap
  by more than 0.6 IoU the farther one is hidden (a detector's NMS keeps one of them);
- ``occlusions``: objects crossing the frame horizontally behind a band (a pillar) wide enough to
  hide each of them fully for about one second (0.9-1.15 s): no detection and no ground truth
  while its centre is behind the band.

The ground truth of a frame lists the visible objects (not behind the band or another box), an
object that left the frame and comes back more than ``REENTRY`` seconds later under a new id; the
tracker's hypotheses are its confirmed tracks that matched a detection that frame (what the
events layer reports as seen). ``evaluate`` scores them with motmetrics: a match needs IoU >= 0.5.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from edge.vision.decode import Detection

WIDTH, HEIGHT, FPS = 1280.0, 720.0, 25.0
SCENARIOS = ("many", "crossings", "occlusions")
BAND = (560.0, 720.0)   # the occluding band of the "occlusions" scenario, x from-to
# An object out of the frame for longer than this (seconds) that wanders back in is a new
# ground-truth track: nothing tells a tracker without appearance features it is the same object,
# and the events layer forgets a track unseen for max_age (1.5 s by default) by design.
REENTRY = 1.5

# label, class id, box width range, height / width range, speed range (pixels per second)
CLASSES = (
    ("person", 0, (36.0, 70.0), (2.2, 2.8), (40.0, 140.0)),
    ("bicycle", 1, (60.0, 90.0), (0.9, 1.2), (90.0, 200.0)),
    ("car", 2, (120.0, 200.0), (0.5, 0.7), (120.0, 300.0)),
)

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Frame:
    timestamp: float
    truth: tuple[tuple[int, str, Box], ...]   # (object id, label, box) of every visible object
    detections: tuple[Detection, ...]


@dataclass(frozen=True)
class Sequence:
    scenario: str
    seed: int
    frames: tuple[Frame, ...]

    @property
    def truth_tracks(self) -> int:
        """Ground-truth tracks: objects visible in at least one frame."""
        return len({oid for f in self.frames for oid, _, _ in f.truth})


class _Object:
    __slots__ = ("id", "label", "class_id", "x", "y", "vx", "vy", "w", "h", "turn", "seen", "out_since")

    def __init__(self, oid, cls, x, y, vx, vy, w, h, turn):
        self.id, (self.label, self.class_id) = oid, cls[:2]
        self.x, self.y, self.vx, self.vy, self.w, self.h, self.turn = x, y, vx, vy, w, h, turn
        self.seen, self.out_since = False, None   # in the frame once; out of it since (seconds)

    @property
    def box(self) -> Box:
        return (self.x - self.w / 2, self.y - self.h / 2, self.x + self.w / 2, self.y + self.h / 2)

    def gone(self) -> bool:
        """Outside the frame and moving away."""
        return ((self.x < -self.w and self.vx <= 0) or (self.x > WIDTH + self.w and self.vx >= 0)
                or (self.y < -self.h and self.vy <= 0) or (self.y > HEIGHT + self.h and self.vy >= 0))


def _clip(box: Box) -> Box | None:
    xmin, ymin, xmax, ymax = max(box[0], 0.0), max(box[1], 0.0), min(box[2], WIDTH), min(box[3], HEIGHT)
    # at least a third of the object in the frame, and a few pixels
    full = (box[2] - box[0]) * (box[3] - box[1])
    if xmax - xmin < 4 or ymax - ymin < 4 or (xmax - xmin) * (ymax - ymin) < full / 3:
        return None
    return (xmin, ymin, xmax, ymax)


def _iou(a: Box, b: Box) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


class _Scene:
    def __init__(self, scenario: str, rng: random.Random):
        self.scenario, self.rng, self.objects, self.next_id = scenario, rng, [], 1

    def _cls(self):
        return self.rng.choices(CLASSES, weights=(5, 2, 3))[0]

    def spawn(self, cls, x, y, vx, vy, turn=0.0) -> None:
        w = self.rng.uniform(*cls[2])
        self.objects.append(_Object(self.next_id, cls, x, y, vx, vy, w, w * self.rng.uniform(*cls[3]), turn))
        self.next_id += 1

    def spawn_edge(self) -> None:
        """A new object entering at a random edge, heading into the frame."""
        cls, rng = self._cls(), self.rng
        speed = rng.uniform(*cls[4])
        side = rng.randrange(4)
        heading = rng.uniform(-0.6, 0.6) + (0, math.pi / 2, math.pi, -math.pi / 2)[side]
        x = (-40.0, rng.uniform(100, WIDTH - 100), WIDTH + 40.0, rng.uniform(100, WIDTH - 100))[side]
        y = (rng.uniform(80, HEIGHT - 80), -40.0, rng.uniform(80, HEIGHT - 80), HEIGHT + 40.0)[side]
        self.spawn(cls, x, y, speed * math.cos(heading), speed * math.sin(heading), turn=0.3)

    def step(self, dt: float) -> None:
        for o in self.objects:
            if o.turn:   # a slowly wandering heading, the speed kept
                angle = self.rng.gauss(0.0, o.turn * math.sqrt(dt))
                c, s = math.cos(angle), math.sin(angle)
                o.vx, o.vy = c * o.vx - s * o.vy, s * o.vx + c * o.vy
            o.x += o.vx * dt
            o.y += o.vy * dt
        self.objects = [o for o in self.objects if not o.gone()]


def _populate(scene: _Scene, t: float, dt: float) -> None:
    rng = scene.rng
    if scene.scenario == "many":
        if t == 0.0:   # a full scene at the start
            for _ in range(25):
                cls = scene._cls()
                speed, heading = rng.uniform(*cls[4]), rng.uniform(-math.pi, math.pi)
                scene.spawn(cls, rng.uniform(80, WIDTH - 80), rng.uniform(80, HEIGHT - 80),
                            speed * math.cos(heading), speed * math.sin(heading), turn=0.3)
        while len(scene.objects) < 25:
            scene.spawn_edge()
    elif scene.scenario == "crossings":
        if rng.random() < dt / 0.4:   # a crossing pair every 0.4 s on average, on a free lane
            cls = rng.choices(CLASSES, weights=(5, 2, 2))[0]
            y = rng.uniform(90, HEIGHT - 90)
            speed = rng.uniform(*cls[4])
            if any(o.label == cls[0] and o.vy == 0 and abs(o.y - y) < o.h for o in scene.objects):
                return   # two pairs on one lane would walk together, not cross
            scene.spawn(cls, -60.0, y, speed, 0.0)
            scene.spawn(cls, WIDTH + 60.0, y + rng.uniform(-8, 8), -speed * rng.uniform(0.8, 1.2), 0.0)
        if rng.random() < dt / 2.0:   # a vertical mover every two seconds
            cls = scene._cls()
            speed = rng.uniform(*cls[4]) * rng.choice((1, -1))
            scene.spawn(cls, rng.uniform(100, WIDTH - 100), -60.0 if speed > 0 else HEIGHT + 60.0, 0.0, speed)
    elif scene.scenario == "occlusions":
        if rng.random() < dt / 0.5:   # two objects a second, from either side
            cls = scene._cls()
            speed = rng.uniform(140.0, 170.0) * rng.choice((1, -1))
            x = -100.0 if speed > 0 else WIDTH + 100.0
            scene.spawn(cls, x, rng.uniform(90, HEIGHT - 90), speed, rng.uniform(-8, 8))
    else:
        raise ValueError(f"scenario {scene.scenario!r} is unknown: expected one of {', '.join(SCENARIOS)}")


def _visible(scene: _Scene, t: float) -> list[tuple[_Object, Box]]:
    shown = []
    for o in scene.objects:
        if scene.scenario == "occlusions" and BAND[0] <= o.x <= BAND[1]:
            continue
        box = _clip(o.box)
        if box is None:   # out of the frame (not hidden behind something)
            if o.seen and o.out_since is None:
                o.out_since = t
            continue
        if o.out_since is not None and t - o.out_since > REENTRY:   # back after long: a new track
            o.id = scene.next_id
            scene.next_id += 1
        o.seen, o.out_since = True, None
        shown.append((o, box))
    if scene.scenario == "crossings":   # the farther (higher in the frame) of two overlapping boxes is hidden
        hidden = set()
        for i, (a, ba) in enumerate(shown):
            for b, bb in shown[i + 1:]:
                if a.label == b.label and _iou(ba, bb) > 0.6:
                    hidden.add(a.id if a.box[3] < b.box[3] else b.id)
        shown = [(o, box) for o, box in shown if o.id not in hidden]
    return shown


def generate(scenario: str, seed: int = 0, seconds: float = 60.0, miss: float = 0.10,
             noise: float = 0.04, false_positives: float = 0.3) -> Sequence:
    """A deterministic sequence of ``scenario`` (see the module's description)."""
    rng = random.Random(f"{scenario}/{seed}")
    scene, dt = _Scene(scenario, rng), 1.0 / FPS
    fakes: list[tuple[int, Detection]] = []   # (frames left, detection)
    frames = []
    for n in range(int(round(seconds * FPS))):
        t = n * dt
        _populate(scene, t, dt)
        truth, dets = [], []
        for o, box in _visible(scene, t):
            truth.append((o.id, o.label, box))
            if rng.random() < miss:
                continue
            w, h = box[2] - box[0], box[3] - box[1]
            noisy = (box[0] + rng.gauss(0, noise * w), box[1] + rng.gauss(0, noise * h),
                     box[2] + rng.gauss(0, noise * w), box[3] + rng.gauss(0, noise * h))
            dets.append(Detection(o.label, o.class_id, rng.uniform(0.35, 0.95), noisy))
        for _ in range(np.random.default_rng(rng.getrandbits(32)).poisson(false_positives)):
            cls = rng.choice(CLASSES)
            w = rng.uniform(*cls[2])
            x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - 2 * w)
            box = (x, y, x + w, y + w * rng.uniform(*cls[3]))
            fakes.append((rng.choice((1, 2)), Detection(cls[0], cls[1], rng.uniform(0.3, 0.6), box)))
        dets.extend(d for _, d in fakes)
        fakes = [(left - 1, d) for left, d in fakes if left > 1]
        rng.shuffle(dets)
        frames.append(Frame(t, tuple(truth), tuple(dets)))
        scene.step(dt)
    return Sequence(scenario, seed, tuple(frames))


def _distances(truth: Iterable[Box], hyps: Iterable[Box], min_iou: float = 0.5) -> np.ndarray:
    """motmetrics' distance matrix: 1 - IoU, NaN (no match possible) under ``min_iou``."""
    a, b = np.array(list(truth), float).reshape(-1, 4), np.array(list(hyps), float).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    union = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None] + ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :] - inter
    iou = inter / np.maximum(union, 1e-9)
    return np.where(iou >= min_iou, 1.0 - iou, np.nan)


@dataclass(frozen=True)
class Scores:
    scenario: str
    mota: float
    idf1: float
    switches: int
    truth_tracks: int

    @property
    def switches_per_100(self) -> float:
        return 100.0 * self.switches / self.truth_tracks


def run(tracker, sequence: Sequence):
    """Feed ``sequence`` to ``tracker``; yields (frame, hypotheses [(track id, box)]) per frame."""
    for frame in sequence.frames:
        update = tracker.update(frame.detections, frame.timestamp, frame_size=(int(WIDTH), int(HEIGHT)))
        hyps = [(o.id, frame.detections[o.detection].box) for o in update.active
                if o.confirmed and o.detection is not None]
        yield frame, hyps


def evaluate(tracker, sequence: Sequence) -> Scores:
    """MOTA, IDF1 and ID switches of ``tracker`` on ``sequence`` (the box of a hypothesis is its
    matched detection's; per-class identity is the tracker's job, so matching ignores labels)."""
    import motmetrics as mm   # dev dependency: only the tests and the benchmark score tracks

    acc = mm.MOTAccumulator(auto_id=True)
    for frame, hyps in run(tracker, sequence):
        acc.update([oid for oid, _, _ in frame.truth], [hid for hid, _ in hyps],
                   _distances([box for _, _, box in frame.truth], [box for _, box in hyps]))
    summary = mm.metrics.create().compute(acc, metrics=["mota", "idf1", "num_switches"], name=sequence.scenario)
    row = summary.iloc[0]
    return Scores(sequence.scenario, float(row["mota"]), float(row["idf1"]), int(row["num_switches"]),
                  sequence.truth_tracks)
