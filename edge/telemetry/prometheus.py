"""Prometheus /metrics: pipeline counters, latency histograms, FPS, power, energy, temperatures.

A custom collector on its own ``CollectorRegistry`` reads a consistent snapshot of
:class:`PipelineStats` and the latest :class:`SystemSample` at every scrape, so the pipeline
threads pay nothing per frame for the exporter. Names follow Prometheus conventions: base units
(``_seconds``, ``_watts``, ``_celsius``, ``_joules_total``, ``_bytes``), ``_total`` counters. A
source that cannot be read has ``edge_<source>_available 0`` with the reason as a label instead
of zero readings. The server binds 127.0.0.1 unless configured otherwise.

The ``edge_*`` pipeline families are the aggregate over every camera, unlabelled as ever. Beside
them the ``edge_camera_*`` families carry a ``camera`` label: one camera's frames, detections, FPS,
stage latency histograms (every stage, ``end_to_end`` and ``frame_age`` included, in one family) and
recent percentiles. With several cameras there is one label value per camera; with one camera the
family is the aggregate's figures under the camera's name (``camera`` given to the collector), so
that a dashboard over many devices can group by ``camera`` whatever each device runs.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Iterator
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
                                    InfoMetricFamily, Metric)

from edge.errors import ConfigError
from edge.telemetry.stats import COUNTER_HELP, LogLimiter, PipelineStats, Snapshot
from edge.telemetry.stats_payload import FRAME_COUNTS, camera_snapshots
from edge.telemetry.system import SOURCES, SystemMonitor
from edge.telemetry.vcgencmd import THROTTLE_FLAGS
from edge.web.security import BoundedServerMixin, Credentials, check_exposure, server_tls

log = logging.getLogger(__name__)

FRAME_COUNTERS = ("captured", "dropped", "inferred", "published", "corrupt")
HISTOGRAMS = {"end_to_end": ("edge_end_to_end_seconds", "Capture to results published, per frame."),
              "frame_age": ("edge_frame_age_seconds", "Age of a frame when inference took it.")}
STAGE_HELP = "Time per pipeline stage (preprocess, invoke, postprocess, publish), per frame."


def _bucket_rows(buckets) -> list[tuple[str, int]]:
    return [("+Inf" if math.isinf(b) else repr(b), n) for b, n in buckets]


class EdgeCollector:
    """Builds every edge_* family from the stats and system snapshots at scrape time.

    ``camera``: the name of the only camera, for the ``edge_camera_*`` families when the stats have
    no per-camera children (one camera); "" leaves those families out in that case.
    """

    def __init__(self, stats: PipelineStats, system: SystemMonitor | None = None, camera: str = ""):
        self.stats = stats
        self.system = system
        self.camera = camera

    def collect(self) -> Iterator[Metric]:
        snap = self.stats.snapshot()
        yield from self._pipeline(snap)
        cameras = camera_snapshots(self.stats) or ({self.camera: snap} if self.camera else {})
        if cameras:
            yield from _cameras(cameras)
        if self.system is not None:
            yield from self._system()

    def _pipeline(self, snap: Snapshot) -> Iterator[Metric]:
        info = InfoMetricFamily("edge_pipeline", "The backend running the model.")
        info.add_metric([], {"backend": snap.backend or "none"})
        yield info
        for name, value in snap.counts.items():
            metric = f"edge_frames_{name}" if name in FRAME_COUNTERS else f"edge_{name}"
            yield CounterMetricFamily(metric, COUNTER_HELP.get(name, f"Count of {name}."), value=value)
        det = CounterMetricFamily("edge_detections", "Detections published, by label.", labels=["label"])
        for label, n in sorted(snap.detections.items()):
            det.add_metric([label], n)
        yield det
        err = CounterMetricFamily("edge_errors", "Errors, by kind.", labels=["kind"])
        for kind, n in sorted(snap.errors.items()):
            err.add_metric([kind], n)
        yield err
        fps = GaugeMetricFamily("edge_fps", "Frames per second over the last seconds, by stage.",
                                labels=["stage"])
        for stage, value in _fps_rows(snap):
            fps.add_metric([stage], value)
        yield fps
        stages = HistogramMetricFamily("edge_stage_seconds", STAGE_HELP, labels=["stage"])
        for stage, hist in snap.histograms.items():
            if stage in HISTOGRAMS:
                name, help_text = HISTOGRAMS[stage]
                one = HistogramMetricFamily(name, help_text)
                one.add_metric([], _bucket_rows(hist.buckets), hist.sum)
                yield one
            else:
                stages.add_metric([stage], _bucket_rows(hist.buckets), hist.sum)
        yield stages
        recent = GaugeMetricFamily("edge_recent_latency_seconds", "Latency percentiles over the last frames "
                                   "(sliding window), by stage and quantile.", labels=["stage", "quantile"])
        for stage, qs in snap.latency.items():
            for q, value in qs.items():
                if not math.isnan(value):
                    recent.add_metric([stage, f"{q / 100:g}"], value)
        yield recent
        yield GaugeMetricFamily("edge_uptime_seconds", "Seconds since the pipeline started.", value=snap.uptime)

    def _system(self) -> Iterator[Metric]:
        sample = self.system.latest()
        for source in SOURCES:
            available = GaugeMetricFamily(f"edge_{source}_available", f"1 when {source} telemetry is read, 0 "
                                          "with the reason when it cannot be.", labels=["reason"])
            reason = sample.unavailable.get(source)
            available.add_metric([reason or ""], 0 if reason else 1)
            yield available
        if "power" not in sample.unavailable and sample.power_source:
            labels = ["source"]
            yield _gauge("edge_power_watts", "Power draw (see the power source's caveats).", labels,
                         [([sample.power_source], sample.watts)])
            yield _counter("edge_energy_joules", "Energy integrated from the power readings.", labels,
                           [([sample.power_source], sample.joules)])
            if not math.isnan(sample.watts_avg):
                yield _gauge("edge_power_average_watts", "Power averaged over the last seconds (Δjoules / Δt).",
                             labels, [([sample.power_source], sample.watts_avg)])
            if not math.isnan(sample.joules_per_inference):
                yield _gauge("edge_energy_per_inference_joules", "Energy per inference over the last seconds.",
                             labels, [([sample.power_source], sample.joules_per_inference)])
            if sample.rails:
                yield _gauge("edge_power_rail_watts", "Raspberry Pi 5 PMIC power per rail.", ["rail"],
                             [([rail], w) for rail, w in sorted(sample.rails.items())])
        if sample.temperatures:
            yield _gauge("edge_temperature_celsius", "Temperatures, by sensor and source.", ["sensor", "source"],
                         [([t.sensor, t.source], t.celsius) for t in sample.temperatures])
        if sample.throttle is not None:
            state = sample.throttle.throttled
            rows = []
            for flag in THROTTLE_FLAGS.values():
                rows.append(([flag, "now"], 1.0 if flag in state.now else 0.0))
                rows.append(([flag, "since_boot"], 1.0 if flag in state.since_boot else 0.0))
            yield _gauge("edge_throttle", "Raspberry Pi firmware throttle flags (vcgencmd get_throttled).",
                         ["flag", "when"], rows)
            yield _gauge("edge_arm_clock_hertz", "Real ARM clock (vcgencmd measure_clock arm).", [],
                         [([], sample.throttle.arm_hz)])
        if sample.process is not None:
            p = sample.process
            yield _counter("edge_process_cpu_seconds", "CPU time (user + system) of this process.", [],
                           [([], p.cpu_seconds)])
            if not math.isnan(p.cpu_percent):
                yield _gauge("edge_process_cpu_ratio", "CPU use between samples; 1 = one core.", [],
                             [([], p.cpu_percent / 100)])
            yield _gauge("edge_process_resident_memory_bytes", "Resident memory.", [], [([], p.rss_bytes)])
            yield _gauge("edge_process_threads", "Threads of this process.", [], [([], p.threads)])


CAMERA_FRAME_HELP = {"captured": "Frames delivered by the camera's source, by camera.",
                     "dropped": "Frames of the camera replaced by a newer one before inference took them, by camera.",
                     "inferred": "Frames of the camera the model ran on, by camera.",
                     "published": "Frames of the camera whose results reached every sink, by camera."}


def _fps_rows(snap: Snapshot) -> tuple[tuple[str, float], ...]:
    return (("capture", snap.fps_capture), ("inference", snap.fps_inference), ("published", snap.fps_published))


def _cameras(cameras: dict[str, Snapshot]) -> Iterator[Metric]:
    """The ``edge_camera_*`` families, one ``camera`` label value per entry of ``cameras``."""
    for name in FRAME_COUNTS:
        yield _counter(f"edge_camera_frames_{name}", CAMERA_FRAME_HELP[name], ["camera"],
                       [([camera], getattr(snap, name)) for camera, snap in cameras.items()])
    yield _counter("edge_camera_detections", "Detections published, by camera and label.", ["camera", "label"],
                   [([camera, label], n) for camera, snap in cameras.items()
                    for label, n in sorted(snap.detections.items())])
    yield _gauge("edge_camera_fps", "Frames per second over the last seconds, by camera and stage.",
                 ["camera", "stage"], [([camera, stage], value) for camera, snap in cameras.items()
                                       for stage, value in _fps_rows(snap)])
    stages = HistogramMetricFamily("edge_camera_stage_seconds", "Time per pipeline stage (preprocess, invoke, "
                                   "postprocess, publish, end_to_end, frame_age), per frame, by camera.",
                                   labels=["camera", "stage"])
    for camera, snap in cameras.items():
        for stage, hist in snap.histograms.items():
            stages.add_metric([camera, stage], _bucket_rows(hist.buckets), hist.sum)
    yield stages
    yield _gauge("edge_camera_recent_latency_seconds", "Latency percentiles over the camera's last frames "
                 "(sliding window), by camera, stage and quantile.", ["camera", "stage", "quantile"],
                 [([camera, stage, f"{q / 100:g}"], value) for camera, snap in cameras.items()
                  for stage, qs in snap.latency.items() for q, value in qs.items() if not math.isnan(value)])


def _family(kind: type, name: str, help_text: str, labels: list[str], rows):
    """A gauge or counter family (``kind``) with one sample per (label values, value) row."""
    family = kind(name, help_text, labels=labels)
    for values, value in rows:
        family.add_metric(values, value)
    return family


def _gauge(name: str, help_text: str, labels: list[str], rows) -> GaugeMetricFamily:
    return _family(GaugeMetricFamily, name, help_text, labels, rows)


def _counter(name: str, help_text: str, labels: list[str], rows) -> CounterMetricFamily:
    return _family(CounterMetricFamily, name, help_text, labels, rows)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # scrapes are not worth a log line each
        pass


class _Server(BoundedServerMixin, ThreadingWSGIServer):
    pass


def _authenticated(app, credentials: Credentials, stats: PipelineStats, warn: LogLimiter):
    """``app`` behind HTTP authentication (Prometheus sends ``basic_auth`` or ``authorization`` as set
    in its scrape config)."""
    def guarded(environ, start_response):
        if credentials.accepts(environ.get("HTTP_AUTHORIZATION")):
            return app(environ, start_response)
        stats.error("prometheus_auth")
        warn.warning(log, "/metrics: request from %s without valid credentials", environ.get("REMOTE_ADDR"))
        start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="edge"'),
                                            ("Content-Type", "text/plain")])
        return [b"unauthorized\n"]
    return guarded


class PrometheusExporter:
    """Serves /metrics from its own registry on ``address:port`` in a daemon thread: at most
    ``max_connections`` at once (each a thread; more get 503), each closed after ``idle_timeout`` s of
    silence; credentials from ``auth_file`` and TLS from ``tls_cert``/``tls_key`` when given; beyond
    loopback only with credentials or ``insecure_listen``. ``camera``: the only camera's name, which
    labels the ``edge_camera_*`` families when one camera runs (see :class:`EdgeCollector`)."""

    def __init__(self, stats: PipelineStats, system: SystemMonitor | None, port: int,
                 address: str = "127.0.0.1", *, auth_file: str = "", insecure_listen: bool = False,
                 tls_cert: str = "", tls_key: str = "", max_connections: int = 8, idle_timeout: float = 30.0,
                 camera: str = ""):
        tls = server_tls(tls_cert, tls_key, "Prometheus /metrics")
        check_exposure("Prometheus /metrics", address, auth_file, insecure_listen, tls is not None)
        credentials = Credentials.from_file(auth_file, "prometheus.auth_file") if auth_file else None
        self.stats = stats
        self._warn = LogLimiter(30.0)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(EdgeCollector(stats, system, camera))
        app = make_wsgi_app(self.registry)
        if credentials is not None:
            app = _authenticated(app, credentials, stats, self._warn)
        handler = type("Handler", (_QuietHandler,), {"timeout": idle_timeout})
        try:
            self._server = make_server(address, port, app, _Server, handler_class=handler)
        except OSError as exc:
            raise ConfigError(f"cannot serve Prometheus metrics on {address}:{port}: {exc.strerror}",
                              "choose a free port with --prometheus PORT") from None
        self._server.max_connections = max_connections
        self._server.tls = tls
        self._server.handshake_timeout = idle_timeout
        self._server.on_refused = self._refused
        self.port = self._server.server_port
        # A short poll so that close() (exit, SIGHUP reload) returns at once, not after up to 0.5 s.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="prometheus", daemon=True)
        self._thread.start()
        log.info("Prometheus metrics on %s://%s:%d/metrics%s", "https" if tls else "http", address, self.port,
                 " (authentication required)" if credentials else "")

    def _refused(self) -> None:
        self.stats.error("prometheus_refused")
        self._warn.warning(log, "/metrics: connection refused: %d connections already open",
                           self._server.max_connections)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5.0)
            self._server = None
