"""The live view in a real headless Chromium (Debian package `chromium`), driven through its
DevTools protocol (websocket-client): the page served by `edge run` on the sample clip shows the
annotated MJPEG stream with boxes drawn, and its stats update."""

import base64
import json
import shutil
import signal
import subprocess
import sys
import urllib.request

import cv2
import numpy as np
import pytest
from tests.helpers import free_port, wait_for

websocket = pytest.importorskip("websocket", reason="websocket-client is not installed (pip install '.[dev]')")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class DevTools:
    """A minimal DevTools protocol client over the page target's websocket."""

    def __init__(self, port: int):
        def page_target():
            try:
                targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2))
            except OSError:
                return None
            return next((t for t in targets if t["type"] == "page"), None)
        target = wait_for(page_target, 30, "a Chromium page target")
        self.ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def screenshot(self) -> np.ndarray:
        png = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)

    def close(self):
        self.ws.close()


@pytest.fixture()
def daemon(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--loop", "--web", str(port),
                             "--jsonl", "", "--live", "off"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path)
    yield proc, port
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


@pytest.fixture()
def browser(tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt install chromium)")
    port = free_port()
    proc = subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--no-first-run", "--window-size=1280,800", f"--remote-debugging-port={port}",
                             "--remote-allow-origins=*", f"--user-data-dir={tmp_path / 'chromium'}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tools = DevTools(port)
    yield tools
    tools.close()
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def box_pixels(image: np.ndarray, rect: dict) -> int:
    """Magenta (box colour, BGR 255,0,255 after JPEG) pixels inside the stream element."""
    x, y, w, h = (int(round(rect[k])) for k in ("x", "y", "width", "height"))
    region = image[y:y + h, x:x + w].astype(int)
    b, g, r = region[..., 0], region[..., 1], region[..., 2]
    return int(np.count_nonzero((b > 180) & (r > 180) & (g < 90)))


def test_page_shows_boxes_and_updating_stats(daemon, browser):
    proc, port = daemon

    def serving():
        assert proc.poll() is None, proc.communicate()[1]
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=2)
            return True
        except OSError:
            return False
    wait_for(serving, 90, "the live view")
    browser.call("Page.enable")
    browser.call("Page.navigate", url=f"http://127.0.0.1:{port}/")

    wait_for(lambda: browser.evaluate("document.querySelector('img.stream').naturalWidth") == 640, 30,
             "the MJPEG stream showing")
    wait_for(lambda: int(browser.evaluate("document.getElementById('updates').textContent") or 0) >= 2, 30,
             "stats polled")
    first = int(browser.evaluate("document.getElementById('frames').textContent"))
    wait_for(lambda: int(browser.evaluate("document.getElementById('frames').textContent")) > first, 30,
             "the frame count updating")
    assert browser.evaluate("document.getElementById('fps').textContent") not in ("-", "0.0")
    assert "ms" in browser.evaluate("document.getElementById('e2e').textContent")
    assert browser.evaluate("document.getElementById('power').textContent").startswith("unavailable: ")
    rect = browser.evaluate("(() => { const r = document.querySelector('img.stream').getBoundingClientRect();"
                            " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()")
    assert 640 <= rect["width"] <= 644 and 272 <= rect["height"] <= 276     # the frame plus its border

    # persons are in most frames of the clip: screenshots until one shows a drawn box
    found = wait_for(lambda: box_pixels(browser.screenshot(), rect) >= 150, 60, "a box drawn in a screenshot")
    assert found
    # the latency chart was drawn: non-background pixels on the canvas
    drawn = browser.evaluate("(() => { const c = document.getElementById('chart');"
                             " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                             " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; })()")
    assert drawn > 100


def test_snapshot_and_stats_over_http(daemon):
    proc, port = daemon

    def snapshot():
        assert proc.poll() is None, proc.communicate()[1]
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/snapshot.jpg", timeout=2).read()
        except OSError:
            return None
    jpeg = wait_for(snapshot, 90, "a snapshot")
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (272, 640, 3)
    stats = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5))
    assert stats["counts"]["inferred"] > 0 and "invoke" in stats["latency_ms"]
    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nope", timeout=5)


# --- several cameras, events and their snapshots ---------------------------------------------------

KERB_POINTS = ((300.0, 150.0), (640.0, 150.0), (640.0, 272.0), (300.0, 272.0))


