"""The frame loop: capture + preprocess thread → invoke → decode + publish thread.

Three threads overlap the stages: the capture thread reads the source, preprocesses each frame
into a spare input buffer and keeps only the newest prepared frame (latest-frame semantics, see
:mod:`edge.capture.base`); the inference thread (the caller's) copies that buffer into the input
tensor (a few hundred kB, microseconds) and invokes; the post thread decodes, maps boxes to frame
pixels and hands results to the sinks. The inference thread therefore does nothing but invoke,
which is what bounds throughput; it never waits for publishing unless the post queue is full
(bounded, so memory is too). The spare buffers are recycled, so the steady state allocates no
input-sized arrays. Every stage is timed with ``time.monotonic_ns``.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edge.capture.base import END, CaptureThread, Frame, FrameSlot, Source
from edge.results import FrameResult, Sink, Timings
from edge.runtime.backend import Backend, copy_input
from edge.telemetry.stats import PipelineStats
from edge.vision.guard import InputGuard
from edge.vision.preprocess import Preprocessor, Transform

# Output arrays and the preprocessing transform in, final results (frame pixels, labels) out.
Postprocess = Callable[[tuple[np.ndarray, ...], Transform], tuple]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Work:
    frame: Frame
    transform: Transform
    outputs: tuple[np.ndarray, ...]
    taken: int
    invoke_start: int
    invoke_end: int
    prepare_ns: int


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A frame and its preprocessed input, made on the capture thread."""

    frame: Frame
    buffer: np.ndarray
    transform: Transform
    prepare_ns: int


class _PreparingCapture(CaptureThread):
    """Reads ``source``, preprocesses every frame into a spare input buffer, and puts it in ``slot``.

    Buffers come from a free list: the inference thread returns one when it has copied it into the
    tensor, and this thread returns the one of a frame the slot dropped (the slot only ever holds
    the frame this thread put last, so a drop always concerns the previous frame). At most three
    are in use at once: one being prepared, one in the slot, one being copied.
    """

    def __init__(self, source: Source, slot: FrameSlot, stop: threading.Event, preprocessor: Preprocessor,
                 shape: tuple[int, ...], dtype: np.dtype):
        super().__init__(source, slot, stop)
        self.preprocessor = preprocessor
        self._shape, self._dtype = shape, dtype
        self._previous: _Prepared | None = None
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def _acquire(self) -> np.ndarray:
        with self._lock:
            if self._free:
                return self._free.pop()
        return np.empty(self._shape, self._dtype)

    def release(self, buffer: np.ndarray) -> None:
        with self._lock:
            self._free.append(buffer)

    def deliver(self, frame: Frame) -> None:
        buffer = self._acquire()
        start = time.monotonic_ns()
        transform = self.preprocessor(frame, buffer)
        item = _Prepared(frame, buffer, transform, time.monotonic_ns() - start)
        dropped = self.slot.dropped
        self.slot.put(item, self.stop)  # type: ignore[arg-type]  # the slot carries prepared frames
        if self.slot.dropped != dropped and self._previous is not None:
            self.release(self._previous.buffer)
        self._previous = item


@dataclass(frozen=True)
class Summary:
    frames: int
    seconds: float
    captured: int
    dropped: int
    stopped_early: bool


