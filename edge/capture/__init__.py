"""Frame sources. :func:`make_source` turns a ``--source`` value into a :class:`Source`.

Each kind lives in its own module and registers one factory in :data:`KINDS`; the first whose
``matches`` accepts the value builds the source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edge.capture.base import END, CaptureThread, Frame, FrameSlot, Source
from edge.config import SourceConfig
from edge.errors import SourceError
from edge.resources import sample_clip

__all__ = ["END", "CaptureThread", "Frame", "FrameSlot", "Source", "make_source", "KINDS"]


@dataclass(frozen=True)
class Kind:
    name: str
    matches: Callable[[str], bool]
    build: Callable[[str, SourceConfig], Source]
    example: str


def _video_file(uri: str, cfg: SourceConfig) -> Source:
    from edge.capture.opencv import VideoFileSource
    path = sample_clip() if uri == "sample" else Path(uri)
    return VideoFileSource(path, realtime=cfg.realtime, loop=cfg.loop)


def _camera(uri: str, cfg: SourceConfig) -> Source:
    from edge.capture.opencv import CameraSource
    device: int | str = int(uri) if uri.isdigit() else uri
    return CameraSource(device, width=cfg.width, height=cfg.height, fps=cfg.fps)


def _images(uri: str, cfg: SourceConfig) -> Source:
    from edge.capture.images import ImageFolderSource
    return ImageFolderSource(uri, loop=cfg.loop)


def _picamera2(uri: str, cfg: SourceConfig) -> Source:
    from edge.capture.picamera2 import Picamera2Source
    camera = int(uri.split(":", 1)[1]) if ":" in uri else 0
    return Picamera2Source(camera, width=cfg.width, height=cfg.height, fps=cfg.fps)


def _stream(uri: str, cfg: SourceConfig) -> Source:
    from edge.capture.opencv import StreamSource
    return StreamSource(uri)


KINDS: list[Kind] = [
    Kind("sample", lambda u: u == "sample", _video_file, "sample"),
    Kind("picamera2", lambda u: re.fullmatch(r"picamera2(:\d+)?", u) is not None, _picamera2,
         "picamera2 or picamera2:1"),
    Kind("camera", lambda u: u.isdigit() or re.fullmatch(r"/dev/video\d+", u) is not None, _camera,
         "0 or /dev/video0"),
    Kind("stream", lambda u: re.match(r"^(rtsps?|rtmp|https?|udp|tcp)://", u) is not None, _stream,
         "rtsp://host/stream"),
    Kind("images", lambda u: Path(u).is_dir(), _images, "frames/"),
    Kind("file", lambda u: Path(u).is_file(), _video_file, "clip.mp4"),
]


def make_source(cfg: SourceConfig) -> Source:
    uri = cfg.uri.strip()
    for kind in KINDS:
        if kind.matches(uri):
            return kind.build(uri, cfg)
    examples = ", ".join(f"{k.name} ({k.example})" for k in KINDS)
    if not Path(uri).exists():
        raise SourceError(f"source {uri!r} is not an existing file or a known source form",
                          f"valid sources: {examples}")
    raise SourceError(f"source {uri!r} is not a readable source", f"valid sources: {examples}")
