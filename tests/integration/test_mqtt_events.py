"""The MQTT exporter as the events layer's listener, against a real mosquitto (the fixture of
test_mqtt.py): Frigate event payloads, retained counts and crossings, snapshot JPEGs, Home Assistant
discovery (retained, one device, re-sent on reconnect and on Home Assistant's birth) and availability
with the last will when the process is killed."""

import json
import subprocess
import sys
import textwrap
import threading
import time

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.telemetry import mqtt as mqtt_exporter
from edge.telemetry.mqtt import MqttExporter
from edge.telemetry.stats import PipelineStats
from tests.helpers import frame_result, free_port, wait_for
from tests.integration.test_mqtt import MOSQUITTO, Broker, Subscriber, broker  # noqa: F401  (fixture)

CLIENT = "edge-test"


def jpeg(colour) -> bytes:
    ok, data = cv2.imencode(".jpg", np.full((24, 32, 3), colour, np.uint8))
    assert ok
    return data.tobytes()


def message(kind, *, zones=(), end=None, score=0.8):
    """A Frigate event message as the events layer sends it (frigate/events format)."""
    def state(score, zones, end):
        return {"id": "1700000000.5-ab12cd", "camera": "front door", "frame_time": 1700000001.0, "label": "person",
                "sub_label": None, "top_score": max(score, 0.8), "false_positive": False,
                "start_time": 1700000000.5, "end_time": end, "score": score, "box": [10, 20, 110, 220],
                "area": 20000, "ratio": 0.5, "region": [0, 0, 320, 320], "stationary": False, "motionless_count": 0,
                "position_changes": 1, "current_zones": list(zones), "entered_zones": list(zones),
                "has_clip": False, "has_snapshot": True, "attributes": {}, "current_attributes": []}
    before = state(0.7, (), None) if kind != "new" else state(score, zones, end)
    return {"type": kind, "before": before, "after": state(score, zones, end)}


def by_topic(sub: Subscriber, prefix: str = "") -> dict[str, list[tuple[bytes, bool]]]:
    out: dict[str, list] = {}
    with sub.lock:
        for topic, payload, retain in sub.messages:
            if topic.startswith(prefix):
                out.setdefault(topic, []).append((payload, retain))
    return out


def configs(sub: Subscriber) -> dict[str, dict]:
    """The latest discovery config per topic under homeassistant/ for our node."""
    return {topic: json.loads(got[-1][0]) for topic, got in by_topic(sub, "homeassistant/").items()
            if topic.endswith("/config") and f"/{CLIENT}/" in topic}


def new_exporter(port, source="cam0", **kw) -> MqttExporter:
    kw = {"prefix": "edge", "qos": 1, "client_id": CLIENT, "discovery": True, "send_interval": 0.05,
          "stats_interval": 0.2, **kw}
    return MqttExporter(PipelineStats(), lambda: {"fps": {"inference": 12.5}, "latency_ms": {}}, source,
                        host="127.0.0.1", port=port, **kw)


EXPECTED_CONFIGS = {
    f"homeassistant/{component}/{CLIENT}/{object_id}/config" for component, object_id in [
        ("sensor", "fps"), ("sensor", "inference_time"), ("sensor", "temperature"), ("sensor", "power"),
        ("binary_sensor", "front_door_all_person_occupancy"), ("sensor", "front_door_all_person_count"),
        ("binary_sensor", "front_door_porch_person_occupancy"), ("sensor", "front_door_porch_person_count"),
        ("sensor", "front_door_gate_person_in"), ("sensor", "front_door_gate_person_out")]}


def feed(exporter, first: bytes, best: bytes, after_new=lambda: None) -> list[dict]:
    """A new / update / end sequence with counts, a line crossing and two snapshots (``after_new`` runs
    after the first event: a snapshot still waiting when the next one comes is replaced by it)."""
    sent = [message("new", score=0.7), message("update", zones=["porch"], score=0.9),
            message("end", zones=["porch"], end=1700000009.0)]
    exporter.counts("front door", "all", {"person": 1})
    exporter.event(sent[0], first)
    after_new()
    exporter.counts("front door", "porch", {"person": 1})
    exporter.event(sent[1], None)
    exporter.crossings("front door", "gate", {"person": {"in": 1, "out": 0}})
    exporter.counts("front door", "all", {"person": 0})
    exporter.counts("front door", "porch", {"person": 0})
    exporter.event(sent[2], best)
    return sent


