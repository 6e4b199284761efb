"""The stats payload shared by MQTT ``<prefix>/stats``, JSONL stats lines and the live view's /stats.

With several cameras the payload carries ``"cameras"``: per camera name, the same ``fps``,
``latency_ms``, frame ``counts`` and ``detections`` as the aggregate (see :func:`pipeline_payload`).
"""

from __future__ import annotations

import math
import time

from edge.telemetry.stats import PipelineStats, Snapshot
from edge.telemetry.system import SystemSample

FRAME_COUNTS = ("captured", "dropped", "inferred", "published")   # the counters a camera has of its own


def _ms(value: float) -> float | None:
    return None if math.isnan(value) else round(value * 1e3, 3)


def camera_snapshots(stats: PipelineStats) -> dict[str, Snapshot]:
    """{camera name: its snapshot}, in the order the cameras were configured; empty with one camera (the
    aggregate is the camera's)."""
    cameras = dict(stats.cameras)      # one C-level copy: the scheduler may add a camera meanwhile
    return {name: cam.snapshot() for name, cam in cameras.items()}


def _fps(snap: Snapshot) -> dict[str, float]:
    return {"capture": round(snap.fps_capture, 2), "inference": round(snap.fps_inference, 2),
            "published": round(snap.fps_published, 2)}


def _latency(snap: Snapshot) -> dict[str, dict[str, float | None]]:
    return {stage: {f"p{q:g}": _ms(v) for q, v in qs.items()} for stage, qs in snap.latency.items()}


def camera_payload(snap: Snapshot) -> dict:
    """One camera's part of ``"cameras"``: fps, latency_ms, counts (frame counters), detections."""
    return {"fps": _fps(snap), "latency_ms": _latency(snap),
            "counts": {name: getattr(snap, name) for name in FRAME_COUNTS}, "detections": dict(snap.detections)}


def stats_payload(snap: Snapshot, sample: SystemSample | None = None,
                  cameras: dict[str, Snapshot] | None = None) -> dict:
    """JSON-ready: counters, FPS, latency percentiles in ms per stage, the system sample and, when
    ``cameras`` holds any, ``"cameras": {name: camera_payload}``."""
    out = {"ts": round(time.time(), 3), "uptime": round(snap.uptime, 3), "backend": snap.backend,
           "counts": dict(snap.counts), "detections": dict(snap.detections), "errors": dict(snap.errors),
           "fps": _fps(snap), "latency_ms": _latency(snap)}
    if cameras:
        out["cameras"] = {name: camera_payload(cam) for name, cam in cameras.items()}
    if sample is not None:
        out.update(sample.as_dict())
    return out


def pipeline_payload(stats: PipelineStats, sample: SystemSample | None = None) -> dict:
    """:func:`stats_payload` of ``stats`` with its cameras' figures (``"cameras"`` when several run)."""
    return stats_payload(stats.snapshot(), sample, camera_snapshots(stats))
