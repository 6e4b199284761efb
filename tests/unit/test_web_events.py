"""The live view with several cameras and as an events listener, in process: track ids, zones and
lines drawn on the frames, /cameras and per-camera streams, /events, event snapshots served from
the snapshot directory (and nothing else), and the EventsSink's per-frame tracks hook."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from edge.capture.base import Frame
from edge.events.geometry import Line, Zone
from edge.events.settings import EventsSettings
from edge.events.sink import EventsSink
from edge.events.snapshots import SnapshotStore
from edge.events.tracker import make_tracker
from edge.events.types import TrackedObject
from edge.results import FrameResult, Timings
from edge.telemetry.stats import PipelineStats
from edge.vision.decode.base import Detection
from edge.web.server import BOX_BGR, LINE_BGR, ZONE_BGR, WebServer, annotate

ZONE = Zone("kerb", ((20.0, 60.0), (150.0, 60.0), (150.0, 110.0), (20.0, 110.0)))
LINE = Line("middle", (100.0, 115.0), (100.0, 5.0))
EVENT_A = "1700000000.000000-abc123"
EVENT_B = "1700000001.500000-zz99x0"


def result(camera="a", index=3, size=(120, 160), boxes=((10.0, 20.0, 50.0, 60.0),), value=40):
    image = np.full((*size, 3), value, np.uint8)
    dets = tuple(Detection("person", 0, 0.87, box) for box in boxes)
    return FrameResult(Frame(image, index, 1.7e9 + index, 0), dets, Timings(0, 0, 0, 0, 0), "cpu", camera)


def track(tid=7, detection=0, box=(10.0, 20.0, 50.0, 60.0), confirmed=True):
    return TrackedObject(tid, "person", box, 0.87, detection, 5, 5, confirmed)


def colour_pixels(image, bgr, tol=40):
    return int(np.count_nonzero((np.abs(image.astype(int) - np.array(bgr)) <= tol).all(axis=-1)))


def test_a_confirmed_track_adds_its_id_to_the_detection_label():
    res = result()
    plain = annotate(res)
    unconfirmed = annotate(res, [track(confirmed=False)])
    tracked = annotate(res, [track()])
    assert (unconfirmed == plain).all()          # an unconfirmed track changes nothing
    # "person #7 0.87" is longer than "person 0.87": more label background above the box
    assert colour_pixels(tracked[:20], BOX_BGR, 0) > colour_pixels(plain[:20], BOX_BGR, 0) + 20
    # a track id pointing past the detections is drawn as a coasting track, never an IndexError
    assert annotate(res, [track(detection=5, box=(80.0, 70.0, 120.0, 100.0))])[85, 80].tolist() == list(BOX_BGR)


def test_a_coasting_track_gets_its_predicted_box_and_id():
    res = result(boxes=())
    out = annotate(res, [track(detection=None, box=(60.0, 50.0, 110.0, 100.0))])
    assert tuple(out[75, 60]) == BOX_BGR and tuple(out[75, 110]) == BOX_BGR     # thin box, left and right edges
    assert tuple(out[75, 62]) == (40, 40, 40)                                  # one pixel wide
    assert colour_pixels(out[30:50, 60:110], BOX_BGR, 0) > 20                    # "#7" above it


def test_zones_and_lines_are_drawn_with_their_counts():
    res = result(boxes=())
    out = annotate(res, zones=[ZONE], lines=[LINE])
    assert tuple(out[110, 80]) == ZONE_BGR          # the zone's bottom edge
    assert tuple(out[85, 150]) == ZONE_BGR          # its right edge
    assert tuple(out[30, 100]) == LINE_BGR          # the line
    assert tuple(out[5, 5]) == (40, 40, 40)
    # the counts are written: more in-zone and crossing text changes the labels' pixels
    counted = annotate(res, zones=[ZONE], lines=[LINE], zone_counts={"kerb": {"person": 12, "car": 1}},
                       line_counts={"middle": {"person": {"in": 3, "out": 14}}})
    assert not (counted == out).all()


def test_two_cameras_each_with_its_own_stream_tracks_zones_and_counts():
    stats = PipelineStats()
    zone_b = dataclasses.make_dataclass("CameraZone", [("cameras", tuple, dataclasses.field(default=()))],
                                        bases=(Zone,), frozen=True)("door", ZONE.points, cameras=("b",))
    web = WebServer(stats, lambda: {}, port=0, events=EventsSettings(zones=(ZONE, zone_b), lines=(LINE,)))
    base = f"http://127.0.0.1:{web.port}"
    try:
        assert json.load(urllib.request.urlopen(base + "/cameras", timeout=5)) == []
        with pytest.raises(urllib.error.HTTPError, match="503"):
            urllib.request.urlopen(base + "/snapshot.jpg", timeout=5)
        web.tracks("c", 0, ())                          # listener calls alone do not make a camera shown
        web.publish(result("a", size=(120, 160)))
        web.publish(result("b", size=(90, 200), boxes=()))
        assert json.load(urllib.request.urlopen(base + "/cameras", timeout=5)) == ["a", "b"]

        def frame(query=""):
            data = urllib.request.urlopen(base + "/snapshot.jpg" + query, timeout=5).read()
            return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert frame().shape == (120, 160, 3)          # the first camera by default
        assert frame("?camera=a").shape == (120, 160, 3)
        b = frame("?camera=b")
        assert b.shape == (90, 200, 3)
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(base + "/snapshot.jpg?camera=d", timeout=5)
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(base + "/stream?camera=d", timeout=5)
        assert colour_pixels(b, ZONE_BGR) > 200 and colour_pixels(frame("?camera=a"), ZONE_BGR) > 200
        # "kerb" is on every camera, "door" (the same polygon, its own label) only on b
        web.publish(result("a", index=0, boxes=()))
        web.publish(result("b", index=0, boxes=(), size=(120, 160)))
        expected = cv2.imencode(".jpg", annotate(result("a", index=0, boxes=()), zones=[ZONE], lines=[LINE]),
                                [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
        assert web.jpeg("a")[1] == expected             # a: kerb and the line only
        assert web.jpeg("b")[1] != expected             # b: the door too
        web.publish(result("a", size=(120, 160)))

        # tracks for the frame shown: it is drawn again with the id, for that camera only
        before = urllib.request.urlopen(base + "/snapshot.jpg?camera=a", timeout=5).read()
        web.tracks("a", 3, (track(),))
        web.tracks("a", 2, (track(tid=99),))           # an older frame's tracks: not drawn on frame 3
        after = urllib.request.urlopen(base + "/snapshot.jpg?camera=a", timeout=5).read()
        assert after != before
        assert web.jpeg("a")[1] == after               # encoded once: the same bytes again
        web.counts("a", "kerb", {"person": 2})
        web.crossings("a", "middle", {"person": {"in": 1, "out": 0}})
        web.publish(result("a", index=4))
        counted = urllib.request.urlopen(base + "/snapshot.jpg?camera=a", timeout=5).read()
        assert counted != after

        with urllib.request.urlopen(base + "/stream?camera=b", timeout=5) as stream:
            assert stream.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=edgeframe"
            head = stream.read(300)
            assert head.startswith(b"--edgeframe\r\nContent-Type: image/jpeg\r\nContent-Length: ")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            assert length == len(web.jpeg("b")[1])
    finally:
        web.close()


def after(event_id, label="person", score=0.8, end=None, zones=()):
    return {"id": event_id, "camera": "a", "label": label, "top_score": score, "score": score,
            "start_time": 1.7e9, "end_time": end, "entered_zones": list(zones), "current_zones": list(zones),
            "has_snapshot": True}


def test_recent_events_newest_first_bounded_and_updated_in_place():
    web = WebServer(PipelineStats(), lambda: {}, port=0, max_events=3)
    base = f"http://127.0.0.1:{web.port}"
    try:
        assert json.load(urllib.request.urlopen(base + "/events", timeout=5)) == []
        ids = [f"17000000{i:02d}.000000-aaaaa{i}" for i in range(5)]
        for i in ids:
            web.event({"type": "new", "before": after(i), "after": after(i)}, None)
        web.event({"type": "bad", "after": {"id": "../../etc/passwd"}}, None)      # not an event: ignored
        web.event({"type": "update", "before": after(ids[2]), "after": after(ids[2], score=0.9, zones=["kerb"])},
                  None)
        listed = json.load(urllib.request.urlopen(base + "/events", timeout=5))
        assert [e["id"] for e in listed] == [ids[2], ids[4], ids[3]]
        assert listed[0]["type"] == "update" and listed[0]["entered_zones"] == ["kerb"] and listed[0]["score"] == 0.9
    finally:
        web.close()


@pytest.fixture()
def snapshots(tmp_path):
    directory = tmp_path / "snapshots"
    store = SnapshotStore(directory)
    image = np.full((100, 120, 3), 90, np.uint8)
    store.save(EVENT_A, image, (10, 10, 60, 80), "person", 0.9)
    (tmp_path / "secret.jpg").write_bytes(b"outside")
    (directory / "secret.jpg").write_bytes(b"not an event")
    os.symlink(tmp_path / "secret.jpg", directory / f"{EVENT_B}.jpg")       # a link named as an event
    return directory


def test_event_snapshots_are_served_and_nothing_else(snapshots):
    web = WebServer(PipelineStats(), lambda: {}, port=0, snapshot_dir=str(snapshots))
    base = f"http://127.0.0.1:{web.port}"
    try:
        full = urllib.request.urlopen(f"{base}/snapshot/{EVENT_A}.jpg", timeout=5)
        assert full.headers["Content-Type"] == "image/jpeg"
        assert full.read() == (snapshots / f"{EVENT_A}.jpg").read_bytes()
        crop = urllib.request.urlopen(f"{base}/snapshot/{EVENT_A}-crop.jpg", timeout=5).read()
        assert crop == (snapshots / f"{EVENT_A}-crop.jpg").read_bytes()
        assert urllib.request.urlopen(f"{base}/snapshot/{EVENT_A}.jpg?x=1", timeout=5).read() == full_bytes(snapshots)
        for bad in ["secret.jpg", "../secret.jpg", "..%2fsecret.jpg", "%2e%2e/secret.jpg", f"{EVENT_B}.jpg",
                    f"{EVENT_A}.png", f"{EVENT_A}", f"{EVENT_A}-crop-crop.jpg", "", "/etc/passwd",
                    f"{EVENT_A}.jpg/..", "1700000002.000000-nofile.jpg", f"x{EVENT_A}.jpg"]:
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"{base}/snapshot/{bad}", timeout=5)
            assert err.value.code == 404, bad
    finally:
        web.close()
    without = WebServer(PipelineStats(), lambda: {}, port=0)        # no snapshot directory: none served
    try:
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://127.0.0.1:{without.port}/snapshot/{EVENT_A}.jpg", timeout=5)
    finally:
        without.close()


def full_bytes(directory):
    return (directory / f"{EVENT_A}.jpg").read_bytes()


def test_the_new_routes_need_the_credentials(tmp_path, snapshots):
    auth = tmp_path / "auth"
    auth.write_text("s3cret\n")
    auth.chmod(0o600)
    web = WebServer(PipelineStats(), lambda: {}, port=0, auth_file=str(auth), snapshot_dir=str(snapshots))
    base = f"http://127.0.0.1:{web.port}"
    try:
        web.publish(result())
        for route in ("/cameras", "/events", f"/snapshot/{EVENT_A}.jpg", "/stream?camera=a"):
            with pytest.raises(urllib.error.HTTPError, match="401"):
                urllib.request.urlopen(base + route, timeout=5)
        token = {"Authorization": "Basic " + base64.b64encode(b"any:s3cret").decode()}
        got = urllib.request.urlopen(urllib.request.Request(f"{base}/snapshot/{EVENT_A}.jpg", headers=token),
                                     timeout=5).read()
        assert got == full_bytes(snapshots)
    finally:
        web.close()


def test_at_most_max_cameras_are_kept(monkeypatch):
    monkeypatch.setattr("edge.web.server.MAX_CAMERAS", 3)
    web = WebServer(PipelineStats(), lambda: {}, port=0)
    try:
        for i in range(10):
            web.publish(result(f"cam{i}"))
            web.tracks(f"other{i}", 0, ())
        assert web.cameras() == ["cam0", "cam1"]       # "other0" took the third place, with no frame
        assert web.jpeg("cam9") == (-1, b"")
    finally:
        web.close()


class TrackRecorder:
    def __init__(self):
        self.calls = []

    def event(self, message, snapshot):
        pass

    def counts(self, camera, zone, counts):
        pass

    def crossings(self, camera, line, counts):
        pass

    def tracks(self, camera, frame_index, active):
        self.calls.append((camera, frame_index, active))


class Broken(TrackRecorder):
    def tracks(self, camera, frame_index, active):
        raise RuntimeError("boom")


class NoTracks:
    def event(self, message, snapshot):
        pass

    def counts(self, camera, zone, counts):
        pass

    def crossings(self, camera, line, counts):
        pass


def test_the_events_sink_hands_every_frames_tracks_to_listeners_that_take_them():
    errors = []
    broken, recorder = Broken(), TrackRecorder()
    sink = EventsSink(EventsSettings(enabled=True, jsonl="", snapshot_dir=""), make_tracker, "src",
                      listeners=[broken, NoTracks(), recorder], errors=errors.append)
    for i in range(6):
        for camera in ("a", "b"):
            box = (10.0 + 2 * i, 20.0, 50.0 + 2 * i, 60.0)
            sink.publish(result(camera, index=i, boxes=(box,)))
    sink.close()
    assert [(c, i) for c, i, _ in recorder.calls] == [(c, i) for i in range(6) for c in ("a", "b")]
    last = recorder.calls[-1][2]
    assert len(last) == 1 and last[0].confirmed and last[0].detection == 0 and last[0].box[0] == 20.0
    assert errors == ["events_listener"] * 12             # the broken one is counted, the others go on


def test_the_web_server_as_the_sinks_listener_draws_the_tracker_ids():
    web = WebServer(PipelineStats(), lambda: {}, port=0)
    sink = EventsSink(EventsSettings(enabled=True, jsonl="", snapshot_dir=""), make_tracker, "src", listeners=[web])
    try:
        for i in range(5):
            res = result("a", index=i)
            web.publish(res)
            sink.publish(res)
        frame, tracks = web._cameras["a"].latest, web._cameras["a"].tracks_of(4)
        assert frame.frame.index == 4 and tracks and tracks[0].confirmed
        assert web.jpeg("a")[1] != cv2.imencode(".jpg", annotate(frame), [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
    finally:
        sink.close()
        web.close()
