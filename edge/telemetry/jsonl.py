"""JSONL detection events: one line per frame that has detections.

Each line is written whole (one ``write`` on an ``O_APPEND`` descriptor; a short or failed write is cut
back to the last complete line), so every line in the file is valid JSON even if the process is
killed mid-run or the disk fills; a line that cannot be written is dropped and counted, never raised.
With ``max_bytes`` the file rotates by size (``file`` → ``file.1`` → … ``file.N``, the oldest
dropped) before a line would make it larger; with ``stats_interval`` a
stats line (``{"type": "stats", …}``, see :mod:`edge.telemetry.stats_payload`) is written that often and
once at the end. An event's ``camera`` is the frame's camera (its ``[[cameras]]`` name; the source's
name for one source); ``source`` is the name the sink was made with, as before.

    {"ts": 1763900000.123, "frame": 42, "source": "bikes.mp4", "camera": "bikes.mp4", "width": 640,
     "height": 272, "detections": [{"label": "person", "class_id": 0, "score": 0.87, "box": [x0, y0, x1, y1]}]}
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

from edge.errors import ConfigError
from edge.results import FrameResult
from edge.telemetry.stats import LogLimiter

log = logging.getLogger(__name__)


def event(result: FrameResult, source: str) -> dict:
    width, height = result.frame.size
    return {"ts": round(result.frame.timestamp, 3), "frame": result.frame.index, "source": source,
            "camera": result.camera or source, "width": width, "height": height,
            "detections": [d.as_dict() for d in result.detections]}


# (detections, frame index, timestamp, source, camera, line) of the last event encoded by event_line
_last_event: tuple = ((), -1, 0.0, "", "", "")


def event_line(result: FrameResult, source: str) -> str:
    """The event as compact JSON, without newline; ASCII only (``json.dumps`` escapes the rest).

    The JSONL sink and the MQTT exporter both send it for the same frame, one after the other on
    the publishing thread, so it is encoded once per frame: the last line is kept, keyed by the
    detections tuple (held, so its identity cannot be reused), the frame, the source and the camera.
    """
    global _last_event
    frame = result.frame
    detections, index, timestamp, last_source, camera, line = _last_event
    if (detections is result.detections and index == frame.index and timestamp == frame.timestamp
            and last_source == source and camera == result.camera):
        return line
    line = json.dumps(event(result, source), separators=(",", ":"))
    _last_event = (result.detections, frame.index, frame.timestamp, source, result.camera, line)
    return line


class JsonlSink:
    """Appends whole lines to ``path``; a write that fails never reaches the pipeline.

    Lines go out with one ``os.write`` on an ``O_APPEND`` descriptor (no userspace buffer that could
    keep half a line). A short or failed write (ENOSPC, EIO, a quota) is cut back to the last complete
    line with ``ftruncate``, the event is dropped and counted (``edge_errors_total{kind="jsonl_write"}``),
    a warning is logged at most every ``WARN_PERIOD`` seconds, and the next event tries again, so
    writing resumes by itself when space returns. The file deleted or replaced under the sink (found
    at rotation, after a failed write, or by one ``stat`` every ``CHECK_PERIOD`` seconds) is reopened
    at its path. On open, a file whose last line is torn (no final newline: a full disk, a crash of an
    older version) is cut back to its last complete line, so no event is glued onto the torn one.
    """

    WARN_PERIOD = 30.0
    CHECK_PERIOD = 1.0

    def __init__(self, path: str | Path, source: str, *, max_bytes: int = 0, backups: int = 3,
                 stats: Callable[[], dict] | None = None, stats_interval: float = 0.0,
                 errors: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.source = source
        self.max_bytes = max_bytes
        self.backups = backups
        self.stats = stats
        self.stats_interval = stats_interval if stats is not None else 0.0
        self.errors = errors            # e.g. PipelineStats.error: called with "jsonl_write" per dropped line
        self.dropped = 0
        self._warn = LogLimiter(self.WARN_PERIOD)
        self._next_stats = time.monotonic() + self.stats_interval
        self._next_check = time.monotonic() + self.CHECK_PERIOD
        self._fd: int | None = None
        self._size = 0
        self._closed = False
        try:
            self._open()
        except OSError as exc:
            raise ConfigError(f"cannot write detections to {str(self.path)!r}: {exc.strerror}",
                              "choose a writable path with --jsonl") from None

    def _open(self) -> None:
        """Open (create) the file for appending and cut a torn last line; raises OSError."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            size = os.fstat(fd).st_size
            whole = last_line_end(self.path, size)
            if whole < size:
                os.ftruncate(fd, whole)
                log.warning("%s ended in a torn line (%d bytes without a newline); cut back to its last "
                            "complete line", self.path, size - whole)
        except OSError:
            os.close(fd)
            raise
        self._fd, self._size = fd, whole

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError as exc:
                log.debug("closing %s: %s", self.path, exc)

    def _reopen(self, why: str) -> bool:
        """Close and open the path again (a deleted or replaced file); False when that fails too."""
        self._close_fd()
        try:
            self._open()
        except OSError as exc:
            self._warn.warning(log, "cannot reopen %s (%s): %s; events are dropped until it can be",
                               self.path, why, exc.strerror)
            return False
        log.warning("%s %s; writing to a new file at that path", self.path, why)
        return True

    def _replaced(self) -> bool:
        """True when the path no longer names the open file (deleted, renamed, replaced)."""
        try:
            here, there = os.fstat(self._fd), os.stat(self.path)
        except OSError:
            return True
        return (here.st_ino, here.st_dev) != (there.st_ino, there.st_dev)

    def _rotate(self) -> None:
        self._close_fd()
        try:
            for i in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        except OSError as exc:     # e.g. the active file deleted: rotation skipped, a new file started
            self._warn.warning(log, "rotating %s failed: %s", self.path, exc)
            if self.errors is not None:
                self.errors("jsonl_rotate")
        self._open_quietly()

    def _open_quietly(self) -> None:
        try:
            self._open()
        except OSError as exc:
            self._warn.warning(log, "cannot open %s: %s; events are dropped until it can be", self.path,
                               exc.strerror)

    def write(self, record: dict) -> None:
        """Append one whole line."""
        self._write_line(json.dumps(record, separators=(",", ":")))

    def _write_line(self, text: str) -> None:
        """Append ``text`` (JSON from ``json.dumps``, hence ASCII: one byte a character) as one line."""
        if self._closed:
            return
        now = time.monotonic()
        if self._fd is None or now >= self._next_check:
            self._next_check = now + self.CHECK_PERIOD
            if self._fd is None:
                self._open_quietly()
            elif self._replaced():
                self._reopen("was deleted or replaced")
            if self._fd is None:
                self._drop("no open file")
                return
        data = (text + "\n").encode("ascii")
        size = len(data)
        if self.max_bytes and self._size and self._size + size > self.max_bytes:
            self._rotate()
            if self._fd is None:
                self._drop("no open file")
                return
        try:
            written = os.write(self._fd, data)
            while written < size:      # a short write: the rest, or the error that explains it
                written += os.write(self._fd, data[written:])
        except OSError as exc:
            self._cut_back()
            self._drop(exc.strerror or str(exc))
            return
        self._size += size

    def _cut_back(self) -> None:
        """Truncate to the end of the last complete line (after a short or failed write)."""
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as exc:
            log.debug("cannot truncate %s: %s", self.path, exc)
        if self._replaced():
            self._reopen("was deleted or replaced")

    def _drop(self, reason: str) -> None:
        self.dropped += 1
        if self.errors is not None:
            self.errors("jsonl_write")
        self._warn.warning(log, "cannot write to %s (%s): event dropped, %d so far; writing resumes "
                           "when it can", self.path, reason, self.dropped)

    def _write_stats(self) -> None:
        self.write({"type": "stats", **self.stats()})

    def publish(self, result: FrameResult) -> None:
        if self.stats_interval:
            now = time.monotonic()
            if now >= self._next_stats:
                self._next_stats = now + self.stats_interval
                self._write_stats()
        if result.detections:
            self._write_line(event_line(result, self.source))

    def close(self) -> None:
        if self._closed:
            return
        if self.stats_interval:
            self._write_stats()
        self._closed = True
        self._close_fd()
        if self.dropped:
            log.warning("%s: %d event(s) could not be written and were dropped", self.path, self.dropped)


def last_line_end(path: Path, size: int, chunk: int = 65536) -> int:
    """The offset just past the last newline of the first ``size`` bytes of ``path`` (0: none)."""
    if size == 0:
        return 0
    with path.open("rb") as f:
        end = size
        while end > 0:
            start = max(0, end - chunk)
            f.seek(start)
            block = f.read(end - start)
            i = block.rfind(b"\n")
            if i >= 0:
                return start + i + 1
            end = start
    return 0
