"""The events layer as a pipeline sink: detections → tracker → lifecycle → listeners and files.

:class:`EventsSink` takes every :class:`~edge.results.FrameResult` on the post-processing thread.
Per camera (``result.camera`` when the result carries one, else the source's name) it keeps one
tracker and one :class:`~edge.events.lifecycle.EventLifecycle`. Its :meth:`~EventsSink.close` is
the drain: every open event gets its ``end`` (published to every listener and written to the
events file) before the file is closed, so nothing is left open after SIGTERM.

The events file (``events.jsonl``) has one line per message, written whole by
:class:`edge.telemetry.jsonl.JsonlSink` (a full disk drops and counts lines, never raises):

    {"type": "new", "before": {...}, "after": {...}}           new / update / end (Frigate's format)
    {"type": "counts", "ts": 1763900000.1, "camera": "bikes.mp4", "zone": "street", "counts": {"person": 1}}
    {"type": "crossings", "ts": 1763900000.1, "camera": "bikes.mp4", "line": "kerb",
     "counts": {"person": {"in": 2, "out": 1}}}
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable, Sequence

from edge.errors import ConfigError
from edge.events.geometry import check_geometry, for_camera
from edge.events.lifecycle import EventLifecycle
from edge.events.settings import EventsSettings
from edge.events.snapshots import SnapshotStore
from edge.events.types import EventListener, Tracker
from edge.results import FrameResult
from edge.telemetry.jsonl import JsonlSink
from edge.telemetry.stats import LogLimiter

log = logging.getLogger(__name__)


class JsonlEventListener:
    """Writes events, counts and crossings as JSON lines (see the module's docstring)."""

    wants_snapshots = False      # the file holds no pictures: no JPEG is encoded for it

    def __init__(self, path: str, source_name: str, errors: Callable[[str], None] | None = None):
        try:
            self.sink = JsonlSink(path, source_name, errors=errors)
        except ConfigError as exc:
            raise ConfigError(exc.message.replace("detections", "events", 1),
                              "choose a writable path with events.jsonl") from None

    def event(self, message: dict, snapshot: bytes | None) -> None:
        self.sink.write(message)

    def counts(self, camera: str, zone: str, counts: dict[str, int]) -> None:
        self.sink.write({"type": "counts", "ts": round(time.time(), 3), "camera": camera, "zone": zone,
                         "counts": counts})

    def crossings(self, camera: str, line: str, counts: dict[str, dict[str, int]]) -> None:
        self.sink.write({"type": "crossings", "ts": round(time.time(), 3), "camera": camera, "line": line,
                         "counts": counts})

    def close(self) -> None:
        self.sink.close()


class EventsSink:
    """The pipeline's sink for events (``publish(result)``, ``close()``).

    ``tracker_factory`` makes one tracker per camera (e.g. ``lambda: make_tracker(settings.tracker)``).
    ``listeners`` (MQTT, the web view…) get every message; the events file (``settings.jsonl``) and
    the snapshot store (``settings.snapshot_dir``) are made here unless ``snapshots`` is given
    (``False``: none). ``errors`` (e.g. ``PipelineStats.error``) is called with a kind per dropped
    line, failed snapshot or failing listener. Opening the file or the directory fails with a
    ConfigError, at construction.
    """

    def __init__(self, settings: EventsSettings, tracker_factory: Callable[[], Tracker], source_name: str, *,
                 listeners: Sequence[EventListener] = (), snapshots: SnapshotStore | None | bool = None,
                 errors: Callable[[str], None] | None = None):
        self.settings = settings
        self.tracker_factory = tracker_factory
        self.source_name = source_name
        self.errors = errors
        if snapshots is None and settings.snapshot_dir:
            snapshots = SnapshotStore(settings.snapshot_dir, max_count=settings.snapshot_max_count,
                                      max_bytes=settings.snapshot_max_bytes,
                                      max_age=settings.snapshot_max_age_days * 86400.0,
                                      quality=settings.jpeg_quality, crop=settings.crop, errors=errors)
        self.snapshots: SnapshotStore | None = snapshots if isinstance(snapshots, SnapshotStore) else None
        self.jsonl = JsonlEventListener(settings.jsonl, source_name, errors) if settings.jsonl else None
        self.listeners: list[EventListener] = ([self.jsonl] if self.jsonl else []) + list(listeners)
        # the listeners that take every frame's tracks (the optional ``tracks`` method: the web view)
        self._track_listeners = [listener.tracks for listener in self.listeners
                                 if callable(getattr(listener, "tracks", None))]
        self._warn = LogLimiter(30.0)
        self.cameras: dict[str, tuple[Tracker, EventLifecycle]] = {}
        self.frames = 0
        self._closed = False

    def _camera(self, name: str, width: int, height: int) -> tuple[Tracker, EventLifecycle]:
        found = self.cameras.get(name)
        if found is None:
            # the frame size is known only now: the camera's zones and lines must fit in it
            zones, lines = for_camera(self.settings.zones, self.settings.lines, name)
            check_geometry(zones, lines, width, height)
            settings = dataclasses.replace(self.settings, zones=zones, lines=lines)
            found = self.cameras[name] = (self.tracker_factory(),
                                          EventLifecycle(settings, name, self.listeners, self.snapshots,
                                                         errors=self.errors))
        return found

    def publish(self, result: FrameResult) -> None:
        if self._closed:
            return
        frame = result.frame
        camera = getattr(result, "camera", "") or self.source_name
        tracker, lifecycle = self._camera(camera, *frame.size)
        update = tracker.update(result.detections, frame.timestamp, frame_size=frame.size)
        lifecycle.step(update, frame)
        for tracks in self._track_listeners:
            try:
                tracks(camera, frame.index, update.active)
            except Exception as exc:         # like the lifecycle's listeners: counted, logged, the others go on
                if self.errors is not None:
                    self.errors("events_listener")
                self._warn.warning(log, "events listener %s failed: %s: %s; it goes on getting tracks",
                                   getattr(tracks, "__qualname__", tracks), type(exc).__name__, exc)
        self.frames += 1

    def close(self) -> None:
        """The drain: ``end`` for every open event of every camera, then the events file closed."""
        if self._closed:
            return
        self._closed = True
        try:
            for name, (tracker, lifecycle) in self.cameras.items():
                try:
                    ended = tracker.drain()
                except Exception as exc:        # the lifecycle still ends its events from their last state
                    log.error("draining the tracker of %s failed (%s: %s); its events end from their last state",
                              name, type(exc).__name__, exc)
                    ended = ()
                lifecycle.drain(ended)
        finally:
            if self.jsonl is not None:
                self.jsonl.close()

    # --- figures -------------------------------------------------------------------------------

    @property
    def open_events(self) -> list[str]:
        return [event_id for _, lifecycle in self.cameras.values() for event_id in lifecycle.open_events]

    @property
    def suppressed(self) -> int:
        return sum(lifecycle.suppressed for _, lifecycle in self.cameras.values())
