"""Pipelined Edge TPU segments: a model compiled with ``edgetpu_compiler --num_segments K`` run as K
stages on K Edge TPUs, with bounded queues between the stages.

The semantics are those of pycoral's ``PipelinedModelRunner`` (pycoral/pipeline/
pipelined_model_runner.py): segment i's inputs are taken **by tensor name** from the model's inputs
and the outputs of segments 0..i-1; results come out in the order the inputs went in; a full queue
blocks :meth:`PipelinedRunner.push` (back-pressure) instead of growing. Unlike pycoral's default
(unbounded queues), every queue here is bounded, so a consumer that falls behind never costs memory.

* :class:`SegmentChain`: the K segment files, read without an interpreter (:func:`read_model`) and
  checked at start: file names (``<name>_segment_<i>_of_<K>_edgetpu.tflite``), every input's
  producer, dtype/shape/quantization of each producer→consumer pair. Each failure is one line
  naming the file and the tensor.
* :class:`PipelinedRunner`: one thread per stage. The API a caller (e.g. the multi-camera
  scheduler) needs is ``push(inputs, tag)``, ``pop() -> (tag, outputs) | None``, ``finish()`` and
  ``close()``; a failing stage surfaces as :class:`StageError` on ``pop``/``push``, never as a hang.
* :func:`open_segments`: the stages on K Edge TPU devices (``edgetpu:pci:0``, ``edgetpu:usb:1``...),
  each segment with its own libedgetpu delegate (:func:`edge.runtime.edgetpu.load_delegate`).
* :class:`SimulatedSegment`: a SIMULATED Edge TPU stage for tests and benchmarks on machines without
  Edge TPUs (the segments' ``edgetpu-custom-op`` cannot run without libedgetpu).
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Protocol, Sequence

import numpy as np

from edge.errors import ConfigError, EdgeError, ModelError
from edge.runtime.model import DETECTION_POSTPROCESS_OP, ModelInfo, TensorInfo, read_model

log = logging.getLogger(__name__)

# The compiler documents no upper bound for --num_segments; no Pi carries more Edge TPUs than this.
MAX_SEGMENTS = 8
SEGMENT_NAME = re.compile(r"^(?P<base>.+)_segment_(?P<index>\d+)_of_(?P<count>\d+)(?P<suffix>_edgetpu)?\.tflite$")
MODEL_INPUT = -1          # Source.segment of a tensor that is one of the model's (segment 0's) inputs
DEFAULT_QUEUE_SIZE = 2
_POLL_S = 0.05            # bounded waits: every blocking call re-checks the runner's state this often


class PipelineError(EdgeError):
    """The pipeline was used after :meth:`PipelinedRunner.finish` or :meth:`PipelinedRunner.close`."""


class StageError(EdgeError):
    """A stage failed while running an input; the message names the stage, its file and the error."""


def _short(name: str, limit: int = 90) -> str:
    """A tensor name for a one-line message: compiler names join several op names with ';'."""
    return repr(name) if len(name) <= limit else repr(name[:limit - 5] + "…" + name[-4:])


def _spec(tensor: TensorInfo) -> str:
    q = tensor.quantization
    quant = f" scale={q.scale[0]:.6g} zp={q.zero_point[0]}" if q and not q.per_channel else ""
    return f"{list(tensor.shape)} {tensor.type.lower()}{quant}"


@dataclass(frozen=True)
class Source:
    """Where a segment input comes from: ``segment`` (:data:`MODEL_INPUT` for the model input) and
    the position among that segment's outputs (or among the model inputs)."""

    segment: int
    position: int


@dataclass(frozen=True)
class Segment:
    index: int
    model: ModelInfo
    sources: tuple[Source, ...]     # one per input of ``model``, in its input order

    @property
    def path(self) -> Path:
        return self.model.path

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.model.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.model.outputs)


