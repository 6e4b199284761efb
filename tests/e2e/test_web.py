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
