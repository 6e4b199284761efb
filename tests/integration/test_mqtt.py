"""MQTT exporter against a real mosquitto (Debian package `mosquitto`), started here on a free
loopback port with its own configuration file; a paho subscriber receives what `edge run` sends."""

import json
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.errors import ConfigError
from edge.telemetry import mqtt as mqtt_exporter
from edge.telemetry.mqtt import MqttExporter, split_host, topic_part
from edge.telemetry.stats import PipelineStats
from tests.helpers import frame_result as result
from tests.helpers import free_port, wait_for

MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


class Broker:
    def __init__(self, tmp: Path):
        self.port = free_port()
        self.conf = tmp / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                             "log_dest stderr\n")
        self.proc = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

        def accepting():
            assert self.proc.poll() is None, "mosquitto exited"
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0
        wait_for(accepting, 10, "mosquitto listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture()
def broker(tmp_path):
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt install mosquitto)")
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


class Subscriber:
    def __init__(self, port: int, topic: str = "edge/#"):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-subscriber")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.ready.wait(10)

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((msg.topic, msg.payload, msg.retain))

    def on(self, topic: str) -> list[bytes]:
        with self.lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_edge_run_publishes_events_and_stats(broker, tmp_path):
    sub = Subscriber(broker.port)
    config = tmp_path / "edge.toml"
    config.write_text("[mqtt]\nqos = 1\nstats_interval = 0.2\nprefix = \"edge\"\n")
    jsonl = tmp_path / "events.jsonl"
    result = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--config", str(config),
                             "--mqtt", f"127.0.0.1:{broker.port}", "--max-frames", "80", "--as-fast-as-possible",
                             "--jsonl", str(jsonl), "--live", "off"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: b"offline" in sub.on("edge/available"), 10, "offline message")
    sub.close()

    assert sub.on("edge/available")[0] == b"online" and sub.on("edge/available")[-1] == b"offline"
    assert sub.on("edge/events") == []            # the Frigate event topic: the events layer's, not per frame
    events = [json.loads(p) for p in sub.on("edge/bikes.mp4/detections")]
    written = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(events) >= 10
    assert events == written                       # QoS 1: every event, the same as the JSONL file
    assert events[0]["detections"][0]["label"] == "person" and events[0]["source"] == "bikes.mp4"
    assert {e["camera"] for e in events} == {"bikes.mp4"}         # one source: the camera is the source's name
    counts = sub.on("edge/bikes.mp4/person")
    assert counts and all(int(c) >= 0 for c in counts)
    stats = [json.loads(p) for p in sub.on("edge/stats")]
    assert stats, "no stats message"
    last = stats[-1]                               # sent at close: the final totals
    assert last["counts"]["inferred"] == 80 and last["detections"]["person"] >= len(events)
    assert last["latency_ms"]["invoke"]["p50"] > 0 and "process" in last
    assert "power" in last["unavailable"]           # no sensor here: a reason, not a zero


