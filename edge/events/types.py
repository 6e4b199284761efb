"""The types the events layer's parts share: tracked objects, a tracker update, and listeners."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from edge.vision.decode import Detection

Box = tuple[float, float, float, float]     # xmin, ymin, xmax, ymax in frame pixels


@dataclass(frozen=True, slots=True)
class TrackedObject:
    """One track after a tracker update."""

    id: int                 # unique for the tracker's life, never reused
    label: str
    box: Box                # the track's box this frame (the matched detection's, or predicted)
    score: float            # score of the detection matched this frame; 0.0 when none matched
    detection: int | None   # index of the matched detection in this frame's list; None: coasting
    hits: int               # frames with a matched detection since the track began
    age: int                # frames since the track began
    confirmed: bool         # hits reached the tracker's min_hits


@dataclass(frozen=True, slots=True)
class TrackUpdate:
    active: tuple[TrackedObject, ...]   # tracks alive after this frame (confirmed or not)
    ended: tuple[TrackedObject, ...]    # tracks lost at this frame (their last state)


class Tracker(Protocol):
    def update(self, detections: Sequence[Detection], timestamp: float, *,
               frame_size: tuple[int, int] | None = None) -> TrackUpdate:
        """Associate this frame's detections with the tracks; ``timestamp`` in seconds,
        ``frame_size`` (width, height) in pixels when known (boxes cut by the frame's edge)."""

    def drain(self) -> tuple[TrackedObject, ...]:
        """End every track (at shutdown): their last states; the tracker is empty afterwards."""


class EventListener(Protocol):
    """Receives the events layer's output on the post-processing thread; must not block."""

    def event(self, message: dict, snapshot: bytes | None) -> None:
        """A Frigate-style message {"type": new|update|end, "before": {...}, "after": {...}}, and the
        best snapshot's JPEG (with the box drawn) when it changed, else None."""

    def counts(self, camera: str, zone: str, counts: dict[str, int]) -> None:
        """Objects now in ``zone`` per label (all labels ever seen there, 0 included), on change.
        The zone "all" is the whole frame."""

    def crossings(self, camera: str, line: str, counts: dict[str, dict[str, int]]) -> None:
        """Cumulative crossings of ``line``: {label: {"in": n, "out": m}}, on change."""

    # Optional: a listener that also has
    #     def tracks(self, camera: str, frame_index: int, active: tuple[TrackedObject, ...]) -> None
    # gets every frame's tracks after the tracker's update (the web view draws their ids); it is
    # called once per frame and camera, so it must only keep a reference.
