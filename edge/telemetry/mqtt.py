"""MQTT exporter (paho-mqtt 2.x): Frigate-compatible events, counts, snapshots, stats, Home Assistant discovery.

Topics under a configurable prefix (default ``edge``); names are made safe as one topic level by
:func:`topic_part`:

- ``<prefix>/available``: ``online`` (retained) once connected; ``offline`` as the will and on close.
- ``<prefix>/events``: the events layer's Frigate-format messages ``{"type": "new"|"update"|"end",
  "before": {...}, "after": {...}}``, as Frigate sends them on ``frigate/events``.
- ``<prefix>/<camera>/<label>``: objects of ``label`` in the whole frame (retained, on change): from
  the events layer (tracked objects) once it reports for that camera, else the detections per frame.
- ``<prefix>/<camera>/<zone>/<label>``: objects of ``label`` in ``zone`` (retained, on change).
- ``<prefix>/<camera>/<line>/<label>/in`` and ``.../out``: cumulative crossings of ``line`` (retained).
- ``<prefix>/<camera>/<label>/snapshot``: the JPEG of the best snapshot of the latest ``label`` event
  (retained, raw bytes); snapshots still waiting for the sender are replaced by newer ones of the topic.
- ``<prefix>/<camera>/detections``: one JSON message per frame with detections (the JSONL event, whose
  ``camera`` is the frame's camera).
- ``<prefix>/stats``: the stats payload every ``stats_interval`` seconds and once at the end; with several
  cameras its ``cameras`` holds each camera's fps, latency_ms, counts and detections
  (:func:`edge.telemetry.stats_payload.pipeline_payload`). One message for all cameras, not one per
  camera: one consistent snapshot, and no ``<prefix>/<camera>/stats`` to collide with the count topic
  of a label named ``stats``.
- with ``discovery``: ``<discovery_prefix>/<component>/<node_id>/<object_id>/config`` (retained, see
  :mod:`edge.events.homeassistant`), sent on every connection, when Home Assistant announces itself
  (``online`` on ``<discovery_prefix>/status``, which the exporter subscribes to) and when a
  camera/zone/label or line first appears.

The exporter is a pipeline sink (:meth:`MqttExporter.publish`) and an events-layer listener
(:meth:`~MqttExporter.event`, :meth:`~MqttExporter.counts`, :meth:`~MqttExporter.crossings`).
Both only queue: messages are sent in one burst every ``send_interval`` seconds (0.1 by default)
by the exporter's own thread, which also sends the stats. The pipeline never calls into paho: a paho
publish wakes paho's network thread and hands the GIL back and forth, and doing that for every frame
cost the pipeline frames on a busy CPU. The queue holds at most ``MAX_QUEUED`` messages, and waiting
snapshots at most ``MAX_SNAPSHOT_BYTES``; beyond that the newest are dropped and counted as
``mqtt_queue_full`` errors. A failure to build a message is counted (``mqtt_sink``) and logged at most
every 30 s, never raised to the caller. A burst is sent only once paho has written the previous one
to the socket (``want_write``), so a broker that stops reading while connected fills this bounded
queue, not paho's outgoing packet list.

The broker may be down at start or go away: paho's network thread reconnects with exponential
backoff (1 s doubling to ``reconnect_max``). Messages published while disconnected are dropped at
QoS 0 (counted as ``mqtt_publish`` errors) and kept by paho at QoS 1 and 2, at most ``max_queued``
of them (``max_queued_messages_set``); beyond that they are dropped and counted as ``mqtt_dropped``.

Credentials can come from ``password_file`` (mode 0600), and ``tls_ca``/``tls_cert``/``tls_key``
turn TLS on (the broker's certificate verified against ``tls_ca``, else the system's CAs).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import socket
import ssl
import threading
import time
from collections import Counter, deque
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.errors import ConfigError
from edge.events import homeassistant as ha
from edge.results import FrameResult
from edge.telemetry.jsonl import event_line
from edge.telemetry.stats import LogLimiter, PipelineStats
from edge.web.security import check_private, read_secret

log = logging.getLogger(__name__)

MAX_QUEUED = 10_000     # detection messages waiting for the next send (~50 s of frames at 200 fps)
MAX_SNAPSHOT_BYTES = 16 << 20   # snapshot JPEGs waiting for the next send, all topics together
_SNAPSHOT = None        # queue payload standing for the topic's waiting snapshot (in MqttExporter._snapshots)
CLOSE_WAIT = 2.0        # seconds close() waits for paho to write what is left before cutting the connection


def split_host(host: str, port: int) -> tuple[str, int]:
    """``host`` or ``host:port`` (as --mqtt takes it) → (host, port)."""
    name, sep, tail = host.rpartition(":")
    if not sep or "]" in tail or (host.count(":") > 1 and not host.startswith("[")):   # no port; IPv6
        return host.strip("[]"), port
    if not tail.isdigit() or not 0 < int(tail) < 65536:
        raise ConfigError(f"MQTT broker {host!r} has a bad port {tail!r}", "use HOST or HOST:PORT, port 1-65535")
    return name.strip("[]"), int(tail)


def topic_part(name: str) -> str:
    """A source or label name made safe as one topic level (no '/', '+', '#', spaces)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "_"