def zone_pixels(image: np.ndarray) -> int:
    """Orange (the zone colour, BGR 0,140,255 after JPEG) pixels on the kerb zone's top edge (y = 150)."""
    band = image[146:155, 300:640].astype(int)
    b, g, r = band[..., 0], band[..., 1], band[..., 2]
    return int(np.count_nonzero((b < 90) & (g > 90) & (g < 200) & (r > 200)))


@pytest.fixture()
def two_cameras(tmp_path):
    """The sample clip as two cameras ("left", "right") through the real scheduler and detector, the
    real EventsSink (tracker, lifecycle, snapshot store) with the live view as its listener."""
    import threading

    from edge.app import assemble
    from edge.config import CameraConfig, Config, OutputConfig
    from edge.events.geometry import Line, Zone
    from edge.events.settings import EventsSettings
    from edge.events.sink import EventsSink
    from edge.events.tracker import make_tracker
    from edge.telemetry.stats import PipelineStats
    from edge.telemetry.stats_payload import pipeline_payload
    from edge.web.server import WebServer

    settings = EventsSettings(enabled=True, jsonl="", snapshot_dir=str(tmp_path / "snapshots"),
                              zones=(Zone("kerb", KERB_POINTS),), lines=(Line("middle", (320.0, 272.0), (320.0, 0.0)),))
    stats = PipelineStats()
    web = WebServer(stats, lambda: pipeline_payload(stats), port=0, events=settings,
                    snapshot_dir=settings.snapshot_dir)
    sink = EventsSink(settings, make_tracker, "edge", listeners=[web], errors=stats.error)
    config = Config(cameras=(CameraConfig(name="left", source="sample", loop=True),
                             CameraConfig(name="right", source="sample", loop=True)),
                    output=OutputConfig(jsonl="", live="off"))
    assembly = assemble(config, extra_sinks=[web, sink], stats=stats)
    runner = threading.Thread(target=assembly.pipeline.run, name="pipeline", daemon=True)
    runner.start()
    yield web, sink
    assembly.pipeline.stop()
    runner.join(timeout=30)
    web.close()
    assert not runner.is_alive()


def test_two_cameras_zones_and_events_with_snapshots(two_cameras, browser):
    web, sink = two_cameras
    base = f"http://127.0.0.1:{web.port}"
    browser.call("Page.enable")
    browser.call("Page.navigate", url=base + "/")

    shown = ("[...document.querySelectorAll('img.stream')].map(i => [i.dataset.camera, i.naturalWidth,"
             " i.naturalHeight])")
    wait_for(lambda: sorted(browser.evaluate(shown) or []) == [["left", 640, 272], ["right", 640, 272]], 60,
             "both cameras' streams showing")     # (in the order their first frames came)

    # a frame of each camera's MJPEG stream has the zone drawn
    for camera in ("left", "right"):
        with urllib.request.urlopen(f"{base}/stream?camera={camera}", timeout=10) as stream:
            head = stream.read(120)
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            body = head.split(b"\r\n\r\n", 1)[1]
            jpeg = body + stream.read(length - len(body))
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (272, 640, 3)
        assert zone_pixels(image) > 300, camera

    # the events list: an event with its snapshot loaded from the snapshot directory
    loaded = ("[...document.querySelectorAll('#events li.event')].filter(li => {"
              " const img = li.querySelector('img.thumb');"
              " return img && img.complete && img.naturalWidth === 640; }).map(li => li.textContent)")
    texts = wait_for(lambda: browser.evaluate(loaded) or None, 120, "an event with its snapshot in the list")
    assert any("person" in t for t in texts), texts
    cameras = {e["camera"] for e in json.load(urllib.request.urlopen(base + "/events", timeout=5))}
    assert cameras <= {"left", "right"} and cameras
    # per-camera captions: the name and the camera's own FPS from the stats payload's "cameras"
    payload = json.load(urllib.request.urlopen(base + "/stats", timeout=5))
    assert set(payload["cameras"]) == {"left", "right"}
    captions = "[...document.querySelectorAll('#cameras figcaption')].map(c => c.textContent)"
    got = wait_for(lambda: [c for c in browser.evaluate(captions) if " fps" in c] or None, 30, "per-camera FPS")
    assert len(got) == 2 and sorted(c.split(" ")[0] for c in got) == ["left", "right"], got
