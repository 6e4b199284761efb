"""Bounded-memory pipeline statistics: per-stage latency windows, rates and counters.

Percentiles come from a sliding window (the last N frames, ``deque(maxlen=N)``), so memory is
constant however long the daemon runs; totals are plain counters. One lock guards all of it: the
post-processing thread records, exporters and the live line read snapshots.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

STAGES = ("preprocess", "invoke", "postprocess", "publish", "end_to_end", "frame_age")

# Named event counters, exported as ``edge_<name>_total``; PipelineStats.count(name) increments one.
# COUNTER_HELP describes them for exporters. Every counter is declared here, in one place.
COUNTERS = ["captured", "dropped", "inferred", "published", "reconnects", "tpu_fallbacks", "corrupt",
            "reloads_refused", "detector_failures"]
COUNTER_HELP = {"captured": "Frames delivered by the source.",
                "dropped": "Frames replaced by a newer one before inference took them.",
                "inferred": "Frames the model ran on.",
                "published": "Frames whose results reached every sink.",
                "reconnects": "Times the source was reopened after its end, an unplug or a read error.",
                "tpu_fallbacks": "Times inference moved from the Edge TPU to the CPU twin.",
                "corrupt": "Frames or images that did not decode and were skipped.",
                "detector_failures": "Times a detector's invoke failed (e.g. a USB Coral reset): it was taken "
                                     "out, its frame re-run on another detector.",
                "reloads_refused": "Reloads (SIGHUP) whose configuration or model did not load: the running "
                                   "pipeline was kept."}

# Upper bounds (seconds) of the cumulative latency histograms, Prometheus-style (+Inf implied).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LatencyWindow:
    """The last ``size`` samples in seconds."""

    def __init__(self, size: int = 512):
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._samples.append(seconds)

    def values(self) -> tuple[float, ...]:
        """A copy of the samples, oldest first (cheap: taken under the stats lock)."""
        return tuple(self._samples)

    def __len__(self) -> int:
        return len(self._samples)


def percentiles(samples: tuple[float, ...], qs: tuple[float, ...] = (50, 95, 99)) -> dict[float, float]:
    """{q: the q-th percentile} of ``samples`` (NaN for none), numpy's linear interpolation."""
    if not samples:
        return {q: float("nan") for q in qs}
    return dict(zip(qs, (float(v) for v in np.percentile(np.asarray(samples, dtype=float), qs))))


def stage_percentiles(windows: dict[str, tuple[float, ...]],
                      qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, dict[float, float]]:
    """:func:`percentiles` of every stage. Every frame adds one sample to each stage, so the windows
    have one length and numpy does them in one call (a third of the time of one call per stage)."""
    lengths = {len(values) for values in windows.values()}
    if len(lengths) != 1 or 0 in lengths:
        return {stage: percentiles(values, qs) for stage, values in windows.items()}
    table = np.percentile(np.array(list(windows.values()), dtype=float), qs, axis=1)   # [q, stage]
    return {stage: dict(zip(qs, (float(v) for v in table[:, i]))) for i, stage in enumerate(windows)}


class CumulativeHistogram:
    """Counts per bucket since start (not windowed), with sum and count: a Prometheus histogram."""

    def __init__(self, bounds: tuple[float, ...] = BUCKETS):
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)   # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def add(self, seconds: float) -> None:
        self._counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """[(upper bound, observations <= bound)], ending with (inf, count)."""
        out, total = [], 0
        for bound, n in zip(self.bounds + (float("inf"),), self._counts):
            total += n
            out.append((bound, total))
        return out


@dataclass(frozen=True)
class HistogramSnapshot:
    buckets: tuple[tuple[float, int], ...]
    sum: float
    count: int