def parse_segment_name(path: Path) -> tuple[str, int, int] | None:
    """(base name, i, K) of ``<base>_segment_<i>_of_<K>[_edgetpu].tflite``, else None."""
    m = SEGMENT_NAME.match(Path(path).name)
    return (m.group("base"), int(m.group("index")), int(m.group("count"))) if m else None


def _order(models: Sequence[ModelInfo]) -> list[ModelInfo]:
    """The models sorted by the ``segment_<i>_of_<K>`` of their names, after checking the names agree."""
    seen: dict[Path, int] = {}
    for position, model in enumerate(models):
        key = model.path.resolve()
        if key in seen:
            raise ModelError(f"segment file {str(model.path)!r} is given twice (positions {seen[key]} and "
                             f"{position})", "name each segment file once")
        seen[key] = position
    if len(models) == 1 and parse_segment_name(models[0].path) is None:
        return list(models)          # a model that was not segmented runs as a chain of one
    parsed = []
    for model in models:
        name = parse_segment_name(model.path)
        if name is None:
            raise ModelError(f"segment file {model.path.name!r} is not named <model>_segment_<i>_of_<K>_edgetpu"
                             ".tflite", "give the files edgetpu_compiler --num_segments wrote, unrenamed")
        parsed.append((name, model))
    (base, _, count), first = parsed[0]
    for (other_base, index, other_count), model in parsed:
        if other_count != count:
            raise ModelError(f"segment file {model.path.name!r} says {other_count} segments but "
                             f"{first.path.name!r} says {count}", "give the segments of one compilation")
        if other_base != base:
            raise ModelError(f"segment file {model.path.name!r} belongs to model {other_base!r}, not {base!r}",
                             "give the segments of one compilation")
        if index >= count:
            raise ModelError(f"segment file {model.path.name!r}: segment {index} of {count} does not exist")
    if len(parsed) != count:
        have = {index for (_, index, _), _ in parsed}
        missing = [i for i in range(count) if i not in have]
        if missing:
            raise ModelError(f"segment {missing[0]} of {count} of {base!r} is missing ({len(parsed)} file(s) "
                             f"given: {', '.join(m.path.name for _, m in parsed)})",
                             f"give all {count} files {base}_segment_<i>_of_{count}_edgetpu.tflite")
    by_index: dict[int, ModelInfo] = {}
    for (_, index, _), model in parsed:
        if index in by_index:
            raise ModelError(f"segment {index} of {count} of {base!r} is given twice: {by_index[index].path.name!r} "
                             f"and {str(model.path)!r}", "name each segment once")
        by_index[index] = model
    return [by_index[i] for i in range(count)]


