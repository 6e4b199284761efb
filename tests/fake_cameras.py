"""Two (or more) cameras through the real :class:`edge.pipeline.Scheduler` with fakes for the parts that
need hardware: a source yielding numbered frames, a backend that echoes its input, and a post-processing
step that gives each camera its own detections (camera i: ``labels[i]`` per frame), so per-camera
telemetry can be checked against known totals."""

from __future__ import annotations

import time

import numpy as np

from edge.capture.base import Frame
from edge.pipeline import Camera, Detector, Scheduler
from edge.telemetry.stats import PipelineStats
from edge.vision.decode.base import Detection


class Source:
    live = False

    def __init__(self, name: str, frames: int):
        self.name, self.frames, self.i = name, frames, 0

    def open(self) -> None: ...

    def read(self) -> Frame | None:
        if self.i >= self.frames:
            return None
        frame = Frame(np.zeros((48, 64, 3), np.uint8), self.i, time.time(), time.monotonic_ns())
        self.i += 1
        return frame

    def close(self) -> None: ...


class Backend:
    name = "cpu"
    input_shape = (1, 2, 2, 3)

    def __init__(self, seconds: float = 0.001):
        self.seconds = seconds
        self._input = np.zeros(self.input_shape, np.uint8)

    def input_view(self):
        return self._input

    def invoke(self) -> None:
        time.sleep(self.seconds)

    def outputs(self):
        return (self._input.reshape(-1)[:3].copy(),)

    def close(self) -> None: ...


def _preprocess(frame, out):
    out[...] = 0
    return None


def scheduler(labels: dict[str, tuple[str, ...]], frames: int, sinks: list | None = None,
              stats: PipelineStats | None = None) -> Scheduler:
    """A scheduler of one camera per ``labels`` entry (name → the labels detected in each of its frames),
    ``frames`` frames each, on one fake detector; every camera publishes to ``sinks``."""
    def postprocess(names):
        return lambda outputs, transform: tuple(Detection(n, 0, 0.9, (1.0, 2.0, 30.0, 40.0)) for n in names)
    cameras = [Camera(name, Source(name, frames), _preprocess, postprocess(names), list(sinks or []))
               for name, names in labels.items()]
    return Scheduler(cameras, [Detector("cpu", {"": Backend()})], stats)
