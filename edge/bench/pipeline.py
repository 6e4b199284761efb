"""Pipeline mode: the real daemon pipeline (``edge.app.assemble``) end to end, side by side with references.

Each round loads the model once through :func:`edge.app.assemble` and measures, one after the
other on that same backend: raw back-to-back invokes on a real frame (the reference throughput),
the daemon pipeline over the source, and the serial tutorial loop over the same source. With a
simulated accelerator it then runs the pipeline and the serial loop again with a
:class:`~edge.runtime.simulated.SimulatedBackend` in place of the model (same preprocessing,
decoding of the model's real outputs, sinks). Ratios are computed within a round, so load from
other processes affects both sides of a ratio alike; rounds are repeated and the median reported.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edge.app import assemble, make_sinks
from edge.bench.passes import PassResult, RecordingStats, steady_fps, summarize_stages
from edge.bench.energy import PowerSampler
from edge.bench.raw import fill_input, invoke_samples
from edge.bench.serial import serial_pass
from edge.bench.statistics import Summary, ratio, summarize
from edge.capture import make_source
from edge.capture.base import Frame
from edge.config import Config, merge
from edge.errors import SourceError
from edge.pipeline import Pipeline
from edge.runtime.backend import Backend
from edge.runtime.simulated import SimulatedBackend
from edge.telemetry.power import PowerReader
from edge.vision.preprocess import Preprocessor

log = logging.getLogger(__name__)


def bench_config(config: Config, jsonl: Path, max_frames: int) -> Config:
    """``config`` for benchmarking: files read as fast as possible (every frame), no live line."""
    return merge(config, {"source": {"realtime": False, "loop": False},
                          "output": {"jsonl": str(jsonl), "live": "off", "max_frames": max_frames}})


def _opened(config: Config):
    source = make_source(config.source)
    source.open()
    return source


def reference_frame(config: Config) -> Frame:
    """The first frame of the source, for raw invokes on a real picture."""
    source = _opened(config)
    try:
        frame = source.read()
    finally:
        source.close()
    if frame is None:
        raise SourceError(f"source {config.source.uri!r} delivered no frame")
    return frame


@dataclass
class Round:
    raw: Summary                       # back-to-back invokes on the pipeline's own backend, before and after
    pipeline: PassResult
    threads: int
    serial: PassResult | None = None
    sim_raw: Summary | None = None
    sim_pipeline: PassResult | None = None
    sim_serial: PassResult | None = None
    sim_seconds: float = 0.0

    def ratios(self) -> dict[str, float]:
        t = f" x{self.threads}"
        out = {"pipeline_over_raw" + t: ratio(self.pipeline.fps, self.raw.throughput)}
        if self.serial:
            out["pipeline_over_serial" + t] = ratio(self.pipeline.fps, self.serial.fps)
            out["serial_ceiling" + t] = serial_ceiling(self.serial)
        if self.sim_pipeline:
            out["sim_pipeline_over_nominal"] = ratio(self.sim_pipeline.fps, 1.0 / self.sim_seconds)
            out["sim_pipeline_over_sim_raw"] = ratio(self.sim_pipeline.fps, self.sim_raw.throughput)
        if self.sim_pipeline and self.sim_serial:
            out["sim_pipeline_over_sim_serial"] = ratio(self.sim_pipeline.fps, self.sim_serial.fps)
            out["sim_serial_ceiling"] = serial_ceiling(self.sim_serial)
        return out


def serial_ceiling(serial: PassResult) -> float:
    """The best pipeline/serial ratio possible: the serial period over its slowest stage."""
    stages = {k: v.mean for k, v in serial.stages.items() if k != "total"}
    return ratio(serial.stages["total"].mean, max(stages.values()))


def median_ratios(ratios: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each ratio's median, min and max over the rounds (each round: {name: ratio})."""
    keys = {k for r in ratios for k in r}
    out = {}
    for key in sorted(keys):
        values = [r[key] for r in ratios if key in r]
        out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values),
                    "rounds": values}
    return out


def _metered(power: PowerReader | None, run: Callable[[], PassResult]) -> PassResult:
    """Run one pass, with its energy when a power reader is configured."""
    if power is None:
        return run()
    with PowerSampler(power) as sampler:
        result = run()
    result.energy = sampler.energy.as_dict(result.frames)
    return result


def _pipeline_pass(pipeline: Pipeline, stats: RecordingStats, simulated: bool) -> PassResult:
    summary = pipeline.run()
    return PassResult("pipeline", pipeline.backend.name, simulated, summary.frames, summary.seconds,
                      steady_fps(stats.finished), summary.captured, summary.dropped,
                      summarize_stages(stats.samples), stats.samples)


def _raw_reference(backend: Backend, preprocessor: Preprocessor, frame: Frame, warmup: int, runs: int) -> list[float]:
    fill_input(backend, preprocessor, frame)
    for _ in range(warmup):
        backend.invoke()
    return invoke_samples(backend, runs)


def run_round(config: Config, frame: Frame, *, warmup: int, runs: int, serial: bool = True,
              simulate_ms: float = 0.0, power: PowerReader | None = None) -> Round:
    """One round: raw reference, pipeline, serial, then the same with the simulated accelerator.

    ``config`` is a :func:`bench_config` (no live line, files read as fast as possible).
    With a power reader, each pipeline and serial pass carries its energy (J/frame, average W).
    """
    stats = RecordingStats()
    assembly = assemble(config, stats=stats)
    backend = assembly.loaded.backend
    pre, post = assembly.pipeline.preprocessor, assembly.pipeline.postprocess
    try:
        before = _raw_reference(backend, pre, frame, warmup, runs)
        passed = _metered(power, lambda: _pipeline_pass(assembly.pipeline, stats, False))
        after = _raw_reference(backend, pre, frame, 0, runs)
        raw = summarize(before + after)   # bracketing the pass: load that changes meanwhile hits both sides
        threads = getattr(backend, "threads", config.model.threads)
        result = Round(raw, passed, threads)
        if serial:
            result.serial = _metered(power, lambda: serial_pass(_opened(config), backend, pre, post,
                                                                max_frames=config.output.max_frames))
        if simulate_ms > 0:
            fill_input(backend, pre, frame)
            backend.invoke()
            sim = SimulatedBackend.like(backend, simulate_ms / 1e3)
            result.sim_seconds = sim.seconds
            result.sim_raw = summarize(invoke_samples(sim, max(10, min(runs, 100))))
            sim_stats = RecordingStats()
            source = _opened(config)
            sinks = make_sinks(config, sim_stats, source.name)
            pipeline = Pipeline(source, sim, pre, post, sinks, sim_stats, max_frames=config.output.max_frames)
            result.sim_pipeline = _metered(power, lambda: _pipeline_pass(pipeline, sim_stats, True))
            if serial:
                result.sim_serial = _metered(power, lambda: serial_pass(
                    _opened(config), sim, pre, post, max_frames=config.output.max_frames, simulated=True))
    finally:
        backend.close()
    return result
