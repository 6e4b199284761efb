"""From tracks to events: new → update… → end, zones with inertia, stationary objects, line
crossings and current counts, in Frigate's ``frigate/events`` message format.

Per camera one :class:`EventLifecycle` takes each frame's :class:`~edge.events.types.TrackUpdate`:

* A track becomes an event (``new``) once the tracker confirmed it, it was detected in at least
  ``min_frames`` frames and its top score reached ``min_score``. A track lost before that is a
  flicker: nothing is published for it (counted in ``suppressed``), and line crossings it made are
  dropped with it.
* ``update`` when its current zones change, when it becomes stationary or moves again, and when its
  top score rose (with a new best snapshot; at most once per ``update_every`` frames per track).
* ``end`` when the tracker loses it, when the tracker's prediction of it (coasting without a
  detection) lies wholly outside the picture, and for every open event at
  :meth:`EventLifecycle.drain` (shutdown): no event is left open. ``end_time`` is when it was last
  detected; ``box`` is always the last detected box, never a prediction. A track that left the
  picture and is detected again starts a new event.

Zones and lines test the bottom centre of the box, on frames where the track matched a detection
(a coasting track's predicted box neither enters, leaves nor crosses). A zone's ``inertia`` is the
number of consecutive frames inside (outside) needed to enter (leave) it. Counts per zone and
label cover the events (not the unconfirmed tracks) now in the zone; the zone ``all`` is the
whole frame. Crossings are cumulative per line, label and direction.

Listeners are called on the calling (post-processing) thread; one that raises is logged (at most
every 30 s) and counted, and the others still get the message.
"""

from __future__ import annotations

import logging
import secrets
import string
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from edge.capture.base import Frame
from edge.events.geometry import WHOLE_FRAME, Point, reference_point
from edge.events.settings import EventsSettings
from edge.events.snapshots import SnapshotStore, draw_box, encode_jpeg, to_bgr
from edge.events.types import Box, EventListener, TrackedObject, TrackUpdate
from edge.telemetry.stats import LogLimiter

log = logging.getLogger(__name__)

_SUFFIX = string.ascii_lowercase + string.digits


def new_event_id(start_time: float) -> str:
    """Frigate's form: the start time with 6 decimals, '-', 6 random lowercase letters or digits."""
    return f"{max(0.0, start_time):.6f}-" + "".join(secrets.choice(_SUFFIX) for _ in range(6))


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class _Best:
    score: float
    frame_time: float
    box: Box
    image: np.ndarray | None       # BGR copy, until encoded


@dataclass
class _Event:
    id: str
    track: int
    label: str
    start_time: float
    frame_time: float
    last_seen: float
    box: Box
    score: float
    top_score: float = 0.0
    hits: int = 0
    age: int = 0
    confirmed: bool = False
    zones: dict[str, list] = field(default_factory=dict)   # zone -> [present, frames against it]
    current_zones: list[str] = field(default_factory=list)
    entered_zones: list[str] = field(default_factory=list)
    stationary: bool = False
    stationary_box: Box | None = None
    motionless_count: int = 0
    position_changes: int = 0
    sides: dict[str, tuple[int, Point]] = field(default_factory=dict)   # line -> last side, point
    pending_crossings: list[tuple[str, str]] = field(default_factory=list)   # (line, direction)
    best: _Best | None = None
    snapshot_score: float = -1.0    # the published snapshot's score, unrounded
    best_published_age: int = -10 ** 9
    snapshot: dict | None = None
    has_snapshot: bool = False
    after: dict | None = None       # the last message's "after"
    published_zones: tuple[str, ...] = ()
    published_stationary: bool = False


