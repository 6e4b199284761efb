"""Scaling mode: several cameras over a pool of SIMULATED accelerators, through the real scheduler.

Every scenario runs the daemon's own assembly (:func:`edge.app.assemble`): real video decoding of
the real clip for each camera, real preprocessing, real decoding and NMS of the model's real
outputs, real sinks; only the accelerators are SIMULATED (``device = "simulated"``: each invoke
takes the given time with the GIL released, as libedgetpu does while the TPU runs, and replays the
outputs of a real CPU inference of one of the clip's frames). Sources are read as fast as
possible, looping, so the detectors are the bottleneck the figures measure. Scenarios run one
after the other within a round, so load from other processes affects both sides of a ratio alike;
rounds repeat and the median of each ratio is reported.

Scenarios and what the issue asks of them:

- ``2cam-1tpu``: aggregate FPS over 1 / t (t = the simulated time): ≥ 0.95.
- ``2cam-2tpu``: over ``2cam-1tpu``: ≥ 1.85, unless the CPU-bound ceiling comes first: the
  ``ceiling`` scenario runs the same two cameras over two 0.1 ms detectors, so what the host does
  per frame (decode, preprocessing, post-processing) is all that limits it.
- ``4cam-2tpu``: each camera's FPS within ±10 % of the cameras' mean.
- ``stalled``: two cameras and a third whose source stops delivering; the two keep ≥ 0.95 of
  their FPS in ``2cam-2tpu`` (summed over the two: each camera's share wavers by a few per cent
  from run to run on a loaded machine).
- ``2seg-2tpu``: one detector made of two pipelined segments of t/2 each, over ``1cam``-style
  unsegmented t on one: ≥ 1.8 (see :mod:`edge.runtime.segments`).
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from edge.capture.base import Frame, Source
from edge.config import Config, merge

log = logging.getLogger(__name__)

SCENARIOS = ("2cam-1tpu", "2cam-2tpu", "ceiling", "4cam-2tpu", "stalled")
CEILING_MS = 0.1


class StalledSource:
    """A source that delivers ``frames`` frames of ``source``, then none until it is closed (a camera
    whose cable was pulled without an error: reads block)."""

    def __init__(self, source: Source, frames: int):
        self.source, self.frames = source, frames
        self.name, self.live = f"{source.name} (stalls)", True
        self._closed = threading.Event()
        self._n = 0

    def open(self) -> None:
        self.source.open()

    def read(self) -> Frame | None:
        if self._n >= self.frames:
            self._closed.wait()
            return None
        self._n += 1
        return self.source.read()

    def close(self) -> None:
        self._closed.set()
        self.source.close()


@dataclass
class ScenarioResult:
    name: str
    detectors: list[str]
    frames: int
    seconds: float
    cameras: dict[str, float] = field(default_factory=dict)     # camera -> FPS

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {"name": self.name, "detectors": self.detectors, "frames": self.frames,
                "seconds": round(self.seconds, 3), "fps": round(self.fps, 2),
                "cameras": {k: round(v, 2) for k, v in self.cameras.items()}}


def scenario_config(config: Config, cameras: int, detectors: list[float], *, frames: int) -> Config:
    """``config`` with ``cameras`` cameras on its source (looping, as fast as possible) and one
    simulated detector per entry of ``detectors`` (ms per invoke); no sinks but the counters."""
    uri = config.source.uri
    return merge(config, {
        "cameras": [{"name": f"cam{i}", "source": uri, "realtime": False, "loop": True} for i in range(cameras)],
        "detectors": [{"device": "simulated", "name": f"sim{i}", "invoke_ms": ms} for i, ms in enumerate(detectors)],
        "output": {"jsonl": "", "live": "off", "max_frames": frames, "jsonl_stats": 0.0},
        "prometheus": {"port": 0}, "mqtt": {"host": ""}, "web": {"port": 0}})


def run_scenario(name: str, config: Config, *, stall: int = 0, warmup: int = 60) -> ScenarioResult:
    """Run one scenario; FPS over the frames after the first ``warmup`` (model loads, first reads)."""
    from edge.app import assemble

    def wrap(source: Source) -> Source:
        if stall and wrap.count == len(config.cameras) - 1:       # the last camera stalls
            source = StalledSource(source, stall)
        wrap.count += 1
        return source
    wrap.count = 0

    assembly = assemble(config, wrap_source=wrap)
    scheduler = assembly.pipeline
    for detector in scheduler.detectors:
        for backend in detector.backends.values():
            if hasattr(backend, "refresh"):
                backend.refresh = 5.0      # one real CPU inference per 5 s: the simulated time dominates
    marks: list[tuple[int, str]] = []

    def mark(result) -> None:
        marks.append((time.monotonic_ns(), result.camera))
    scheduler.on_published.append(mark)
    scheduler.run()
    if len(marks) <= warmup + 1:
        raise RuntimeError(f"scenario {name}: only {len(marks)} frames published")
    steady = marks[warmup:]
    seconds = (steady[-1][0] - steady[0][0]) / 1e9
    per_camera: dict[str, float] = {}
    for camera in sorted({c for _, c in steady}):
        per_camera[camera] = sum(1 for _, c in steady[1:] if c == camera) / seconds
    return ScenarioResult(name, [d.backend_name for d in scheduler.detectors], len(steady) - 1, seconds,
                          per_camera)


def run_round(config: Config, simulate_ms: float, frames: int) -> dict[str, ScenarioResult]:
    t = simulate_ms
    plans = {"2cam-1tpu": (2, [t], 0), "2cam-2tpu": (2, [t, t], 0), "ceiling": (2, [CEILING_MS, CEILING_MS], 0),
             "4cam-2tpu": (4, [t, t], 0), "stalled": (3, [t, t], 30)}
    results = {}
    for name, (cameras, detectors, stall) in plans.items():
        cfg = scenario_config(config, cameras, detectors, frames=frames)
        results[name] = run_scenario(name, cfg, stall=stall)
        log.info("scaling %s: %.1f fps %s", name, results[name].fps,
                 {k: round(v, 1) for k, v in results[name].cameras.items()})
    return results


def ratios(results: dict[str, ScenarioResult], simulate_ms: float) -> dict[str, float]:
    one, two, ceiling = results["2cam-1tpu"], results["2cam-2tpu"], results["ceiling"]
    four, stalled = results["4cam-2tpu"], results["stalled"]
    mean4 = statistics.mean(four.cameras.values())
    healthy = [c for c in stalled.cameras if c != "cam2"]
    return {
        "2cam_1tpu_over_nominal": one.fps * simulate_ms / 1e3,
        "2tpu_over_1tpu": two.fps / one.fps,
        "ceiling_over_1tpu": ceiling.fps / one.fps,
        "4cam_worst_camera_over_mean": min(four.cameras.values()) / mean4,
        "4cam_best_camera_over_mean": max(four.cameras.values()) / mean4,
        "stalled_others_over_2cam_2tpu": sum(stalled.cameras[c] for c in healthy) / sum(two.cameras[c] for c in healthy),
    }


GOALS = {"2cam_1tpu_over_nominal": (0.95, None), "2tpu_over_1tpu": (1.85, None),
         "4cam_worst_camera_over_mean": (0.90, None), "4cam_best_camera_over_mean": (None, 1.10),
         "stalled_others_over_2cam_2tpu": (0.95, None)}


def run_scaling(config: Config, *, simulate_ms: float, rounds: int, frames: int) -> dict:
    """Every scenario ``rounds`` times; each ratio's median, min and max, and whether it meets its goal."""
    rounds_out, all_ratios = [], []
    for i in range(rounds):
        results = run_round(config, simulate_ms, frames)
        r = ratios(results, simulate_ms)
        all_ratios.append(r)
        rounds_out.append({name: res.as_dict() for name, res in results.items()})
        log.info("scaling round %d/%d: %s", i + 1, rounds, {k: round(v, 3) for k, v in r.items()})
    summary = {}
    for key in all_ratios[0]:
        values = [r[key] for r in all_ratios]
        low, high = GOALS.get(key, (None, None))
        median = statistics.median(values)
        met = (low is None or median >= low) and (high is None or median <= high)
        summary[key] = {"median": median, "min": min(values), "max": max(values), "goal": [low, high],
                        "met": met if key in GOALS else None}
    two_tpu, ceiling = summary["2tpu_over_1tpu"]["median"], summary["ceiling_over_1tpu"]["median"]
    if not summary["2tpu_over_1tpu"]["met"] and ceiling < 1.85:
        summary["2tpu_over_1tpu"]["note"] = (f"CPU-bound: the host's own per-frame work caps two cameras at "
                                             f"{ceiling:.2f}x the one-detector figure, reached {two_tpu:.2f}x")
    return {"simulated_ms": simulate_ms, "frames": frames, "rounds": rounds_out, "ratios": summary,
            "note": "SIMULATED accelerators; real decoding, preprocessing, post-processing on the real clip"}


def format_scaling(out: dict) -> str:
    lines = [f"Scaling over SIMULATED {out['simulated_ms']:g} ms accelerators (real clip decoding, "
             "preprocessing and post-processing), medians over rounds:"]
    last = out["rounds"][-1]
    for name, res in last.items():
        cams = " ".join(f"{k} {v:.1f}" for k, v in res["cameras"].items())
        lines.append(f"  {name:<10} {res['fps']:7.1f} fps  ({cams})  [{', '.join(res['detectors'])}]")
    for key, r in out["ratios"].items():
        goal = r["goal"]
        want = (f"≥ {goal[0]}" if goal[0] is not None else "") + (f"≤ {goal[1]}" if goal[1] is not None else "")
        verdict = "" if r["met"] is None else ("  met" if r["met"] else "  MISSED")
        lines.append(f"  {key:<32} {r['median']:.3f} (min {r['min']:.3f}, max {r['max']:.3f}) "
                     f"{want}{verdict}{'  ' + r['note'] if r.get('note') else ''}")
    return "\n".join(lines)


def write(out: dict, path: str | Path) -> None:
    import json
    Path(path).write_text(json.dumps(out, indent=2) + "\n")