class SegmentChain:
    """K segments of one model, their name wiring checked. Build with :meth:`from_files`.

    ``inputs`` are the model's inputs (segment 0's), ``outputs`` the final outputs (the last segment's,
    in its output order). Segment i's inputs come from the model inputs or an earlier segment's outputs,
    matched by name, with equal dtype, shape and quantization (the bytes are passed unchanged).
    """

    def __init__(self, models: Sequence[ModelInfo]):
        if not models:
            raise ModelError("a segment chain needs at least one segment file")
        if len(models) > MAX_SEGMENTS:
            raise ModelError(f"{len(models)} segment files given; at most {MAX_SEGMENTS} are supported")
        ordered = _order(models)
        first = ordered[0]
        producers: dict[str, tuple[Source, TensorInfo, str]] = {
            t.name: (Source(MODEL_INPUT, p), t, f"model input of {first.path.name!r}")
            for p, t in enumerate(first.inputs)}
        segments = []
        for i, model in enumerate(ordered):
            sources = tuple(self._wire(i, model, t, producers) for t in model.inputs)
            segments.append(Segment(i, model, sources))
            for p, t in enumerate(model.outputs):
                if t.name in producers and producers[t.name][0].segment != MODEL_INPUT:
                    raise ModelError(f"tensor {_short(t.name)} is an output of both {producers[t.name][2]} and "
                                     f"segment {i} ({model.path.name!r})", "the segments do not form one chain")
                producers[t.name] = (Source(i, p), t, f"segment {i} ({model.path.name!r})")
        self.segments: tuple[Segment, ...] = tuple(segments)
        self.inputs: tuple[TensorInfo, ...] = first.inputs
        self.outputs: tuple[TensorInfo, ...] = ordered[-1].outputs
        # After stage i, the tensors a later stage still reads: everything else is dropped at once.
        needed_later = [set() for _ in segments]
        for i in range(len(segments) - 1, 0, -1):
            needed_later[i - 1] = needed_later[i] | set(segments[i].input_names)
        self.keep_after: tuple[frozenset[str], ...] = tuple(frozenset(s) for s in needed_later)
        for i, seg in enumerate(segments[:-1]):
            unused = [n for n in seg.output_names if n not in needed_later[i]]
            if unused:
                log.warning("segment %d (%s): output %s is read by no later segment", i, seg.path.name,
                            _short(unused[0]))

    @staticmethod
    def _wire(i: int, model: ModelInfo, tensor: TensorInfo,
              producers: dict[str, tuple[Source, TensorInfo, str]]) -> Source:
        found = producers.get(tensor.name)
        if found is None:
            raise ModelError(f"segment {i} ({model.path.name!r}) input {_short(tensor.name)} is neither a model "
                             "input nor an output of an earlier segment",
                             "give the segments of one compilation, in order")
        source, produced, where = found
        if produced.type != tensor.type or tuple(produced.shape) != tuple(tensor.shape):
            raise ModelError(f"segment {i} ({model.path.name!r}) input {_short(tensor.name)} is {_spec(tensor)} but "
                             f"{where} gives {_spec(produced)}", "give the segments of one compilation")
        if produced.quantization != tensor.quantization:
            raise ModelError(f"segment {i} ({model.path.name!r}) input {_short(tensor.name)} is quantized as "
                             f"{_spec(tensor)} but {where} gives {_spec(produced)}",
                             "give the segments of one compilation")
        return source

    @classmethod
    def from_files(cls, paths: Iterable[str | Path]) -> SegmentChain:
        """The chain of these segment files (any order: their ``segment_<i>_of_<K>`` names order them)."""
        return cls([read_model(p) for p in paths])

    @classmethod
    def find(cls, segment: str | Path) -> SegmentChain:
        """The chain one segment file belongs to: its ``_of_K`` siblings in the same directory."""
        path = Path(segment)
        parsed = parse_segment_name(path)
        if parsed is None:
            raise ModelError(f"{path.name!r} is not named <model>_segment_<i>_of_<K>_edgetpu.tflite")
        base, _, count = parsed
        suffix = "_edgetpu" if path.stem.endswith("_edgetpu") else ""
        return cls.from_files(path.with_name(f"{base}_segment_{i}_of_{count}{suffix}.tflite")
                              for i in range(count))

    @property
    def k(self) -> int:
        return len(self.segments)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def check_inputs(self, inputs: Any) -> dict[str, np.ndarray]:
        """``inputs`` (one array, a sequence in input order, or a dict by name) as a dict by name,
        each checked against the model input's shape and dtype."""
        if isinstance(inputs, np.ndarray):
            inputs = (inputs,)
        if isinstance(inputs, dict):
            unknown = sorted(set(inputs) - {t.name for t in self.inputs})
            if unknown:
                raise ModelError(f"{_short(unknown[0])} is not an input of {self.segments[0].path.name!r} "
                                 f"(inputs: {', '.join(_short(t.name) for t in self.inputs)})")
            arrays = [inputs.get(t.name) for t in self.inputs]
        else:
            arrays = list(inputs)
            if len(arrays) != len(self.inputs):
                raise ModelError(f"{len(arrays)} input arrays given; {self.segments[0].path.name!r} has "
                                 f"{len(self.inputs)} input(s)")
        checked = {}
        for tensor, array in zip(self.inputs, arrays):
            if array is None:
                raise ModelError(f"input {_short(tensor.name)} ({_spec(tensor)}) is missing")
            array = np.asarray(array)
            if array.dtype != tensor.dtype or tuple(array.shape) != tuple(tensor.shape):
                raise ModelError(f"input {_short(tensor.name)} got {list(array.shape)} {array.dtype}, expected "
                                 f"{list(tensor.shape)} {np.dtype(tensor.dtype)}")
            checked[tensor.name] = array
        return checked

    def describe(self) -> list[str]:
        lines = [f"{self.k} segment(s), input {', '.join(_spec(t) for t in self.inputs)}"]
        for seg in self.segments:
            feeds = sorted({s.segment for s in seg.sources})
            froms = ", ".join("model input" if s == MODEL_INPUT else f"segment {s}" for s in feeds)
            lines.append(f"  segment {seg.index}: {seg.path.name} ({len(seg.model.inputs)} in from {froms or '-'}, "
                         f"{len(seg.model.outputs)} out)")
        return lines


