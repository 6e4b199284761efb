"""Issue 14, sources: a corrupt frame is skipped and counted, not the end; FFmpeg's messages go
through logging, rate-limited; unreadable and oversized images are skipped before decoding; a
stream that gives no frame is an error (one line, exit 2)."""

from __future__ import annotations

import random
import struct
import subprocess
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.telemetry.stats import PipelineStats, process_counts
from tests.helpers import run_edge


def flipped(clip: Path, dst: Path, seed: int = 1, flips: int = 200, span: int = 2000) -> Path:
    """The sample clip with ``flips`` bytes inverted within ``span`` bytes of its middle (H.264 data)."""
    data = bytearray(clip.read_bytes())
    rng = random.Random(seed)
    middle = len(data) // 2
    for _ in range(flips):
        data[middle + rng.randrange(-span, span)] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


@pytest.fixture(scope="module")
def corrupt_clip(clip, tmp_path_factory) -> Path:
    return flipped(clip, tmp_path_factory.mktemp("corrupt") / "flipped.mp4")


def read_all(source) -> list:
    source.open()
    frames = []
    try:
        while (frame := source.read()) is not None:
            frames.append(frame)
    finally:
        source.close()
    return frames


def test_corrupt_frames_are_skipped_and_counted_not_the_end(corrupt_clip):
    from edge.capture.opencv import VideoFileSource
    before = process_counts().get("corrupt", 0)
    source = VideoFileSource(corrupt_clip, realtime=False)
    frames = read_all(source)
    assert source.frame_count == 250
    assert len(frames) == 248                        # the figure: 248 of 250 decode
    assert source.corrupt == 2
    assert [f.index for f in frames] == list(range(248))
    assert process_counts()["corrupt"] - before == 2
    assert PipelineStats().snapshot().counts["corrupt"] >= 2      # exported as edge_frames_corrupt_total


def test_an_intact_file_has_no_corrupt_frame(clip):
    from edge.capture.opencv import VideoFileSource
    source = VideoFileSource(clip, realtime=False)
    assert len(read_all(source)) == 250 and source.corrupt == 0


def test_looping_a_corrupt_file_goes_round(corrupt_clip):
    from edge.capture.opencv import VideoFileSource
    source = VideoFileSource(corrupt_clip, realtime=False, loop=True)
    source.open()
    try:
        indices = [source.read().index for _ in range(700)]
    finally:
        source.close()
    assert indices == list(range(700)) and source.corrupt == 6     # 248 a pass, 2 corrupt in each of 3


def test_edge_run_processes_every_decodable_frame(corrupt_clip, tmp_path):
    out = tmp_path / "d.jsonl"
    done = run_edge("--source", str(corrupt_clip), "--as-fast-as-possible", "--jsonl", str(out), "--live", "off")
    assert done.returncode == 0, done.stderr
    assert "248 frames" in done.stderr
    assert "end of file; 2 frame(s) did not decode and were skipped" in done.stderr


LOG_CHILD = r"""
import logging, sys
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(name)s|%(message)s")
from edge.capture.opencv import VideoFileSource
source = VideoFileSource(sys.argv[1], realtime=False)
source.open()
n = 0
while source.read() is not None:
    n += 1
print("frames", n)
"""


