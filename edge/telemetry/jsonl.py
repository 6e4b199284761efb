"""JSONL detection events: one line per frame that has detections.

Each line is written whole and flushed, so every line in the file is valid JSON even if the
process is killed mid-run.

    {"ts": 1763900000.123, "frame": 42, "source": "bikes.mp4", "width": 640, "height": 272,
     "detections": [{"label": "person", "class_id": 0, "score": 0.87, "box": [x0, y0, x1, y1]}]}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

from edge.errors import ConfigError
from edge.pipeline import FrameResult


def event(result: FrameResult, source: str) -> dict:
    width, height = result.frame.size
    return {"ts": round(result.frame.timestamp, 3), "frame": result.frame.index, "source": source,
            "width": width, "height": height, "detections": [d.as_dict() for d in result.detections]}


class JsonlSink:
    def __init__(self, path: str | Path, source: str):
        self.path = Path(path)
        self.source = source
        self.lines = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: TextIO | None = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write detections to {str(self.path)!r}: {exc.strerror}",
                              "choose a writable path with --jsonl") from None

    def publish(self, result: FrameResult) -> None:
        if not result.detections or self._file is None:
            return
        self._file.write(json.dumps(event(result, self.source), separators=(",", ":")) + "\n")
        self._file.flush()
        self.lines += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
