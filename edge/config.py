"""Typed configuration: one frozen dataclass per part, loaded from TOML and command-line flags.

Every field carries a description (``edge config --describe`` prints them). Values are validated
once, at start-up: unknown keys are errors, and every message quotes the bad value and what was
expected. Command-line flags are applied as overrides through the same validation as the file.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge import bounded
from edge.errors import ConfigError
from edge.fields import check_value, setting
from edge.events.settings import EventsSettings, parse_events

@dataclass(frozen=True)
class ModelConfig:
    path: str = setting("", "A .tflite file, or a directory holding manifest.json; empty: the embedded "
                            "default person detector.")
    manifest: str = setting("", "Manifest (JSON) describing the model; empty: <model>.json or the "
                                "manifest.json of the model's directory when present.")
    labels: str = setting("", "Labels file (one per line, or 'id label' pairs); overrides the manifest.")
    device: str = setting("auto", "auto | cpu | edgetpu[:usb|:pci][:N]. auto uses an Edge TPU when one is "
                                  "present and the model is compiled for it, else the CPU (XNNPACK).")
    threads: int = setting(0, "CPU threads for the interpreter; 0: one per core.", minimum=0, maximum=64)
    runtime: str = setting("auto", "TFLite runtime to load; auto tries them in order.",
                           choices=("auto", "ai-edge-litert", "tflite-runtime", "tensorflow"))
    allow_float: bool = setting(False, "Accept a model that is not full-integer int8 (slow on a Pi, "
                                       "impossible on the Edge TPU).")
    layout: str = setting("auto", "Output layout / decoder: auto (the manifest's, else what the model shows) | "
                                  "ssd_postprocess | yolov8 (also v11) | yolov5 | ssd_anchors | classification.")
    input_mean: tuple = setting((), "Input normalisation real = (pixel - mean) / std: one number or three "
                                    "(R, G, B), e.g. 127.5 for [-1, 1], 0 with std 255 for [0, 1]; empty: from "
                                    "the manifest, the model's metadata, or raw pixels for a uint8 input.")
    input_std: tuple = setting((), "Input normalisation std (see input_mean): one number or three.")
    colour: str = setting("", "Channel order the model takes: RGB | BGR; empty: the manifest's, the metadata's, "
                              "else RGB.", choices=("", "RGB", "BGR"))
    resize: str = setting("", "How frames are fitted to the input: stretch | letterbox (aspect kept, padded) | "
                              "crop (aspect kept, the centre cut out); empty: the manifest's, letterbox for "
                              "Ultralytics detectors, crop for their classifiers, else stretch.",
                          choices=("", "stretch", "letterbox", "crop"))


@dataclass(frozen=True)
class SourceConfig:
    uri: str = setting("sample", "sample (the embedded street clip) | a video file | an image folder | a "
                                 "camera index or /dev/videoN | rtsp://, http:// URL | picamera2[:N].")
    realtime: bool = setting(True, "Pace video files at their frame rate, dropping frames the model cannot "
                                   "keep up with, like a camera; false: every frame, as fast as possible.")
    loop: bool = setting(False, "Restart video files and image folders at their end.")
    width: int = setting(0, "Requested capture width (cameras); 0: the device default.", minimum=0)
    height: int = setting(0, "Requested capture height (cameras); 0: the device default.", minimum=0)
    fps: float = setting(0.0, "Requested capture frame rate (cameras); 0: the device default.", minimum=0)


@dataclass(frozen=True)
class DetectConfig:
    score_threshold: float = setting(0.5, "Detections below this score are dropped.", minimum=0.0,
                                     maximum=1.0)
    iou_threshold: float = setting(0.0, "IoU above which NMS suppresses the lower-scored box (decoders "
                                        "that run NMS themselves); 0: the manifest's value, else the "
                                        "layout's default (YOLO 0.45, raw SSD 0.6).", minimum=0.0, maximum=1.0)
    max_detections: int = setting(0, "At most this many detections per frame; 0: the model's own limit.",
                                  minimum=0)
    classes: list = setting([], "Keep only these labels; empty: all.")


@dataclass(frozen=True)
class OutputConfig:
    jsonl: str = setting("detections.jsonl", "JSONL file of detection events (one line per frame with "
                                             "detections); empty: none.")
    live: str = setting("auto", "Live status line: auto (on a terminal) | on | off.",
                        choices=("auto", "on", "off"))
    max_frames: int = setting(0, "Stop after this many inferred frames; 0: until the source ends.",
                              minimum=0)
    jsonl_max_bytes: int = setting(0, "Rotate the JSONL file when it would exceed this size (bytes): "
                                      "file → file.1 → … ; 0: never rotate.", minimum=0)
    jsonl_backups: int = setting(3, "Rotated JSONL files kept (file.1 … file.N).", minimum=1, maximum=100)
    jsonl_stats: float = setting(0.0, "Seconds between stats lines ({\"type\": \"stats\", …}) in the JSONL "
                                      "file; 0: detection events only.", minimum=0)


@dataclass(frozen=True)
class TelemetryConfig:
    interval: float = setting(2.0, "Seconds between samples of power, temperatures, throttling and process "
                                   "CPU/memory.", minimum=0.1)
    sys_root: str = setting("/sys", "Root of sysfs, where thermal zones, hwmon and Coral apex devices are "
                                    "read (change only for containers or tests).")


@dataclass(frozen=True)
class PowerConfig:
    source: str = setting("auto", "Power reading: auto (the first that works: pmic, hwmon, static) | pmic "
                                  "(Raspberry Pi 5 vcgencmd pmic_read_adc; misses 5 V loads such as a USB "
                                  "Coral) | hwmon (an INA219/226/260 or other chip) | static | none.",
                          choices=("auto", "pmic", "hwmon", "static", "none"))
    scale: float = setting(1.0, "Pi 5 PMIC calibration: watts = scale × Σ(V×I) + offset, fitted per unit "
                                "against a USB-C meter (one published fit: 1.145 and 0.59).", minimum=0)
    offset: float = setting(0.0, "Pi 5 PMIC calibration offset in watts (see scale).")
    hwmon_chip: str = setting("", "hwmon chip by name (e.g. ina226) or path (/sys/class/hwmon/hwmon2); "
                                  "empty: the first INA2xx chip.")
    static_watts: float = setting(0.0, "A fixed power figure (W), e.g. read once from a USB meter, used when "
                                       "no sensor exists; 0: unset.", minimum=0)


@dataclass(frozen=True)
class PrometheusConfig:
    port: int = setting(0, "Serve Prometheus /metrics on this port; 0: off.", minimum=0, maximum=65535)
    address: str = setting("127.0.0.1", "Address /metrics binds to; 0.0.0.0 exposes it to the network (needs "
                                        "auth_file or insecure_listen).")
    auth_file: str = setting("", "File (mode 0600) holding a bearer token, or user:password for basic "
                                 "authentication, that every scrape must present; empty: none.")
    insecure_listen: bool = setting(False, "Allow binding beyond loopback without auth_file.")
    tls_cert: str = setting("", "PEM certificate (chain) to serve /metrics over HTTPS; with tls_key.")
    tls_key: str = setting("", "PEM private key of tls_cert (mode 0600).")
    max_connections: int = setting(8, "Connections served at once; more are answered 503 and closed.",
                                   minimum=1, maximum=1024)
    idle_timeout: float = setting(30.0, "Seconds a connection may stay silent (or not read) before it is "
                                        "closed.", minimum=0.1, maximum=3600)


@dataclass(frozen=True)
class MqttConfig:
    host: str = setting("", "MQTT broker host; empty: MQTT off.")
    port: int = setting(1883, "MQTT broker port.", minimum=1, maximum=65535)
    prefix: str = setting("edge", "Topic prefix: <prefix>/available, <prefix>/events (Frigate events), "
                                  "<prefix>/stats, <prefix>/<camera>/detections, <prefix>/<camera>/[<zone>/]<label> "
                                  "(Frigate-style).")
    client_id: str = setting("", "MQTT client id; empty: edge-<hostname>-<pid>.")
    username: str = setting("", "MQTT user name; empty: anonymous.")
    password: str = setting("", "MQTT password (with username); prefer password_file.")
    password_file: str = setting("", "File (mode 0600) holding the MQTT password, or user:password when "
                                     "username is empty; empty: none.")
    tls_ca: str = setting("", "CA certificate (PEM) to verify the broker with; set, the connection uses TLS "
                              "(port 8883 usually).")
    tls_cert: str = setting("", "Client certificate (PEM) for brokers that authenticate clients by "
                                "certificate; with tls_key.")
    tls_key: str = setting("", "Private key (PEM, mode 0600) of tls_cert.")
    max_queued: int = setting(1000, "Messages paho may hold while the broker is away (QoS 1/2, and those "
                                    "in flight); more are dropped and counted as mqtt_dropped errors.",
                              minimum=1, maximum=1_000_000)
    qos: int = setting(0, "QoS of published messages (0, 1 or 2).", minimum=0, maximum=2)
    stats_interval: float = setting(10.0, "Seconds between <prefix>/stats messages.", minimum=0.1)
    send_interval: float = setting(0.1, "Seconds between sends of the queued events and counts: they leave "
                                        "in one burst, so the pipeline never waits on the MQTT client; an "
                                        "event reaches the broker at most this much later.", minimum=0.01,
                                   maximum=10)
    reconnect_max: float = setting(60.0, "Longest delay (s) between reconnection attempts (backoff doubles "
                                         "from 1 s).", minimum=1)
    discovery: bool = setting(False, "Publish Home Assistant MQTT discovery configs (retained) under "
                                     "discovery_prefix: occupancy and count per camera, zone and label, crossings "
                                     "per line, FPS, inference time, temperature and power, as one device; sent "
                                     "again on reconnect and when Home Assistant comes online.")
    discovery_prefix: str = setting("homeassistant", "Home Assistant's MQTT discovery prefix (as set in its MQTT "
                                                     "integration); its <discovery_prefix>/status 'online' makes "
                                                     "edge send the configs again.")


@dataclass(frozen=True)
class WebConfig:
    port: int = setting(0, "Serve the live view (annotated MJPEG stream, /stats, latency chart) on this "
                           "port; 0: off.", minimum=0, maximum=65535)
    address: str = setting("127.0.0.1", "Address the live view binds to; 0.0.0.0 exposes it to the network "
                                        "(needs auth_file or insecure_listen).")
    fps: float = setting(10.0, "Most frames per second sent to each viewer.", minimum=0.1, maximum=120)
    quality: int = setting(80, "JPEG quality of the stream.", minimum=10, maximum=100)
    auth_file: str = setting("", "File (mode 0600) holding a token, or user:password, that viewers must give "
                                 "(HTTP basic authentication; with a token any user name); empty: none.")
    insecure_listen: bool = setting(False, "Allow binding beyond loopback without auth_file.")
    tls_cert: str = setting("", "PEM certificate (chain) to serve the live view over HTTPS; with tls_key.")
    tls_key: str = setting("", "PEM private key of tls_cert (mode 0600).")
    max_connections: int = setting(16, "Connections served at once (each stream viewer holds one); more are "
                                        "answered 503 and closed.", minimum=1, maximum=1024)
    idle_timeout: float = setting(30.0, "Seconds a connection may stay silent (or a viewer not read) before "
                                        "it is closed.", minimum=0.1, maximum=3600)


@dataclass(frozen=True)
class ServiceConfig:
    status_interval: float = setting(5.0, "Seconds between STATUS= updates to systemd (edge run --service).",
                                     minimum=0.1)
    reconnect: bool = setting(True, "With --service: reopen the source after its end, an unplug or a read "
                                    "error, with exponential backoff, instead of exiting.")
    reconnect_initial: float = setting(0.5, "First delay (s) before reopening the source; doubles per failed "
                                            "attempt.", minimum=0.01)
    reconnect_max: float = setting(30.0, "Longest delay (s) between attempts to reopen the source.",
                                   minimum=0.01)
    tpu_retry: float = setting(300.0, "After falling back from the Edge TPU to the CPU twin, seconds between "
                                      "attempts to return to the Edge TPU; 0: never.", minimum=0)
    load_timeout: float = setting(300.0, "Seconds systemd is asked to wait (EXTEND_TIMEOUT_USEC) while the "
                                         "model loads.", minimum=1)


@dataclass(frozen=True)
class CameraConfig:
    name: str = setting("", "The camera's name: a label on its metrics, events and topics (letters, digits, "
                            "'-', '_'; unique).")
    source: str = setting("", "What [source] uri takes: a video file, an image folder, a camera index or "
                              "/dev/videoN, an rtsp:// or http:// URL, picamera2[:N], sample.")
    fps: float = setting(0.0, "Requested capture frame rate; 0: the device default.", minimum=0)
    width: int = setting(0, "Requested capture width; 0: the device default.", minimum=0)
    height: int = setting(0, "Requested capture height; 0: the device default.", minimum=0)
    realtime: bool = setting(True, "Pace video files at their frame rate (see [source] realtime).")
    loop: bool = setting(False, "Restart video files and image folders at their end.")
    model: str = setting("", "This camera's own model (a .tflite or a model directory); empty: [model] path. "
                             "Every detector loads every model the cameras name.")


@dataclass(frozen=True)
class DetectorConfig:
    device: str = setting("", "cpu | edgetpu[:usb|:pci][:N] | simulated (a SIMULATED accelerator for "
                              "benchmarks and demos: takes invoke_ms per frame and replays the outputs of one real "
                              "CPU inference per second).")
    name: str = setting("", "The detector's name in logs and metrics; empty: the device.")
    threads: int = setting(0, "CPU threads (device cpu); 0: [model] threads.", minimum=0, maximum=64)
    standby: bool = setting(False, "Take work only while no other detector is up (e.g. the CPU behind an "
                                   "Edge TPU); opened when the first failure calls it in.")
    invoke_ms: float = setting(0.0, "Simulated inference time per frame (device simulated), e.g. 7.2.",
                               minimum=0, maximum=10_000)
    retry: float = setting(-1.0, "Seconds between attempts to reopen the detector after it failed; -1: "
                                 "[service] tpu_retry; 0: never.", minimum=-1)
    segments: list = setting([], "Edge TPUs of a pipelined detector, one per segment of a model compiled "
                                 "with edge-host compile --segments K (the manifest's segments), e.g. "
                                 "[\"edgetpu:pci:0\", \"edgetpu:pci:1\"]; device is then left empty.")
    segment_queue: int = setting(2, "Inputs each queue between segments holds (bounded: a slow stage "
                                    "slows the ones before it).", minimum=1, maximum=64)


# Sections that are arrays of tables ([[cameras]], [[detectors]]), and the type of each entry.
ARRAYS = {"cameras": CameraConfig, "detectors": DetectorConfig}


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    power: PowerConfig = field(default_factory=PowerConfig)
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    web: WebConfig = field(default_factory=WebConfig)
    events: EventsSettings = field(default_factory=EventsSettings)
    cameras: tuple = ()       # CameraConfig per [[cameras]] entry; empty: one camera from [source]
    detectors: tuple = ()     # DetectorConfig per [[detectors]] entry; empty: one, from [model] device


def _build_section(cls: type, section: str, table: dict, base: Any) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] must be a table, got {table!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key {section}.{unknown[0]}", f"valid keys: {', '.join(fields)}")
    values = {name: check_value(section, fields[name], hints[name], v) for name, v in table.items()}
    return dataclasses.replace(base, **values)


def merge(config: Config, tables: dict[str, dict]) -> Config:
    """Return ``config`` with ``tables`` ({section: {key: value}}) applied and validated."""
    sections = {f.name: f for f in dataclasses.fields(Config)}
    unknown = sorted(set(tables) - set(sections))
    if unknown:
        raise ConfigError(f"unknown section [{unknown[0]}]", f"valid sections: {', '.join(sections)}")
    hints = typing.get_type_hints(Config)
    replaced = {name: _build_array(name, table) if name in ARRAYS else parse_events(table) if name == "events" else
                _build_section(hints[name], name, table, getattr(config, name))
                for name, table in tables.items()}
    return dataclasses.replace(config, **replaced)


def _build_array(name: str, entries: Any) -> tuple:
    """[[cameras]] / [[detectors]]: each entry a table, checked like a section, then as a whole."""
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{name} must be an array of tables ([[{name}]] entries), got {bounded.show(entries)}")
    if len(entries) > MAX_ENTRIES:
        raise ConfigError(f"{len(entries)} [[{name}]] entries; at most {MAX_ENTRIES}")
    cls = ARRAYS[name]
    built = tuple(_build_section(cls, f"{name}[{i}]", entry, cls()) for i, entry in enumerate(entries))
    (_check_cameras if name == "cameras" else _check_detectors)(built)
    return built


MAX_ENTRIES = 64
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def _check_cameras(cameras: tuple) -> None:
    seen: set[str] = set()
    for i, cam in enumerate(cameras):
        where = f"cameras[{i}]"
        if not cam.name:
            raise ConfigError(f"{where} has no name", "give each [[cameras]] entry a name, e.g. name = \"front\"")
        if not set(cam.name) <= NAME_CHARS or len(cam.name) > 64:
            raise ConfigError(f"{where}.name = {cam.name!r} is not a name of letters, digits, '-' and '_' "
                              "(at most 64)", "it becomes a metric label and an MQTT topic level")
        if cam.name in seen:
            raise ConfigError(f"{where}.name = {cam.name!r} is used by an earlier camera", "camera names are unique")
        seen.add(cam.name)
        if not cam.source:
            raise ConfigError(f"camera {cam.name!r} has no source", "set source, e.g. source = \"/dev/video0\"")


def _check_detectors(detectors: tuple) -> None:
    seen: set[str] = set()
    for i, det in enumerate(detectors):
        where = f"detectors[{i}]"
        device = det.device
        if det.segments:
            if device:
                raise ConfigError(f"{where} has both device = {device!r} and segments",
                                  "a pipelined detector names its Edge TPUs in segments only")
            from edge.runtime.segments import MAX_SEGMENTS, check_devices
            if not 2 <= len(det.segments) <= MAX_SEGMENTS:
                raise ConfigError(f"{where}.segments = {det.segments!r} names {len(det.segments)} Edge TPU(s)",
                                  f"a pipeline has 2 to {MAX_SEGMENTS} segments, one Edge TPU each")
            check_devices(det.segments, len(det.segments))
            name = det.name or "+".join(det.segments)
            if name in seen:
                raise ConfigError(f"{where}: detector name {name!r} is used twice")
            seen.add(name)
            continue
        if device == "simulated":
            if not det.invoke_ms > 0:
                raise ConfigError(f"{where}: a simulated detector needs invoke_ms > 0, got {det.invoke_ms!r}",
                                  "e.g. invoke_ms = 7.2 (a USB Coral's SSD MobileNet v2)")
        elif device == "cpu" or device.startswith("edgetpu"):
            if device != "cpu":
                from edge.runtime.edgetpu import parse_device
                parse_device(device)
            if det.invoke_ms:
                raise ConfigError(f"{where}: invoke_ms = {det.invoke_ms!r} is only for device = \"simulated\"")
        else:
            raise ConfigError(f"{where}.device = {device!r} is not a detector",
                              "use cpu, edgetpu, edgetpu:usb[:N], edgetpu:pci[:N] or simulated")
        name = det.name or device
        if name in seen:
            raise ConfigError(f"{where}: detector name {name!r} is used twice",
                              "give the detectors distinct names (name = \"tpu0\")")
        seen.add(name)
    standbys = [d for d in detectors if d.standby]
    if standbys and len(standbys) == len(detectors):
        raise ConfigError("every [[detectors]] entry is standby: none would take work",
                          "mark only the fall-back (e.g. the CPU) standby = true")


def load(path: str | Path | None = None, overrides: dict[str, dict] | None = None) -> Config:
    """Load the TOML file at ``path`` (if any), then apply ``overrides`` (from flags)."""
    config = Config()
    if path:
        path = Path(path)
        try:
            text = bounded.read_text(path, bounded.CONFIG_MAX, "config file", ConfigError)
        except FileNotFoundError:
            raise ConfigError(f"cannot read config file {str(path)!r}: No such file or directory") from None
        tables = parse_toml(text, str(path))
        config = merge(config, tables)
    if overrides:
        if config.cameras and (overrides.get("source") or {}).get("uri"):
            raise ConfigError(f"--source {overrides['source']['uri']!r} and [[cameras]] in {str(path)!r} both name "
                              "sources", "use one: --source for one camera, or [[cameras]] in the config file")
        config = merge(config, {k: v for k, v in overrides.items() if v})
    return config


def parse_toml(text: str, where: str) -> dict:
    """TOML text as tables; malformed or absurdly nested TOML is a ConfigError naming ``where``."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {where!r} is not valid TOML: {exc}") from None
    except RecursionError:          # tomllib recurses once per nesting level of arrays / inline tables
        raise ConfigError(f"config file {where!r} nests arrays or tables too deeply to be a configuration") from None


def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(key, default, description) for every setting, for documentation and ``edge config``."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if cls is Config and f.name in ARRAYS:
            rows += describe(ARRAYS[f.name], f"{f.name}[].")
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            rows += describe(hints[f.name], f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append((prefix + f.name, default, f.metadata.get("help", "")))
    return rows
