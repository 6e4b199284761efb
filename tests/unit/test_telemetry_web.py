"""The live view's drawing and its HTTP server, in process (the browser test is tests/e2e/test_web.py)."""

import json
import urllib.request

import cv2
import numpy as np
import pytest

from edge.capture.base import Frame
from edge.results import FrameResult, Timings
from edge.telemetry.stats import PipelineStats
from edge.vision.decode.base import Classification, Detection
from edge.web.server import BOX_BGR, WebServer, annotate


def result(image, fmt="BGR", boxes=((10.0, 20.0, 50.0, 60.0),)):
    dets = tuple(Detection("person", 0, 0.87, box) for box in boxes)
    return FrameResult(Frame(image, 3, 0.0, 0, fmt), dets, Timings(0, 0, 0, 0, 0), "cpu")


def test_boxes_drawn_on_the_frame_without_touching_it():
    image = np.full((100, 120, 3), 40, np.uint8)
    out = annotate(result(image))
    assert (image == 40).all()                            # the pipeline's frame is not drawn on
    assert tuple(out[40, 10]) == BOX_BGR and tuple(out[60, 30]) == BOX_BGR      # left and bottom edges
    assert tuple(out[40, 30]) == (40, 40, 40)             # inside stays
    assert (out[5:20, 10:60] == BOX_BGR).all(axis=-1).any()   # the label background above the box


def test_a_classifier_result_is_written_as_text_not_boxes():
    image = np.full((100, 160, 3), 40, np.uint8)
    res = FrameResult(Frame(image, 1, 0.0, 0), (Classification("tabby", 281, 0.9),), Timings(0, 0, 0, 0, 0), "cpu")
    out = annotate(res)
    assert (out[4:26, 6:150] == BOX_BGR).all(axis=-1).any()   # the label text, top left
    assert (out[40:, :] == 40).all()                          # nothing drawn lower down


def test_rgb_and_yuv_frames_are_shown_in_their_colours():
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 0] = 200                                     # red in RGB order
    out = annotate(result(rgb, "RGB", boxes=()))
    assert tuple(out[5, 5]) == (0, 0, 200)
    bgr = np.zeros((64, 64, 3), np.uint8)
    bgr[..., 2] = 200
    yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    out = annotate(result(yuv, "YUV420", boxes=()))
    assert out.shape == (64, 64, 3) and out[5, 5, 2] > 150 and out[5, 5, 0] < 60


@pytest.fixture()
def server():
    stats = PipelineStats()
    web = WebServer(stats, lambda: {"inferred": stats.snapshot().inferred}, port=0)
    yield web, stats
    web.close()


def test_server_routes(server):
    web, stats = server
    base = f"http://127.0.0.1:{web.port}"
    with pytest.raises(urllib.error.HTTPError, match="503"):
        urllib.request.urlopen(base + "/snapshot.jpg", timeout=5)
    stats.inferred_frame()
    web.publish(result(np.full((100, 120, 3), 40, np.uint8)))
    jpeg = urllib.request.urlopen(base + "/snapshot.jpg", timeout=5).read()
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (100, 120, 3)
    assert json.load(urllib.request.urlopen(base + "/stats", timeout=5)) == {"inferred": 1}
    page = urllib.request.urlopen(base + "/", timeout=5).read().decode()
    assert '"/stream?camera="' in page and "<canvas" in page and "http" not in page.split("<script>")[1]
    with urllib.request.urlopen(base + "/stream.mjpg", timeout=5) as stream:
        assert stream.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=edgeframe"
        head = stream.read(200)
        assert head.startswith(b"--edgeframe\r\nContent-Type: image/jpeg\r\nContent-Length: ")