# ---------------------------------------------------------------------------------------------------
# Stages: what runs one segment


class Stage(Protocol):
    """One segment on one device. Like :class:`edge.runtime.backend.Backend`, but with every input."""

    name: str
    model: ModelInfo

    def set_inputs(self, arrays: Sequence[np.ndarray]) -> None:
        """Copy ``arrays`` (the segment's inputs, in its input order) into the input tensors."""

    def invoke(self) -> None: ...

    def outputs(self) -> tuple[np.ndarray, ...]:
        """Copies of the output tensors, in the segment's output order."""

    def close(self) -> None: ...


class TFLiteStage:
    """A :class:`edge.runtime.backend.TFLiteBackend` (any delegate) as a stage with several inputs."""

    def __init__(self, backend: Any):
        self.backend = backend
        self.model: ModelInfo = backend.model
        self.name: str = backend.name

    def set_inputs(self, arrays: Sequence[np.ndarray]) -> None:
        interpreter = self.backend.interpreter
        for tensor, array in zip(self.model.inputs, arrays):
            interpreter.set_tensor(tensor.index, array)

    def invoke(self) -> None:
        self.backend.invoke()

    def outputs(self) -> tuple[np.ndarray, ...]:
        return tuple(np.array(o, copy=True) for o in self.backend.outputs())

    def close(self) -> None:
        self.backend.close()