def test_events_counts_snapshots_and_discovery(broker):
    sub = Subscriber(broker.port, "#")
    exporter = new_exporter(broker.port)
    first, best = jpeg((0, 128, 255)), jpeg((255, 255, 255))
    try:
        assert exporter.connected.wait(10)
        wait_for(lambda: len(configs(sub)) == 4, 10, "the stats sensors' discovery on connect")
        sent = feed(exporter, first, best,
                    lambda: wait_for(lambda: by_topic(sub).get("edge/front_door/person/snapshot"), 10, "snapshot"))
        wait_for(lambda: len(by_topic(sub).get("edge/events", [])) == 3, 10, "three events")
        wait_for(lambda: set(configs(sub)) == EXPECTED_CONFIGS, 10, "discovery of the new entities")
        wait_for(lambda: by_topic(sub).get("edge/stats"), 10, "stats")
    finally:
        exporter.close()
    wait_for(lambda: by_topic(sub).get("edge/available", [(b"", 0)])[-1][0] == b"offline", 10, "offline at close")
    live = by_topic(sub)
    sub.close()

    assert [json.loads(p) for p, _ in live["edge/events"]] == sent       # Frigate's payloads, in order
    assert {retain for _, retain in live["edge/events"]} == {False}
    assert [p for p, _ in live["edge/front_door/person"]] == [b"1", b"0"]
    assert [p for p, _ in live["edge/front_door/porch/person"]] == [b"1", b"0"]
    assert [p for p, _ in live["edge/front_door/gate/person/in"]] == [b"1"]
    assert [p for p, _ in live["edge/front_door/gate/person/out"]] == [b"0"]
    snapshots = [p for p, _ in live["edge/front_door/person/snapshot"]]
    assert snapshots == [first, best]
    decoded = cv2.imdecode(np.frombuffer(snapshots[-1], np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (24, 32, 3) and decoded.min() > 240
    assert [p for p, _ in live["edge/available"]] == [b"online", b"offline"]

    # a client that connects later gets the retained state: counts, crossings, the best snapshot, discovery
    late = Subscriber(broker.port, "#")
    wait_for(lambda: set(configs(late)) == EXPECTED_CONFIGS, 10, "retained discovery")
    retained = by_topic(late)
    late.close()
    assert all(got == [(retained[t][0][0], True)] for t, got in retained.items()), "only retained messages"
    assert retained["edge/front_door/person"][0][0] == b"0"
    assert retained["edge/front_door/porch/person"][0][0] == b"0"
    assert retained["edge/front_door/gate/person/in"][0][0] == b"1"
    assert retained["edge/front_door/person/snapshot"][0][0] == best
    assert retained["edge/available"][0][0] == b"offline"
    assert "edge/events" not in retained

    found = configs(late)
    devices = {json.dumps(c["device"], sort_keys=True) for c in found.values()}
    assert len(devices) == 1
    device = json.loads(devices.pop())
    assert device["identifiers"] == [CLIENT] and device["manufacturer"] == "edge-detect" and device["sw_version"]
    assert {c["availability_topic"] for c in found.values()} == {"edge/available"}
    assert len({c["unique_id"] for c in found.values()}) == len(found) == 10
    occupancy = found[f"homeassistant/binary_sensor/{CLIENT}/front_door_porch_person_occupancy/config"]
    assert occupancy["device_class"] == "occupancy" and occupancy["state_topic"] == "edge/front_door/porch/person"
    count = found[f"homeassistant/sensor/{CLIENT}/front_door_all_person_count/config"]
    assert count["state_topic"] == "edge/front_door/person" and count["state_class"] == "measurement"
    stats_topics = {c["state_topic"] for t, c in found.items()
                    if t.rsplit("/", 2)[-2] in ("fps", "inference_time", "temperature", "power")}
    assert stats_topics == {"edge/stats"}
    assert exporter.stats.snapshot().errors == {}


def test_discovery_again_after_a_reconnect_and_at_home_assistants_birth(tmp_path):
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt install mosquitto)")
    b = Broker(tmp_path)        # persistence false: a restarted broker has lost every retained message
    b.start()
    exporter = new_exporter(b.port, reconnect_max=1)
    try:
        assert exporter.connected.wait(10)
        feed(exporter, jpeg((0, 0, 0)), jpeg((9, 9, 9)))
        sub = Subscriber(b.port, "homeassistant/#")
        wait_for(lambda: set(configs(sub)) == EXPECTED_CONFIGS, 10, "discovery")
        sub.close()

        b.stop()
        wait_for(lambda: not exporter.connected.is_set(), 30, "disconnect noticed")
        b.start()
        assert exporter.connected.wait(30), "no reconnection"
        sub = Subscriber(b.port, "homeassistant/#")
        wait_for(lambda: set(configs(sub)) == EXPECTED_CONFIGS, 10, "discovery re-sent on reconnect")
        sub.close()
        sub = Subscriber(b.port, "homeassistant/#")          # connects after them: gets them retained
        wait_for(lambda: set(configs(sub)) == EXPECTED_CONFIGS, 10, "retained discovery")
        assert {retain for got in by_topic(sub).values() for _, retain in got} == {True}

        with sub.lock:
            sub.messages.clear()
        ha = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="home-assistant")
        ha.connect("127.0.0.1", b.port)
        ha.loop_start()
        ha.publish("homeassistant/status", "offline", qos=1).wait_for_publish(5)
        time.sleep(0.5)
        assert configs(sub) == {}                     # Home Assistant going away asks for nothing
        ha.publish("homeassistant/status", "online", qos=1).wait_for_publish(5)
        wait_for(lambda: set(configs(sub)) == EXPECTED_CONFIGS, 10, "discovery at Home Assistant's birth")
        ha.disconnect()
        ha.loop_stop()
        sub.close()
    finally:
        exporter.close()
        b.stop()


