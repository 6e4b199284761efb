"""An image folder as a source (calibration, evaluation, stills): files in name order."""

from __future__ import annotations

from pathlib import Path

import cv2

from edge.capture.base import Frame
from edge.errors import SourceError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


class ImageFolderSource:
    """Every image of a folder, once (or looping); not live, so none is dropped."""

    def __init__(self, folder: str | Path, *, loop: bool = False):
        self.folder = Path(folder)
        self.name = self.folder.name or str(self.folder)
        self.live = False
        self.loop = loop
        self._files: list[Path] = []
        self._index = 0

    def open(self) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"image folder {str(self.folder)!r} does not exist")
        self._files = list_images(self.folder)
        if not self._files:
            raise SourceError(f"image folder {str(self.folder)!r} holds no images",
                              f"expected files ending in {', '.join(sorted(IMAGE_SUFFIXES))}")
        self._index = 0

    def read(self) -> Frame | None:
        if self._index >= len(self._files) and not (self.loop and self._files):
            return None
        path = self._files[self._index % len(self._files)]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise SourceError(f"cannot decode image {str(path)!r}", "remove it or convert it to JPEG/PNG")
        frame = Frame.captured_now(image, self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        self._files = []
