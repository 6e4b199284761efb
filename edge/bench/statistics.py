"""Summary statistics of latency samples, as TFLite's benchmark_model reports them (plus percentiles)."""

from __future__ import annotations

import math
import resource
import sys
from dataclasses import asdict, dataclass

import numpy as np

from edge.errors import ConfigError
from edge.telemetry.process import status_kb

PERCENTILES = (5, 50, 95, 99)


@dataclass(frozen=True)
class Summary:
    """Latency statistics in seconds over ``count`` samples (std is the population std, like benchmark_model)."""

    count: int
    mean: float
    std: float
    min: float
    max: float
    p5: float
    p50: float
    p95: float
    p99: float

    @property
    def throughput(self) -> float:
        """Inferences per second at the mean latency (back to back, one at a time)."""
        return 1.0 / self.mean if self.mean > 0 else 0.0

    def as_ms(self) -> dict[str, float]:
        """Every figure but the count in milliseconds, for reports."""
        return {k: (v if k == "count" else v * 1e3) for k, v in asdict(self).items()}


def summarize(samples_s) -> Summary:
    """Statistics of latency samples given in seconds; at least one sample."""
    values = np.asarray(samples_s, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ConfigError("no latency samples to summarize", "measure at least one run")
    if not np.all(np.isfinite(values)):
        raise ConfigError("latency samples contain non-finite values")
    p5, p50, p95, p99 = (float(v) for v in np.percentile(values, PERCENTILES))
    return Summary(count=int(values.size), mean=float(values.mean()), std=float(values.std()),
                   min=float(values.min()), max=float(values.max()), p5=p5, p50=p50, p95=p95, p99=p99)


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else math.nan


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def proc_status_mb(pid: int | str = "self") -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process from /proc/<pid>/status, in MiB (Linux)."""
    return {key: kb / 1024 for key, kb in status_kb(f"/proc/{pid}/status", ("VmRSS", "VmHWM")).items()}