EXPORTER_PROCESS = textwrap.dedent("""
    import sys, time
    from edge.telemetry.mqtt import MqttExporter
    from edge.telemetry.stats import PipelineStats
    exporter = MqttExporter(PipelineStats(), lambda: {}, "cam0", host="127.0.0.1", port=int(sys.argv[1]),
                            client_id="edge-test", discovery=True, qos=1)
    assert exporter.connected.wait(10)
    exporter.counts("front door", "all", {"person": 2})
    print("connected", flush=True)
    time.sleep(600)
""")


def test_availability_online_then_offline_by_the_last_will_when_killed(broker):
    sub = Subscriber(broker.port, "#")
    proc = subprocess.Popen([sys.executable, "-c", EXPORTER_PROCESS, str(broker.port)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "connected"
        wait_for(lambda: by_topic(sub).get("edge/front_door/person"), 10, "the count")
        wait_for(lambda: len(configs(sub)) == 6, 10, "discovery")
        proc.kill()                               # SIGKILL: no close(), no DISCONNECT; the broker sends the will
        proc.wait(timeout=10)
        wait_for(lambda: [p for p, _ in by_topic(sub).get("edge/available", [])] == [b"online", b"offline"], 10,
                 "offline by the last will")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    sub.close()
    # what Home Assistant reads: every entity's availability topic now says offline, retained
    assert {c["availability_topic"] for c in configs(sub).values()} == {"edge/available"}
    assert {c["payload_not_available"] for c in configs(sub).values()} == {"offline"}
    late = Subscriber(broker.port, "edge/available")
    wait_for(lambda: late.on("edge/available"), 10, "retained availability")
    assert late.on("edge/available") == [b"offline"]
    late.close()


# -- the queue: the listener only queues, bounded, and never raises

def test_the_listener_only_queues_and_never_raises(broker):
    exporter = new_exporter(broker.port, send_interval=10.0)
    sent = []
    real_publish = exporter.client.publish

    def recording_publish(topic, payload=None, *args, **kwargs):
        sent.append((threading.current_thread(), topic))
        return real_publish(topic, payload, *args, **kwargs)
    try:
        assert exporter.connected.wait(10)
        exporter.client.publish = recording_publish
        caller = threading.current_thread()
        feed(exporter, jpeg((1, 2, 3)), jpeg((4, 5, 6)))
        exporter.event({"type": "new"}, None)                                   # no "after"
        exporter.event(message("new", end=float("nan")), None)                  # not JSON
        exporter.counts("front door", "porch", {"person": "many"})
        exporter.crossings("front door", "gate", {"person": {"in": 2}})        # no "out"
        assert [topic for thread, topic in sent if thread is caller] == []    # the caller's thread only queues
        assert exporter.stats.snapshot().errors == {"mqtt_sink": 4}
    finally:
        exporter.close()
    assert {"edge/events", "edge/front_door/person/snapshot"} <= {topic for _, topic in sent}


def test_snapshots_waiting_for_the_sender_are_replaced_and_bounded(monkeypatch):
    monkeypatch.setattr(mqtt_exporter, "MAX_SNAPSHOT_BYTES", 2500)
    exporter = MqttExporter(PipelineStats(), lambda: {}, "cam0", host="127.0.0.1", port=free_port(),
                            send_interval=10.0)
    try:
        exporter.event(message("new"), b"a" * 1000)
        exporter.event(message("update"), b"b" * 1200)        # replaces the waiting one, in its place
        car = message("new")
        car["after"]["label"] = "car"
        exporter.event(car, b"c" * 1200)                      # 2400 bytes wait
        exporter.event(car, b"d" * 1400)                      # 2600: over the bound, dropped
        topics = [t for t, _, _ in exporter._queue]
        assert topics == ["edge/events", "edge/front_door/person/snapshot", "edge/events", "edge/events",
                          "edge/front_door/car/snapshot", "edge/events"]
        assert exporter._snapshots == {"edge/front_door/person/snapshot": b"b" * 1200,
                                       "edge/front_door/car/snapshot": b"c" * 1200}
        assert exporter.stats.snapshot().errors == {"mqtt_queue_full": 1}
    finally:
        exporter.close()


def test_whole_frame_counts_come_from_the_events_layer_once_it_reports(monkeypatch):
    exporter = MqttExporter(PipelineStats(), lambda: {}, "cam0", host="127.0.0.1", port=free_port(),
                            send_interval=10.0)
    try:
        exporter.publish(frame_result(0, ("person", "person")))
        exporter.counts("cam0", "all", {"person": 1})
        exporter.publish(frame_result(1, ("person",) * 3))       # detections still go out; counts no more
        exporter.counts("cam0", "all", {"person": 1})            # unchanged: nothing
        assert [(t, p) for t, p, _ in exporter._queue] == [
            ("edge/cam0/detections", exporter._queue[0][1]), ("edge/cam0/person", "2"),
            ("edge/cam0/person", "1"), ("edge/cam0/detections", exporter._queue[3][1])]
        assert json.loads(exporter._queue[3][1])["frame"] == 1
    finally:
        exporter.close()


def test_the_events_layer_through_mqtt_and_prometheus(broker):
    """The real events sink (tracker, lifecycle) with both listeners: one person walks through the frame."""
    from prometheus_client import CollectorRegistry, generate_latest

    from edge.capture.base import Frame
    from edge.events.metrics import EventMetrics
    from edge.events.settings import EventsSettings
    from edge.events.sink import EventsSink
    from edge.events.tracker import make_tracker
    from edge.results import FrameResult, Timings
    from edge.vision.decode.base import Detection

    sub = Subscriber(broker.port, "edge/#")
    exporter = new_exporter(broker.port, "walk.mp4", discovery=False)
    metrics = EventMetrics(exporter.stats)
    registry = CollectorRegistry(auto_describe=False)
    metrics.register(registry)
    sink = EventsSink(EventsSettings(enabled=True, jsonl=""), make_tracker, "walk.mp4", listeners=[exporter, metrics],
                      snapshots=False, errors=exporter.stats.error)
    try:
        assert exporter.connected.wait(10)
        for i in range(40):
            image = np.full((240, 320, 3), 60, np.uint8)
            x = 20 + 5 * i
            cv2.rectangle(image, (x, 60), (x + 40, 200), (200, 200, 200), -1)
            detections = (Detection("person", 0, 0.9, (float(x), 60.0, x + 40.0, 200.0)),)
            result = FrameResult(Frame(image, i, 1_700_000_000.0 + i * 0.1, 0), detections, Timings(0, 0, 0, 0, 0),
                                 "cpu")
            sink.publish(result)
            exporter.publish(result)
        sink.close()                                      # the drain: the open event ends
        wait_for(lambda: [json.loads(p)["type"] for p in sub.on("edge/events")][-1:] == ["end"], 10, "the end")
    finally:
        exporter.close()
    sub.close()
    events = [json.loads(p) for p in sub.on("edge/events")]
    assert [e["type"] for e in events][0] == "new" and len({e["after"]["id"] for e in events}) == 1
    assert events[-1]["after"]["end_time"] >= events[-1]["after"]["start_time"] == events[0]["after"]["start_time"]
    assert {e["after"]["camera"] for e in events} == {"walk.mp4"}
    counts = sub.on("edge/walk.mp4/person")
    assert counts[-1] == b"0" and b"1" in counts        # the per-frame counts gave way to the tracked ones
    snapshot = sub.on("edge/walk.mp4/person/snapshot")[-1]
    assert cv2.imdecode(np.frombuffer(snapshot, np.uint8), cv2.IMREAD_COLOR).shape[2] == 3
    assert len(sub.on("edge/walk.mp4/detections")) == 40
    text = generate_latest(registry).decode()
    assert 'edge_events_total{camera="walk.mp4",label="person",type="end"} 1.0' in text
    assert 'edge_track_duration_seconds_count{camera="walk.mp4",label="person"} 1.0' in text
    assert 'edge_zone_objects{camera="walk.mp4",label="person",zone="all"} 0.0' in text
    assert exporter.stats.snapshot().errors == {}
