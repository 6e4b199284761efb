"""Calibration frames for post-training quantization: a video, an image folder (flat, or one
subfolder per class), or a .npy file.

Frames go through the device's own :class:`~edge.vision.preprocess.Preprocessor` (the same
code, not a copy) into the float model's input, so calibration sees exactly what the device feeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from edge.capture.base import Frame, Source
from edge.capture.images import ImageFolderSource, list_images
from edge.capture.opencv import VideoFileSource
from edge.errors import ConfigError, SourceError
from edge.runtime.manifest import InputSpec
from edge.runtime.model import TensorInfo
from edge.vision.preprocess import Preprocessor


def labelled_images(folder: Path) -> list[tuple[Path, int]]:
    """(image, class index) of a folder with one subfolder per class (class index: the subfolder's
    position in name order), interleaved across classes so any prefix samples every class."""
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    per_class = [[(f, i) for f in list_images(d)] for i, d in enumerate(classes)]
    out = []
    for row in range(max((len(files) for files in per_class), default=0)):
        out.extend(files[row] for files in per_class if row < len(files))
    return out


class _LabelledFolderSource(ImageFolderSource):
    """The images of a class-per-subfolder folder (see :func:`labelled_images`), once."""

    def open(self) -> None:
        self._files = [path for path, _ in labelled_images(self.folder)]
        if not self._files:
            raise SourceError(f"folder {self.name!r} holds no images and no class subfolders with images")
        self._index = 0


def _source(path: Path) -> Source:
    if path.is_dir():
        if not list_images(path) and any(p.is_dir() for p in path.iterdir()):
            return _LabelledFolderSource(path)
        return ImageFolderSource(path)
    return VideoFileSource(path, realtime=False)


def frames(path: str | Path, *, stride: int = 1, offset: int = 0, limit: int = 0) -> Iterator[Frame]:
    """Frames ``offset, offset+stride, ...`` of a video or image folder (at most ``limit``)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"calibration data {str(path)!r} does not exist",
                          "give a video file, an image folder or a .npy array")
    source = _source(path)
    source.open()
    taken = 0
    try:
        while limit <= 0 or taken < limit:
            frame = source.read()
            if frame is None:
                break
            if frame.index >= offset and (frame.index - offset) % stride == 0:
                taken += 1
                yield frame
    finally:
        source.close()


def float_inputs(path: str | Path, spec: InputSpec, size: tuple[int, int], *, stride: int = 1,
                 offset: int = 0, limit: int = 0) -> Iterator[np.ndarray]:
    """[1, H, W, 3] float32 model inputs, normalised as ``spec`` says (or read from a .npy file)."""
    path = Path(path)
    width, height = size
    if path.suffix == ".npy":
        data = np.load(path)
        if data.ndim != 4 or data.shape[1:] != (height, width, 3):
            raise ConfigError(f"calibration array {str(path)!r} has shape {list(data.shape)}",
                              f"expected [N, {height}, {width}, 3], already normalised")
        for i in range(offset, len(data) if limit <= 0 else min(len(data), offset + limit * stride), stride):
            yield data[i:i + 1].astype(np.float32)
        return
    tensor = TensorInfo(0, "calibration", (1, height, width, 3), "FLOAT32", None)
    pre = Preprocessor(spec, tensor, (1, height, width, 3))
    for frame in frames(path, stride=stride, offset=offset, limit=limit):
        out = np.empty((1, height, width, 3), np.float32)
        pre(frame, out)
        yield out


def representative_dataset(path: str | Path, spec: InputSpec, size: tuple[int, int], *, samples: int,
                           stride: int = 1, progress: bool = True) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The converter's ``representative_dataset``; fails early when there is no data at all."""
    def generate() -> Iterator[list[np.ndarray]]:
        inputs = float_inputs(path, spec, size, stride=stride, limit=samples)
        if progress:
            from tqdm import tqdm
            inputs = tqdm(inputs, total=samples, desc="calibrating", unit="frame", leave=False)
        count = 0
        for x in inputs:
            count += 1
            yield [x]
        if count == 0:
            raise ConfigError(f"calibration data {str(path)!r} yielded no frames")
    return generate
