"""Every source kind that can run here, for real: a file, an image folder, an HTTP MJPEG stream
and an RTSP stream served on loopback by the test, each through ``edge run`` with a test model.

The HTTP server is Python's own (multipart/x-mixed-replace JPEG parts, as IP cameras and
mjpg-streamer serve them). The RTSP server is gst-rtsp-server (tests/integration/rtsp_server.py,
system Python); its test is skipped, naming the Debian packages, when they are missing.
"""

import json
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import pytest

from edge.capture import make_source
from edge.capture.base import CaptureThread, FrameSlot, END
from edge.config import SourceConfig
from tests.helpers import free_port, run_edge

MODELS = Path(__file__).parent.parent / "data" / "models"
RTSP_PACKAGES = "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good"


@pytest.fixture(scope="module")
def mjpeg_server(clip_frames):
    """http://127.0.0.1:PORT/stream.mjpg: 60 frames of the clip at 25 fps, then the stream ends."""
    parts = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes() for f in clip_frames[:60]]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/stream.mjpg":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                for jpeg in parts:
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                     b"Content-Length: %d\r\n\r\n" % len(jpeg) + jpeg + b"\r\n")
                    time.sleep(0.04)
            except (BrokenPipeError, ConnectionResetError):
                pass             # the client had enough frames

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/stream.mjpg"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def rtsp_server(clip, tmp_path_factory):
    python = shutil.which("python3", path="/usr/bin")
    probe = subprocess.run([python or "python3", "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                            "from gi.repository import GstRtspServer"], capture_output=True)
    if python is None or probe.returncode != 0:
        pytest.skip(f"gst-rtsp-server is not installed (apt install {RTSP_PACKAGES})")
    port = free_port()
    proc = subprocess.Popen([python, str(Path(__file__).parent / "rtsp_server.py"), str(clip), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("ready"):
        proc.kill()
        pytest.fail(f"the RTSP server did not start: {line} {proc.stderr.read()}")
    yield line.split()[1]
    proc.terminate()
    proc.wait(10)


def read_frames(uri, n):
    source = make_source(SourceConfig(uri=uri))
    source.open()
    slot, stop = FrameSlot(), threading.Event()
    thread = CaptureThread(source, slot, stop)
    thread.start()
    frames = []
    while len(frames) < n:
        item = slot.get(10.0)
        assert item is not None, "no frame within 10 s"
        if item is END:
            break
        frames.append(item)
    stop.set()
    thread.join(10)
    source.close()
    return frames, slot


def events(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_http_mjpeg_stream_frames(mjpeg_server):
    frames, slot = read_frames(mjpeg_server, 10)
    assert len(frames) == 10 and frames[0].size == (640, 272)
    assert slot.captured >= 10 and frames[-1].index > frames[0].index


def test_edge_run_on_http_stream(mjpeg_server, tmp_path):
    out = tmp_path / "d.jsonl"
    r = run_edge("run", "-m", str(MODELS / "yolov8"), "-s", mjpeg_server, "--max-frames", "15", "--jsonl",
                 str(out), "--live", "off", "--score-threshold", "0.3")
    assert r.returncode == 0, r.stderr
    lines = events(out)
    assert lines and all(e["width"] == 640 and e["height"] == 272 for e in lines)


def test_edge_run_on_rtsp_stream(rtsp_server, tmp_path):
    frames, _ = read_frames(rtsp_server, 5)
    assert len(frames) == 5 and frames[0].size == (640, 272)
    out = tmp_path / "d.jsonl"
    r = run_edge("run", "-m", str(MODELS / "ssd_postprocess"), "-s", rtsp_server, "--max-frames", "10",
                 "--jsonl", str(out), "--live", "off")
    assert r.returncode == 0, r.stderr
    assert events(out)


def test_edge_run_on_an_image_folder_every_layout(clip_frames, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (0, 100, 200):
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), clip_frames[i])
    for layout in ("yolov8", "yolov8_pixels", "yolov5", "ssd_anchors", "ssd_postprocess", "classification"):
        out = tmp_path / f"{layout}.jsonl"
        r = run_edge("run", "-m", str(MODELS / layout), "-s", str(folder), "--jsonl", str(out), "--live", "off",
                     "--score-threshold", "0.01")     # untrained models: a low bar so every frame has some
        assert r.returncode == 0, f"{layout}: {r.stderr}"
        lines = events(out)
        assert [e["frame"] for e in lines] == [0, 1, 2], layout     # every image, in name order
        if layout == "classification":
            assert all("box" not in d for e in lines for d in e["detections"])


def test_edge_run_on_a_file_with_the_float_twin(tmp_path, clip):
    out = tmp_path / "d.jsonl"
    r = run_edge("run", "-m", str(MODELS / "yolov5/yolov5_float.tflite"), "--manifest",
                 str(MODELS / "yolov5/manifest.json"), "--allow-float", "-s", str(clip), "--as-fast-as-possible",
                 "--max-frames", "20", "--jsonl", str(out), "--live", "off", "--score-threshold", "0.3")
    assert r.returncode == 0, r.stderr
    assert len(events(out)) >= 10


@pytest.mark.parametrize("args, message", [
    (["-m", str(MODELS / "yolov8"), "--layout", "ssd_postprocess"], "layout ssd_postprocess needs 4"),
    (["-m", str(MODELS / "yolov8"), "--layout", "yolov6"], "unknown output layout 'yolov6'"),
    (["-m", str(MODELS / "yolov8"), "--labels", "/nonexistent/labels.txt"], "labels file '/nonexistent/labels.txt' "
                                                                             "does not exist"),
    (["-m", str(MODELS / "yolov8"), "-s", "rtsp://127.0.0.1:9/none"], "cannot open stream"),
])
def test_errors_are_one_line_with_exit_2(args, message):
    r = run_edge("run", *args, "--jsonl", "", "--live", "off", "--max-frames", "1")
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("edge: error:")]
    assert len(errors) == 1 and message in errors[0], r.stderr


def test_a_raw_head_without_manifest_says_its_anchors_are_missing(tmp_path):
    bare = tmp_path / "head.tflite"
    shutil.copyfile(MODELS / "ssd_anchors/ssd_anchors_int8.tflite", bare)
    r = run_edge("run", "-m", str(bare), "--input-mean", "127.5", "--input-std", "127.5", "--jsonl", "",
                 "--live", "off", "--max-frames", "1")
    assert r.returncode == 2
    assert "head.tflite is a raw SSD head (box encodings and class scores by name) that edge does not " \
           "recognise: its anchors are what is missing" in r.stderr
    assert "output.anchors" in r.stderr and "output.anchor_options" in r.stderr


def test_a_bare_yolov5_runs_with_layout_and_labels_flags(tmp_path, clip):
    bare = tmp_path / "v5.tflite"
    shutil.copyfile(MODELS / "yolov5/yolov5_int8.tflite", bare)
    out = tmp_path / "d.jsonl"
    r = run_edge("run", "-m", str(bare), "--layout", "yolov5", "--labels", str(MODELS / "yolov5/labels.txt"),
                 "-s", str(clip), "--as-fast-as-possible", "--max-frames", "5", "--jsonl", str(out), "--live", "off",
                 "--score-threshold", "0.05")
    assert r.returncode == 0, r.stderr
    assert all(d["class_id"] < 80 for e in events(out) for d in e["detections"])
    r = run_edge("run", "-m", str(bare), "--layout", "yolov5", "--jsonl", "", "--live", "off", "--max-frames", "1")
    assert r.returncode == 2 and "cannot tell how many classes v5.tflite has" in r.stderr
