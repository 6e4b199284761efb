"""One pass over a source, as a result: frames, achieved FPS, dropped frames, per-stage statistics.

Shared by the pipeline mode (:mod:`edge.bench.pipeline`) and the serial loop (:mod:`edge.bench.serial`)
so that both are measured and reported the same way. FPS is the steady-state rate: frames
finished after the first one, over the time between the first and the last (model loading and
the first frame's latency are reported separately, as cold start).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from edge.bench.statistics import Summary, summarize
from edge.telemetry.stats import PipelineStats


def steady_fps(finished_s: list[float]) -> float:
    """(n - 1) / (last - first) over the monotonic times at which frames finished."""
    if len(finished_s) < 2 or finished_s[-1] <= finished_s[0]:
        return 0.0
    return (len(finished_s) - 1) / (finished_s[-1] - finished_s[0])


@dataclass
class PassResult:
    mode: str                    # "pipeline" or "serial"
    backend: str
    simulated: bool
    frames: int
    seconds: float               # wall clock of the whole pass
    fps: float                   # steady state
    captured: int
    dropped: int
    stages: dict[str, Summary]
    samples: dict[str, list[float]] = field(repr=False, default_factory=dict)
    energy: dict | None = None   # Energy.as_dict(frames) when a power reader is configured

    def as_dict(self) -> dict:
        out = {"mode": self.mode, "backend": self.backend, "simulated": self.simulated, "frames": self.frames,
               "seconds": self.seconds, "fps": self.fps, "captured": self.captured, "dropped": self.dropped,
               "stages_ms": {name: s.as_ms() for name, s in self.stages.items()}}
        if self.energy is not None:
            out["energy"] = self.energy
        return out


class RecordingStats(PipelineStats):
    """PipelineStats that also keeps every stage sample and publish time of the pass (bounded by the pass)."""

    def __init__(self, window: int = 512):
        super().__init__(window)
        self.samples: dict[str, list[float]] = {}
        self.finished: list[float] = []

    def published_frame(self, stage_seconds: dict[str, float], labels: list[str]) -> None:
        self.finished.append(time.monotonic())
        super().published_frame(stage_seconds, labels)
        for stage, seconds in stage_seconds.items():
            self.samples.setdefault(stage, []).append(seconds)


def summarize_stages(samples: dict[str, list[float]]) -> dict[str, Summary]:
    return {stage: summarize(values) for stage, values in samples.items() if values}
