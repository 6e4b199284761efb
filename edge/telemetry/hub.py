"""Telemetry: the system monitor plus the exporters a configuration asks for, as one pipeline sink.

The pipeline closes its sinks when it ends, which stops the monitor thread and every server.
Frame-by-frame exporters (MQTT events, the live view) receive each result; the others (Prometheus)
read snapshots when scraped.
"""

from __future__ import annotations

import logging
from typing import Protocol

from edge.results import FrameResult
from edge.telemetry.stats_payload import pipeline_payload
from edge.telemetry.stats import PipelineStats
from edge.telemetry.system import SystemMonitor

log = logging.getLogger(__name__)


class Closeable(Protocol):
    def close(self) -> None: ...


class Telemetry:
    def __init__(self, stats: PipelineStats, system: SystemMonitor | None = None):
        self.stats = stats
        self.system = system
        self._sinks: list = []        # objects with publish(result)
        self._closeables: list[Closeable] = []
        self.listeners: list = []      # exporters that take the events layer's output (EventListener)

    def add(self, exporter, *, per_frame: bool) -> None:
        if per_frame:
            self._sinks.append(exporter)
        self._closeables.append(exporter)

    def payload(self) -> dict:
        """The stats payload (counters, FPS, latency, power, temperatures) as JSON-ready dict."""
        return pipeline_payload(self.stats, self.system.latest() if self.system else None)

    def publish(self, result: FrameResult) -> None:
        for sink in self._sinks:
            sink.publish(result)

    def close(self) -> None:
        for exporter in reversed(self._closeables):
            exporter.close()
        self._closeables.clear()
        self._sinks.clear()
        if self.system is not None:
            self.system.close()