def board_model(root: str = "/") -> str:
    """The device's model for Home Assistant: the device tree's (``Raspberry Pi 5 Model B Rev 1.0``),
    else the OS and machine (``Linux x86_64``)."""
    for path in ("proc/device-tree/model", "sys/firmware/devicetree/base/model"):
        try:
            model = open(os.path.join(root, path), "rb").read(256).decode("utf-8", "replace").strip("\0 \n")
        except OSError:
            continue
        if model:
            return model
    return f"{platform.system()} {platform.machine()}"


def _credentials(path: str, username: str) -> tuple[str, str]:
    """(user, password) from a private file: the password, or ``user:password`` when no user is configured."""
    line = read_secret(path, "mqtt.password_file")
    if username:
        return username, line
    user, sep, password = line.partition(":")
    if not sep or not user:
        raise ConfigError(f"mqtt.password_file {path!r} holds no user name and mqtt.username is empty",
                          "write user:password in it, or set mqtt.username")
    return user, password


def _set_tls(client: mqtt.Client, ca: str, cert: str, key: str) -> None:
    if bool(cert) != bool(key):
        raise ConfigError("MQTT TLS needs both mqtt.tls_cert and mqtt.tls_key", "give both, or neither")
    if key:
        check_private(key, "mqtt.tls_key")
    try:
        client.tls_set(ca_certs=ca or None, certfile=cert or None, keyfile=key or None,
                       cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"cannot set up MQTT TLS (CA {ca!r}, certificate {cert!r}): "
                          f"{getattr(exc, 'strerror', None) or exc}", "give PEM files") from None


