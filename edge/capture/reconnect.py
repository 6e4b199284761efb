"""A Source wrapper that survives its source: end of stream, unplug, read errors → reopen.

A daemon must not end because a camera was unplugged, a stream server restarted or a file was
replaced. :class:`ReconnectingSource` turns an end (``read`` returned None) or a
:class:`~edge.errors.SourceError` into close → wait → open, with exponential backoff and jitter
(so many devices do not hammer a restarting server in step), until it succeeds or ``stop`` is set.
Every successful reopen is counted (``on_reconnect``, the ``reconnects`` metric) and logged.

A read that blocks forever is not detected here: no frame completes, the frame-progress watchdog
stops pinging and systemd restarts the service (see :mod:`edge.service.watchdog`). Drivers and
FFmpeg turn most hangs into errors themselves (V4L2 select timeout, FFmpeg's read timeout), which
land here. While an outage is being handled, :attr:`outage_since` and :attr:`opening_since` tell
the service that the process is busy recovering rather than hung, so that it keeps the watchdog
fed unless a single ``open`` itself hangs.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable

from edge.capture.base import Frame, Source
from edge.errors import SourceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """Delays before reopen attempts: ``initial × 2^attempt`` capped at ``maximum``, with jitter."""

    initial: float = 0.5
    maximum: float = 30.0
    jitter: float = 0.5       # the delay is drawn from [(1 - jitter) × d, d]

    def ceiling(self, attempt: int) -> float:
        """The longest delay before attempt number ``attempt`` (from 0)."""
        return min(self.maximum, self.initial * (2 ** min(attempt, 32)))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        draw = (rng or random).random()
        return self.ceiling(attempt) * (1.0 - self.jitter * draw)


class ReconnectingSource:
    """Wraps ``inner``; frames are renumbered so indices keep increasing across reconnects."""

    def __init__(self, inner: Source, backoff: Backoff = Backoff(), *, stop: threading.Event | None = None,
                 on_reconnect: Callable[[], None] | None = None, rng: random.Random | None = None):
        self.inner = inner
        self.name = inner.name
        self.live = inner.live
        self.backoff = backoff
        self.stop = stop or threading.Event()
        self.on_reconnect = on_reconnect
        self.rng = rng or random.Random()
        self.reconnects = 0
        self.failed_attempts = 0
        self.outage_since: float | None = None    # time.monotonic() when frames stopped; None: delivering
        self.opening_since: float | None = None   # time.monotonic() when the running open() began
        self.last_error = ""
        self._index = 0

    def open(self) -> None:
        self.inner.open()

    def read(self) -> Frame | None:
        """The next frame, reopening the source as often as it takes; None only once stopped."""
        while not self.stop.is_set():
            try:
                frame = self.inner.read()
            except SourceError as exc:
                reason = str(exc)
            else:
                if frame is not None:
                    self.outage_since = None
                    frame = dataclasses.replace(frame, index=self._index)
                    self._index += 1
                    return frame
                reason = "end of stream"
            if self.stop.is_set():
                break
            log.warning("source %s: %s; reconnecting", self.name, reason)
            self.last_error = reason
            if self.outage_since is None:
                self.outage_since = time.monotonic()
            self._reopen()
        return None

    def _reopen(self) -> None:
        self.inner.close()
        attempt = 0
        while True:
            delay = self.backoff.delay(attempt, self.rng)
            if self.stop.wait(delay):
                return
            self.opening_since = time.monotonic()
            try:
                self.inner.open()
            except SourceError as exc:
                self.opening_since = None
                self.last_error = str(exc)
                attempt += 1
                self.failed_attempts += 1
                log.warning("source %s: reopen attempt %d failed (%s); next in up to %.1f s", self.name,
                            attempt, exc, self.backoff.ceiling(attempt))
                continue
            self.opening_since = None
            self.reconnects += 1
            log.info("source %s reopened after %d failed attempt(s) (reconnect #%d)", self.name, attempt,
                     self.reconnects)
            if self.on_reconnect is not None:
                self.on_reconnect()
            return

    def close(self) -> None:
        self.stop.set()
        self.inner.close()
