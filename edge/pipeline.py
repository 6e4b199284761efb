"""The frame loop: N cameras → round-robin scheduler → M detectors → per-camera post-processing.

Threads and hand-overs:

- One capture thread per camera reads its source into a :class:`~edge.capture.base.FrameSlot`
  that keeps only the newest frame (latest-frame semantics; lock-step for files read as fast as
  possible). Capture does no preprocessing: a frame dropped in the slot costs nothing but its read.
- Each detector (an Edge TPU, the CPU, a simulated accelerator) has a feeder and an invoker. The
  feeder takes work when the invoker is about to be free: first a frame another detector failed on,
  else the next camera in round-robin order that has a frame, so no camera starves and a camera
  whose source stalls simply has nothing to take. It preprocesses that frame into one of the
  camera's recycled input buffers while the invoker runs the previous one, so preprocessing overlaps
  inference and only frames that will be inferred are preprocessed. The invoker copies the buffer
  into its input tensor, invokes, and hands the outputs to the camera's post queue.
- One post thread per camera decodes, maps boxes to frame pixels and publishes to the sinks, in
  frame order (results from several detectors are re-ordered by a per-camera sequence number).

A detector whose invoke fails (a USB Coral reset) is taken out: its frame goes back to the front
of the queue for another detector, and it is reopened every ``retry`` seconds. A ``standby``
detector (the CPU twin of an Edge TPU model) takes work only while no other detector is up, which
is the Edge TPU → CPU fail-over. When no detector is left, the run fails with the last error.

Every stage is timed with ``time.monotonic_ns``; queues are bounded, so memory is too.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edge.capture.base import END, CaptureThread, Frame, FrameSlot, Source
from edge.errors import EdgeError
from edge.results import FrameResult, Sink, Timings
from edge.runtime.backend import Backend, copy_input
from edge.telemetry.stats import PipelineStats
from edge.vision.guard import InputGuard
from edge.vision.preprocess import Preprocessor, Transform

# Output arrays and the preprocessing transform in, final results (frame pixels, labels) out.
Postprocess = Callable[[tuple[np.ndarray, ...], Transform], tuple]

# What an interpreter raises when its delegate's device went away (libedgetpu reports a failed
# invoke through the interpreter as RuntimeError; some runtimes use ValueError).
INVOKE_ERRORS = (RuntimeError, ValueError, OSError)

log = logging.getLogger(__name__)

_NOT_UP = object()     # _take's answer to a detector that went out while it waited


@dataclass
class Camera:
    """One source and everything per camera: preprocessing, post-processing, sinks and stats.

    ``model`` names the model the camera's frames run on; every detector serves every model of
    the cameras it is given (a per-camera model override loads that model on each detector).
    """

    name: str
    source: Source
    preprocessor: Preprocessor
    postprocess: Postprocess
    sinks: list[Sink] = field(default_factory=list)
    stats: PipelineStats | None = None
    model: str = ""
    guard: InputGuard | None = None


@dataclass(frozen=True, slots=True)
class _Item:
    """A taken frame, preprocessed into one of its camera's buffers."""

    camera: _CameraRun
    seq: int
    frame: Frame
    buffer: np.ndarray
    transform: Transform
    prepare_ns: int


@dataclass(frozen=True, slots=True)
class _Work:
    frame: Frame
    transform: Transform
    outputs: tuple[np.ndarray, ...]
    taken: int
    invoke_start: int
    invoke_end: int
    prepare_ns: int
    backend: str


@dataclass(frozen=True)
class Summary:
    frames: int
    seconds: float
    captured: int
    dropped: int
    stopped_early: bool
    cameras: dict[str, int] = field(default_factory=dict)   # frames inferred per camera


