"""Raw invoke statistics, the way TFLite's benchmark_model measures them, for each backend variant.

For every variant: the time to create the interpreter and allocate tensors (init), the first
inference (which pays for lazy set-up such as XNNPACK weight packing), then ``warmup`` runs that
are not recorded, then at least ``runs`` recorded runs and at least ``min_seconds`` of them.
The input is one real frame of the source, preprocessed as the pipeline would, so that the
in-model post-processing (NMS) sees a realistic number of candidates.

Variants: CPU with XNNPACK at 1..N threads, the built-in kernels without XNNPACK (the runtime's
``BUILTIN_WITHOUT_DEFAULT_DELEGATES`` op resolver), the float twin for the int8/float ratio, the
Edge TPU when present, and the SIMULATED accelerator.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edge.bench.statistics import Summary, peak_rss_mb, proc_status_mb, summarize
from edge.capture.base import Frame
from edge.errors import ConfigError, DelegateError, ModelError
from edge.runtime import edgetpu
from edge.runtime.backend import Backend, TFLiteBackend, default_threads
from edge.runtime.interpreter import Runtime
from edge.runtime.loader import ModelSet, check_precision
from edge.runtime.model import read_model
from edge.runtime.simulated import SimulatedBackend
from edge.vision.preprocess import Preprocessor

log = logging.getLogger(__name__)

KINDS = ("cpu", "cpu-builtin", "float", "edgetpu", "simulated")


@dataclass(frozen=True)
class Variant:
    """One way of running the model: which file, which device, how many threads."""

    kind: str                 # one of KINDS
    threads: int = 0
    device: str = "edgetpu"   # the --device form, for the Edge TPU
    simulated_ms: float = 0.0

    @property
    def label(self) -> str:
        if self.kind == "simulated":
            return f"SIMULATED {self.simulated_ms:g} ms"
        if self.kind == "edgetpu":
            return f"int8 {self.device}"
        precision = "float32" if self.kind == "float" else "int8"
        kernels = "builtin" if self.kind == "cpu-builtin" else "xnnpack"
        return f"{precision} cpu/{kernels} x{self.threads}"

    @property
    def role(self) -> str:
        """The manifest role of the model file this variant runs."""
        return {"float": "float", "edgetpu": "edgetpu"}.get(self.kind, "cpu")


@dataclass
class RawResult:
    variant: Variant
    model: str                # file name
    runtime: str              # e.g. "ai-edge-litert 2.3.0"
    backend: str              # the backend's own name
    init_s: float
    first_s: float
    warmup: int
    latency: Summary
    peak_rss_mb: float        # of the whole process, with every variant loaded
    samples: list[float] = field(repr=False, default_factory=list)   # seconds, for plots
    added_rss_mb: float | None = None   # resident memory the variant added: load, first inference, warm-up

    @property
    def simulated(self) -> bool:
        return self.variant.kind == "simulated"

    def as_dict(self) -> dict:
        return {"label": self.variant.label, "kind": self.variant.kind, "threads": self.variant.threads,
                "simulated": self.simulated, "model": self.model, "runtime": self.runtime,
                "backend": self.backend, "init_ms": self.init_s * 1e3, "first_inference_ms": self.first_s * 1e3,
                "warmup_runs": self.warmup, "latency_ms": self.latency.as_ms(),
                "throughput_per_s": self.latency.throughput, "peak_rss_mb": self.peak_rss_mb,
                "added_rss_mb": self.added_rss_mb}


def parse_threads(text: str) -> list[int]:
    """'1,2' or '1-4' or '' (1..number of cores) → thread counts."""
    text = text.strip()
    if not text:
        return list(range(1, default_threads() + 1))
    out: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            values = range(int(lo), int(hi) + 1) if sep else [int(lo)]
        except ValueError:
            raise ConfigError(f"thread list {text!r} is not a list of counts",
                              "use e.g. 1,2 or 1-4") from None
        out += [v for v in values if v not in out]
    if not out or min(out) < 1 or max(out) > 64:
        raise ConfigError(f"thread list {text!r} must name counts from 1 to 64")
    return out


def variants(kinds: list[str], threads: list[int], models: ModelSet, *, explicit: bool,
             device: str = "edgetpu", simulated_ms: float = 0.0) -> list[Variant]:
    """The variants for ``kinds``; unavailable ones are errors when ``explicit``, else skipped (logged)."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ConfigError(f"unknown backend {unknown[0]!r}", f"valid backends: {', '.join(KINDS)}")
    out: list[Variant] = []
    for kind in kinds:
        why = unavailable(kind, models, device)
        if why:
            if explicit:
                raise (DelegateError if kind == "edgetpu" else ModelError)(
                    f"backend {kind!r} was requested but is unavailable: {why}")
            log.info("skipping backend %s: %s", kind, why)
            continue
        if kind == "edgetpu":
            out.append(Variant(kind, device=device))
        elif kind == "simulated":
            out.append(Variant(kind, threads=1, simulated_ms=simulated_ms))
        else:
            out += [Variant(kind, threads=t) for t in threads]
    return out


def unavailable(kind: str, models: ModelSet, device: str = "edgetpu") -> str | None:
    """Why ``kind`` cannot run here, or None."""
    if kind == "edgetpu":
        if models.path_for("edgetpu") is None:
            return "the model has no Edge TPU twin (compile one with `edge-host compile`)"
        if not edgetpu.enumerate_devices():
            return "no Edge TPU found (check `lsusb` for 18d1:9302 or 1a6e:089a, or /dev/apex_0)"
    if kind == "float" and models.manifest.model_for("float") is None:
        return "the manifest names no float twin (models.float)"
    if kind in ("cpu", "cpu-builtin", "simulated") and models.path_for("cpu") is None:
        return "the model has no CPU twin (models.cpu in the manifest)"
    return None


