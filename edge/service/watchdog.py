"""The systemd watchdog tied to frame progress.

``WATCHDOG=1`` is sent from the pipeline's post-processing thread when a frame has been published,
never from a timer: if the camera hangs, the source stalls or an Edge TPU invoke never returns, no
frame completes, the pings stop, and systemd (``WatchdogSec=``) kills and restarts the service.
Pings are rate-limited to a quarter of the watchdog period, so a fast pipeline does not flood the
manager and a slow one still pings well inside the period.
"""

from __future__ import annotations

import time

from edge.results import FrameResult
from edge.service.notify import Notifier
from edge.telemetry.stats import PipelineStats, Snapshot


def status_line(snap: Snapshot, stalled_for: float = 0.0) -> str:
    """The STATUS= text: what ``systemctl status`` shows under the unit."""
    text = (f"{snap.fps_published:.1f} fps on {snap.backend or '?'}, {snap.published} frames, "
            f"{snap.dropped} dropped, {snap.reconnects} reconnects")
    if stalled_for:
        text += f"; no frame for {stalled_for:.0f} s"
    return text


class FrameWatchdog:
    """A pipeline ``on_published`` callback: pings systemd as frames complete."""

    def __init__(self, notifier: Notifier, period: float | None, *, clock=time.monotonic):
        self.notifier = notifier
        self.period = period
        self.min_interval = period / 4 if period else 0.0
        self.clock = clock
        self.last_frame = clock()
        self.last_ping = float("-inf")
        self.pings = 0

    def __call__(self, result: FrameResult | None = None) -> None:
        now = self.clock()
        self.last_frame = now
        self._ping(now)

    def keepalive(self) -> None:
        """Ping without a frame: only while the service is knowingly recovering (source reconnects)."""
        self._ping(self.clock())

    def _ping(self, now: float) -> None:
        """WATCHDOG=1, at most every ``min_interval`` seconds."""
        if self.period is None or now - self.last_ping < self.min_interval:
            return
        if self.notifier.watchdog():
            self.last_ping = now
            self.pings += 1

    def stalled_for(self) -> float:
        """Seconds since the last frame completed."""
        return self.clock() - self.last_frame


class StatusReporter:
    """Rate-limited STATUS= updates with FPS, backend, counters, and a stall note."""

    def __init__(self, notifier: Notifier, stats: PipelineStats, interval: float = 5.0):
        self.notifier = notifier
        self.stats = stats
        self.interval = interval
        self._last = float("-inf")

    def maybe_report(self, stalled_for: float, now: float | None = None, note: str = "") -> bool:
        now = time.monotonic() if now is None else now
        if now - self._last < self.interval:
            return False
        self._last = now
        stall = stalled_for if stalled_for >= self.interval else 0.0
        text = status_line(self.stats.snapshot(), stall)
        return self.notifier.status(f"{text}; {note}" if note else text)
