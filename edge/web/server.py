"""The live view: a small HTTP server run by the daemon (stdlib ``ThreadingHTTPServer``).

Routes:

- ``/``: the page (:mod:`edge.web.page`): the stream, current stats and a latency chart.
- ``/stream.mjpg``: the annotated frames as MJPEG (``multipart/x-mixed-replace``), at most ``fps``.
- ``/snapshot.jpg``: the latest annotated frame.
- ``/stats``: the stats payload as JSON (:func:`edge.telemetry.stats_payload.stats_payload`).

The pipeline's post-processing thread only hands over a reference to the latest result
(:meth:`WebServer.publish`); drawing and JPEG encoding happen on the viewers' threads, once per
frame however many viewers there are. Binds 127.0.0.1 unless configured otherwise.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import cv2
import numpy as np

from edge.errors import ConfigError
from edge.results import FrameResult
from edge.telemetry.stats import LogLimiter, PipelineStats
from edge.vision.decode.base import Detection
from edge.web.page import PAGE
from edge.web.security import BoundedServerMixin, Credentials, check_exposure, server_tls

log = logging.getLogger(__name__)

KEYPOINT_BGR = (0, 255, 255)   # yellow: keypoints (face landmarks, pose joints)
BOX_BGR = (255, 0, 255)      # magenta: rare in street scenes, easy to find in a screenshot
BOUNDARY = "edgeframe"
PAGE_BYTES = PAGE.encode("utf-8")


def to_bgr(image: np.ndarray, fmt: str) -> np.ndarray:
    if fmt == "RGB":
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if fmt == "YUV420":
        return cv2.cvtColor(image, cv2.COLOR_YUV2BGR_I420)
    return image.copy()


def annotate(result: FrameResult) -> np.ndarray:
    """The frame (BGR) with every detection's box and ``label score`` drawn on it."""
    image = to_bgr(result.frame.image, result.frame.format)
    thick = max(2, round(max(image.shape[:2]) / 320))
    line = 0
    for det in result.detections:
        if not isinstance(det, Detection):  # a classifier's top-k: labels down the left edge
            line += 1
            cv2.putText(image, f"{det.label} {det.score:.2f}", (8, 22 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                        BOX_BGR, 2, cv2.LINE_AA)
            continue
        x0, y0, x1, y1 = (int(round(v)) for v in det.box)
        cv2.rectangle(image, (x0, y0), (x1, y1), BOX_BGR, thick)
        for x, y in det.keypoints:
            cv2.circle(image, (int(round(x)), int(round(y))), thick + 1, KEYPOINT_BGR, -1, cv2.LINE_AA)
        text = f"{det.label} {det.score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        ty = max(th + base, y0)
        cv2.rectangle(image, (x0, ty - th - base), (x0 + tw, ty), BOX_BGR, -1)
        cv2.putText(image, text, (x0, ty - base), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return image


class _Server(BoundedServerMixin, ThreadingHTTPServer):
    daemon_threads = True


class WebServer:
    """The live view's server: at most ``max_connections`` connections (threads) at once, each closed
    after ``idle_timeout`` seconds without progress; credentials from ``auth_file`` and TLS from
    ``tls_cert``/``tls_key`` when given; beyond loopback only with credentials or ``insecure_listen``."""

    def __init__(self, stats: PipelineStats, payload: Callable[[], dict], *, port: int,
                 address: str = "127.0.0.1", fps: float = 10.0, quality: int = 80, auth_file: str = "",
                 insecure_listen: bool = False, tls_cert: str = "", tls_key: str = "",
                 max_connections: int = 16, idle_timeout: float = 30.0):
        tls = server_tls(tls_cert, tls_key, "the live view")
        check_exposure("the live view", address, auth_file, insecure_listen, tls is not None)
        self.credentials = Credentials.from_file(auth_file, "web.auth_file") if auth_file else None
        self.stats = stats
        self.payload = payload
        self.period = 1.0 / fps
        self.quality = quality
        self._cond = threading.Condition()
        self._latest: FrameResult | None = None
        self._seq = 0
        self._jpeg: tuple[int, bytes] = (-1, b"")
        self._encoding = threading.Lock()     # viewers woken by the same frame: one encodes, the others reuse
        self._stop = threading.Event()
        self.warn = LogLimiter(30.0)
        handler = type("Handler", (_Handler,), {"view": self, "timeout": idle_timeout})
        try:
            self._server = _Server((address, port), handler)
        except OSError as exc:
            raise ConfigError(f"cannot serve the live view on {address}:{port}: {exc.strerror}",
                              "choose a free port with --web PORT") from None
        self._server.max_connections = max_connections
        self._server.tls = tls
        self._server.handshake_timeout = idle_timeout
        self._server.on_refused = self._refused
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="web", daemon=True)   # close() returns at once
        self._thread.start()
        log.info("live view on %s://%s:%d/%s", "https" if tls else "http", address, self.port,
                 " (authentication required)" if self.credentials else "")

    def _refused(self) -> None:
        self.stats.error("web_refused")
        self.warn.warning(log, "web: connection refused: %d connections already open",
                          self._server.max_connections)

    def publish(self, result: FrameResult) -> None:
        with self._cond:
            self._latest = result
            self._seq += 1
            self._cond.notify_all()

    def wait_frame(self, after: int, timeout: float) -> int:
        """The sequence number of a frame newer than ``after`` (``after`` again on timeout or stop)."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq > after or self._stop.is_set(), timeout)
            return self._seq

    def jpeg(self) -> tuple[int, bytes]:
        """(sequence, JPEG) of the latest annotated frame, encoded once per frame."""
        with self._cond:
            seq, result = self._seq, self._latest
        if result is None:
            return -1, b""
        with self._encoding:
            if self._jpeg[0] < seq:      # (a newer one another viewer encoded meanwhile will do)
                ok, data = cv2.imencode(".jpg", annotate(result), [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                if not ok:
                    raise RuntimeError("OpenCV could not encode a JPEG")
                self._jpeg = (seq, data.tobytes())
            return self._jpeg

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)


class _Handler(BaseHTTPRequestHandler):
    view: WebServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args) -> None:
        log.debug("web %s " + fmt, self.client_address[0], *args)

    def _send(self, body: bytes, ctype: str, status: HTTPStatus = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        try:
            self._get()
        except (BrokenPipeError, ConnectionResetError, TimeoutError, ssl.SSLError) as exc:
            log.debug("web %s went away: %s", self.client_address[0], exc)
            self.close_connection = True
        except Exception as exc:     # a viewer's request fails alone: counted, logged, 500; never the pipeline
            self.view.stats.error("web")
            self.view.warn.warning(log, "web: %s failed: %s: %s", self.path.split("?", 1)[0],
                                   type(exc).__name__, exc)
            self.close_connection = True
            try:
                self._send(b"internal error\n", "text/plain", HTTPStatus.INTERNAL_SERVER_ERROR)
            except OSError as send_exc:     # headers may already be out, or the peer gone
                log.debug("web: cannot send the error: %s", send_exc)

    def _get(self) -> None:
        credentials = self.view.credentials
        if credentials is not None and not credentials.accepts(self.headers.get("Authorization")):
            self.view.stats.error("web_auth")
            self.view.warn.warning(log, "web: request from %s without valid credentials", self.client_address[0])
            self.send_response(HTTPStatus.UNAUTHORIZED)
            self.send_header("WWW-Authenticate", 'Basic realm="edge", charset="UTF-8"')
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "13")
            self.end_headers()
            self.wfile.write(b"unauthorized\n")
            return
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(PAGE_BYTES, "text/html; charset=utf-8")
        elif path == "/stats":
            self._send(json.dumps(self.view.payload()).encode("utf-8"), "application/json")
        elif path == "/snapshot.jpg":
            _, jpeg = self.view.jpeg()
            if jpeg:
                self._send(jpeg, "image/jpeg")
            else:
                self._send(b"no frame yet\n", "text/plain", HTTPStatus.SERVICE_UNAVAILABLE)
        elif path == "/stream.mjpg":
            self._stream()
        else:
            self._send(b"not found\n", "text/plain", HTTPStatus.NOT_FOUND)

    def _stream(self) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        seq = -1
        try:
            while not self.view.stopping:
                seq = self.view.wait_frame(seq, timeout=1.0)
                _, jpeg = self.view.jpeg()
                if not jpeg:
                    continue
                self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}"
                                 "\r\n\r\n".encode("ascii") + jpeg + b"\r\n")
                self.wfile.flush()
                time.sleep(self.view.period)     # at most ``fps`` frames per second per viewer
        except (BrokenPipeError, ConnectionResetError, TimeoutError, ssl.SSLError) as exc:
            log.debug("a viewer of the stream went away or stopped reading: %s", exc)