class Detector:
    """One accelerator serving the scheduler: a backend per model, reopened after a failure.

    ``backends`` maps a model name (see :attr:`Camera.model`) to its loaded backend; ``opener``
    loads them again (after a failure, every ``retry`` seconds; or the first time, for a standby
    detector given no backends). ``retry`` 0: a failed detector stays out.
    """

    def __init__(self, name: str, backends: dict[str, Backend] | None = None, *,
                 opener: Callable[[], dict[str, Backend]] | None = None, standby: bool = False,
                 retry: float = 300.0, kind: str = ""):
        if not backends and opener is None:
            raise ValueError(f"detector {name!r} needs backends or an opener")
        self.name = name
        self.backends: dict[str, Backend] = dict(backends or {})
        self.opener = opener
        self.standby = standby
        self.retry = retry
        self.kind = kind or name.split(":")[0]
        self.up = bool(self.backends)
        # not opened yet: open at start, unless it is a standby (opened when a failure calls it in)
        self.next_retry = 0.0 if not self.backends and not standby else float("inf")
        self.failures = 0
        self.last_error = ""
        self.inferred = 0

    @property
    def backend_name(self) -> str:
        first = next(iter(self.backends.values()), None)
        return first.name if first is not None else self.name

    def backend(self, model: str) -> Backend:
        return self.backends[model]

    def take_out(self, exc: BaseException, now: float) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.up = False
        for backend in self.backends.values():
            try:
                backend.close()
            except Exception as close_exc:   # a device that went away may not close cleanly either
                log.debug("closing %s after its failure: %s", self.name, close_exc)
        self.backends = {}
        self.next_retry = now + self.retry if self.retry > 0 and self.opener is not None else float("inf")

    def reopen(self) -> None:
        assert self.opener is not None
        self.backends = self.opener()
        self.up = True
        self.next_retry = float("inf")

    def close(self) -> None:
        for backend in self.backends.values():
            backend.close()
        self.backends = {}
        self.up = False


class RunnerPort:
    """A pipelined runner (:class:`edge.runtime.segments.PipelinedRunner`: push / pop in order, K
    segments on K Edge TPUs) in a detector's place of a backend: its input spec and its name."""

    def __init__(self, runner, name: str):
        self.runner = runner
        self.name = name
        first = runner.chain.inputs[0] if hasattr(runner.chain, "inputs") else None
        shape = tuple(first.shape) if first is not None else ()
        self._spec = np.zeros(shape, np.dtype(first.dtype) if first is not None else np.uint8)
        self.input_shape = shape

    def input_view(self) -> np.ndarray:
        return self._spec

    def close(self) -> None:
        self.runner.close()


class PipelinedDetector(Detector):
    """A detector whose backend is a pipeline of K stages (Edge TPU segments): several frames in flight
    at once, results in order. Its ``backends`` hold :class:`RunnerPort` objects."""

    pipelined = True

    def __init__(self, name: str, ports: dict[str, RunnerPort] | None = None, **kwargs):
        super().__init__(name, ports, **kwargs)
        self.lock = threading.Lock()
        self.pending: collections.deque = collections.deque()   # (item, pushed_ns), push order
        self.generation = 0
        self.feeding_done = threading.Event()


class _CameraRun:
    """A camera while the scheduler runs: its slot, buffers, sequence numbers and post thread."""

    def __init__(self, camera: Camera, slot: FrameSlot, stop: threading.Event, post_queue: int):
        self.camera = camera
        self.name = camera.name
        self.slot = slot
        self.capture = CaptureThread(camera.source, slot, stop)
        self.ended = False
        self.error: BaseException | None = None
        self.taken = 0              # sequence numbers handed out
        self.inferred = 0
        self.queue: queue.Queue[tuple[int, _Work | None] | None] = queue.Queue(maxsize=post_queue)
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()
        self.shape: tuple[int, ...] = ()
        self.dtype: np.dtype = np.dtype(np.uint8)

    def acquire(self) -> np.ndarray:
        with self._lock:
            if self._free:
                return self._free.pop()
        return np.empty(self.shape, self.dtype)

    def release(self, buffer: np.ndarray) -> None:
        with self._lock:
            self._free.append(buffer)