class MqttExporter:
    def __init__(self, stats: PipelineStats, stats_payload: Callable[[], dict], source: str, *, host: str,
                 port: int = 1883, prefix: str = "edge", qos: int = 0, client_id: str = "", username: str = "",
                 password: str = "", stats_interval: float = 10.0, send_interval: float = 0.1,
                 reconnect_max: float = 60.0, keepalive: int = 60, password_file: str = "", tls_ca: str = "",
                 tls_cert: str = "", tls_key: str = "", max_queued: int = 1000, discovery: bool = False,
                 discovery_prefix: str = ha.DISCOVERY_PREFIX):
        self.stats = stats
        self.stats_payload = stats_payload
        self.prefix = prefix.rstrip("/")
        self.source = source
        self.source_topic = topic_part(os.path.basename(source) or source)
        self.qos = qos
        self.stats_interval = stats_interval
        self.send_interval = send_interval
        self.connected = threading.Event()
        self._counts: dict[str, dict[str, int]] = {}      # camera → label → per-frame detections last sent
        self._retained: dict[str, str] = {}                # listener count topic → last payload queued
        self._tracked: set[str] = set()                    # cameras whose whole-frame counts the events layer sends
        # (topic, payload, retain), oldest first; payload _SNAPSHOT: the topic's entry in _snapshots
        self._queue: deque[tuple[str, str | bytes | None, bool]] = deque()
        self._snapshots: dict[str, bytes] = {}
        self._snapshot_bytes = 0
        self._snapshot_lock = threading.Lock()
        self._stop = threading.Event()
        self._warn = LogLimiter(30.0)
        hostname = socket.gethostname()
        self.discovery = discovery
        self.discovery_prefix = discovery_prefix.strip("/")
        if discovery and (not self.discovery_prefix or any(c in self.discovery_prefix for c in "+#")):
            raise ConfigError(f"mqtt.discovery_prefix {discovery_prefix!r} is not a topic prefix",
                              "use a topic such as homeassistant, without + or #")
        name = f"edge {hostname}" if self.prefix == "edge" else f"edge {hostname} ({self.prefix})"
        self.device = ha.Device(ha.node_id(client_id, hostname, self.prefix), name, board_model())
        self._entities: dict[tuple, list[ha.Config]] = {}  # discovered entities by (kind, camera, zone/line, label)
        self._entities_lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"edge-{hostname}-{os.getpid()}")
        if password_file:
            username, password = _credentials(password_file, username)
        if username:
            self.client.username_pw_set(username, password or None)
        if tls_ca or tls_cert or tls_key:
            _set_tls(self.client, tls_ca, tls_cert, tls_key)
        # paho's own store (QoS 1/2 messages waiting for the broker) is bounded too: beyond it publish
        # returns MQTT_ERR_QUEUE_SIZE and the message is dropped and counted (mqtt_dropped)
        self.client.max_queued_messages_set(max_queued)
        self.max_queued = max_queued
        self.client.will_set(self.topic("available"), "offline", qos=qos, retain=True)
        self.client.reconnect_delay_set(1, max(1, int(reconnect_max)))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_message = self._on_message
        self._failed_logged = False
        self.address = f"{host}:{port}"
        log.info("MQTT to %s:%d under %s/", host, port, self.prefix)
        # connect_async: a broker that is down at start is retried by the network thread, not fatal
        self.client.connect_async(host, port, keepalive)
        self.client.loop_start()
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-send", daemon=True)
        self._sender.start()

    def topic(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts))

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("MQTT broker refused the connection: %s", reason_code)
            return
        log.info("MQTT connected to %s", self.address)
        self._failed_logged = False
        self.connected.set()
        client.publish(self.topic("available"), "online", qos=self.qos, retain=True)
        if self.discovery:
            client.subscribe(self.status_topic, qos=1)
            self.publish_discovery()

    @property
    def status_topic(self) -> str:
        """Where Home Assistant announces itself (its birth and last will: ``online``/``offline``)."""
        return f"{self.discovery_prefix}/status"

    def _on_message(self, client, userdata, message) -> None:
        if message.topic == self.status_topic and message.payload == b"online":
            log.info("MQTT: Home Assistant is online; sending the discovery configs again")
            self.publish_discovery()

    def discovery_configs(self) -> list[ha.Config]:
        """The device's discovery messages: its stats sensors and every entity discovered so far."""
        configs = ha.stats_configs(self.device, self.topic("available"), self.topic("stats"), self.discovery_prefix)
        with self._entities_lock:
            for entity in self._entities.values():
                configs.extend(entity)
        return configs

    def publish_discovery(self) -> None:
        """Send every discovery config now (retained; from paho's thread: on connect and at HA's birth)."""
        for config in self.discovery_configs():
            self._send(config.topic, config.json(), retain=True)

    def _discover(self, key: tuple, build: Callable[[], list[ha.Config]]) -> None:
        """Queue the configs of a new entity (a camera/zone/label or line first seen), before its state."""
        if not self.discovery or key in self._entities:
            return
        configs = build()
        with self._entities_lock:
            self._entities[key] = configs
        for config in configs:
            self._enqueue(config.topic, config.json(), retain=True)

    def _on_connect_fail(self, client, userdata) -> None:
        if not self._failed_logged:      # once: the network thread keeps retrying with backoff
            self._failed_logged = True
            log.warning("MQTT broker %s unreachable; retrying with backoff", self.address)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected.is_set() and not self._stop.is_set():
            log.warning("MQTT disconnected (%s); reconnecting with backoff", reason_code)
            self.stats.error("mqtt_disconnect")
        self.connected.clear()

    def _send(self, topic: str, payload: str | bytes | None, retain: bool = False) -> None:
        if payload is _SNAPSHOT:
            with self._snapshot_lock:
                payload = self._snapshots.pop(topic, None)
                if payload is None:      # dropped at close meanwhile
                    return
                self._snapshot_bytes -= len(payload)
        info = self.client.publish(topic, payload, qos=self.qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_SUCCESS or (info.rc == mqtt.MQTT_ERR_NO_CONN and self.qos):
            return                   # sent, or (QoS 1/2) kept in paho's bounded store until the broker is back
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            self.stats.error("mqtt_dropped")
            self._warn.warning(log, "MQTT: %d messages already wait for the broker (mqtt.max_queued); "
                               "dropping new ones", self.max_queued)
        else:
            self.stats.error("mqtt_publish")

    def _enqueue(self, topic: str, payload: str | None, retain: bool = False) -> bool:
        if len(self._queue) >= MAX_QUEUED:       # the sender is far behind: the queued ones stay, this one goes
            self.stats.error("mqtt_queue_full")
            return False
        self._queue.append((topic, payload, retain))   # deque.append: atomic, no lock needed
        return True

    def _enqueue_snapshot(self, topic: str, jpeg: bytes) -> None:
        """Queue ``jpeg`` retained on ``topic``; one still waiting there is replaced (it would be overwritten
        at once), keeping its place in the queue."""
        with self._snapshot_lock:
            old = self._snapshots.get(topic)
            total = self._snapshot_bytes - (len(old) if old is not None else 0) + len(jpeg)
            if total > MAX_SNAPSHOT_BYTES:
                self.stats.error("mqtt_queue_full")
                self._warn.warning(log, "MQTT: %d bytes of snapshots already wait for the sender; dropping "
                                   "the one for %s", self._snapshot_bytes, topic)
                return
            self._snapshots[topic] = jpeg
            self._snapshot_bytes = total
            if old is not None:
                return
        if not self._enqueue(topic, _SNAPSHOT, retain=True):
            with self._snapshot_lock:
                if self._snapshots.pop(topic, None) is not None:
                    self._snapshot_bytes -= len(jpeg)

    def _sink_error(self, what: str, exc: Exception) -> None:
        self.stats.error("mqtt_sink")
        self._warn.warning(log, "MQTT: %s not queued: %s: %s", what, type(exc).__name__, exc)

    def publish(self, result: FrameResult) -> None:
        """Queue the frame's messages (called on the pipeline's publishing thread; sends nothing).

        A failure here is the sink's, never the pipeline's: it is counted (``mqtt_sink``) and logged
        at most every 30 s, and the frame goes on to the other sinks."""
        try:
            self._queue_frame(result)
        except Exception as exc:     # the sink boundary: whatever an encoder raises must not stop detection
            self._sink_error(f"frame {result.frame.index}", exc)

    def _queue_frame(self, result: FrameResult) -> None:
        camera = topic_part(getattr(result, "camera", "") or self.source_topic)
        if result.detections:
            self._enqueue(self.topic(camera, "detections"), event_line(result, self.source))
        if camera in self._tracked:         # the events layer sends this camera's whole-frame counts
            return
        counts = Counter(d.label for d in result.detections)
        sent = self._counts.setdefault(camera, {})
        for label in counts.keys() | sent.keys():
            n = counts.get(label, 0)
            if sent.get(label) != n:
                self._count(camera, "all", label, str(n))
                sent[label] = n

    def count_topic(self, camera: str, zone: str, label: str) -> str:
        """``<prefix>/<camera>/<zone>/<label>``; ``<prefix>/<camera>/<label>`` for the zone "all"."""
        camera, label = topic_part(camera), topic_part(label)
        return self.topic(camera, label) if zone == "all" else self.topic(camera, topic_part(zone), label)

    def _count(self, camera: str, zone: str, label: str, n: str) -> None:
        """Queue a retained count, preceded by its discovery configs when the camera/zone/label is new."""
        topic = self.count_topic(camera, zone, label)
        self._discover(("zone", camera, zone, label), lambda: ha.zone_configs(
            self.device, self.topic("available"), topic, camera, zone, label, self.discovery_prefix))
        self._enqueue(topic, n, retain=True)

    # -- the events layer's listener (edge.events.types.EventListener); called on the post-processing thread

    def event(self, message: dict, snapshot: bytes | None) -> None:
        """Queue the Frigate-format message on ``<prefix>/events`` and, when given, the snapshot JPEG on
        ``<prefix>/<camera>/<label>/snapshot`` (retained). Never raises: failures are counted (``mqtt_sink``)."""
        try:
            after = message["after"]
            camera, label = topic_part(str(after["camera"])), topic_part(str(after["label"]))
            self._enqueue(self.topic("events"), json.dumps(message, separators=(",", ":"), allow_nan=False))
            if snapshot:
                self._enqueue_snapshot(self.topic(camera, label, "snapshot"), bytes(snapshot))
        except Exception as exc:     # the listener boundary, as publish()'s
            self._sink_error(f"event {message.get('type') if isinstance(message, dict) else message!r}", exc)

    def counts(self, camera: str, zone: str, counts: dict[str, int]) -> None:
        """Queue the changed counts on ``<prefix>/<camera>/<zone>/<label>`` (zone "all":
        ``<prefix>/<camera>/<label>``, which from then on carries only these), retained."""
        try:
            cam = topic_part(camera)
            if zone == "all" and cam not in self._tracked:
                self._tracked.add(cam)
                log.info("MQTT: %s/<label> now carries the tracked objects of camera %r (events layer), "
                         "not the detections per frame", self.topic(cam), camera)
            for label, n in counts.items():
                n, topic = str(int(n)), self.count_topic(cam, zone, label)
                if self._retained.get(topic) != n:
                    self._count(cam, zone, label, n)
                    self._retained[topic] = n
        except Exception as exc:
            self._sink_error(f"counts of zone {zone!r}", exc)

    def crossings(self, camera: str, line: str, counts: dict[str, dict[str, int]]) -> None:
        """Queue the changed cumulative crossings on ``<prefix>/<camera>/<line>/<label>/in`` and ``/out``
        (retained)."""
        try:
            cam, where = topic_part(camera), topic_part(line)
            for label, directions in counts.items():
                topics = {d: self.topic(cam, where, topic_part(label), d) for d in ("in", "out")}
                self._discover(("line", cam, where, label), lambda: ha.line_configs(
                    self.device, self.topic("available"), topics, cam, where, label, self.discovery_prefix))
                for direction, topic in topics.items():
                    n = str(int(directions[direction]))
                    if self._retained.get(topic) != n:
                        self._enqueue(topic, n, retain=True)
                        self._retained[topic] = n
        except Exception as exc:
            self._sink_error(f"crossings of line {line!r}", exc)

    def flush(self) -> None:
        """Send the messages queued so far, oldest first (one burst: at most MAX_QUEUED, however fast the
        pipeline keeps queueing meanwhile)."""
        for _ in range(len(self._queue)):
            try:
                message = self._queue.popleft()
            except IndexError:      # empty (also when close() and a late sender burst race for the last one)
                return
            self._send(*message)

    def publish_stats(self) -> None:
        self._send(self.topic("stats"), json.dumps(self.stats_payload(), separators=(",", ":")))

    def _send_loop(self) -> None:
        next_stats = time.monotonic() + self.stats_interval
        while not self._stop.wait(self.send_interval):
            if self.client.want_write():
                # paho has not yet put the last burst on the wire (a broker or link that stalls while the
                # connection stays up): hold the next one in the bounded queue instead of growing paho's
                # unbounded outgoing packet list, at every QoS
                self._warn.warning(log, "MQTT: the broker is not taking messages; holding them (at most %d)",
                                   MAX_QUEUED)
                continue
            self.flush()
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + self.stats_interval
                if self.connected.is_set():
                    self.publish_stats()

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._sender.join(timeout=5.0)
        if self._written(CLOSE_WAIT):
            self.flush()      # what the pipeline queued after the sender's last burst
        elif self._queue:     # a stalled broker: paho would only pile them up
            self.stats.error("mqtt_dropped", len(self._queue))
            log.warning("MQTT: %d queued messages dropped at exit: the broker is not taking messages",
                        len(self._queue))
            self._queue.clear()
            with self._snapshot_lock:
                self._snapshots.clear()
                self._snapshot_bytes = 0
        if self.connected.is_set():
            self.publish_stats()
            done = self.client.publish(self.topic("available"), "offline", qos=self.qos, retain=True)
            try:
                done.wait_for_publish(timeout=2.0)
            except (RuntimeError, ValueError) as exc:   # not queued because the connection went away
                log.warning("MQTT: final messages not sent: %s", exc)
        self.client.disconnect()
        self._drop_stalled_connection(CLOSE_WAIT)
        self.client.loop_stop()

    def _written(self, wait: float) -> bool:
        """True once paho has written everything it holds to the socket (waits up to ``wait`` s)."""
        deadline = time.monotonic() + wait
        while self.client.want_write() and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self.client.want_write()

    def _drop_stalled_connection(self, wait: float) -> None:
        """paho's network thread ends only once its outgoing packets are written; a broker that stopped
        reading would hold the exit until the keepalive gives up (minutes). Give it ``wait`` seconds,
        then shut the socket so that it ends now."""
        if self._written(wait):
            return
        sock = self.client.socket()
        log.warning("MQTT: the broker did not take the last messages within %.0f s; closing the connection", wait)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError as exc:
                log.debug("MQTT: shutting the socket down: %s", exc)