class EventLifecycle:
    """Events of one camera. ``step`` once per frame, ``drain`` once at the end."""

    def __init__(self, settings: EventsSettings, camera: str, listeners: Sequence[EventListener] = (),
                 snapshots: SnapshotStore | None = None, *, encode_snapshots: bool | None = None,
                 errors: Callable[[str], None] | None = None):
        self.settings = settings
        self.camera = camera
        self.listeners = list(listeners)
        self.snapshots = snapshots
        # JPEGs are made when a store keeps them or a listener takes them (the JSONL one does not)
        self.encode_snapshots = (encode_snapshots if encode_snapshots is not None else
                                 snapshots is not None or any(getattr(listener, "wants_snapshots", True)
                                                              for listener in self.listeners))
        self.errors = errors
        self.suppressed = 0          # tracks lost before they became events
        self.published = {"new": 0, "update": 0, "end": 0}
        self.last_time = 0.0
        self._events: dict[int, _Event] = {}
        self._left: set[int] = set()     # tracks whose event ended when they left the picture
        self._warn = LogLimiter(30.0)
        self._zones = settings.zones
        self._lines = settings.lines
        self.counts: dict[str, dict[str, int]] = {WHOLE_FRAME: {}}
        for zone in self._zones:
            self.counts[zone.name] = dict.fromkeys(zone.labels, 0)
        self.crossings: dict[str, dict[str, dict[str, int]]] = {
            line.name: {label: {"in": 0, "out": 0} for label in line.labels} for line in self._lines}
        self._published_counts: dict[str, dict[str, int]] = {}
        self._published_crossings: dict[str, dict[str, dict[str, int]]] = {}

    # --- per frame -----------------------------------------------------------------------------

    def step(self, update: TrackUpdate, frame: Frame) -> None:
        now = frame.timestamp
        self.last_time = now
        width, height = frame.size
        for track in update.active:
            event = self._events.get(track.id)
            if track.id in self._left:
                if track.detection is None:
                    continue                    # still coasting out of view: its event has ended
                self._left.discard(track.id)    # seen again: a new event
            if event is None:
                event = self._events[track.id] = _Event(new_event_id(now), track.id, track.label, now, now, now,
                                                        track.box, track.score)
            self._observe(event, track, frame, now)
            if not event.confirmed:
                if (track.confirmed and event.hits >= self.settings.min_frames
                        and event.top_score >= self.settings.min_score):
                    self._confirm(event, now)
            else:
                self._maybe_update(event, now)
            if track.detection is None and _outside(track.box, width, height):
                # predicted wholly out of the picture: it left, whatever the tracker's coasting time
                del self._events[track.id]
                self._left.add(track.id)
                self._finish(event, None, now)
        for track in update.ended:
            self._left.discard(track.id)
            event = self._events.pop(track.id, None)
            if event is not None:
                self._finish(event, track, now)
        self._publish_counts()

    def drain(self, ended: Sequence[TrackedObject] = ()) -> None:
        """End every open event (shutdown): ``ended`` are the tracker's last states (its
        ``drain()``); events it did not return end with their last known state."""
        now = self.last_time
        for track in ended:
            event = self._events.pop(track.id, None)
            if event is not None:
                self._finish(event, track, now)
        for event in list(self._events.values()):
            self._finish(event, None, now)
        self._events.clear()
        self._publish_counts()

    @property
    def open_events(self) -> list[str]:
        """Ids of the events published as new and not yet ended."""
        return [e.id for e in self._events.values() if e.confirmed]

    # --- a track's state -------------------------------------------------------------------------

    def _observe(self, event: _Event, track: TrackedObject, frame: Frame, now: float) -> None:
        event.frame_time = now
        event.hits, event.age = track.hits, track.age
        if track.detection is None:           # coasting: no zone/line/still test, the last seen box kept
            return
        event.box = track.box
        event.last_seen = now
        event.score = track.score
        if track.score > event.top_score:
            event.top_score = track.score
            if self.encode_snapshots:
                event.best = _Best(track.score, now, track.box, to_bgr(frame.image, frame.format).copy())
            else:
                event.best = _Best(track.score, now, track.box, None)
        self._zones_of(event)
        self._lines_of(event)
        self._stillness(event)

    def _zones_of(self, event: _Event) -> None:
        x, y = reference_point(event.box)
        for zone in self._zones:
            if not zone.applies_to(event.label):
                continue
            state = event.zones.setdefault(zone.name, [False, 0])
            inside = zone.contains(x, y)
            if inside == state[0]:
                state[1] = 0
                continue
            state[1] += 1
            if state[1] >= zone.inertia:
                state[0], state[1] = inside, 0
                if inside:
                    event.current_zones.append(zone.name)
                    if zone.name not in event.entered_zones:
                        event.entered_zones.append(zone.name)
                else:
                    event.current_zones.remove(zone.name)

    def _lines_of(self, event: _Event) -> None:
        p = reference_point(event.box)
        for line in self._lines:
            if not line.applies_to(event.label):
                continue
            side = line.side(p)
            if side == 0:
                continue                    # on the line: wait until it is on a side
            last = event.sides.get(line.name)
            if last is not None and last[0] != side:
                direction = line.crossing(last[1], p)
                if direction is not None:
                    if event.confirmed:
                        self._count_crossing(line.name, event.label, direction)
                    else:
                        event.pending_crossings.append((line.name, direction))
            event.sides[line.name] = (side, p)

    def _count_crossing(self, line: str, label: str, direction: str) -> None:
        self.crossings[line].setdefault(label, {"in": 0, "out": 0})[direction] += 1

    def _stillness(self, event: _Event) -> None:
        if event.stationary_box is not None and iou(event.box, event.stationary_box) > self.settings.stationary_iou:
            event.motionless_count += 1
        else:
            if event.stationary:
                event.position_changes += 1
            event.stationary_box = event.box
            event.motionless_count = 0
        event.stationary = event.motionless_count >= self.settings.stationary_frames

    # --- messages ------------------------------------------------------------------------------

    def _confirm(self, event: _Event, now: float) -> None:
        event.confirmed = True
        for line, direction in event.pending_crossings:
            self._count_crossing(line, event.label, direction)
        event.pending_crossings.clear()
        jpeg = self._take_snapshot(event)
        self._emit("new", event, now, jpeg)

    def _maybe_update(self, event: _Event, now: float) -> None:
        changed = (tuple(event.current_zones) != event.published_zones
                   or event.stationary != event.published_stationary)
        jpeg = None
        if (event.best is not None and event.best.score > event.snapshot_score
                and event.age - event.best_published_age >= self.settings.update_every):
            jpeg = self._take_snapshot(event)
            changed = True
        if changed:
            self._emit("update", event, now, jpeg)

    def _finish(self, event: _Event, track: TrackedObject | None, now: float) -> None:
        if not event.confirmed:
            self.suppressed += 1
            return
        if track is not None and track.detection is not None:
            event.box, event.score, event.last_seen = track.box, track.score, now
        jpeg = None
        if event.best is not None and event.best.score > event.snapshot_score:
            jpeg = self._take_snapshot(event)
        self._emit("end", event, now, jpeg)

    def _take_snapshot(self, event: _Event) -> bytes | None:
        """The best frame so far as the event's snapshot: stored, and its JPEG for the listeners."""
        best = event.best
        if best is None:
            return None
        event.best_published_age = event.age
        event.snapshot_score = best.score
        event.snapshot = {"frame_time": round(best.frame_time, 6), "box": _int_box(best.box),
                          "area": _area(best.box), "region": _int_box(best.box), "score": round(best.score, 4),
                          "attributes": []}
        jpeg = None
        if best.image is not None:
            if self.snapshots is not None:
                jpeg = self.snapshots.save(event.id, best.image, best.box, event.label, best.score)
                event.has_snapshot = self.snapshots.has(event.id)
            else:
                try:
                    jpeg = encode_jpeg(draw_box(best.image, best.box, event.label, best.score),
                                       self.settings.jpeg_quality)
                except ValueError as exc:
                    self._warn.warning(log, "cannot encode the snapshot of %s: %s", event.id, exc)
            best.image = None              # encoded: the copy of the frame is no longer held
        return jpeg

    def _side(self, event: _Event, now: float, end_time: float | None) -> dict:
        box = _int_box(event.box)
        w, h = box[2] - box[0], box[3] - box[1]
        return {"id": event.id, "camera": self.camera, "frame_time": round(now, 6), "label": event.label,
                "sub_label": None, "top_score": round(event.top_score, 4), "score": round(event.score, 4),
                "false_positive": False, "start_time": round(event.start_time, 6), "end_time": end_time,
                "box": box, "area": max(0, w) * max(0, h), "ratio": round(w / h, 4) if h > 0 else 0.0,
                "region": list(box), "current_zones": list(event.current_zones),
                "entered_zones": list(event.entered_zones), "thumbnail": None,
                "has_snapshot": event.has_snapshot, "has_clip": False, "active": not event.stationary,
                "stationary": event.stationary, "motionless_count": event.motionless_count,
                "position_changes": event.position_changes, "attributes": {},
                "snapshot": dict(event.snapshot) if event.snapshot is not None else None}

    def _emit(self, kind: str, event: _Event, now: float, jpeg: bytes | None) -> None:
        after = self._side(event, now, round(event.last_seen, 6) if kind == "end" else None)
        before = dict(after) if event.after is None else event.after
        event.after = after
        event.published_zones = tuple(event.current_zones)
        event.published_stationary = event.stationary
        self.published[kind] += 1
        message = {"type": kind, "before": before, "after": after}
        for listener in self.listeners:
            self._call(listener.event, message, jpeg)

    def _publish_counts(self) -> None:
        live = [e for e in self._events.values() if e.confirmed]
        counts = self.counts
        for labels in counts.values():
            for label in labels:
                labels[label] = 0
        for event in live:
            whole = counts[WHOLE_FRAME]
            whole[event.label] = whole.get(event.label, 0) + 1
            for zone in event.current_zones:
                counts[zone][event.label] = counts[zone].get(event.label, 0) + 1
        for zone, labels in counts.items():
            if self._published_counts.get(zone) != labels:
                self._published_counts[zone] = dict(labels)
                for listener in self.listeners:
                    self._call(listener.counts, self.camera, zone, dict(labels))
        for line, labels in self.crossings.items():
            if self._published_crossings.get(line) != labels:
                self._published_crossings[line] = {k: dict(v) for k, v in labels.items()}
                for listener in self.listeners:
                    self._call(listener.crossings, self.camera, line, {k: dict(v) for k, v in labels.items()})

    def _call(self, method: Callable, *args) -> None:
        try:
            method(*args)
        except Exception as exc:
            if self.errors is not None:
                self.errors("events_listener")
            if self._warn.warning(log, "events listener %s failed: %s: %s; it goes on getting events",
                                  getattr(method, "__qualname__", method), type(exc).__name__, exc):
                log.debug("listener failure", exc_info=True)


def _outside(box: Box, width: int, height: int) -> bool:
    return box[2] <= 0 or box[0] >= width or box[3] <= 0 or box[1] >= height


def _int_box(box: Box) -> list[int]:
    return [int(round(v)) for v in box]


def _area(box: Box) -> int:
    x0, y0, x1, y1 = _int_box(box)
    return max(0, x1 - x0) * max(0, y1 - y0)