class SimulatedSegment:
    """A SIMULATED Edge TPU running one segment: nothing is computed on a TPU, because none is here.

    :meth:`invoke` sleeps ``seconds`` (plus ``jitter()`` when given; ``time.sleep`` releases the GIL as
    libedgetpu does while the TPU works) and then makes outputs of the segment's exact shapes and dtypes.
    They are a deterministic function of the input bytes (a CRC-32 seeds them), so a test can tell which
    input a result came from. When the outputs are those of ``TFLite_Detection_PostProcess`` (the last
    segment of an SSD) they are plausible detections: boxes with ymin<ymax and xmin<xmax inside [0, 1],
    integer class ids, scores in descending order, and the count. Its name starts with ``SIMULATED``.
    """

    def __init__(self, model: ModelInfo, seconds: float, *, jitter: Callable[[], float] | None = None):
        if not seconds >= 0:
            raise ConfigError(f"simulated segment time {seconds * 1e3!r} ms is negative or not a number",
                              "give a time per inference in milliseconds, e.g. 3.6")
        self.model = model
        self.seconds = float(seconds)
        self.jitter = jitter
        self.name = f"SIMULATED Edge TPU segment {model.path.name} {self.seconds * 1e3:g} ms"
        self.invocations = 0
        self._seed = 0
        self._outputs: tuple[np.ndarray, ...] = ()
        # Random bytes made once (1.3 ms per 360 kB per invoke would be host work no TPU costs); each
        # output is a window of its pool at an offset the input decides.
        pool_rng = np.random.default_rng(zlib.crc32(model.path.name.encode()))
        self._pools = [_pool(pool_rng, t) for t in model.outputs]
        op = model.find_op(DETECTION_POSTPROCESS_OP)
        self._postprocess = (op is not None and len(model.outputs) == 4
                             and tuple(t.index for t in model.outputs) == tuple(op.outputs))

    def set_inputs(self, arrays: Sequence[np.ndarray]) -> None:
        if len(arrays) != len(self.model.inputs):
            raise ValueError(f"{len(arrays)} inputs given, {self.model.path.name} has {len(self.model.inputs)}")
        seed = 0
        for tensor, array in zip(self.model.inputs, arrays):
            if array.dtype != tensor.dtype or tuple(array.shape) != tuple(tensor.shape):
                # what an interpreter's set_tensor would refuse
                raise ValueError(f"input {tensor.name!r} got {list(array.shape)} {array.dtype}, expected "
                                 f"{list(tensor.shape)} {np.dtype(tensor.dtype)}")
            seed = zlib.crc32(np.ascontiguousarray(array).data, seed)
        self._seed = seed

    def invoke(self) -> None:
        deadline = time.perf_counter() + self.seconds + (self.jitter() if self.jitter else 0.0)
        if self._postprocess:
            self._outputs = self._detections(np.random.default_rng(self._seed))
        else:
            self._outputs = tuple(self._window(p, t) for p, t in zip(self._pools, self.model.outputs))
        delay = deadline - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        self.invocations += 1

    def _window(self, pool: np.ndarray, tensor: TensorInfo) -> np.ndarray:
        n = int(np.prod(tensor.shape, dtype=np.int64))
        start = self._seed % (n + 1)
        return pool[start:start + n].reshape(tensor.shape).copy()

    def _detections(self, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        boxes_t, classes_t, scores_t, count_t = self.model.outputs
        slots = boxes_t.shape[1]
        n = int(rng.integers(0, slots + 1))
        corners = np.sort(rng.random((slots, 2, 2), dtype=np.float32), axis=1)   # (ymin,xmin) < (ymax,xmax)
        boxes = np.zeros(boxes_t.shape, np.float32)
        boxes[0, :n] = np.stack([corners[:n, 0, 0], corners[:n, 0, 1], corners[:n, 1, 0], corners[:n, 1, 1]], 1)
        classes = np.zeros(classes_t.shape, np.float32)
        classes[0, :n] = rng.integers(0, 90, n)
        scores = np.zeros(scores_t.shape, np.float32)
        scores[0, :n] = np.sort(rng.uniform(0.05, 1.0, n).astype(np.float32))[::-1]
        count = np.full(count_t.shape, n, np.float32)
        return boxes, classes, scores, count

    def outputs(self) -> tuple[np.ndarray, ...]:
        return tuple(o.copy() for o in self._outputs)

    def close(self) -> None:
        self._outputs = ()


def _pool(rng: np.random.Generator, tensor: TensorInfo) -> np.ndarray:
    """Twice a tensor's elements of random values: any bytes for integers, [0, 1) for floats."""
    n = 2 * int(np.prod(tensor.shape, dtype=np.int64))
    dtype = np.dtype(tensor.dtype)
    if dtype.kind == "f":
        return rng.random(n, dtype=np.float32).astype(dtype)
    return np.frombuffer(rng.bytes(n * dtype.itemsize), dtype=dtype)


def simulated_stages(chain: SegmentChain, seconds: float | Sequence[float], *,
                     jitter: Callable[[], float] | None = None) -> list[SimulatedSegment]:
    """One :class:`SimulatedSegment` per segment: ``seconds`` each, or one time per segment."""
    times = [seconds] * chain.k if isinstance(seconds, (int, float)) else list(seconds)
    if len(times) != chain.k:
        raise ConfigError(f"{len(times)} simulated segment times given for {chain.k} segments")
    return [SimulatedSegment(seg.model, t, jitter=jitter) for seg, t in zip(chain.segments, times)]


def run_stage(segment: Segment, stage: Stage, tensors: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """Run one stage on the named tensors; returns its outputs (also added to ``tensors`` by name)."""
    stage.set_inputs([tensors[name] for name in segment.input_names])
    stage.invoke()
    outputs = stage.outputs()
    if len(outputs) != len(segment.output_names):
        raise ModelError(f"stage {stage.name} returned {len(outputs)} outputs; {segment.path.name!r} has "
                         f"{len(segment.output_names)}")
    tensors.update(zip(segment.output_names, outputs))
    return outputs


def run_sequential(chain: SegmentChain, stages: Sequence[Stage], inputs: Any) -> tuple[np.ndarray, ...]:
    """The whole chain on one input, one stage after the other in this thread (no pipelining):
    the reference the pipeline must reproduce, and the unsegmented baseline of the benchmark."""
    tensors = chain.check_inputs(inputs)
    outputs: tuple[np.ndarray, ...] = ()
    for segment, stage in zip(chain.segments, stages):
        outputs = run_stage(segment, stage, tensors)
    return outputs


# ---------------------------------------------------------------------------------------------------
# The runner


class _End:
    """Marker: no more inputs."""


@dataclass
class _Job:
    tag: Hashable
    tensors: dict[str, np.ndarray]


@dataclass
class _Failure:
    error: StageError


_END = _End()


class PipelinedRunner:
    """K stages, one thread each, bounded queues between them; results in push order.

    Usage (one producer, one consumer, as the scheduler does)::

        runner.push(tensor, tag)          # blocks while the pipeline is full (back-pressure)
        ...
        tag, outputs = runner.pop()       # blocks until the oldest result is ready; None at the end
        runner.finish()                   # no more pushes: pop() returns the rest, then None
        runner.close()                    # stops the threads and closes the stages (safe twice)

    ``outputs`` is a tuple in the last segment's output order (:attr:`SegmentChain.output_names`).
    ``push`` copies the input, so the caller may reuse its buffer at once. At most
    :attr:`capacity` inputs are pushed and not yet popped: ``queue_size`` in each of the K+1 queues and
    one in each stage. An exception in a stage ends the pipeline: the results before it are still
    popped, then ``pop`` raises :class:`StageError` (naming the stage, its file and the error), and
    every ``push`` raises it from then on, even one blocked on a full queue.
    """

    def __init__(self, stages: Sequence[Stage], chain: SegmentChain, queue_size: int = DEFAULT_QUEUE_SIZE):
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ConfigError(f"pipeline queue_size = {queue_size!r} is not an integer ≥ 1")
        if len(stages) != chain.k:
            raise ConfigError(f"{len(stages)} stage(s) given for a chain of {chain.k} segments")
        for segment, stage in zip(chain.segments, stages):
            if tuple(t.name for t in stage.model.inputs) != segment.input_names or \
                    tuple(t.name for t in stage.model.outputs) != segment.output_names:
                raise ConfigError(f"stage {segment.index} ({stage.name}) runs {stage.model.path.name!r}, whose "
                                  f"tensors are not those of segment {segment.index} ({segment.path.name!r})")
        self.chain = chain
        self.stages = list(stages)
        self.queue_size = queue_size
        self._queues = [queue.Queue(maxsize=queue_size) for _ in range(chain.k + 1)]
        self._abort = threading.Event()        # close(): every thread leaves its bounded wait
        self._out_done = threading.Event()     # the end marker reached pop() (or close drained it)
        self._error: StageError | None = None
        self._finished = False
        self._closed = False
        self._lock = threading.Lock()
        self._pushed = 0
        self._popped = 0
        self.busy_s = [0.0] * chain.k           # time each stage spent running (for reports)
        self.runs = [0] * chain.k
        self._threads = [threading.Thread(target=self._stage_loop, args=(i,), name=f"segment-{i}", daemon=True)
                         for i in range(chain.k)]
        for thread in self._threads:
            thread.start()

    @property
    def capacity(self) -> int:
        """The most inputs that can be pushed and not yet popped before ``push`` blocks."""
        return self.queue_size * (self.chain.k + 1) + self.chain.k

    @property
    def pending(self) -> int:
        """Inputs pushed whose result has not been popped yet (a push still blocked is not counted)."""
        with self._lock:
            return max(0, self._pushed - self._popped)   # a pop may count before its push did

    # -- queue helpers: bounded waits, so close() and failures always get through

    def _put(self, q: queue.Queue, item: Any, *, stop_on_error: bool = False) -> bool:
        while True:
            if self._abort.is_set() or (stop_on_error and self._error is not None):
                return False
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue

    def _get(self, q: queue.Queue) -> Any:
        while not self._abort.is_set():
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        return None

    # -- the stage threads

    def _stage_loop(self, i: int) -> None:
        segment, stage = self.chain.segments[i], self.stages[i]
        q_in, q_out = self._queues[i], self._queues[i + 1]
        last = i == self.chain.k - 1
        while True:
            item = self._get(q_in)
            if item is None:                                  # aborted by close()
                return
            if isinstance(item, (_End, _Failure)):
                self._put(q_out, item)
                return
            started = time.perf_counter()
            try:
                outputs = run_stage(segment, stage, item.tensors)
            # Any exception: a worker thread that dies silently would hang every pop() and push().
            except Exception as exc:  # noqa: BLE001
                error = StageError(f"pipeline stage {i} ({stage.name}, {segment.path.name}) failed on input "
                                   f"{item.tag!r}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                self._error = error
                log.error("%s", error)
                self._put(q_out, _Failure(error))
                return
            self.busy_s[i] += time.perf_counter() - started
            self.runs[i] += 1
            if last:
                result: Any = (item.tag, outputs)
            else:
                keep = self.chain.keep_after[i]
                item.tensors = {n: a for n, a in item.tensors.items() if n in keep}
                result = item
            if not self._put(q_out, result):
                return

    # -- the caller's API

    def push(self, inputs: Any, tag: Hashable = None) -> None:
        """Queue one input (an array, a sequence in input order, or a dict by input name) with ``tag``.

        Blocks while the pipeline holds :attr:`capacity` unpopped inputs. Raises :class:`StageError`
        once a stage has failed, :class:`PipelineError` after :meth:`finish`/:meth:`close`, and
        :class:`ModelError` for an input of the wrong shape or dtype.
        """
        if self._error is not None:
            raise self._error
        if self._finished or self._closed:
            raise PipelineError("push() on a pipeline that was finished or closed")
        tensors = {name: np.array(a, copy=True) for name, a in self.chain.check_inputs(inputs).items()}
        if not self._put(self._queues[0], _Job(tag, tensors), stop_on_error=True):
            if self._error is not None:
                raise self._error
            raise PipelineError("push() interrupted: the pipeline was closed")
        with self._lock:
            self._pushed += 1

    def pop(self) -> tuple[Hashable, tuple[np.ndarray, ...]] | None:
        """The oldest result as ``(tag, outputs)``, blocking until it is ready; None once
        :meth:`finish` was called and every result was popped (or after :meth:`close`)."""
        q = self._queues[-1]
        while True:
            if self._out_done.is_set() or self._abort.is_set():
                if self._error is not None and not self._closed:
                    raise self._error
                return None
            try:
                item = q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if isinstance(item, _End):
                self._out_done.set()
                return None
            if isinstance(item, _Failure):
                self._out_done.set()
                raise item.error
            with self._lock:
                self._popped += 1
            return item

    def finish(self) -> None:
        """No more inputs: the stages run what they hold, then :meth:`pop` returns None."""
        if self._finished or self._closed:
            return
        self._finished = True
        if self._error is None:
            self._put(self._queues[0], _END, stop_on_error=True)

    def close(self, timeout: float = 5.0) -> None:
        """Finish, discard the results nobody popped (a warning says how many), stop the threads and
        close the stages. Safe to call twice; returns within about ``timeout`` seconds even when a
        stage hangs (its backend is then left open, with a warning)."""
        if self._closed:
            return
        self.finish()
        deadline = time.monotonic() + timeout
        discarded = 0
        while not self._out_done.is_set() and self._error is None and time.monotonic() < deadline:
            try:
                item = self._queues[-1].get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if isinstance(item, (_End, _Failure)):
                self._out_done.set()
            else:
                discarded += 1
        self._closed = True
        self._abort.set()
        for thread, stage in zip(self._threads, self.stages):
            thread.join(max(0.0, deadline - time.monotonic()) + _POLL_S * 2)
            if thread.is_alive():
                log.warning("pipeline stage %s did not stop within %.1f s; its device is left open", stage.name,
                            timeout)
                continue
            stage.close()
        if discarded:
            log.warning("pipeline closed with %d result(s) not popped (discarded)", discarded)

    def __enter__(self) -> PipelinedRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        return " → ".join(stage.name for stage in self.stages) + f" (queues of {self.queue_size})"


# ---------------------------------------------------------------------------------------------------
# Opening the stages on Edge TPUs


def check_devices(devices: Sequence[str], k: int) -> list[Any]:
    """Parse the K device strings: Edge TPUs, one per segment, no device twice."""
    from edge.runtime import edgetpu

    if len(devices) != k:
        raise ConfigError(f"{len(devices)} device(s) given ({', '.join(devices) or 'none'}) for {k} segments",
                          f"name one Edge TPU per segment, e.g. {', '.join(f'edgetpu:pci:{i}' for i in range(k))}")
    specs = []
    for text in devices:
        spec = edgetpu.parse_device(text)
        if spec.backend != "edgetpu":
            raise ConfigError(f"segment device {text!r} is not an Edge TPU",
                              "segments run only on Edge TPUs: edgetpu:usb:N, edgetpu:pci:N or edgetpu:N")
        if k > 1 and spec.tpu_kind is None and spec.tpu_index is None:
            raise ConfigError(f"segment device {text!r} does not say which Edge TPU",
                              "name each one: edgetpu:usb:N, edgetpu:pci:N or edgetpu:N")
        if str(spec) in {str(s) for s in specs}:
            raise ConfigError(f"segment device {text!r} is named twice", "each segment needs its own Edge TPU")
        specs.append(spec)
    return specs


def open_segments(chain: SegmentChain, devices: Sequence[str], runtime: Any, *, threads: int = 1,
                  queue_size: int = DEFAULT_QUEUE_SIZE) -> PipelinedRunner:
    """Segment i on ``devices[i]`` (each with its own libedgetpu delegate), as a :class:`PipelinedRunner`.

    ``runtime`` is a :class:`edge.runtime.interpreter.Runtime` (``load_runtime()``). Every segment must
    be compiled for the Edge TPU. A delegate or model that cannot load closes what was opened and
    raises its one-line :class:`DelegateError`/:class:`ModelError`.
    """
    from edge.runtime import edgetpu
    from edge.runtime.backend import TFLiteBackend

    specs = check_devices(devices, chain.k)
    for segment in chain.segments:
        if not segment.model.edgetpu:
            raise ModelError(f"segment {segment.index} ({segment.path.name!r}) is not compiled for the Edge TPU",
                             "compile the model with edge-host compile --segments K")
    stages: list[Stage] = []
    try:
        for segment, spec in zip(chain.segments, specs):
            delegate = edgetpu.load_delegate(runtime, spec)
            backend = TFLiteBackend(segment.model, runtime, threads=threads, delegates=[delegate],
                                    name=f"{spec} segment {segment.index}/{chain.k}")
            stages.append(TFLiteStage(backend))
    except BaseException:
        for stage in stages:
            stage.close()
        raise
    log.info("pipelined %d segments on %s", chain.k, ", ".join(str(s) for s in specs))
    return PipelinedRunner(stages, chain, queue_size=queue_size)
