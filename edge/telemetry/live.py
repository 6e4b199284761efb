"""The live status line: FPS, latency percentiles, watts, J/inference, temperature, detections.

With several cameras the FPS is the total, followed by each camera's inference FPS in brackets:
``29.8 fps [front 15.0 back 14.8] | invoke p50 …``.

On a terminal the line is redrawn in place a few times a second; otherwise (a pipe, the journal)
one line is logged every ``interval`` seconds so logs stay readable.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import TextIO

from edge.results import FrameResult
from edge.telemetry.stats import PipelineStats, Snapshot
from edge.telemetry.stats_payload import camera_snapshots
from edge.telemetry.system import SystemMonitor, SystemSample

log = logging.getLogger("edge.live")


def format_system(sample: SystemSample | None) -> str:
    """`` | 4.2 W 0.084 J/inf | 54.6 °C``: only what is available."""
    if sample is None:
        return ""
    parts = []
    if not math.isnan(sample.watts):
        jpi = sample.joules_per_inference
        watts = sample.watts if math.isnan(sample.watts_avg) else sample.watts_avg    # averaged: PMIC is noisy
        parts.append(f"{watts:.2f} W" + ("" if math.isnan(jpi) else f" {jpi:.3f} J/inf"))
    if sample.temperatures:
        parts.append(f"{sample.max_celsius:.1f} °C")
    if sample.throttle is not None and sample.throttle.throttled.now:
        parts.append("THROTTLED " + ",".join(sorted(sample.throttle.throttled.now)))
    return "".join(" | " + p for p in parts)


def format_cameras(cameras: dict[str, Snapshot] | None) -> str:
    """`` [front 15.0 back 14.8]``: each camera's inference FPS; "" for none (one camera)."""
    if not cameras:
        return ""
    return " [" + " ".join(f"{name} {snap.fps_inference:.1f}" for name, snap in cameras.items()) + "]"


def format_line(snap: Snapshot, sample: SystemSample | None = None,
                cameras: dict[str, Snapshot] | None = None) -> str:
    e2e = snap.latency["end_to_end"]
    inv = snap.latency["invoke"]
    people = ", ".join(f"{label} {n}" for label, n in sorted(snap.detections.items())) or "none yet"
    return (f"{snap.fps_inference:5.1f} fps{format_cameras(cameras)} | invoke p50 {inv[50] * 1e3:5.1f} ms p95 {inv[95] * 1e3:5.1f} ms"
            f" | end-to-end p50 {e2e[50] * 1e3:5.1f} ms p95 {e2e[95] * 1e3:5.1f} ms"
            f"{format_system(sample)} | frames {snap.inferred} dropped {snap.dropped} | detections: {people}")


class LiveLine:
    def __init__(self, stats: PipelineStats, stream: TextIO | None = None, *, tty: bool | None = None,
                 interval: float | None = None, system: SystemMonitor | None = None):
        self.stats = stats
        self.system = system
        self.stream = sys.stderr if stream is None else stream   # looked up now: it may have been redirected
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval if interval is not None else (0.25 if self.tty else 10.0)
        self._next = time.monotonic() + self.interval
        self._drawn = False

    def publish(self, result: FrameResult) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval
        self._draw()

    def _draw(self) -> None:
        line = format_line(self.stats.snapshot(), self.system.latest() if self.system else None,
                           camera_snapshots(self.stats))
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
            self.stream.flush()
            self._drawn = True
        else:
            log.info("%s", line)

    def close(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
