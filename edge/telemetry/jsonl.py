"""JSONL detection events: one line per frame that has detections.

Each line is written whole and flushed, so every line in the file is valid JSON even if the
process is killed mid-run. With ``max_bytes`` the file rotates by size (``file`` → ``file.1`` →
… ``file.N``, the oldest dropped) before a line would make it larger; with ``stats_interval`` a
stats line (``{"type": "stats", …}``, see :mod:`edge.telemetry.report`) is written that often and
once at the end.

    {"ts": 1763900000.123, "frame": 42, "source": "bikes.mp4", "width": 640, "height": 272,
     "detections": [{"label": "person", "class_id": 0, "score": 0.87, "box": [x0, y0, x1, y1]}]}
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, TextIO

from edge.errors import ConfigError
from edge.pipeline import FrameResult


def event(result: FrameResult, source: str) -> dict:
    width, height = result.frame.size
    return {"ts": round(result.frame.timestamp, 3), "frame": result.frame.index, "source": source,
            "width": width, "height": height, "detections": [d.as_dict() for d in result.detections]}


# (detections, frame index, timestamp, source, line) of the last event encoded by event_line
_last_event: tuple = ((), -1, 0.0, "", "")


def event_line(result: FrameResult, source: str) -> str:
    """The event as compact JSON, without newline; ASCII only (``json.dumps`` escapes the rest).

    The JSONL sink and the MQTT exporter both send it for the same frame, one after the other on
    the publishing thread, so it is encoded once per frame: the last line is kept, keyed by the
    detections tuple (held, so its identity cannot be reused), the frame and the source.
    """
    global _last_event
    frame = result.frame
    detections, index, timestamp, last_source, line = _last_event
    if (detections is result.detections and index == frame.index and timestamp == frame.timestamp
            and last_source == source):
        return line
    line = json.dumps(event(result, source), separators=(",", ":"))
    _last_event = (result.detections, frame.index, frame.timestamp, source, line)
    return line


class JsonlSink:
    def __init__(self, path: str | Path, source: str, *, max_bytes: int = 0, backups: int = 3,
                 stats: Callable[[], dict] | None = None, stats_interval: float = 0.0):
        self.path = Path(path)
        self.source = source
        self.max_bytes = max_bytes
        self.backups = backups
        self.stats = stats
        self.stats_interval = stats_interval if stats is not None else 0.0
        self._next_stats = time.monotonic() + self.stats_interval
        self._file: TextIO | None = None
        self._open()

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write detections to {str(self.path)!r}: {exc.strerror}",
                              "choose a writable path with --jsonl") from None
        self._size = self._file.tell()

    def _rotate(self) -> None:
        self._file.close()
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._open()

    def write(self, record: dict) -> None:
        """Append one whole line and flush it."""
        self._write_line(json.dumps(record, separators=(",", ":")))

    def _write_line(self, text: str) -> None:
        """Append ``text`` (JSON from ``json.dumps``, hence ASCII: one byte a character) and flush."""
        if self._file is None:
            return
        data = text + "\n"
        size = len(data)
        if self.max_bytes and self._size and self._size + size > self.max_bytes:
            self._rotate()
        self._file.write(data)
        self._file.flush()
        self._size += size

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
        if self._file is not None:
            if self.stats_interval:
                self._write_stats()
            self._file.close()
            self._file = None
