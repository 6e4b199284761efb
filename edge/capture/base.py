"""The Source protocol, the Frame value, and latest-frame hand-over from a capture thread.

A capture thread reads the source as fast as it delivers and leaves only the newest frame in a
:class:`FrameSlot`: a slow model never works through a stale backlog, and every frame it did not
take is counted as dropped. Sources that are not live (a file read as fast as possible) hand over
in lock-step instead, so every frame is processed and none is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

log = logging.getLogger(__name__)

FORMATS = ("BGR", "RGB", "YUV420")


@dataclass(frozen=True, slots=True)
class Frame:
    image: np.ndarray     # HxWx3 uint8 for BGR/RGB; (H*3/2)xW uint8 (I420) for YUV420
    index: int            # sequence number at the source, from 0
    timestamp: float      # wall-clock time of capture (time.time())
    captured_ns: int      # time.monotonic_ns() at capture, for latency and frame age
    format: str = "BGR"   # colour order in memory

    @classmethod
    def captured_now(cls, image: np.ndarray, index: int, format: str = "BGR") -> Frame:
        """A frame stamped with the current wall-clock and monotonic times."""
        return cls(image, index, time.time(), time.monotonic_ns(), format)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the picture."""
        h, w = self.image.shape[:2]
        return (w, h * 2 // 3) if self.format == "YUV420" else (w, h)


class Source(Protocol):
    """A frame source. ``read`` blocks until the next frame; ``None`` means the stream ended."""

    name: str
    live: bool           # True: frames keep coming whether or not they are consumed (drop old ones)

    def open(self) -> None: ...

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...


class _EndOfStream:
    pass


END = _EndOfStream()


class FrameSlot:
    """Holds the newest frame; a frame replaced before it was taken counts as dropped."""

    def __init__(self, lockstep: bool = False, on_change: Callable[[], None] | None = None):
        # on_change: called (without the slot's lock held) after a frame or the end arrives, so that
        # a consumer of several slots can wait for any of them on a condition of its own
        self._cond = threading.Condition()
        self._on_change = on_change
        self._frame: Frame | None = None
        self._ended = False
        self._error: BaseException | None = None
        self.lockstep = lockstep
        self.captured = 0
        self.dropped = 0

    def put(self, frame: Frame, stop: threading.Event | None = None) -> None:
        with self._cond:
            if self.lockstep:
                while self._frame is not None and not (stop and stop.is_set()) and not self._ended:
                    self._cond.wait(0.1)
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self.captured += 1
            self._cond.notify_all()
        if self._on_change is not None:
            self._on_change()

    def end(self, error: BaseException | None = None) -> None:
        with self._cond:
            self._ended = True
            self._error = error
            self._cond.notify_all()
        if self._on_change is not None:
            self._on_change()

    def poll(self) -> Frame | _EndOfStream | None:
        """The newest frame, :data:`END` once the source ended and was drained, else None; never waits.
        A source that ended with an error raises it here."""
        with self._cond:
            if self._frame is None:
                if self._ended:
                    if self._error is not None:
                        raise self._error
                    return END
                return None
            frame, self._frame = self._frame, None
            self._cond.notify_all()
            return frame

    def get(self, timeout: float) -> Frame | _EndOfStream | None:
        """The newest frame, :data:`END` once the source ended and was drained, or None on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._frame is None:
                if self._ended:
                    if self._error is not None:
                        raise self._error
                    return END
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame, self._frame = self._frame, None
            self._cond.notify_all()
            return frame


class CaptureThread(threading.Thread):
    """Reads ``source`` into ``slot`` until the source ends or ``stop`` is set.

    Subclasses change what goes into the slot by overriding :meth:`deliver`.
    """

    def __init__(self, source: Source, slot: FrameSlot, stop: threading.Event):
        super().__init__(name=f"capture:{source.name}", daemon=True)
        self.source = source
        self.slot = slot
        self.stop = stop

    def run(self) -> None:
        error = None
        try:
            while not self.stop.is_set():
                frame = self.source.read()
                if frame is None:
                    log.info("source %s ended", self.source.name)
                    break
                self.deliver(frame)
        except Exception as exc:  # handed to the consumer thread, which re-raises it
            error = exc
        finally:
            self.slot.end(error)

    def deliver(self, frame: Frame) -> None:
        self.slot.put(frame, self.stop)
