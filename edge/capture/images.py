"""An image folder as a source (calibration, evaluation, stills): files in name order.

An image that cannot be read or decoded is skipped with a warning and counted
(``edge_frames_corrupt_total``), not taken as the end of the folder. The picture size is read from
the file's header before anything is decoded (PNG, JPEG, BMP, WebP, PPM/PGM), so that a header
claiming 100000×100000 pixels is refused without allocating them; OpenCV's own limit
(``OPENCV_IO_MAX_IMAGE_PIXELS``, set here when OpenCV is first imported) covers the other formats.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

MAX_IMAGE_PIXELS = 1 << 26      # 67 MP (201 MB as BGR): above any Pi camera's stills, below a Pi's memory
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))   # effective when cv2 is not yet loaded

import cv2  # noqa: E402

from edge.capture.base import Frame  # noqa: E402
from edge.errors import SourceError  # noqa: E402
from edge.telemetry.stats import LogLimiter, count_process  # noqa: E402

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
HEADER_BYTES = 64 * 1024        # JPEG's SOF can follow EXIF and thumbnails; further than this: unknown


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 <= len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:                       # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:   # no length
            i += 2
            continue
        (length,) = struct.unpack(">H", head[i + 2:i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):   # SOFn
            height, width = struct.unpack(">HH", head[i + 5:i + 9])
            return width, height
        i += 2 + length
    return None


def header_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from the first bytes of a PNG, JPEG, BMP, WebP or PPM/PGM file; None: not known."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(head)
    if head[:2] == b"BM" and len(head) >= 26:
        width, height = struct.unpack("<ii", head[18:26])
        return abs(width), abs(height)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        kind = head[12:16]
        if kind == b"VP8X":
            return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
        if kind == b"VP8L":
            bits = int.from_bytes(head[21:25], "little")
            return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        if kind == b"VP8 ":
            width, height = struct.unpack("<HH", head[26:30])
            return width & 0x3FFF, height & 0x3FFF
    if head[:2] in (b"P5", b"P6"):
        fields = head[2:200].split(b"\n")
        numbers = [int(t) for line in fields if not line.startswith(b"#") for t in line.split() if t.isdigit()]
        if len(numbers) >= 2:
            return numbers[0], numbers[1]
    return None


def read_image(path: Path, max_pixels: int = MAX_IMAGE_PIXELS):
    """The image as BGR, or raise ValueError/OSError saying why it cannot be (size checked before decoding)."""
    with path.open("rb") as f:
        head = f.read(HEADER_BYTES)
    size = header_size(head)
    if size is not None and size[0] * size[1] > max_pixels:
        raise ValueError(f"its header claims {size[0]}x{size[1]} pixels, more than the limit of {max_pixels}")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("OpenCV cannot decode it")
    return image


class ImageFolderSource:
    """Every image of a folder, once (or looping); not live, so none is dropped."""

    def __init__(self, folder: str | Path, *, loop: bool = False, max_pixels: int = MAX_IMAGE_PIXELS):
        self.folder = Path(folder)
        self.name = self.folder.name or str(self.folder)
        self.live = False
        self.loop = loop
        self.max_pixels = max_pixels
        self.skipped = 0
        self._files: list[Path] = []
        self._index = 0          # frames delivered
        self._next = 0           # the next file to read (counting loops)
        self._warn = LogLimiter(10.0, burst=10)   # a few bad files each named; a folder of them, not

    def open(self) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"image folder {str(self.folder)!r} does not exist")
        self._files = list_images(self.folder)
        if not self._files:
            raise SourceError(f"image folder {str(self.folder)!r} holds no images",
                              f"expected files ending in {', '.join(sorted(IMAGE_SUFFIXES))}")
        self._index = self._next = 0

    def read(self) -> Frame | None:
        failed_in_a_row = 0
        while self._next < len(self._files) or (self.loop and self._files):
            path = self._files[self._next % len(self._files)]
            self._next += 1
            try:
                image = read_image(path, self.max_pixels)
            except (OSError, ValueError, cv2.error) as exc:
                self.skipped += 1
                count_process("corrupt")
                self._warn.warning(log, "skipping image %s: %s", str(path), exc)
                failed_in_a_row += 1
                if failed_in_a_row >= len(self._files):     # a whole pass: nothing here decodes
                    break
                continue
            frame = Frame.captured_now(image, self._index)
            self._index += 1
            return frame
        if self._index == 0:
            raise SourceError(f"image folder {str(self.folder)!r} holds no decodable image "
                              f"({self.skipped} skipped)", "convert them to JPEG or PNG")
        return None

    def close(self) -> None:
        self._files = []
