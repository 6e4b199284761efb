"""What the pipeline hands on: per-frame timings, the frame result, and the sink protocol.

These sit below the pipeline so that sinks, telemetry and the web view take results without
importing the loop that makes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from edge.capture.base import Frame
from edge.vision.decode import Detection


@dataclass(frozen=True, slots=True)
class Timings:
    """time.monotonic_ns() marks of one frame through the pipeline."""

    captured: int
    taken: int          # inference thread took the frame; preprocessing starts
    invoke_start: int
    invoke_end: int
    decoded: int
    published: int = 0
    prepare_ns: int = 0  # preprocessing done before the inference thread took the frame (capture thread)

    def stages(self) -> dict[str, float]:
        """Seconds per stage, as recorded in histograms."""
        return {"frame_age": (self.taken - self.captured) / 1e9,
                "preprocess": (self.prepare_ns + self.invoke_start - self.taken) / 1e9,
                "invoke": (self.invoke_end - self.invoke_start) / 1e9,
                "postprocess": (self.decoded - self.invoke_end) / 1e9,
                "publish": (self.published - self.decoded) / 1e9,
                "end_to_end": (self.published - self.captured) / 1e9}


@dataclass(frozen=True, slots=True)
class FrameResult:
    frame: Frame
    detections: tuple[Detection, ...]
    timings: Timings
    backend: str
    camera: str = ""     # the camera's name ([[cameras]] name; the source's name for one source)


class Sink(Protocol):
    """Receives every processed frame, in order, on the post-processing thread."""

    def publish(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...