def open_variant(variant: Variant, models: ModelSet, runtime: Runtime, *, allow_float: bool = False) -> Backend:
    """Create the backend of ``variant`` (the simulated one runs the CPU model once for its outputs)."""
    path = models.path_for(variant.role) if variant.role != "float" else models.manifest.model_for("float")
    if path is None:
        raise ModelError(f"no {variant.role} model for backend {variant.kind!r}")
    model = read_model(path)
    if variant.kind == "edgetpu":
        check_precision(model, allow_float=False, edgetpu_device=True)
        delegate = edgetpu.load_delegate(runtime, edgetpu.parse_device(variant.device))
        return TFLiteBackend(model, runtime, delegates=[delegate], name=variant.device)
    if model.edgetpu:
        raise ModelError(f"{path.name} is compiled for the Edge TPU and cannot run on the CPU")
    if variant.kind != "float":
        check_precision(model, allow_float)
    backend = TFLiteBackend(model, runtime, threads=variant.threads, xnnpack=variant.kind != "cpu-builtin")
    if variant.kind == "simulated":
        backend.invoke()  # outputs of a real inference for the simulation to replay
        simulated = SimulatedBackend.like(backend, variant.simulated_ms / 1e3)
        backend.close()
        return simulated
    return backend


def fill_input(backend: Backend, preprocessor: Preprocessor, frame: Frame) -> None:
    """Write ``frame``, preprocessed, into the backend's input tensor."""
    view = backend.input_view()
    preprocessor(frame, view)
    del view


@dataclass
class _Open:
    variant: Variant
    backend: Backend
    init: float
    first: float
    added_rss: float | None = None
    samples: list[float] = field(default_factory=list)
    energy: list = field(default_factory=list)


def measure(openers: list[tuple[Variant, Callable[[], Backend]]], prepare: Callable[[Backend], None], *,
            warmup: int, runs: int, min_seconds: float = 0.0, rounds: int = 1, runtime: str = "",
            meter: Callable[[Callable[[], list[float]]], tuple[list[float], object]] | None = None
            ) -> list[tuple[RawResult, list]]:
    """benchmark_model-style statistics of every variant: init, first inference, warm-up, runs.

    All variants are opened first (init and first inference timed one by one); the recorded runs
    are then split into ``rounds`` chunks taken in turn from each variant, so that load from other
    processes that comes and goes falls on every variant alike and ratios between them hold.
    ``meter`` wraps each chunk (e.g. to read power) and returns (samples, its measurement).
    Returns (result, the chunk measurements) per variant, in order.
    """
    if runs < 1:
        raise ConfigError(f"runs = {runs} is not positive", "measure at least one run")
    if warmup < 0:
        raise ConfigError(f"warm-up runs = {warmup} is negative")
    if rounds < 1:
        raise ConfigError(f"rounds = {rounds} is not positive")
    opened: list[_Open] = []
    try:
        for variant, open_backend in openers:
            log.info("raw: opening %s", variant.label)
            rss0 = _rss_mb()
            t0 = time.perf_counter_ns()
            backend = open_backend()
            init = (time.perf_counter_ns() - t0) / 1e9
            opened.append(_Open(variant, backend, init, 0.0))
            prepare(backend)
            t0 = time.perf_counter_ns()
            backend.invoke()
            opened[-1].first = (time.perf_counter_ns() - t0) / 1e9
            for _ in range(warmup):
                backend.invoke()
            rss1 = _rss_mb()
            opened[-1].added_rss = rss1 - rss0 if rss0 is not None and rss1 is not None else None
        per_round = -(-runs // rounds)
        for r in range(rounds):
            for o in opened:
                n = min(per_round, runs - len(o.samples)) if r < rounds - 1 else runs - len(o.samples)
                if n <= 0 and not min_seconds:
                    continue
                chunk = lambda o=o, n=n: invoke_samples(o.backend, n, min_seconds / rounds)  # noqa: E731
                if meter is None:
                    o.samples += chunk()
                else:
                    samples, measurement = meter(chunk)
                    o.samples += samples
                    o.energy.append(measurement)
        rss = peak_rss_mb()
        return [(RawResult(o.variant, Path(o.backend.model.path).name, runtime, o.backend.name, o.init, o.first,
                           warmup, summarize(o.samples), rss, o.samples, o.added_rss), o.energy) for o in opened]
    finally:
        for o in opened:
            o.backend.close()


def _rss_mb() -> float | None:
    """Resident memory of this process now (Linux /proc), or None elsewhere."""
    try:
        return proc_status_mb().get("VmRSS")
    except OSError:
        return None


def invoke_samples(backend: Backend, runs: int, min_seconds: float = 0.0) -> list[float]:
    """Latency in seconds of back-to-back invokes: at least ``runs`` of them and ``min_seconds`` long."""
    samples = []
    clock = time.perf_counter_ns
    invoke = backend.invoke
    deadline = clock() + int(min_seconds * 1e9)
    while len(samples) < runs or clock() < deadline:
        t0 = clock()
        invoke()
        samples.append((clock() - t0) / 1e9)
    return samples


def int8_float_ratios(results: list[RawResult], statistic: str = "mean") -> dict[int, float]:
    """threads → int8 (XNNPACK) / float32 latency (``mean`` or ``p50``), for thread counts measured in both."""
    by = {(r.variant.kind, r.variant.threads): getattr(r.latency, statistic) for r in results}
    return {t: by[("cpu", t)] / by[("float", t)] for (kind, t) in by
            if kind == "float" and ("cpu", t) in by and by[("float", t)] > 0}
