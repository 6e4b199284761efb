"""The pipeline's capture-thread preprocessing: every frame is inferred on its own pixels, buffers recycle.

Fakes stand in for the source, preprocessor and backend (the real ones run in the integration
tests): each frame carries its index in its pixels, the fake preprocessor writes that index into
the input buffer, and the fake backend outputs what its input tensor held when invoked. A buffer
handed out twice, or recycled while still in use, would show as a frame inferred on another
frame's pixels.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from edge.capture.base import Frame
from edge.pipeline import Pipeline


class _Source:
    def __init__(self, n: int, live: bool, delay: float = 0.0):
        self.name, self.live, self.n, self.delay, self.i = "fake", live, n, delay, 0

    def open(self) -> None: ...

    def read(self) -> Frame | None:
        if self.i >= self.n:
            return None
        if self.delay:
            time.sleep(self.delay)
        frame = Frame(np.full((4, 4, 3), self.i % 251, np.uint8), self.i, time.time(), time.monotonic_ns())
        self.i += 1
        return frame

    def close(self) -> None: ...


def _preprocess(frame: Frame, out: np.ndarray) -> int:
    out[...] = frame.image[0, 0, 0]
    return frame.index            # stands in for the Transform


class _Backend:
    name = "fake"

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._input = np.zeros((1, 2, 2, 3), np.uint8)
        self._seen = np.zeros(1, np.int64)
        self.buffers: set[int] = set()

    def input_view(self) -> np.ndarray:
        return self._input

    def invoke(self) -> None:
        if not (self._input == self._input.flat[0]).all():
            raise AssertionError("input tensor holds a mix of two frames")
        self._seen[0] = self._input.flat[0]
        time.sleep(self.seconds)

    def outputs(self) -> tuple[np.ndarray, ...]:
        return (self._seen.copy(),)

    def close(self) -> None: ...


def _run(source: _Source, seconds: float):
    mismatches, published = [], []

    def postprocess(outputs, transform):
        if int(outputs[0][0]) != transform % 251:
            mismatches.append((transform, int(outputs[0][0])))
        published.append(transform)
        return ()

    pipeline = Pipeline(source, _Backend(seconds), _preprocess, postprocess, [])
    progress = []
    pipeline.on_published.append(lambda result: progress.append(result.frame.index))  # the watchdog's hook
    summary = pipeline.run()
    return summary, mismatches, published, progress


@pytest.mark.parametrize("live", [False, True])
def test_every_frame_is_inferred_on_its_own_pixels(live):
    # live: the source outruns the 2 ms model, so most frames are dropped and their buffers recycled
    summary, mismatches, published, progress = _run(_Source(300, live, delay=0.0002 if live else 0.0), 0.002)
    assert mismatches == []
    assert published == sorted(published) and progress == published
    if live:
        assert summary.dropped > 0 and summary.frames + summary.dropped == summary.captured
    else:
        assert summary.frames == 300 and summary.dropped == 0 and published == list(range(300))


def test_preprocessing_stage_includes_the_capture_threads_work():
    stages = []

    class Slow:
        def __call__(self, frame, out):
            time.sleep(0.003)
            return _preprocess(frame, out)

    pipeline = Pipeline(_Source(5, False), _Backend(0.0), Slow(), lambda outputs, transform: (), [])
    pipeline.stats.published_frame = lambda seconds, labels: stages.append(seconds)  # type: ignore[method-assign]
    pipeline.run()
    assert len(stages) == 5 and all(s["preprocess"] >= 0.003 for s in stages)


@pytest.mark.parametrize("live", [False, True])
def test_buffers_are_recycled_never_shared(live):
    # live: the model is slower than the source, so frames are dropped in the slot; dropped frames
    # are never preprocessed, and the buffers of inferred ones come back exactly once
    prepared = []

    def counting(frame, out):
        prepared.append(frame.index)
        return _preprocess(frame, out)

    pipeline = Pipeline(_Source(200, live, delay=0.0001), _Backend(0.001 if live else 0.0), counting,
                        lambda outputs, transform: (), [])
    summary = pipeline.run()
    free = [id(b) for b in pipeline._runs[0]._free]
    assert len(free) == len(set(free)), "a buffer was released twice"
    assert 1 <= len(free) <= 2          # one being invoked, one prepared ahead
    assert len(prepared) == summary.frames           # only the frames that were inferred
    if live:
        assert summary.dropped > 0
