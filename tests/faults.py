"""Fault injection for the service tests, selectable only from tests.

``python -m tests.faults edge ARGS…`` runs the ``edge`` CLI with one more source kind registered
(through the :data:`edge.capture.KINDS` registry, the way any source kind is added), so the
product itself has no test-only switch:

    fault:stall-after=N[,marker=PATH]   the embedded clip, real time; after N frames read() blocks
                                        (a hung camera) and PATH is created to say so.

``python -m tests.faults edge --hang-invoke-after=N,marker=PATH ARGS…`` makes the interpreter's
invoke never return after N calls (an Edge TPU stuck in a USB transfer), creating PATH.

``python -m tests.faults mjpeg-server PORT`` serves the embedded clip as an endless MJPEG stream
over HTTP (multipart/x-mixed-replace, what IP cameras serve) at 25 fps, so tests can kill and
restart a real stream server.
"""

from __future__ import annotations

import http.server
import sys
import threading
import time
from pathlib import Path

import cv2

from edge.capture import KINDS, Kind
from edge.capture.base import Frame
from edge.config import SourceConfig
from edge.resources import sample_clip


class StallingSource:
    """The sample clip in real time; after ``stall_after`` frames, read() blocks until close()."""

    def __init__(self, stall_after: int, marker: Path | None = None):
        from edge.capture.opencv import VideoFileSource
        self.inner = VideoFileSource(sample_clip(), realtime=True, loop=True)
        self.name = f"fault:stall-after={stall_after}"
        self.live = True
        self.stall_after = stall_after
        self.marker = marker
        self.delivered = 0
        self._closed = threading.Event()

    def open(self) -> None:
        self.inner.open()

    def read(self) -> Frame | None:
        if self.delivered >= self.stall_after:
            if self.marker is not None and not self.marker.exists():
                self.marker.write_text(f"{time.time()}\n")
            self._closed.wait()   # hangs like a camera whose driver stopped delivering
            return None
        self.delivered += 1
        return self.inner.read()

    def close(self) -> None:
        self._closed.set()
        self.inner.close()


def _fault_source(uri: str, cfg: SourceConfig) -> StallingSource:
    params = dict(part.split("=", 1) for part in uri.split(":", 1)[1].split(","))
    marker = Path(params["marker"]) if "marker" in params else None
    return StallingSource(int(params["stall-after"]), marker)


def hang_invoke_after(n: int, marker: Path) -> None:
    """Patch TFLiteBackend.invoke: after ``n`` calls it blocks forever, like a wedged delegate."""
    from edge.runtime.backend import TFLiteBackend

    original = TFLiteBackend.invoke
    calls = [0]

    def invoke(self) -> None:
        calls[0] += 1
        if calls[0] > n:
            marker.write_text(f"{time.time()}\n")
            threading.Event().wait()
        original(self)

    TFLiteBackend.invoke = invoke


def register() -> None:
    KINDS.insert(0, Kind("fault", lambda u: u.startswith("fault:"), _fault_source, "fault:stall-after=30"))


class _MjpegHandler(http.server.BaseHTTPRequestHandler):
    jpegs: list[bytes] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        i = 0
        try:
            while True:
                jpeg = self.jpegs[i % len(self.jpegs)]
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                 + f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                i += 1
                time.sleep(0.04)
        except (BrokenPipeError, ConnectionResetError):
            return

    def log_message(self, *args) -> None:
        pass


def mjpeg_server(port: int, frames: int = 50) -> None:
    cap = cv2.VideoCapture(str(sample_clip()))
    for _ in range(frames):
        ok, image = cap.read()
        if not ok:
            break
        _MjpegHandler.jpegs.append(cv2.imencode(".jpg", image)[1].tobytes())
    cap.release()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _MjpegHandler)
    server.daemon_threads = True
    print(f"serving on {port}", flush=True)
    server.serve_forever()


def main(argv: list[str]) -> int:
    if argv[:1] == ["mjpeg-server"]:
        mjpeg_server(int(argv[1]))
        return 0
    if argv[:1] == ["edge"]:
        register()
        if len(argv) > 1 and argv[1].startswith("--hang-invoke-after="):
            params = dict(part.split("=", 1) for part in argv[1][2:].split(","))
            hang_invoke_after(int(params["hang-invoke-after"]), Path(params["marker"]))
            argv = argv[1:]
        from edge.cli import main as edge_main
        return edge_main(argv[1:])
    print("usage: python -m tests.faults (edge ARGS… | mjpeg-server PORT)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