class Scheduler:
    """Runs ``cameras`` over ``detectors`` until every source ends, ``max_frames``, or :meth:`stop`.

    The sources must already be open (so that a bad source fails before a slow model load);
    :meth:`run` closes them, and the sinks, when it ends. ``stats`` is the aggregate; each camera's
    own (``camera.stats``, else ``stats.camera(name)``) carries its per-camera figures.
    """

    def __init__(self, cameras: list[Camera], detectors: list[Detector], stats: PipelineStats | None = None,
                 *, max_frames: int = 0, post_queue: int = 4, clock: Callable[[], float] = time.monotonic):
        if not cameras:
            raise ValueError("the scheduler needs at least one camera")
        if not detectors:
            raise ValueError("the scheduler needs at least one detector")
        names = [c.name for c in cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names repeat: {names}")
        self.cameras = cameras
        self.detectors = detectors
        self.stats = stats or PipelineStats()
        for camera in cameras:
            if camera.stats is None:
                camera.stats = self.stats.camera(camera.name) if len(cameras) > 1 else self.stats
        self.max_frames = max_frames
        self.post_queue = post_queue
        self.clock = clock
        self.last_progress = time.monotonic()     # heartbeat: a frame was published
        self.frame_sizes: dict[str, tuple[int, int]] = {}   # camera -> (width, height) of its last frame
        self.on_published: list[Callable[[FrameResult], None]] = []
        self._stop = threading.Event()
        self._stop_requested = False
        self._cond = threading.Condition()
        self._runs: list[_CameraRun] = []
        self._retry: list[_Item] = []             # frames a failed detector gives back, oldest first
        self._in_flight = 0                      # taken and neither published nor abandoned
        self._rr = 0
        self._claimed = 0
        self._error: BaseException | None = None
        self._note_backend()

    # the first camera's and the first detector's parts (one camera, one detector: the only ones)
    @property
    def source(self) -> Source:
        return self.cameras[0].source

    @property
    def backend(self) -> Backend:
        backends = self.detectors[0].backends
        return backends.get(self.cameras[0].model) or next(iter(backends.values()))

    @property
    def preprocessor(self) -> Preprocessor:
        return self.cameras[0].preprocessor

    @property
    def postprocess(self) -> Postprocess:
        return self.cameras[0].postprocess

    @property
    def sinks(self) -> list[Sink]:
        return self.cameras[0].sinks

    @property
    def guard(self) -> InputGuard | None:
        return self.cameras[0].guard

    # -- control --------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish: frames in flight are still decoded and published."""
        self._stop_requested = True
        self._halt()

    def _halt(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def _fail(self, exc: BaseException) -> None:
        with self._cond:
            if self._error is None:
                self._error = exc
        self._halt()

    def _note_backend(self) -> None:
        """stats.backend: what serves now; a standby serving for failed Edge TPUs says so."""
        serving = [d for d in self.detectors if self._may_serve(d)]
        tpus = any(d.kind == "edgetpu" for d in self.detectors)
        names = [d.backend_name + (" (Edge TPU fallback)" if d.standby and tpus else " (standby)" if d.standby else "")
                 for d in serving]
        self.stats.backend = ", ".join(names) if names else "no detector up"
        for camera in self.cameras:
            if camera.stats is not self.stats:
                camera.stats.backend = self.stats.backend

    # -- taking work ----------------------------------------------------------------------------
    def _may_serve(self, detector: Detector) -> bool:
        """A standby detector serves only while no other detector is up."""
        if not detector.up:
            return False
        return not detector.standby or not any(d.up for d in self.detectors if not d.standby)

    def _take(self, detector: Detector) -> tuple[_CameraRun, int, Frame] | _Item | object | None:
        """The next work for ``detector``: a given-back item, else a frame round-robin; None to end."""
        with self._cond:
            while True:
                if self._stop.is_set():
                    return None
                if not detector.up:
                    return _NOT_UP
                if self._may_serve(detector):
                    for i, item in enumerate(self._retry):
                        if item.camera.camera.model in detector.backends:
                            return self._retry.pop(i)
                    taken = self._poll_cameras(detector)
                    if taken is not None:
                        return taken
                if self._finished():
                    return None
                self._cond.wait(0.25)

    def _finished(self) -> bool:
        """Every source ended and every taken frame is published or abandoned (under the lock)."""
        return all(run.ended for run in self._runs) and not self._retry and self._in_flight == 0

    def _poll_cameras(self, detector: Detector) -> tuple[_CameraRun, int, Frame] | None:
        n = len(self._runs)
        for k in range(n):
            run = self._runs[(self._rr + k) % n]
            if run.ended or run.camera.model not in detector.backends:
                continue
            try:
                frame = run.slot.poll()
            except Exception as exc:   # the source failed: it ends, and the run fails with its error
                run.ended, run.error = True, exc
                log.error("camera %s failed: %s", run.name, exc)
                self._fail(exc)
                return None
            if frame is END:
                run.ended = True
                continue
            if frame is None:
                continue
            self._rr = (self._rr + k + 1) % n
            seq = run.taken
            run.taken += 1
            self._in_flight += 1
            return run, seq, frame           # type: ignore[return-value]
        return None

    def _done_with(self, run: _CameraRun, seq: int, work: _Work | None) -> None:
        """Hand a taken frame's outcome to its camera's post thread (None: abandoned, not inferred)."""
        run.queue.put((seq, work))

    def _settled(self) -> None:
        with self._cond:
            self._in_flight -= 1
            if self._in_flight == 0:      # what _finished() waits for; frames and retries notify themselves
                self._cond.notify_all()

    def _wake(self) -> None:
        """A camera's slot got a frame or its end: the feeders waiting for work look again."""
        with self._cond:
            self._cond.notify_all()

    def _claim(self) -> bool:
        """Count one inference against ``max_frames``; False once the limit is reached."""
        with self._cond:
            if self.max_frames and self._claimed >= self.max_frames:
                return False
            self._claimed += 1
            if self.max_frames and self._claimed >= self.max_frames:
                self._stop.set()
                self._cond.notify_all()
            return True

    # -- detector threads -----------------------------------------------------------------------
    def _feeder(self, detector: Detector, inbox: queue.Queue) -> None:
        try:
            while not self._stop.is_set():
                if not detector.up:
                    if not self._wait_for_retry(detector):
                        break
                    continue
                got = self._take(detector)
                if got is None:
                    break
                if got is _NOT_UP:
                    continue
                item = got if isinstance(got, _Item) else self._prepare(*got)
                inbox.put(item)
                inbox.join()      # wait until the invoker took it: keeps exactly one frame prepared ahead
        except BaseException as exc:      # a preprocessing bug: the run fails with it
            self._fail(exc)
        finally:
            inbox.put(None)

    def _wait_for_retry(self, detector: Detector) -> bool:
        """A detector that is out: reopen it when its retry time comes. False: it stays out for good.

        A standby detector waits (unopened) until another detector's failure calls it in."""
        with self._cond:
            if self._finished():
                return False
        if detector.next_retry == float("inf"):
            if not detector.standby:
                return False
            self._stop.wait(0.25)
            return True
        delay = detector.next_retry - self.clock()
        if delay > 0:
            self._stop.wait(min(delay, 0.05))
            return True
        try:
            detector.reopen()
        except EdgeError as exc:
            detector.next_retry = self.clock() + detector.retry
            if detector.standby:
                log.error("standby detector %s cannot open (%s)", detector.name, exc)
            else:
                log.warning("detector %s still unusable (%s); next try in %.0f s", detector.name, exc,
                            detector.retry)
            if not any(d.up for d in self.detectors) and not detector.retry:
                self._fail(exc)
            return True
        log.info("detector %s is back (%s)", detector.name, detector.backend_name)
        with self._cond:
            self._note_backend()
            self._cond.notify_all()
        return True

    def _prepare(self, run: _CameraRun, seq: int, frame: Frame) -> _Item:
        buffer = run.acquire()
        start = time.monotonic_ns()
        transform = run.camera.preprocessor(frame, buffer)
        return _Item(run, seq, frame, buffer, transform, time.monotonic_ns() - start)

    def _invoker(self, detector: Detector, inbox: queue.Queue) -> None:
        while True:
            item = inbox.get()
            inbox.task_done()
            if item is None:
                return
            if self._error is not None:
                self._abandon(item)     # the run failed: nothing more is inferred
                continue
            if not self._claim():
                self._abandon(item)
                continue
            try:
                work = self._infer(detector, item)
            except INVOKE_ERRORS as exc:
                self._unclaim()
                self._lost(detector, item, exc)
                continue
            except BaseException as exc:
                self._abandon(item)
                self._fail(exc)
                continue
            self._inferred(detector, item, work)

    def _inferred(self, detector: Detector, item: _Item, work: _Work) -> None:
        """Count an inferred frame and hand it to its camera's post thread."""
        run = item.camera
        run.inferred += 1
        detector.inferred += 1
        self.stats.inferred_frame()
        if run.camera.stats is not self.stats:
            run.camera.stats.inferred_frame()
        self._done_with(run, item.seq, work)

    def _unclaim(self) -> None:
        with self._cond:
            self._claimed -= 1

    def _abandon(self, item: _Item) -> None:
        item.camera.release(item.buffer)
        self._done_with(item.camera, item.seq, None)

    def _lost(self, detector: Detector, item: _Item, exc: BaseException) -> None:
        """``detector`` failed on ``item``: take it out, give the frame to another detector."""
        abandon = False
        with self._cond:
            detector.take_out(exc, self.clock())
            if detector.kind == "edgetpu":
                self.stats.count("tpu_fallbacks")
            self.stats.count("detector_failures")
            others = [d for d in self.detectors if d is not detector and (d.up or d.standby)]
            retry = (f", retrying it every {detector.retry:.0f} s"
                     if detector.next_retry != float("inf") else "")
            log.error("detector %s failed (%s)%s; %s", detector.name, detector.last_error, retry,
                      f"its frame goes to {', '.join(d.name for d in others)}" if others else "no detector left")
            if not others and detector.next_retry == float("inf"):
                abandon = True
                self._error = self._error or exc
                self._stop.set()
            else:
                for standby in others:
                    if standby.standby and not standby.up:
                        standby.next_retry = min(standby.next_retry, self.clock())   # call the standby in
                self._retry.insert(0, item)
            self._note_backend()
            self._cond.notify_all()
        if abandon:
            self._abandon(item)

    def _infer(self, detector: Detector, item: _Item) -> _Work:
        backend = detector.backend(item.camera.camera.model)
        taken = time.monotonic_ns()
        view = backend.input_view()
        copy_input(view, item.buffer)
        guard = item.camera.camera.guard
        if guard is not None and not guard.done:
            guard.observe_input(item.buffer)
        del view  # the interpreter refuses to invoke while a view of its buffers is alive
        invoke_start = time.monotonic_ns()
        try:
            backend.invoke()
        except INVOKE_ERRORS:
            raise                   # the buffer stays with the item, which another detector re-runs
        invoke_end = time.monotonic_ns()
        item.camera.release(item.buffer)
        return _Work(item.frame, item.transform, backend.outputs(), taken, invoke_start, invoke_end,
                     item.prepare_ns, backend.name)

    # -- pipelined detectors (Edge TPU segments) ------------------------------------------------
    def _pusher(self, detector: PipelinedDetector, inbox: queue.Queue) -> None:
        """Pushes prepared frames into the detector's pipeline; a full pipeline blocks (back-pressure)."""
        try:
            while True:
                item = inbox.get()
                inbox.task_done()
                if item is None:
                    return
                if self._error is not None or not self._claim():
                    self._abandon(item)
                    continue
                with detector.lock:
                    port = detector.backends.get(item.camera.camera.model)
                    generation = detector.generation
                    if port is not None:
                        detector.pending.append((item, time.monotonic_ns()))
                if port is None:           # taken out while the frame was prepared: another detector runs it
                    self._give_back([item])
                    continue
                try:
                    port.runner.push(item.buffer, tag=item.seq)
                except EdgeError:          # the stage's failure: the collector takes the detector out
                    with detector.lock:
                        handled = detector.generation != generation
                    if handled:
                        continue           # the collector already gave this frame back with the others
        finally:
            detector.feeding_done.set()
            for port in list(detector.backends.values()):
                port.runner.finish()

    def _collector(self, detector: PipelinedDetector) -> None:
        """Pops results in order and hands them to their cameras; a failed stage takes the detector out."""
        while True:
            with detector.lock:
                port = next(iter(detector.backends.values()), None)
            if port is None:
                if detector.feeding_done.is_set() or self._error is not None:
                    return
                time.sleep(0.02)
                continue
            try:
                got = port.runner.pop()
            except EdgeError as exc:
                self._lost_pipelined(detector, exc)
                continue
            if got is None:
                with detector.lock:
                    current = next(iter(detector.backends.values()), None)
                if current is port and detector.feeding_done.is_set():
                    return
                if current is port:
                    time.sleep(0.02)
                continue
            _, outputs = got
            with detector.lock:
                item, pushed = detector.pending.popleft()
            done = time.monotonic_ns()
            item.camera.release(item.buffer)
            self._inferred(detector, item, _Work(item.frame, item.transform, outputs, pushed, pushed, done,
                                                 item.prepare_ns, port.name))

    def _give_back(self, items: list[_Item]) -> None:
        with self._cond:
            self._claimed -= len(items)
            self._retry[0:0] = items
            self._cond.notify_all()

    def _lost_pipelined(self, detector: PipelinedDetector, exc: BaseException) -> None:
        """A stage failed: every frame in the pipeline goes back to the queue, in order."""
        with detector.lock:
            items = [item for item, _ in detector.pending]
            detector.pending.clear()
            detector.generation += 1
        if not items:
            with self._cond:
                detector.take_out(exc, self.clock())
                self._note_backend()
            log.error("detector %s failed (%s)", detector.name, detector.last_error)
            return
        first, rest = items[0], items[1:]
        self._unclaim()
        self._lost(detector, first, exc)
        if rest:
            if self._error is not None:
                for item in rest:
                    self._abandon(item)
                with self._cond:
                    self._claimed -= len(rest)
            else:
                with self._cond:
                    self._claimed -= len(rest)
                    at = self._retry.index(first) + 1 if first in self._retry else 0
                    self._retry[at:at] = rest
                    self._cond.notify_all()

    # -- post-processing ------------------------------------------------------------------------
    def _post_loop(self, run: _CameraRun) -> None:
        pending: dict[int, _Work | None] = {}
        expected = 0
        try:
            while True:
                got = run.queue.get()
                if got is None:
                    return
                seq, work = got
                pending[seq] = work
                while expected in pending:
                    work = pending.pop(expected)
                    expected += 1
                    try:
                        if work is not None:      # inferred frames are published even when the run fails
                            self._publish(run, work)
                    finally:
                        self._settled()
        except BaseException as exc:  # a sink or decoder bug: the run fails with it
            self._fail(exc)
            while (got := run.queue.get()) is not None:   # unblock the invokers until the end mark
                self._settled()

    def _publish(self, run: _CameraRun, work: _Work) -> None:
        camera = run.camera
        if camera.guard is not None and not camera.guard.done:
            camera.guard.observe_outputs(work.outputs)
        detections = camera.postprocess(work.outputs, work.transform)
        decoded = time.monotonic_ns()
        timings = Timings(work.frame.captured_ns, work.taken, work.invoke_start, work.invoke_end, decoded,
                          prepare_ns=work.prepare_ns)
        result = FrameResult(work.frame, detections, timings, work.backend, camera.name)
        self.frame_sizes[camera.name] = work.frame.size
        for sink in camera.sinks:
            sink.publish(result)
        timings = dataclasses.replace(timings, published=time.monotonic_ns())
        stages, labels = timings.stages(), [d.label for d in detections]
        self.stats.published_frame(stages, labels)
        if camera.stats is not self.stats:
            camera.stats.published_frame(stages, labels)
        self.last_progress = time.monotonic()
        for callback in self.on_published:
            callback(result)

    def _capture_counts(self) -> None:
        for run in self._runs:
            if run.camera.stats is not self.stats:
                run.camera.stats.capture_counts(run.slot.captured, run.slot.dropped, generation=run.slot)
        self.stats.capture_counts(sum(r.slot.captured for r in self._runs), sum(r.slot.dropped for r in self._runs),
                                  generation=self)

    # -- the run --------------------------------------------------------------------------------
    def _input_spec(self, camera: Camera) -> tuple[tuple[int, ...], np.dtype]:
        for detector in self.detectors:
            if camera.model in detector.backends:
                view = detector.backends[camera.model].input_view()
                spec = (tuple(view.shape), view.dtype)
                del view
                return spec
        raise EdgeError(f"no detector serves the model of camera {camera.name!r}")

    def run(self) -> Summary:
        self._stop.clear()
        self._runs = []
        for camera in self.cameras:
            run = _CameraRun(camera, FrameSlot(lockstep=not camera.source.live, on_change=self._wake), self._stop,
                             self.post_queue)
            run.shape, run.dtype = self._input_spec(camera)
            self._runs.append(run)
        posts = [threading.Thread(target=self._post_loop, args=(run,), name=f"post:{run.name}", daemon=True)
                 for run in self._runs]
        workers: list[threading.Thread] = []
        for detector in self.detectors:
            inbox: queue.Queue = queue.Queue(maxsize=1)
            workers.append(threading.Thread(target=self._feeder, args=(detector, inbox), daemon=True,
                                            name=f"feed:{detector.name}"))
            if isinstance(detector, PipelinedDetector):
                detector.feeding_done.clear()
                workers.append(threading.Thread(target=self._pusher, args=(detector, inbox), daemon=True,
                                                name=f"push:{detector.name}"))
                workers.append(threading.Thread(target=self._collector, args=(detector,), daemon=True,
                                                name=f"pop:{detector.name}"))
            else:
                workers.append(threading.Thread(target=self._invoker, args=(detector, inbox), daemon=True,
                                                name=f"infer:{detector.name}"))
        started = time.monotonic()
        for thread in itertools.chain(posts, workers, (r.capture for r in self._runs)):
            thread.start()
        try:
            while any(w.is_alive() for w in workers):
                for w in workers:
                    w.join(0.25)
                    if w.is_alive():
                        break
                self._capture_counts()
        except BaseException as exc:     # KeyboardInterrupt in the caller's thread: stop cleanly
            self._fail(exc)
            for w in workers:
                w.join()
            raise
        finally:
            self._halt()
            for run in self._runs:
                run.queue.put(None)
            for post in posts:
                post.join()
            for run in self._runs:
                run.capture.join(timeout=5.0)
                guard = run.camera.guard
                if guard is not None and not guard.done:
                    guard.finish()
                run.camera.source.close()
            for sink in {id(s): s for run in self._runs for s in run.camera.sinks}.values():
                sink.close()          # cameras may share sinks: each closes once
        if self._error is not None:
            raise self._error
        self._capture_counts()
        return Summary(sum(r.inferred for r in self._runs), time.monotonic() - started,
                       sum(r.slot.captured for r in self._runs), sum(r.slot.dropped for r in self._runs),
                       self._stop_requested, {r.name: r.inferred for r in self._runs})


class Pipeline(Scheduler):
    """One source through one backend: a scheduler with one camera and one detector."""

    def __init__(self, source: Source, backend: Backend, preprocessor: Preprocessor, postprocess: Postprocess,
                 sinks: list[Sink], stats: PipelineStats | None = None, *, max_frames: int = 0,
                 post_queue: int = 4, guard: InputGuard | None = None, camera: str = ""):
        stats = stats or PipelineStats()
        super().__init__([Camera(camera or source.name, source, preprocessor, postprocess, sinks, stats,
                                 guard=guard)],
                         [Detector(backend.name, {"": backend}, retry=0)], stats,
                         max_frames=max_frames, post_queue=post_queue)