def test_libav_messages_go_through_logging_rate_limited(corrupt_clip):
    done = subprocess.run([sys.executable, "-c", LOG_CHILD, str(corrupt_clip)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "frames 248" in done.stdout
    assert "[h264 @" not in done.stderr and "h264" not in done.stderr      # nothing raw on stderr
    libav = [line for line in done.stdout.splitlines() if line.startswith("edge.capture.libav|")]
    assert libav and "[h264 @" in libav[0]                                  # the decoder's own words, logged
    assert len(libav) <= 3                                                  # rate-limited


# ---- image folders ----

def png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


@pytest.fixture()
def folder(tmp_path, clip_frames) -> Path:
    d = tmp_path / "images"
    d.mkdir()
    cv2.imwrite(str(d / "a.jpg"), clip_frames[0])
    (d / "b.jpg").write_bytes(b"not a jpeg at all")
    (d / "c.png").write_bytes(png_header(100_000, 100_000) + b"\0" * 100)
    cv2.imwrite(str(d / "d.png"), clip_frames[1])
    return d


def test_unreadable_and_oversized_images_are_skipped(folder, monkeypatch, caplog):
    from edge.capture import images
    decoded = []
    real = images.cv2.imread
    monkeypatch.setattr(images.cv2, "imread", lambda path, flags: decoded.append(Path(path).name) or real(path, flags))
    source = images.ImageFolderSource(folder)
    frames = read_all(source)
    assert [f.image.shape for f in frames] == [(272, 640, 3)] * 2
    assert source.skipped == 2
    assert "c.png" not in decoded                   # refused from its header, never decoded
    assert "100000x100000" in caplog.text and "b.jpg" in caplog.text


def test_header_sizes():
    from edge.capture.images import header_size
    ok, jpeg = cv2.imencode(".jpg", np.zeros((37, 53, 3), np.uint8))
    assert header_size(jpeg.tobytes()) == (53, 37)
    for ext in (".png", ".bmp", ".webp", ".ppm"):
        ok, data = cv2.imencode(ext, np.zeros((37, 53, 3), np.uint8))
        assert header_size(data.tobytes()) == (53, 37), ext
    assert header_size(png_header(100_000, 100_000)) == (100_000, 100_000)
    assert header_size(b"garbage") is None


def test_a_folder_where_nothing_decodes_is_one_line_exit_2(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "x.jpg").write_bytes(b"nope")
    (d / "y.png").write_bytes(png_header(100_000, 100_000))
    done = run_edge("--source", str(d), "--jsonl", "", "--live", "off")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("edge: error:")] == \
        [f"edge: error: image folder {str(d)!r} holds no decodable image (2 skipped) (convert them to JPEG or PNG)"]


def test_edge_run_on_a_folder_with_bad_images(folder, tmp_path):
    done = run_edge("--source", str(folder), "--jsonl", "", "--live", "off")
    assert done.returncode == 0, done.stderr
    assert "2 frames" in done.stderr and "skipping image" in done.stderr


# ---- streams ----

@pytest.fixture()
def garbage_mjpeg():
    """An HTTP 'MJPEG' stream on loopback whose parts are random bytes."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            rng = random.Random(0)
            try:
                for _ in range(50):
                    part = bytes(rng.randrange(256) for _ in range(2000))
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 2000\r\n\r\n" + part
                                     + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/stream.mjpg"
    server.shutdown()
    server.server_close()


def test_a_garbage_stream_is_an_error_not_exit_0(garbage_mjpeg):
    done = run_edge("--source", garbage_mjpeg, "--jsonl", "", "--live", "off", timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("edge: error:")]
    assert len(errors) == 1 and "127.0.0.1" in errors[0], done.stderr


def test_corrupt_count_in_metrics(corrupt_clip):
    from prometheus_client import generate_latest
    from prometheus_client.core import CollectorRegistry

    from edge.capture.opencv import VideoFileSource
    from edge.telemetry.prometheus import EdgeCollector
    read_all(VideoFileSource(corrupt_clip, realtime=False))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EdgeCollector(PipelineStats()))
    text = generate_latest(registry).decode()
    line = next(line for line in text.splitlines() if line.startswith("edge_frames_corrupt_total"))
    assert float(line.split()[-1]) >= 2


@pytest.fixture()
def mjpeg_with_a_bad_part(clip_frames):
    """30 good JPEG parts with a garbage one in place of the 21st."""
    jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in clip_frames[:30]]
    jpegs[20] = bytes(random.Random(1).randrange(256) for _ in range(3000))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            for jpeg in jpegs:
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                                 + jpeg + b"\r\n")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/stream.mjpg"
    server.shutdown()
    server.server_close()


def test_a_bad_picture_in_a_stream_is_skipped_not_the_end(mjpeg_with_a_bad_part):
    from edge.capture.opencv import StreamSource
    source = StreamSource(mjpeg_with_a_bad_part)
    frames = read_all(source)
    assert len(frames) == 29 and source.corrupt == 1