class Pipeline:
    """Runs one source through one backend until the source ends, ``max_frames``, or :meth:`stop`.

    The source must already be open (so that a bad source fails before a slow model load);
    :meth:`run` closes it, and the sinks, when it ends.
    """

    def __init__(self, source: Source, backend: Backend, preprocessor: Preprocessor, postprocess: Postprocess,
                 sinks: list[Sink], stats: PipelineStats | None = None, *, max_frames: int = 0,
                 post_queue: int = 4, guard: InputGuard | None = None):
        self.source = source
        self.backend = backend
        self.preprocessor = preprocessor
        self.postprocess = postprocess
        self.sinks = sinks
        self.stats = stats or PipelineStats()
        self.stats.backend = backend.name
        self.max_frames = max_frames
        self.last_progress = time.monotonic()     # heartbeat: a frame was published
        self.on_published: list[Callable[[FrameResult], None]] = []
        self._stop = threading.Event()
        self._queue: queue.Queue[_Work | None] = queue.Queue(maxsize=post_queue)
        self._post_error: BaseException | None = None
        self.guard = guard      # checks the first frames' inputs and outputs for a wrong normalisation

    def stop(self) -> None:
        """Ask the loop to finish: frames in flight are still decoded and published."""
        self._stop.set()

    def _post_loop(self) -> None:
        try:
            while True:
                work = self._queue.get()
                if work is None:
                    return
                self._publish(work)
        except BaseException as exc:  # handed to the inference thread, which re-raises it
            self._post_error = exc
            self._stop.set()
            while self._queue.get() is not None:  # unblock the producer until it sends the end mark
                pass

    def _publish(self, work: _Work) -> None:
        if self.guard is not None and not self.guard.done:
            self.guard.observe_outputs(work.outputs)
        detections = self.postprocess(work.outputs, work.transform)
        decoded = time.monotonic_ns()
        timings = Timings(work.frame.captured_ns, work.taken, work.invoke_start, work.invoke_end, decoded,
                          prepare_ns=work.prepare_ns)
        result = FrameResult(work.frame, detections, timings, self.backend.name)
        for sink in self.sinks:
            sink.publish(result)
        timings = dataclasses.replace(timings, published=time.monotonic_ns())
        self.stats.published_frame(timings.stages(), [d.label for d in detections])
        self.last_progress = time.monotonic()
        for callback in self.on_published:
            callback(result)

    def _infer(self, item: _Prepared, capture: _PreparingCapture) -> _Work:
        taken = time.monotonic_ns()
        view = self.backend.input_view()
        copy_input(view, item.buffer)
        if self.guard is not None and not self.guard.done:
            self.guard.observe_input(item.buffer)
        del view  # the interpreter refuses to invoke while a view of its buffers is alive
        capture.release(item.buffer)
        invoke_start = time.monotonic_ns()
        self.backend.invoke()
        invoke_end = time.monotonic_ns()
        return _Work(item.frame, item.transform, self.backend.outputs(), taken, invoke_start, invoke_end,
                     item.prepare_ns)

    def _capture_thread(self, slot: FrameSlot) -> _PreparingCapture:
        view = self.backend.input_view()
        shape, dtype = view.shape, view.dtype
        del view
        return _PreparingCapture(self.source, slot, self._stop, self.preprocessor, shape, dtype)

    def run(self) -> Summary:
        slot = FrameSlot(lockstep=not self.source.live)
        capture = self._capture_thread(slot)
        post = threading.Thread(target=self._post_loop, name="postprocess", daemon=True)
        started = time.monotonic()
        frames = 0
        capture.start()
        post.start()
        try:
            while not self._stop.is_set():
                frame = slot.get(timeout=0.25)
                self.stats.capture_counts(slot.captured, slot.dropped, generation=slot)
                if frame is None:
                    continue
                if frame is END:
                    break
                self._queue.put(self._infer(frame, capture))  # type: ignore[arg-type]
                self.stats.inferred_frame()
                frames += 1
                if self.max_frames and frames >= self.max_frames:
                    break
        finally:
            stopped_early = self._stop.is_set()
            self._stop.set()
            self._queue.put(None)
            post.join()
            capture.join(timeout=5.0)
            if self.guard is not None and not self.guard.done:
                self.guard.finish()
            self.source.close()
            for sink in self.sinks:
                sink.close()
        if self._post_error is not None:
            raise self._post_error
        self.stats.capture_counts(slot.captured, slot.dropped, generation=slot)
        return Summary(frames, time.monotonic() - started, slot.captured, slot.dropped, stopped_early)
