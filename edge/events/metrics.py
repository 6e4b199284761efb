"""Prometheus metrics of the events layer: a custom collector that is also an events listener.

The listener methods (:class:`edge.events.types.EventListener`) run on the post-processing thread and
only update a few dictionaries under a lock; :meth:`EventMetrics.collect` builds the families from a
copy of them on the scrape thread. Families:

- ``edge_zone_objects{camera,zone,label}`` (gauge): objects now in the zone (zone ``all``: the frame);
- ``edge_line_crossings_total{camera,line,label,direction}`` (counter; direction ``in``/``out``);
- ``edge_events_total{camera,label,type}`` (counter; type ``new``/``update``/``end``);
- ``edge_track_duration_seconds{camera,label}`` (histogram): ``end_time - start_time`` of ended events.

The crossing counts the listener receives are cumulative for the events layer's life; when they go
down (a new events layer after a reload starts from zero) the counter carries on from where it was,
so it stays monotonic for the process's life like the pipeline's counters.

A message the metrics cannot read (no camera or label, an unknown type, an end without finite times)
is counted as the ``event_metrics`` error and logged at most every 30 s; it never raises to the caller.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from edge.telemetry.stats import LogLimiter, PipelineStats

log = logging.getLogger(__name__)

EVENT_TYPES = ("new", "update", "end")
DURATION_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, math.inf)


class EventMetrics:
    """Counts, crossings, events and track durations; register it on a ``CollectorRegistry``."""

    wants_snapshots = False     # the lifecycle encodes no JPEG for this listener

    def __init__(self, stats: PipelineStats, buckets: tuple[float, ...] = DURATION_BUCKETS):
        if list(buckets) != sorted(buckets) or len(set(buckets)) != len(buckets) or buckets[-1] != math.inf:
            raise ValueError(f"track-duration buckets {buckets!r} must increase and end with inf")
        self.stats = stats
        self.buckets = tuple(buckets)
        self._lock = threading.Lock()
        self._warn = LogLimiter(30.0)
        self._zones: dict[tuple[str, str, str], int] = {}
        self._crossings: dict[tuple[str, str, str, str], list[int]] = {}   # key → [carried over, last reported]
        self._events: Counter[tuple[str, str, str]] = Counter()
        self._durations: dict[tuple[str, str], list] = {}                  # (camera, label) → [counts per bucket, sum]

    def register(self, registry) -> EventMetrics:
        """Add the collector to ``registry`` (e.g. ``PrometheusExporter.registry``); returns self."""
        registry.register(self)
        return self

    def _error(self, what: str, exc: Exception) -> None:
        self.stats.error("event_metrics")
        self._warn.warning(log, "event metrics: %s not counted: %s: %s", what, type(exc).__name__, exc)

    # -- the listener (post-processing thread)

    def event(self, message: dict, snapshot: bytes | None) -> None:
        try:
            kind, after = message["type"], message["after"]
            if kind not in EVENT_TYPES:
                raise ValueError(f"type {kind!r} is not one of {', '.join(EVENT_TYPES)}")
            key = (str(after["camera"]), str(after["label"]))
            duration = None
            if kind == "end":
                start, end = after["start_time"], after["end_time"]
                if not (isinstance(start, (int, float)) and isinstance(end, (int, float))
                        and math.isfinite(start) and math.isfinite(end) and end >= start):
                    raise ValueError(f"start_time {start!r} and end_time {end!r} are not finite times in order")
                duration = float(end - start)
            with self._lock:
                self._events[(*key, kind)] += 1
                if duration is not None:
                    counts, _ = entry = self._durations.setdefault(key, [[0] * len(self.buckets), 0.0])
                    counts[next(i for i, bound in enumerate(self.buckets) if duration <= bound)] += 1
                    entry[1] += duration
        except Exception as exc:     # the listener boundary: a bad message never stops the events layer
            self._error(f"event {message.get('type') if isinstance(message, dict) else message!r}", exc)

    def counts(self, camera: str, zone: str, counts: dict[str, int]) -> None:
        try:
            rows = {(camera, zone, str(label)): int(n) for label, n in counts.items()}
            with self._lock:
                self._zones.update(rows)
        except Exception as exc:
            self._error(f"counts of zone {zone!r}", exc)

    def crossings(self, camera: str, line: str, counts: dict[str, dict[str, int]]) -> None:
        try:
            rows = {(camera, line, str(label), direction): int(by_direction[direction])
                    for label, by_direction in counts.items() for direction in ("in", "out")}
            with self._lock:
                for key, n in rows.items():
                    carried = self._crossings.setdefault(key, [0, 0])
                    if n < carried[1]:          # counting started again: keep the counter monotonic
                        carried[0] += carried[1]
                    carried[1] = n
        except Exception as exc:
            self._error(f"crossings of line {line!r}", exc)

    # -- the collector (scrape thread)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            zones = sorted(self._zones.items())
            crossings = sorted((key, base + last) for key, (base, last) in self._crossings.items())
            events = sorted(self._events.items())
            durations = sorted((key, list(counts), total) for key, (counts, total) in self._durations.items())
        gauge = GaugeMetricFamily("edge_zone_objects", "Objects now in a zone (zone \"all\": the whole frame), "
                                  "by camera, zone and label.", labels=["camera", "zone", "label"])
        for values, n in zones:
            gauge.add_metric(list(values), n)
        yield gauge
        lines = CounterMetricFamily("edge_line_crossings", "Objects that crossed a line, by camera, line, label "
                                    "and direction (in/out).", labels=["camera", "line", "label", "direction"])
        for values, n in crossings:
            lines.add_metric(list(values), n)
        yield lines
        counter = CounterMetricFamily("edge_events", "Events published, by camera, label and type "
                                      "(new/update/end).", labels=["camera", "label", "type"])
        for values, n in events:
            counter.add_metric(list(values), n)
        yield counter
        histogram = HistogramMetricFamily("edge_track_duration_seconds", "How long ended events lasted "
                                          "(end_time - start_time), by camera and label.", labels=["camera", "label"])
        for values, counts, total in durations:
            cumulative, running = [], 0
            for bound, n in zip(self.buckets, counts):
                running += n
                cumulative.append(("+Inf" if math.isinf(bound) else repr(bound), running))
            histogram.add_metric(list(values), cumulative, total)
        yield histogram
