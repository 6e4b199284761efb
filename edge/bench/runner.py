"""``edge bench``: runs the selected modes and gathers one report (a JSON-ready dict).

Modes: ``raw`` (benchmark_model-style invoke statistics per backend variant), ``pipeline`` (the
daemon pipeline, side by side with raw invokes on its own backend, ``rounds`` times), ``serial``
(the tutorial loop, in the same rounds), ``simulated`` (pipeline and serial loop again with a
SIMULATED accelerator), ``coldstart`` (spawn → first detection, daemon RSS).
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edge import __version__
from edge.bench import raw as rawmode
from edge.bench.coldstart import measure_cold_start
from edge.bench.pipeline import Round, bench_config, median_ratios, reference_frame, run_round
from edge.bench.energy import Energy, PowerSampler, make_reader
from edge.config import Config, merge
from edge.errors import ConfigError
from edge.runtime import loader
from edge.runtime.backend import default_threads
from edge.runtime.interpreter import Runtime, load_runtime
from edge.runtime.simulated import CORAL_USB_SSD_MOBILENET_V2_MS
from edge.vision.preprocess import Preprocessor

log = logging.getLogger(__name__)

MODES = ("raw", "pipeline", "serial", "simulated", "coldstart", "scaling")
DEFAULT_BACKENDS = ("cpu", "cpu-builtin", "float", "edgetpu", "simulated")

# goal name -> (ratio key or report path, comparison, target): the "done when"
GOALS = (
    ("pipeline / raw invoke (CPU, x{threads})", "pipeline_over_raw x{threads}", ">=", 0.95),
    ("simulated pipeline / (1 / simulated ms)", "sim_pipeline_over_nominal", ">=", 0.95),
    ("simulated pipeline / simulated serial", "sim_pipeline_over_sim_serial", ">=", 2.0),
)


@dataclass
class Options:
    config: Config
    modes: tuple[str, ...] = MODES
    backends: tuple[str, ...] = ()          # empty: every one available (DEFAULT_BACKENDS)
    threads: list[int] = field(default_factory=list)   # raw mode; empty: 1..cores
    pipeline_threads: list[int] = field(default_factory=list)   # empty: the model config's (0: cores)
    warmup: int = 10
    runs: int = 100
    min_seconds: float = 0.0
    rounds: int = 3
    frames: int = 0                         # per pipeline/serial pass; 0: the whole source
    simulate_ms: float = CORAL_USB_SSD_MOBILENET_V2_MS
    coldstart_frames: int = 100
    power: str = ""                         # empty: [power] source of the configuration
    watts: float | None = None              # None: [power] static_watts
    model_args: list[str] = field(default_factory=list)   # the model flags, for the cold-start process

    def validate(self) -> None:
        unknown = [m for m in self.modes if m not in MODES]
        if unknown:
            raise ConfigError(f"unknown mode {unknown[0]!r}", f"valid modes: {', '.join(MODES)}")
        if not self.modes:
            raise ConfigError("no mode selected", f"valid modes: {', '.join(MODES)}")
        if self.runs < 1:
            raise ConfigError(f"--runs {self.runs} is not positive", "measure at least one run")
        if self.warmup < 0:
            raise ConfigError(f"--warmup {self.warmup} is negative")
        if self.rounds < 1:
            raise ConfigError(f"--rounds {self.rounds} is not positive", "run at least one round")
        if self.min_seconds < 0:
            raise ConfigError(f"--min-seconds {self.min_seconds} is negative")
        if self.frames < 0:
            raise ConfigError(f"--frames {self.frames} is negative", "0 means the whole source")
        if "simulated" in self.modes and not self.simulate_ms > 0:
            raise ConfigError(f"--simulate-ms {self.simulate_ms} is not positive",
                              "give the accelerator's time per inference in ms, e.g. 7.2")


def _host() -> dict:
    return {"machine": platform.machine(), "system": f"{platform.system()} {platform.release()}",
            "python": sys.version.split()[0], "cpus": default_threads(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def run_raw(opts: Options, models: loader.ModelSet, report: dict, power, frame,
            runtime: Runtime) -> list[rawmode.RawResult]:
    explicit = bool(opts.backends)
    kinds = list(opts.backends or DEFAULT_BACKENDS)
    if "simulated" not in opts.modes and not explicit:
        kinds.remove("simulated")
    device = opts.config.model.device if opts.config.model.device.startswith("edgetpu") else "edgetpu"
    variants = rawmode.variants(kinds, opts.threads or rawmode.parse_threads(""), models, explicit=explicit,
                                device=device, simulated_ms=opts.simulate_ms)

    def prepare(backend):
        pre = Preprocessor(models.manifest.input, backend.model.inputs[0], backend.input_shape)
        rawmode.fill_input(backend, pre, frame)

    def metered(chunk):
        with PowerSampler(power) as sampler:
            samples = chunk()
        return samples, sampler.energy

    openers = [(v, lambda v=v: rawmode.open_variant(v, models, runtime, allow_float=opts.config.model.allow_float))
               for v in variants]
    measured = rawmode.measure(openers, prepare, warmup=opts.warmup, runs=opts.runs, min_seconds=opts.min_seconds,
                               rounds=opts.rounds, runtime=f"{runtime.name} {runtime.version}",
                               meter=metered if power else None)
    results = []
    for result, energies in measured:
        entry = result.as_dict()
        if energies:
            joules, seconds = sum(e.joules for e in energies), sum(e.seconds for e in energies)
            entry["energy"] = Energy(energies[0].source, seconds, joules,
                                     sum(e.samples for e in energies)).as_dict(result.latency.count)
        report["raw"].append(entry)
        results.append(result)
    report["int8_over_float"] = {str(t): r for t, r in rawmode.int8_float_ratios(results).items()}
    report["int8_over_float_p50"] = {str(t): r for t, r in rawmode.int8_float_ratios(results, "p50").items()}
    return results


def pipeline_threads(opts: Options) -> list[int]:
    return opts.pipeline_threads or [opts.config.model.threads or default_threads()]


def run_rounds(opts: Options, report: dict, power, tmp: Path, frame) -> list[Round]:
    """``rounds`` rounds; in each, one :func:`run_round` per pipeline thread count (simulation in the first)."""
    base = bench_config(opts.config, tmp / "bench.jsonl", opts.frames)
    rounds, ratios = [], []
    for i in range(opts.rounds):
        round_ratios: dict[str, float] = {}
        for j, threads in enumerate(pipeline_threads(opts)):
            log.info("round %d/%d, pipeline threads %d", i + 1, opts.rounds, threads)
            config = merge(base, {"model": {"threads": threads}})
            rounds.append(_round(opts, config, frame, report, power, simulate=j == 0))
            round_ratios.update(rounds[-1].ratios())
        ratios.append(round_ratios)
    report["ratios"] = median_ratios(ratios)
    return rounds


def _round(opts: Options, config: Config, frame, report: dict, power, simulate: bool) -> Round:
    rnd = run_round(config, frame, warmup=opts.warmup, runs=opts.runs, serial="serial" in opts.modes,
                    simulate_ms=opts.simulate_ms if simulate and "simulated" in opts.modes else 0.0, power=power)
    entry = {"threads": rnd.threads, "raw_invoke_ms": rnd.raw.as_ms(), "raw_throughput_per_s": rnd.raw.throughput,
             "pipeline": rnd.pipeline.as_dict(), "ratios": rnd.ratios()}
    for name in ("serial", "sim_pipeline", "sim_serial"):
        if getattr(rnd, name) is not None:
            entry[name] = getattr(rnd, name).as_dict()
    if rnd.sim_raw is not None:
        entry["sim_raw_invoke_ms"] = rnd.sim_raw.as_ms()
    report["rounds"].append(entry)
    return rnd


def goals(report: dict) -> list[dict]:
    out = []
    ratios = report.get("ratios", {})
    measured = report["settings"]["pipeline_threads"]
    # the goal is about what `edge run` does: its thread count when it was measured
    threads = report["settings"]["run_threads"] if report["settings"]["run_threads"] in measured else measured[0]
    for name, key, op, target in GOALS:
        name, key = name.format(threads=threads), key.format(threads=threads)
        if key in ratios:
            value = ratios[key]["median"]
            out.append({"goal": name, "value": value, "target": f"{op} {target}", "met": value >= target})
    for key, what in (("int8_over_float", "mean"), ("int8_over_float_p50", "p50")):
        for threads, value in (report.get(key) or {}).items():
            out.append({"goal": f"int8 / float32 invoke latency, {what} ({threads} thr)", "value": value,
                        "target": "<= 0.5", "met": value <= 0.5})
    cold = report.get("coldstart")
    if cold:
        out.append({"goal": "cold start to first detection (s)", "value": cold["first_detection_s"],
                    "target": "<= 1.5", "met": cold["first_detection_s"] <= 1.5})
        out.append({"goal": "daemon RSS (MiB)", "value": cold["rss_mb"], "target": "<= 150",
                    "met": cold["rss_mb"] <= 150})
    return out


def run(opts: Options) -> tuple[dict, dict]:
    """Run the benchmark; returns (report, samples) — samples (seconds) feed the plot only."""
    opts.validate()
    models = loader.resolve(opts.config.model)      # a missing model fails here, before anything runs
    pc = opts.config.power
    power = make_reader(opts.power or pc.source, pc.static_watts if opts.watts is None else opts.watts,
                        hwmon_root=Path(opts.config.telemetry.sys_root) / "class/hwmon", hwmon_chip=pc.hwmon_chip,
                        scale=pc.scale, offset=pc.offset)
    runtime = load_runtime(opts.config.model.runtime)
    report: dict = {
        "edge": __version__, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": _host(), "runtime": f"{runtime.name} {runtime.version}", "model": models.requested.name,
        "source": opts.config.source.uri, "modes": list(opts.modes),
        "settings": {"warmup": opts.warmup, "runs": opts.runs, "min_seconds": opts.min_seconds,
                     "rounds": opts.rounds, "frames": opts.frames, "simulate_ms": opts.simulate_ms,
                     "pipeline_threads": pipeline_threads(opts),
                     "run_threads": opts.config.model.threads or default_threads()},
        "raw": [], "rounds": [],
        "power": {"source": power.name if power else None,
                  "note": None if power else "no power reader configured (--power pmic|hwmon|static --watts W)"},
    }
    samples: dict = {"raw": {}, "pipeline": {}, "serial": {}}
    passes = {"pipeline", "serial", "simulated"} & set(opts.modes)
    # one real frame of the source for the raw invokes, read once (opening a camera is slow)
    frame = reference_frame(opts.config) if passes or "raw" in opts.modes else None
    if "raw" in opts.modes:
        for result in run_raw(opts, models, report, power, frame, runtime):
            samples["raw"][result.variant.label] = result.samples
    if passes:
        with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
            rounds = run_rounds(opts, report, power, Path(tmp), frame)
        for rnd in rounds[-len(pipeline_threads(opts)):]:    # the last round, every thread count
            for name in ("pipeline", "sim_pipeline", "serial", "sim_serial"):
                passed = getattr(rnd, name)
                if passed is not None:
                    group = "serial" if passed.mode == "serial" else "pipeline"
                    samples[group][f"{passed.mode} {passed.backend}"] = passed.samples
    if "scaling" in opts.modes:
        from edge.bench.scaling import run_scaling
        log.info("scaling: cameras over SIMULATED %g ms accelerators", opts.simulate_ms)
        report["scaling"] = run_scaling(opts.config, simulate_ms=opts.simulate_ms, rounds=opts.rounds,
                                        frames=opts.frames or 1500)
    if "coldstart" in opts.modes:
        log.info("cold start")
        report["coldstart"] = measure_cold_start(opts.model_args, opts.config.source.uri,
                                                 opts.coldstart_frames).as_dict()
    report["goals"] = goals(report)
    return report, samples
