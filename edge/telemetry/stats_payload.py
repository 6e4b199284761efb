"""The stats payload shared by MQTT ``<prefix>/stats``, JSONL stats lines and the live view's /stats."""

from __future__ import annotations

import math
import time

from edge.telemetry.stats import Snapshot
from edge.telemetry.system import SystemSample


def _ms(value: float) -> float | None:
    return None if math.isnan(value) else round(value * 1e3, 3)


def stats_payload(snap: Snapshot, sample: SystemSample | None = None) -> dict:
    """JSON-ready: counters, FPS, latency percentiles in ms per stage, and the system sample."""
    out = {"ts": round(time.time(), 3), "uptime": round(snap.uptime, 3), "backend": snap.backend,
           "counts": dict(snap.counts), "detections": dict(snap.detections), "errors": dict(snap.errors),
           "fps": {"capture": round(snap.fps_capture, 2), "inference": round(snap.fps_inference, 2),
                   "published": round(snap.fps_published, 2)},
           "latency_ms": {stage: {f"p{q:g}": _ms(v) for q, v in qs.items()} for stage, qs in snap.latency.items()}}
    if sample is not None:
        out.update(sample.as_dict())
    return out
