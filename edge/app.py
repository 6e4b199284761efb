"""Assemble a pipeline from a :class:`~edge.config.Config`: model, source, decoder and sinks.

Shared by ``edge run``, ``edge bench`` and the service, so that all of them run the same code.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from edge.capture import Source, make_source
from edge.config import Config
from edge.errors import ConfigError, ModelError, SourceError
from edge.events.geometry import check_cameras, check_geometry, for_camera
from edge.pipeline import Camera, Detector, PipelinedDetector, RunnerPort, Scheduler
from edge.results import Sink
from edge.runtime import edgetpu, loader
from edge.runtime.backend import Backend
from edge.runtime.interpreter import first_line
from edge.runtime.simulated import RecordingSimulatedBackend
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
    pipeline: Scheduler
    stats: PipelineStats
    sinks: list[Sink] = field(default_factory=list)
    telemetry: Telemetry | None = None
    plan: Plan | None = None


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


def make_exporters(config: Config, stats: PipelineStats, source_name: str, camera: str = "") -> Telemetry:
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
    events = config.events.enabled
    try:
        if config.prometheus.port:
            from edge.telemetry.prometheus import PrometheusExporter
            p = config.prometheus
            exporter = PrometheusExporter(stats, system, p.port, p.address, auth_file=p.auth_file,
                                          insecure_listen=p.insecure_listen, tls_cert=p.tls_cert,
                                          tls_key=p.tls_key, max_connections=p.max_connections,
                                          idle_timeout=p.idle_timeout, camera=camera)
            telemetry.add(exporter, per_frame=False)
            if events:
                from edge.events.metrics import EventMetrics
                telemetry.listeners.append(EventMetrics(stats).register(exporter.registry))
        if config.mqtt.host:
            from edge.telemetry.mqtt import MqttExporter, split_host
            m = config.mqtt
            host, port = split_host(m.host, m.port)
            mqtt = MqttExporter(stats, telemetry.payload, source_name, host=host, port=port, prefix=m.prefix,
                                qos=m.qos, client_id=m.client_id, username=m.username, password=m.password,
                                stats_interval=m.stats_interval, send_interval=m.send_interval,
                                reconnect_max=m.reconnect_max, password_file=m.password_file,
                                tls_ca=m.tls_ca, tls_cert=m.tls_cert, tls_key=m.tls_key,
                                max_queued=m.max_queued, discovery=m.discovery, discovery_prefix=m.discovery_prefix)
            telemetry.add(mqtt, per_frame=True)
            if events:
                telemetry.listeners.append(mqtt)
        if config.web.port:
            from edge.web.server import WebServer
            w = config.web
            web = WebServer(stats, telemetry.payload, port=w.port, address=w.address, fps=w.fps,
                            quality=w.quality, auth_file=w.auth_file, insecure_listen=w.insecure_listen,
                            tls_cert=w.tls_cert, tls_key=w.tls_key, max_connections=w.max_connections,
                            idle_timeout=w.idle_timeout, events=config.events if events else None,
                            snapshot_dir=config.events.snapshot_dir if events else "")
            telemetry.add(web, per_frame=True)
            if events:
                telemetry.listeners.append(web)
    except BaseException:
        telemetry.close()
        raise
    return telemetry


def make_events_sink(config: Config, stats: PipelineStats, source_name: str, telemetry: Telemetry) -> Sink:
    """The events layer ([events]): tracker, lifecycle, events file, snapshots, and the listeners
    among the exporters (MQTT, Prometheus, the live view)."""
    from edge.events.sink import EventsSink
    from edge.events.tracker import TrackerSettings, make_tracker

    settings = config.events
    tracker = settings.tracker or TrackerSettings()
    return EventsSink(settings, lambda: make_tracker(tracker), source_name, listeners=list(telemetry.listeners),
                      errors=stats.error)


class FirstFrame:
    """A source whose first frame is read at once (to learn the picture's size) and delivered first."""

    def __init__(self, source: Source):
        self.source = source
        self.name, self.live = source.name, source.live
        self._first = source.read()
        if self._first is None:
            raise SourceError(f"source {source.name!r} delivered no frame", "check the source")

    def size(self) -> tuple[int, int]:
        assert self._first is not None
        return self._first.size

    def open(self) -> None:
        self.source.open()

    def read(self):
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return self.source.read()

    def close(self) -> None:
        self.source.close()

    def __getattr__(self, name: str):          # the wrapped source's own attributes (e.g. outage state)
        return getattr(self.source, name)


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


@dataclass
class CameraPlan:
    """One camera of a configuration: its name, its own configuration (source, model) and model key."""

    name: str
    config: Config
    key: str            # the model it runs: cameras naming the same model share a key

    @property
    def named(self) -> bool:
        return bool(self.config.cameras)


def camera_plans(config: Config) -> list[CameraPlan]:
    """[[cameras]] as per-camera configurations; without it, one camera from [source]."""
    if not config.cameras:
        return [CameraPlan("", config, config.model.path)]
    plans = []
    for cam in config.cameras:
        source = dataclasses.replace(config.source, uri=cam.source, fps=cam.fps, width=cam.width, height=cam.height,
                                     realtime=cam.realtime, loop=cam.loop)
        model = dataclasses.replace(config.model, path=cam.model) if cam.model else config.model
        plans.append(CameraPlan(cam.name, dataclasses.replace(config, source=source, model=model), model.path))
    return plans


@dataclass(frozen=True)
class DetectorPlan:
    name: str
    device: str         # cpu | edgetpu… | simulated | auto (the [model] device: one detector) | "" (segments)
    threads: int
    standby: bool = False
    invoke_ms: float = 0.0
    retry: float = 0.0
    segments: tuple[str, ...] = ()    # a pipelined detector: one Edge TPU per segment
    segment_queue: int = 2


def detector_plans(config: Config) -> list[DetectorPlan]:
    """[[detectors]]; without it, one detector on [model] device (auto: an Edge TPU when present)."""
    if not config.detectors:
        return [DetectorPlan("", config.model.device, config.model.threads, retry=0.0)]
    return [DetectorPlan(d.name or d.device or "+".join(d.segments), d.device, d.threads or config.model.threads,
                         d.standby, d.invoke_ms, config.service.tpu_retry if d.retry < 0 else d.retry,
                         tuple(d.segments), d.segment_queue) for d in config.detectors]


def open_pipelined(det: DetectorPlan, cameras: list[CameraPlan], checked: dict) -> dict[str, RunnerPort]:
    """A pipelined detector's runner: the model's segments (its manifest's ``segments``, or the
    ``_segment_i_of_K`` files beside a segment given as the model), one per Edge TPU of ``det``."""
    from edge.runtime.interpreter import load_runtime
    from edge.runtime.segments import open_segments

    chain = segment_chain(det, cameras, checked)
    runner = open_segments(chain, det.segments, load_runtime(cameras[0].config.model.runtime),
                           queue_size=det.segment_queue)
    return {cameras[0].key: RunnerPort(runner, f"{'+'.join(det.segments)} ({chain.k} segments)")}


@dataclass
class Plan:
    """Everything model-side a configuration needs, loaded and checked by one inference per backend:
    what a reload builds while the running pipeline goes on."""

    cameras: list[CameraPlan]
    prepared: dict[str, Prepared]             # model key -> decoder, preprocessing, first backend
    detectors: list[Detector]

    def close(self) -> None:
        for detector in self.detectors:
            detector.close()

    @property
    def loaded(self) -> loader.Loaded:
        return next(iter(self.prepared.values())).loaded


def check_all(config: Config) -> dict[str, tuple[loader.ModelSet, FinishParams]]:
    """:func:`check` of every model the cameras name, by model key."""
    checked: dict[str, tuple[loader.ModelSet, FinishParams]] = {}
    for plan in camera_plans(config):
        if plan.key not in checked:
            checked[plan.key] = check(plan.config)
    for det in detector_plans(config):
        if det.segments:
            segment_chain(det, camera_plans(config), checked)    # an impossible chain fails before any load
        elif det.device not in ("auto", "cpu", "simulated"):
            edgetpu.parse_device(det.device)
    return checked


def segment_chain(det: DetectorPlan, cameras: list[CameraPlan], checked: dict):
    """The checked segment chain a pipelined detector runs (read from the files, no interpreter)."""
    from edge.runtime.segments import SegmentChain

    keys = {plan.key for plan in cameras}
    if len(keys) != 1:
        raise ConfigError(f"pipelined detector {det.name!r} serves cameras with {len(keys)} different models",
                          "a segment pipeline runs one model: give its cameras the same model")
    models, _ = checked[next(iter(keys))]
    if models.manifest.segments:
        chain = SegmentChain.from_files(models.manifest.segments)
    else:
        chain = SegmentChain.find(models.requested)
    if chain.k != len(det.segments):
        raise ConfigError(f"detector {det.name!r} names {len(det.segments)} Edge TPUs for the {chain.k} segments "
                          f"of {models.manifest.name}", "name one Edge TPU per segment")
    return chain


def _open_detector(det: DetectorPlan, cameras: list[CameraPlan], checked: dict, prepared: dict[str, Prepared],
                   first: bool) -> dict[str, Backend]:
    """Every model the cameras name, loaded on ``det`` and run once."""
    backends: dict[str, Backend] = {}
    try:
        for plan in cameras:
            if plan.key in backends:
                continue
            models, params = checked[plan.key]
            if first and plan.key not in prepared:      # the first detector also builds decoders
                device = "cpu" if det.device == "simulated" else det.device
                cfg = dataclasses.replace(plan.config, model=dataclasses.replace(
                    plan.config.model, device=device, threads=det.threads))
                prepared[plan.key] = prepare(cfg, models, params)
                backend = prepared[plan.key].loaded.backend
            else:
                backend = _load_on(det, plan, models, prepared[plan.key])
            if det.device == "simulated":
                backend = RecordingSimulatedBackend(backend, det.invoke_ms / 1e3)
            backends[plan.key] = backend
    except BaseException:
        for backend in backends.values():
            backend.close()
        raise
    return backends


def _load_on(det: DetectorPlan, plan: CameraPlan, models: loader.ModelSet, prepared: Prepared) -> Backend:
    device = "cpu" if det.device == "simulated" else det.device
    cfg = dataclasses.replace(plan.config.model, device=device, threads=det.threads)
    loaded = loader.load(cfg, models)
    try:
        if loaded.backend.input_shape != prepared.loaded.backend.input_shape:
            raise ModelError(f"detector {det.name!r} runs {loaded.model.path.name} with input "
                             f"{list(loaded.backend.input_shape)}, the first detector with "
                             f"{list(prepared.loaded.backend.input_shape)}",
                             "give every detector the same model (or compiled twins of one model)")
        first_inference(loaded, prepared.decoder)
    except BaseException:
        loaded.backend.close()
        raise
    return loaded.backend


def prepare_all(config: Config, checked: dict | None = None, *, service: bool = False) -> Plan:
    """Load every model on every detector and run each once (:func:`first_inference`)."""
    checked = checked or check_all(config)
    cameras = camera_plans(config)
    prepared: dict[str, Prepared] = {}
    detectors: list[Detector] = []
    try:
        for i, det in enumerate(detector_plans(config)):
            if det.segments:
                if i == 0:       # decoders and preprocessing from the model's CPU twin, loaded once
                    _open_detector(DetectorPlan("cpu", "cpu", det.threads), cameras, checked, prepared, first=True)
                ports = open_pipelined(det, cameras, checked)
                detectors.append(PipelinedDetector(det.name, ports, retry=det.retry, kind="edgetpu",
                                                   opener=lambda det=det: open_pipelined(det, cameras, checked)))
                continue
            backends = _open_detector(det, cameras, checked, prepared, first=(i == 0))
            name = det.name or next(iter(backends.values())).name
            kind = "edgetpu" if next(iter(backends.values())).name.startswith("edgetpu") else det.device
            opener = (lambda det=det: _open_detector(det, cameras, checked, prepared, first=False))
            detectors.append(Detector(name, backends, opener=opener, standby=det.standby, retry=det.retry, kind=kind))
        if service:
            detectors.extend(_service_failover(config, cameras, checked, prepared, detectors))
    except BaseException:
        for detector in detectors:
            detector.close()
        for p in prepared.values():
            p.close()
        raise
    return Plan(cameras, prepared, detectors)


def _service_failover(config: Config, cameras, checked, prepared, detectors: list[Detector]) -> list[Detector]:
    """With one detector from [model] device: an Edge TPU that fails is retried every [service]
    tpu_retry seconds, and the CPU twin stands by; --device auto that found the Edge TPU unusable
    at start runs the CPU twin and retries the Edge TPU."""
    if config.detectors or len(prepared) != 1:
        return []
    only = detectors[0]
    loaded = next(iter(prepared.values())).loaded
    models = loaded.models
    if models.path_for("cpu") is None or models.path_for("edgetpu") is None:
        return []
    key = next(iter(prepared))
    device = config.model.device if config.model.device.startswith("edgetpu") else "edgetpu"
    retry = config.service.tpu_retry

    def open_with(dev: str):
        return lambda: {key: loader.load(dataclasses.replace(config.model, device=dev), models).backend}

    if loaded.backend.name.startswith("edgetpu"):
        only.opener, only.retry, only.kind = open_with(device), retry, "edgetpu"
        return [Detector("cpu twin", opener=open_with("cpu"), standby=True, retry=retry, kind="cpu")]
    if config.model.device == "auto" and loader.TPU_UNUSABLE in loaded.reason and retry > 0:
        log.info("Edge TPU unusable at start; running on the CPU twin and retrying it every %.0f s", retry)
        only.standby, only.kind = True, "cpu"
        tpu = Detector(device, opener=open_with(device), retry=retry, kind="edgetpu")
        tpu.next_retry = time.monotonic() + retry
        return [tpu]
    return []


def assemble(config: Config, extra_sinks: list[Sink] | None = None,
             stats: PipelineStats | None = None,
             wrap_source: Callable[[Source], Source] | None = None,
             prepared: Plan | None = None, *, service: bool = False) -> Assembly:
    """Open the sources, load the models on the detectors (unless ``prepared``) and build the
    scheduler (not started).

    Cheap checks (device strings, manifests, labels, the sources themselves) come before the
    models load.
    """
    checked = check_all(config) if prepared is None else None
    plans = camera_plans(config)
    opened: list[Source] = []
    cameras_models: list[tuple[CameraPlan, Source, object]] = []
    try:
        for plan in plans:
            source = make_source(plan.config.source)
            camera = source if hasattr(source, "set_model_size") else None
            if camera is not None:   # picamera2: the ISP scales a lores stream (main's aspect ratio) for the model
                models = (checked or {}).get(plan.key, (prepared.prepared[plan.key].models,) if prepared else None)[0]
                camera.set_model_size(*model_input_size(models),
                                      letterbox=models.manifest.input.resize == "letterbox")
            if wrap_source is not None:  # e.g. the service's ReconnectingSource
                source = wrap_source(source)
            source.open()
            opened.append(source)
            zones, lines = for_camera(config.events.zones, config.events.lines, plan.name or source.name)
            if config.events.enabled and (zones or lines):
                source = FirstFrame(source)      # the camera's zones and lines must fit in its picture
                try:
                    check_geometry(zones, lines, *source.size())
                except ConfigError as exc:
                    raise ConfigError(f"{f'camera {plan.name}' if plan.name else f'source {source.name}'}: "
                                      f"{exc.message}", exc.remedy) from None
            cameras_models.append((plan, source, camera))
        if config.events.enabled:
            check_cameras(config.events.zones, config.events.lines,
                          [plan.name or source.name for (plan, source, _) in cameras_models])
        plan_set = prepared or prepare_all(config, checked, service=service)
        stats = stats or PipelineStats()
        telemetry = make_exporters(config, stats, opened[0].name if len(opened) == 1 else "edge",
                                   camera=(plans[0].name or opened[0].name) if len(plans) == 1 else "")
    except BaseException:
        for source in opened:
            source.close()
        raise
    source_name = opened[0].name if len(opened) == 1 else "edge"
    shared = make_sinks(config, stats, source_name, telemetry)
    if config.events.enabled:     # before the telemetry: its drain's `end` messages go out through MQTT
        shared.append(make_events_sink(config, stats, source_name, telemetry))
    shared += [telemetry] + list(extra_sinks or [])
    cameras = []
    for plan, source, camera in cameras_models:
        p = plan_set.prepared[plan.key]
        preprocessor = p.preprocessor
        if camera is not None:   # the model gets the lores picture, boxes come back in main-stream pixels
            preprocessor = camera.wrap_preprocessor(preprocessor)
        models = p.models
        log.info("%s%s: input %s; labels %s", f"camera {plan.name}: " if plan.name else "", p.loaded.model.path.name,
                 models.convention.describe(), models.labels.describe())
        guard = InputGuard(p.loaded.model.path.name, models.convention.describe()) if models.convention else None
        cameras.append(Camera(plan.name or source.name, source, preprocessor, make_postprocess(p.decoder, p.params),
                              shared,
                              None, model=plan.key, guard=guard))
    pipeline = Scheduler(cameras, plan_set.detectors, stats, max_frames=config.output.max_frames)
    return Assembly(config, plan_set.loaded, pipeline, stats, shared, telemetry, plan_set)