class RateMeter:
    """Rate of a growing total over the last ``window`` seconds, from (time, total) observations."""

    def __init__(self, window: float = 5.0, size: int = 4096):
        self.window = window
        self._points: deque[tuple[float, int]] = deque(maxlen=size)

    def observe(self, total: int, now: float | None = None) -> None:
        self._points.append((time.monotonic() if now is None else now, total))

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        while len(self._points) > 2 and now - self._points[0][0] > self.window:
            self._points.popleft()
        if len(self._points) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._points[0], self._points[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


@dataclass(frozen=True)
class Snapshot:
    captured: int
    dropped: int
    inferred: int
    published: int
    detections: dict[str, int]
    errors: dict[str, int]
    fps_capture: float
    fps_inference: float
    fps_published: float
    latency: dict[str, dict[float, float]]   # stage -> {50: s, 95: s, 99: s}
    backend: str
    uptime: float
    histograms: dict[str, HistogramSnapshot] = field(default_factory=dict)   # stage -> since start
    counts: dict[str, int] = field(default_factory=dict)   # every name in COUNTERS -> total

    @property
    def reconnects(self) -> int:
        """Times the source was reopened after an end, unplug or error."""
        return self.counts.get("reconnects", 0)


class PipelineStats:
    """Everything the pipeline measures; :meth:`snapshot` gives a consistent copy."""

    def __init__(self, window: int = 512):
        self._lock = threading.Lock()
        self._window = window
        self.started = time.monotonic()
        self.backend = ""
        self.captured = 0
        self.dropped = 0
        self._offset = (0, 0)               # (captured, dropped) reached by earlier capture generations
        self._generation_counts = (0, 0)    # the running generation's last (captured, dropped)
        self._generation: object = None
        self.inferred = 0
        self.published = 0
        self.detections: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.latency = {stage: LatencyWindow(window) for stage in STAGES}
        self.histograms = {stage: CumulativeHistogram() for stage in STAGES}
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.rates = {name: RateMeter() for name in ("capture", "inference", "published")}
        self.cameras: dict[str, PipelineStats] = {}      # per-camera figures when several cameras run

    def camera(self, name: str) -> PipelineStats:
        """The stats of camera ``name`` (made on first use, kept across reloads)."""
        with self._lock:
            if name not in self.cameras:
                self.cameras[name] = PipelineStats(self._window)
            return self.cameras[name]

    def capture_counts(self, captured: int, dropped: int, generation: object = None) -> None:
        """The capture thread's running totals (its frame slot's counts since the slot was made).

        A reload (SIGHUP) builds a new pipeline, whose slot counts from 0 again; the totals here stay
        monotonic for the process's life: each new generation's counts are added to what the earlier
        ones reached. A generation is told by ``generation`` (e.g. the slot object) when given, else
        by a count going down.
        """
        with self._lock:
            last_c, last_d = self._generation_counts
            if (generation is not None and generation is not self._generation) or captured < last_c \
                    or dropped < last_d:
                self._offset = (self._offset[0] + last_c, self._offset[1] + last_d)
                self._generation = generation
            self._generation_counts = (captured, dropped)
            self.captured, self.dropped = self._offset[0] + captured, self._offset[1] + dropped
            self.rates["capture"].observe(self.captured)

    def inferred_frame(self) -> None:
        with self._lock:
            self.inferred += 1
            self.rates["inference"].observe(self.inferred)

    def published_frame(self, stage_seconds: dict[str, float], labels: list[str]) -> None:
        with self._lock:
            self.published += 1
            self.rates["published"].observe(self.published)
            for stage, seconds in stage_seconds.items():
                self.latency[stage].add(seconds)
                self.histograms[stage].add(seconds)
            self.detections.update(labels)

    def error(self, kind: str, n: int = 1) -> None:
        """Count ``n`` errors of ``kind`` (exported as ``edge_errors_total{kind=…}``)."""
        with self._lock:
            self.errors[kind] += n

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` (one of COUNTERS)."""
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + n

    def _counts(self) -> dict[str, int]:
        # self.counts holds every name of COUNTERS first (the frame counters are kept as attributes)
        return self.counts | process_counts() | {"captured": self.captured, "dropped": self.dropped,
                                                 "inferred": self.inferred, "published": self.published}

    def snapshot(self) -> Snapshot:
        """A consistent copy. Only copying happens under the lock, which the inference and capture
        threads take every frame; the percentiles are computed after it is released."""
        with self._lock:
            windows = {stage: w.values() for stage, w in self.latency.items()}
            fields = dict(
                captured=self.captured, dropped=self.dropped, inferred=self.inferred,
                published=self.published, detections=dict(self.detections), errors=dict(self.errors),
                fps_capture=self.rates["capture"].rate(), fps_inference=self.rates["inference"].rate(),
                fps_published=self.rates["published"].rate(),
                backend=self.backend, uptime=time.monotonic() - self.started,
                histograms={stage: HistogramSnapshot(tuple(h.cumulative()), h.sum, h.count)
                            for stage, h in self.histograms.items()},
                counts=self._counts())
        return Snapshot(latency=stage_percentiles(windows), **fields)


class LogLimiter:
    """Rate-limits a repeated warning: at most ``burst`` lines per ``period`` seconds, telling how
    many were held back since the last one (a full disk or a corrupt stream would otherwise log per frame).

    ``warning(logger, fmt, *args)`` logs now or counts; the check is one ``time.monotonic()`` call.
    """

    def __init__(self, period: float = 30.0, burst: int = 1):
        self.period = period
        self.burst = burst          # lines logged per period before holding back
        self._next = 0.0
        self._left = 0
        self._held = 0

    def warning(self, logger, fmt: str, *args) -> bool:
        """Log ``fmt % args`` at WARNING unless one was logged less than ``period`` ago; True when logged."""
        return self.log(logger, logging.WARNING, fmt, *args)

    def log(self, logger, level: int, fmt: str, *args) -> bool:
        """Log ``fmt % args`` at ``level`` unless one was logged less than ``period`` ago; True when logged."""
        now = time.monotonic()
        if now >= self._next:
            self._next, self._left = now + self.period, self.burst
        if self._left <= 0:
            self._held += 1
            return False
        self._left -= 1
        held, self._held = self._held, 0
        if held:
            logger.log(level, fmt + " (%d more like it in the last %.0f s)", *args, held, self.period)
        else:
            logger.log(level, fmt, *args)
        return True


# Counters kept where no PipelineStats is at hand (a source skipping a corrupt frame), for the
# process's life; every PipelineStats snapshot includes them (as COUNTERS names).
_process_counts: Counter[str] = Counter()
_process_lock = threading.Lock()


def count_process(name: str, n: int = 1) -> None:
    """Add ``n`` to the process-wide counter ``name`` (one of COUNTERS)."""
    with _process_lock:
        _process_counts[name] += n


def process_counts() -> dict[str, int]:
    with _process_lock:
        return dict(_process_counts)
