"""Assemble a pipeline from a :class:`~edge.config.Config`: model, source, decoder and sinks.

Shared by ``edge run``, ``edge bench`` and the service, so that all of them run the same code.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Callable

from edge.capture import Source, make_source
from edge.config import Config
from edge.errors import ModelError
from edge.pipeline import Pipeline
from edge.results import Sink
from edge.runtime import edgetpu, loader
from edge.runtime.interpreter import first_line
from edge.telemetry.jsonl import JsonlSink
from edge.telemetry.live import LiveLine
from edge.telemetry.hub import Telemetry
from edge.telemetry.stats import PipelineStats
from edge.vision.decode import Decoder, FinishParams, check_layout, make_decoder, make_postprocess
from edge.vision.guard import InputGuard
from edge.vision.labels import align_to_classes
from edge.vision.preprocess import Preprocessor

log = logging.getLogger(__name__)


@dataclass
class Assembly:
    config: Config
    loaded: loader.Loaded
    pipeline: Pipeline
    stats: PipelineStats
    sinks: list[Sink] = field(default_factory=list)
    telemetry: Telemetry | None = None


def finish_params(config: Config, models: loader.ModelSet, labels: dict[int, str] | None = None) -> FinishParams:
    """Threshold, limit, labels (``models``' unless given) and the ``--classes`` filter over them."""
    labels = models.labels.load() if labels is None else labels
    keep = None
    if config.detect.classes:
        by_name = {name: i for i, name in labels.items()}
        unknown = [c for c in config.detect.classes if c not in by_name]
        if unknown:
            raise ModelError(f"class {unknown[0]!r} is not in the labels of {models.manifest.name} "
                             f"({len(by_name)} labels from {models.labels.describe()})",
                             "check --classes against the labels file")
        keep = frozenset(by_name[c] for c in config.detect.classes)
    return FinishParams(score_threshold=config.detect.score_threshold,
                        max_detections=config.detect.max_detections, labels=labels, keep=keep)


def make_sinks(config: Config, stats: PipelineStats, source_name: str,
               telemetry: Telemetry | None = None) -> list[Sink]:
    """The sinks ``[output]`` asks for."""
    sinks: list[Sink] = []
    system = telemetry.system if telemetry else None
    if config.output.jsonl:
        out = config.output
        sinks.append(JsonlSink(out.jsonl, source_name, max_bytes=out.jsonl_max_bytes, backups=out.jsonl_backups,
                               stats=telemetry.payload if telemetry else None, stats_interval=out.jsonl_stats,
                               errors=stats.error))
    if config.output.live != "off":
        live = LiveLine(stats, system=system)
        if config.output.live == "on" or live.tty:
            sinks.append(live)
    return sinks


def make_exporters(config: Config, stats: PipelineStats, source_name: str) -> Telemetry:
    """The system monitor and the exporters ``[prometheus]``, ``[mqtt]``, ``[web]`` ask for, started."""
    from edge.telemetry.system import SystemMonitor

    power, tel = config.power, config.telemetry
    live = config.output.live == "on" or (config.output.live == "auto" and sys.stderr.isatty())
    if not (live or config.output.jsonl_stats or config.prometheus.port or config.mqtt.host or config.web.port):
        return Telemetry(stats)      # nothing would read the system monitor
    system = SystemMonitor(stats, interval=tel.interval, power=power.source, sys_root=tel.sys_root,
                           hwmon_chip=power.hwmon_chip, scale=power.scale, offset=power.offset,
                           static_watts=power.static_watts)
    telemetry = Telemetry(stats, system.start())
    try:
        if config.prometheus.port:
            from edge.telemetry.prometheus import PrometheusExporter
            p = config.prometheus
            telemetry.add(PrometheusExporter(stats, system, p.port, p.address, auth_file=p.auth_file,
                                             insecure_listen=p.insecure_listen, tls_cert=p.tls_cert,
                                             tls_key=p.tls_key, max_connections=p.max_connections,
                                             idle_timeout=p.idle_timeout), per_frame=False)
        if config.mqtt.host:
            from edge.telemetry.mqtt import MqttExporter, split_host
            m = config.mqtt
            host, port = split_host(m.host, m.port)
            telemetry.add(MqttExporter(stats, telemetry.payload, source_name, host=host, port=port, prefix=m.prefix,
                                       qos=m.qos, client_id=m.client_id, username=m.username, password=m.password,
                                       stats_interval=m.stats_interval, send_interval=m.send_interval,
                                       reconnect_max=m.reconnect_max, password_file=m.password_file,
                                       tls_ca=m.tls_ca, tls_cert=m.tls_cert, tls_key=m.tls_key,
                                       max_queued=m.max_queued),
                          per_frame=True)
        if config.web.port:
            from edge.web.server import WebServer
            w = config.web
            telemetry.add(WebServer(stats, telemetry.payload, port=w.port, address=w.address, fps=w.fps,
                                    quality=w.quality, auth_file=w.auth_file, insecure_listen=w.insecure_listen,
                                    tls_cert=w.tls_cert, tls_key=w.tls_key, max_connections=w.max_connections,
                                    idle_timeout=w.idle_timeout), per_frame=True)
    except BaseException:
        telemetry.close()
        raise
    return telemetry


def model_input_size(models: loader.ModelSet) -> tuple[int, int]:
    """(width, height) the model takes: the manifest's, else read from the model file (cheap)."""
    spec = models.manifest.input
    if spec.width and spec.height:
        return spec.width, spec.height
    from edge.runtime.model import read_model
    shape = read_model(models.requested).inputs[0].shape
    return int(shape[2]), int(shape[1])


def check(config: Config) -> tuple[loader.ModelSet, FinishParams]:
    """The cheap checks that come before a model load (device string, layout, MQTT address,
    model files and manifest, labels); raises EdgeError naming the bad value."""
    edgetpu.parse_device(config.model.device)
    check_layout(config.model.layout)
    if config.mqtt.host:
        from edge.telemetry.mqtt import split_host
        split_host(config.mqtt.host, config.mqtt.port)   # a bad HOST:PORT fails before the model loads
    models = loader.resolve(config.model)
    return models, finish_params(config, models)


@dataclass
class Prepared:
    """The model side of a pipeline, loaded and checked by one inference: what a reload builds while
    the running pipeline goes on, so that a model that cannot run never replaces one that can."""

    models: loader.ModelSet
    params: FinishParams
    loaded: loader.Loaded
    decoder: Decoder
    preprocessor: Preprocessor

    def close(self) -> None:
        self.loaded.backend.close()


def first_inference(loaded: loader.Loaded, decoder: Decoder) -> None:
    """One invoke on a black frame, decoded: a model the runtime loads but cannot run (a corrupt
    tensor, "Input tensor N lacks data") fails here, at start or reload, with one line."""
    view = loaded.backend.input_view()
    view.fill(0)
    del view     # the interpreter refuses to invoke while a view of its buffers is alive
    try:
        loaded.backend.invoke()
        decoder(loaded.backend.outputs())
    except (RuntimeError, ValueError, IndexError) as exc:
        raise ModelError(f"{loaded.model.path.name} loads but its first inference fails: {first_line(exc)}",
                         "re-export or re-download the model") from None


def prepare(config: Config, models: loader.ModelSet, params: FinishParams) -> Prepared:
    """Load the model, build its decoder and preprocessing, and run one inference."""
    loaded = loader.load(config.model, models)
    try:
        model = loaded.model
        decoder = make_decoder(model, loaded.manifest, layout=config.model.layout, detect=config.detect,
                               num_classes=max(params.labels) + 1 if params.labels else 0)
        if decoder.task == "classification":
            aligned = align_to_classes(params.labels, decoder.num_classes, source=models.labels.source)
            if aligned is not params.labels:
                params = finish_params(config, models, aligned)
        preprocessor = Preprocessor(loaded.manifest.input, model.inputs[0], loaded.backend.input_shape)
        first_inference(loaded, decoder)
    except BaseException:
        loaded.backend.close()
        raise
    return Prepared(models, params, loaded, decoder, preprocessor)


def assemble(config: Config, extra_sinks: list[Sink] | None = None,
             stats: PipelineStats | None = None,
             wrap_source: Callable[[Source], Source] | None = None,
             prepared: Prepared | None = None) -> Assembly:
    """Open the source, load the model (unless ``prepared``) and build the pipeline (not started).

    Cheap checks (device string, manifest, labels, the source itself) come before the model loads.
    """
    if prepared is None:
        models, params = check(config)
    else:
        models, params = prepared.models, prepared.params
    source = make_source(config.source)
    camera = source if hasattr(source, "set_model_size") else None
    if camera is not None:   # picamera2: the ISP scales a lores stream (main's aspect ratio) for the model
        camera.set_model_size(*model_input_size(models), letterbox=models.manifest.input.resize == "letterbox")
    if wrap_source is not None:  # e.g. the service's ReconnectingSource
        source = wrap_source(source)
    source.open()
    try:
        prepared = prepared or prepare(config, models, params)
        loaded, decoder, params = prepared.loaded, prepared.decoder, prepared.params
        model = loaded.model
        preprocessor = prepared.preprocessor
        if camera is not None:   # the model gets the lores picture, boxes come back in main-stream pixels
            preprocessor = camera.wrap_preprocessor(preprocessor)
        stats = stats or PipelineStats()
        telemetry = make_exporters(config, stats, source.name)
    except BaseException:
        source.close()
        raise
    sinks = make_sinks(config, stats, source.name, telemetry) + [telemetry] + list(extra_sinks or [])
    log.info("%s: input %s; labels %s", model.path.name, models.convention.describe(), models.labels.describe())
    guard = InputGuard(model.path.name, models.convention.describe()) if models.convention else None
    pipeline = Pipeline(source, loaded.backend, preprocessor, make_postprocess(decoder, params), sinks,
                        stats, max_frames=config.output.max_frames, guard=guard)
    return Assembly(config, loaded, pipeline, stats, sinks, telemetry)