def test_reconnects_with_backoff_after_the_broker_restarts(tmp_path):
    """The broker is down when the exporter starts, comes up, goes away and comes back."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt install mosquitto)")
    b = Broker(tmp_path)
    stats = PipelineStats()
    exporter = MqttExporter(stats, lambda: {"hello": 1}, "cam0", host="127.0.0.1", port=b.port, prefix="t",
                            stats_interval=0.2, reconnect_max=2)
    try:
        assert not exporter.connected.wait(0.5)
        b.start()
        assert exporter.connected.wait(30), "no connection once the broker is up"
        b.stop()
        wait_for(lambda: not exporter.connected.is_set(), 30, "disconnect noticed")
        b.start()
        assert exporter.connected.wait(30), "no reconnection after the broker came back"
        sub = Subscriber(b.port, "t/#")
        wait_for(lambda: sub.on("t/stats"), 10, "stats after reconnecting")
        assert json.loads(sub.on("t/stats")[0]) == {"hello": 1}
        sub.close()
        assert stats.snapshot().errors.get("mqtt_disconnect", 0) >= 1
    finally:
        exporter.close()
        b.stop()


def test_the_pipeline_thread_only_queues_and_the_sender_sends_everything_in_order(broker):
    sub = Subscriber(broker.port)
    stats = PipelineStats()
    exporter = MqttExporter(stats, lambda: {}, "cam0", host="127.0.0.1", port=broker.port,
                            send_interval=10.0, qos=1)      # no timed burst during the test: close() sends
    sent = []
    real_publish = exporter.client.publish

    def recording_publish(topic, payload=None, *args, **kwargs):
        sent.append(topic)
        return real_publish(topic, payload, *args, **kwargs)
    try:
        assert exporter.connected.wait(10)
        exporter.client.publish = recording_publish
        people = [1, 2, 2, 0, 1]
        for i, n in enumerate(people):
            exporter.publish(result(i, ("person",) * n))
        assert sent == []              # publish() on the pipeline's thread never calls paho
    finally:
        exporter.close()
    wait_for(lambda: b"offline" in sub.on("edge/available"), 10, "offline message")
    sub.close()
    assert [json.loads(p)["frame"] for p in sub.on("edge/cam0/detections")] == [0, 1, 2, 4]
    assert sub.on("edge/cam0/person") == [b"1", b"2", b"0", b"1"]          # on change, in frame order
    detections = "edge/cam0/detections"
    assert sent[:8] == [detections, "edge/cam0/person", detections, "edge/cam0/person", detections,
                        "edge/cam0/person", detections, "edge/cam0/person"]


def test_a_full_send_queue_drops_the_newest_and_counts_them(monkeypatch):
    monkeypatch.setattr(mqtt_exporter, "MAX_QUEUED", 3)
    stats = PipelineStats()
    exporter = MqttExporter(stats, lambda: {}, "cam0", host="127.0.0.1", port=free_port(), send_interval=10.0)
    try:
        for i in range(5):               # 6 messages: events + the count once, then events only
            exporter.publish(result(i, ("person",)))
        assert [topic for topic, _, _ in exporter._queue] == ["edge/cam0/detections", "edge/cam0/person",
                                                              "edge/cam0/detections"]
        assert stats.snapshot().errors["mqtt_queue_full"] == 3
    finally:
        exporter.close()                # no broker: the queue goes to paho, which drops it at QoS 0


def test_host_and_topic_parsing():
    assert split_host("broker.lan", 1883) == ("broker.lan", 1883)
    assert split_host("broker.lan:8883", 1883) == ("broker.lan", 8883)
    assert split_host("[::1]:1884", 1883) == ("::1", 1884)
    assert split_host("::1", 1883) == ("::1", 1883)
    with pytest.raises(ConfigError, match="'broker:x' has a bad port 'x'"):
        split_host("broker:x", 1883)
    assert topic_part("front door/#1") == "front_door_1"


def test_two_cameras_detections_and_stats_carry_the_camera(broker, tmp_path):
    """Two cameras through the real scheduler (fake sources and detector: tests/fake_cameras.py) into the
    exporter and a JSONL file: each frame's message on its camera's topic says its camera, and the stats
    payload has each camera's figures."""
    from edge.telemetry.jsonl import JsonlSink
    from edge.telemetry.stats_payload import pipeline_payload
    from tests import fake_cameras

    sub = Subscriber(broker.port)
    stats = PipelineStats()
    exporter = MqttExporter(stats, lambda: pipeline_payload(stats), "edge", host="127.0.0.1", port=broker.port,
                            qos=1, stats_interval=0.1)
    assert exporter.connected.wait(10)
    jsonl = tmp_path / "events.jsonl"
    frames = 30
    scheduler = fake_cameras.scheduler({"front": ("person",), "back door": ("car", "car")}, frames,
                                       sinks=[exporter, JsonlSink(jsonl, "edge")], stats=stats)
    assert scheduler.run().frames == 2 * frames          # closes the sinks: the exporter sends the last stats
    wait_for(lambda: b"offline" in sub.on("edge/available"), 10, "offline message")
    sub.close()

    front = [json.loads(p) for p in sub.on("edge/front/detections")]
    back = [json.loads(p) for p in sub.on("edge/back_door/detections")]
    assert [m["frame"] for m in front] == list(range(frames)) == [m["frame"] for m in back]
    assert {m["camera"] for m in front} == {"front"} and {m["camera"] for m in back} == {"back door"}
    assert {m["source"] for m in front + back} == {"edge"}
    assert {d["label"] for m in back for d in m["detections"]} == {"car"}
    written = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert sorted(written, key=lambda m: (m["camera"], m["frame"])) == \
        sorted(front + back, key=lambda m: (m["camera"], m["frame"]))        # the same lines as the file
    last = json.loads(sub.on("edge/stats")[-1])
    assert list(last["cameras"]) == ["front", "back door"]
    for name, detections in (("front", {"person": frames}), ("back door", {"car": 2 * frames})):
        camera = last["cameras"][name]
        assert camera["counts"] == {"captured": frames, "dropped": 0, "inferred": frames, "published": frames}
        assert camera["detections"] == detections
        assert set(camera["fps"]) == {"capture", "inference", "published"}
        assert camera["latency_ms"]["invoke"]["p50"] >= 1.0         # the fake detector sleeps 1 ms
    assert last["counts"]["published"] == 2 * frames and last["detections"] == {"person": frames, "car": 2 * frames}
