"""The live view: a small HTTP server run by the daemon (stdlib ``ThreadingHTTPServer``).

Routes:

- ``/``: the page (:mod:`edge.web.page`): every camera's stream, current stats, a latency chart and
  the recent events with their snapshots.
- ``/cameras``: the cameras' names as a JSON list, in the order their first frame came.
- ``/stream?camera=NAME`` (also ``/stream.mjpg``): that camera's annotated frames as MJPEG
  (``multipart/x-mixed-replace``), at most ``fps``; without ``camera``, the first camera.
- ``/snapshot.jpg?camera=NAME``: that camera's latest annotated frame.
- ``/stats``: the stats payload as JSON (:func:`edge.telemetry.stats_payload.stats_payload`).
- ``/events``: the last ``max_events`` events (each one's latest Frigate ``after``), newest first.
- ``/snapshot/<event id>.jpg`` and ``/snapshot/<event id>-crop.jpg``: an event's snapshot, read from
  ``snapshot_dir`` by :func:`edge.events.snapshots.read_snapshot` (anything but an event id: 404).

The server is also an events listener (:class:`edge.events.types.EventListener`, with the optional
``tracks``): on each camera's frames it draws the confirmed tracks' ids (``label #id score``), the
zones (with the number of objects in each) and the counting lines (with their in/out counts).

The pipeline's post-processing threads only hand over references (:meth:`WebServer.publish`,
:meth:`WebServer.tracks`, …); drawing and JPEG encoding happen on the viewers' threads, once per
frame and camera however many viewers there are. Memory is bounded: one frame, a few track lists
and one JPEG per camera (at most ``MAX_CAMERAS``), ``max_events`` events. Binds 127.0.0.1 unless
configured otherwise.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Callable, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

import cv2
import numpy as np

from edge.errors import ConfigError
from edge.events.snapshots import read_snapshot, valid_event_id
from edge.results import FrameResult
from edge.telemetry.stats import LogLimiter, PipelineStats
from edge.vision.decode.base import Detection
from edge.web.page import PAGE
from edge.web.security import BoundedServerMixin, Credentials, check_exposure, server_tls

if TYPE_CHECKING:
    from edge.events.settings import EventsSettings
    from edge.events.types import TrackedObject

log = logging.getLogger(__name__)

KEYPOINT_BGR = (0, 255, 255)   # yellow: keypoints (face landmarks, pose joints)
BOX_BGR = (255, 0, 255)      # magenta: rare in street scenes, easy to find in a screenshot
ZONE_BGR = (0, 140, 255)     # orange: zones
LINE_BGR = (255, 255, 0)     # cyan: counting lines
BOUNDARY = "edgeframe"
PAGE_BYTES = PAGE.encode("utf-8")
MAX_CAMERAS = 64              # cameras beyond this many are not shown (their frames are ignored)
TRACK_FRAMES = 8              # per camera, the track lists of this many recent frames are kept
DEFAULT_CAMERA = "camera"     # the name of a result that carries none


def to_bgr(image: np.ndarray, fmt: str) -> np.ndarray:
    if fmt == "RGB":
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if fmt == "YUV420":
        return cv2.cvtColor(image, cv2.COLOR_YUV2BGR_I420)
    return image.copy()


def _label(image: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int]) -> None:
    """``text`` in black on a ``colour`` background whose bottom-left corner is (x, y), kept in the picture."""
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    h, w = image.shape[:2]
    x = max(0, min(x, w - tw))
    y = max(th + base, min(y, h))
    cv2.rectangle(image, (x, y - th - base), (x + tw, y), colour, -1)
    cv2.putText(image, text, (x, y - base), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)


def _applies(item: object, camera: str) -> bool:
    """A zone or line applies to every camera unless it names its cameras (``cameras`` or ``camera``)."""
    names = getattr(item, "cameras", None) or getattr(item, "camera", None)
    if not names:
        return True
    return camera == names if isinstance(names, str) else camera in names


def annotate(result: FrameResult, tracks: Sequence[TrackedObject] | None = None, zones: Sequence = (),
             lines: Sequence = (), zone_counts: dict[str, dict[str, int]] | None = None,
             line_counts: dict[str, dict[str, dict[str, int]]] | None = None) -> np.ndarray:
    """The frame (BGR) with the zones (name and objects now in each), the counting lines (name, in and
    out counts) and every detection's box and ``label score`` drawn on it; a detection a confirmed
    track matched reads ``label #id score``, a confirmed track coasting without one gets its
    predicted box thin with ``#id``."""
    image = to_bgr(result.frame.image, result.frame.format)
    thick = max(2, round(max(image.shape[:2]) / 320))
    zone_counts = zone_counts or {}
    line_counts = line_counts or {}
    for zone in zones:
        pts = np.array([[round(x), round(y)] for x, y in zone.points], np.int32)
        cv2.polylines(image, [pts], True, ZONE_BGR, thick, cv2.LINE_AA)
        n = sum(zone_counts.get(zone.name, {}).values())
        top = min(range(len(pts)), key=lambda i: (pts[i][1], pts[i][0]))
        _label(image, f"{zone.name} {n}", int(pts[top][0]) + 2, int(pts[top][1]) + 18, ZONE_BGR)
    for line in lines:
        a = (round(line.a[0]), round(line.a[1]))
        b = (round(line.b[0]), round(line.b[1]))
        cv2.arrowedLine(image, a, b, LINE_BGR, thick, cv2.LINE_AA, tipLength=min(0.5, 20 / max(1.0, np.hypot(
            b[0] - a[0], b[1] - a[1]))))
        counts = line_counts.get(line.name, {})
        n_in = sum(c.get("in", 0) for c in counts.values())
        n_out = sum(c.get("out", 0) for c in counts.values())
        _label(image, f"{line.name} in {n_in} out {n_out}", (a[0] + b[0]) // 2 + 4, (a[1] + b[1]) // 2, LINE_BGR)
    ids: dict[int, int] = {}            # detection index -> track id
    for track in tracks or ():
        if not track.confirmed:
            continue
        if track.detection is not None and 0 <= track.detection < len(result.detections):
            ids[track.detection] = track.id
        else:                           # coasting: the tracker's prediction
            x0, y0, x1, y1 = (int(round(v)) for v in track.box)
            cv2.rectangle(image, (x0, y0), (x1, y1), BOX_BGR, 1)
            _label(image, f"#{track.id}", x0, y0, BOX_BGR)
    line_no = 0
    for i, det in enumerate(result.detections):
        if not isinstance(det, Detection):  # a classifier's top-k: labels down the left edge
            line_no += 1
            cv2.putText(image, f"{det.label} {det.score:.2f}", (8, 22 * line_no), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                        BOX_BGR, 2, cv2.LINE_AA)
            continue
        x0, y0, x1, y1 = (int(round(v)) for v in det.box)
        cv2.rectangle(image, (x0, y0), (x1, y1), BOX_BGR, thick)
        for x, y in det.keypoints:
            cv2.circle(image, (int(round(x)), int(round(y))), thick + 1, KEYPOINT_BGR, -1, cv2.LINE_AA)
        track_id = ids.get(i)
        text = f"{det.label} {det.score:.2f}" if track_id is None else f"{det.label} #{track_id} {det.score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        ty = max(th + base, y0)
        cv2.rectangle(image, (x0, ty - th - base), (x0 + tw, ty), BOX_BGR, -1)
        cv2.putText(image, text, (x0, ty - base), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return image


@dataclass
class _Camera:
    """One camera's latest frame, its recent tracks, counts, and the JPEG last encoded."""

    name: str
    latest: FrameResult | None = None
    seq: int = 0
    tracks: deque = field(default_factory=lambda: deque(maxlen=TRACK_FRAMES))   # (frame index, tracks)
    zone_counts: dict = field(default_factory=dict)
    line_counts: dict = field(default_factory=dict)
    jpeg: tuple = ((-1, False), b"")    # ((seq, drawn with tracks), JPEG)
    encoding: threading.Lock = field(default_factory=threading.Lock)

    def tracks_of(self, index: int):
        for frame_index, active in reversed(self.tracks):
            if frame_index == index:
                return active
        return None


class _Server(BoundedServerMixin, ThreadingHTTPServer):
    daemon_threads = True


class WebServer:
    """The live view's server: at most ``max_connections`` connections (threads) at once, each closed
    after ``idle_timeout`` seconds without progress; credentials from ``auth_file`` and TLS from
    ``tls_cert``/``tls_key`` when given; beyond loopback only with credentials or ``insecure_listen``.

    A pipeline sink (``publish``) and an events listener (``event``, ``counts``, ``crossings``,
    ``tracks``): ``events`` gives the zones and lines drawn, ``snapshot_dir`` the directory the
    events' snapshots are served from, ``max_events`` how many recent events ``/events`` lists."""

    wants_snapshots = False     # snapshots are read from snapshot_dir: no JPEG is encoded for this listener

    def __init__(self, stats: PipelineStats, payload: Callable[[], dict], *, port: int,
                 address: str = "127.0.0.1", fps: float = 10.0, quality: int = 80, auth_file: str = "",
                 insecure_listen: bool = False, tls_cert: str = "", tls_key: str = "",
                 max_connections: int = 16, idle_timeout: float = 30.0, events: EventsSettings | None = None,
                 snapshot_dir: str = "", max_events: int = 50):
        tls = server_tls(tls_cert, tls_key, "the live view")
        check_exposure("the live view", address, auth_file, insecure_listen, tls is not None)
        self.credentials = Credentials.from_file(auth_file, "web.auth_file") if auth_file else None
        self.stats = stats
        self.payload = payload
        self.period = 1.0 / fps
        self.quality = quality
        self.zones = tuple(events.zones) if events is not None else ()
        self.lines = tuple(events.lines) if events is not None else ()
        self.snapshot_dir = snapshot_dir
        self.max_events = max(1, max_events)
        self._cond = threading.Condition()
        self._cameras: dict[str, _Camera] = {}
        self._events: OrderedDict[str, dict] = OrderedDict()      # event id -> latest "after", oldest first
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

    def _camera(self, name: str) -> _Camera | None:
        """The camera ``name``, added if there is room (call with ``_cond`` held)."""
        cam = self._cameras.get(name)
        if cam is None:
            if len(self._cameras) >= MAX_CAMERAS:
                self.warn.warning(log, "web: more than %d cameras; %r is not shown", MAX_CAMERAS, name)
                return None
            cam = self._cameras[name] = _Camera(name)
        return cam

    # --- the pipeline sink -------------------------------------------------------------------------

    def publish(self, result: FrameResult) -> None:
        with self._cond:
            cam = self._camera(result.camera or DEFAULT_CAMERA)
            if cam is None:
                return
            cam.latest = result
            cam.seq += 1
            self._cond.notify_all()

    # --- the events listener -----------------------------------------------------------------------

    def tracks(self, camera: str, frame_index: int, active: Sequence[TrackedObject]) -> None:
        with self._cond:
            cam = self._camera(camera)
            if cam is not None:
                cam.tracks.append((frame_index, tuple(active)))

    def counts(self, camera: str, zone: str, counts: dict[str, int]) -> None:
        with self._cond:
            cam = self._camera(camera)
            if cam is not None:
                cam.zone_counts[zone] = dict(counts)

    def crossings(self, camera: str, line: str, counts: dict[str, dict[str, int]]) -> None:
        with self._cond:
            cam = self._camera(camera)
            if cam is not None:
                cam.line_counts[line] = {label: dict(c) for label, c in counts.items()}

    def event(self, message: dict, snapshot: bytes | None) -> None:
        after = message.get("after")
        if not isinstance(after, dict) or not valid_event_id(after.get("id")):
            return
        entry = dict(after, type=message.get("type"))
        with self._cond:
            self._events.pop(after["id"], None)
            self._events[after["id"]] = entry
            while len(self._events) > self.max_events:
                self._events.popitem(last=False)

    def recent_events(self) -> list[dict]:
        """The last events' latest state, newest (most recently changed) first."""
        with self._cond:
            return list(reversed(self._events.values()))

    def snapshot(self, event_id: str, crop: bool = False) -> bytes | None:
        """The stored snapshot of ``event_id``; None without a snapshot directory, for a name that is not
        an event id, or when there is none."""
        if not self.snapshot_dir or not valid_event_id(event_id):
            return None
        return read_snapshot(self.snapshot_dir, event_id, crop)

    # --- viewers -----------------------------------------------------------------------------------

    def cameras(self) -> list[str]:
        """The cameras that sent a frame, in the order their first one came."""
        with self._cond:
            return [name for name, cam in self._cameras.items() if cam.latest is not None]

    def _first(self) -> _Camera | None:
        return next((cam for cam in self._cameras.values() if cam.latest is not None), None)

    def resolve(self, name: str | None) -> str | None:
        """The camera ``name`` names (None: the first one, "" while there is none yet); None when unknown."""
        with self._cond:
            if name is None:
                first = self._first()
                return first.name if first is not None else ""
            return name if name in self._cameras else None

    def wait_frame(self, after: int, timeout: float, camera: str = "") -> int:
        """The sequence number of a frame of ``camera`` newer than ``after`` (``after`` again on timeout
        or stop); "" is the first camera."""
        def seq() -> int:
            cam = self._cameras.get(camera) if camera else self._first()
            return cam.seq if cam is not None else -1

        with self._cond:
            self._cond.wait_for(lambda: seq() > after or self._stop.is_set(), timeout)
            return seq()

    def jpeg(self, camera: str = "") -> tuple[int, bytes]:
        """(sequence, JPEG) of the latest annotated frame of ``camera`` ("" the first), encoded once per
        frame (again if its tracks came after it was first encoded)."""
        with self._cond:
            cam = self._cameras.get(camera) if camera else self._first()
            if cam is None or cam.latest is None:
                return -1, b""
            seq, result = cam.seq, cam.latest
            tracks = cam.tracks_of(result.frame.index)
            zone_counts = {k: dict(v) for k, v in cam.zone_counts.items()}
            line_counts = {k: {label: dict(c) for label, c in v.items()} for k, v in cam.line_counts.items()}
        key = (seq, tracks is not None)
        with cam.encoding:
            if cam.jpeg[0] < key:      # (a newer one another viewer encoded meanwhile will do)
                zones = [z for z in self.zones if _applies(z, cam.name)]
                lines = [line for line in self.lines if _applies(line, cam.name)]
                image = annotate(result, tracks, zones, lines, zone_counts, line_counts)
                ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                if not ok:
                    raise RuntimeError("OpenCV could not encode a JPEG")
                cam.jpeg = (key, data.tobytes())
            return cam.jpeg[0][0], cam.jpeg[1]

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

    def _not_found(self, what: str = "not found") -> None:
        self._send(what.encode("utf-8") + b"\n", "text/plain", HTTPStatus.NOT_FOUND)

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
        parts = urlsplit(self.path)
        path = parts.path
        if path in ("/", "/index.html"):
            self._send(PAGE_BYTES, "text/html; charset=utf-8")
        elif path == "/stats":
            self._send(json.dumps(self.view.payload()).encode("utf-8"), "application/json")
        elif path == "/cameras":
            self._send(json.dumps(self.view.cameras()).encode("utf-8"), "application/json")
        elif path == "/events":
            self._send(json.dumps(self.view.recent_events()).encode("utf-8"), "application/json")
        elif path.startswith("/snapshot/"):
            self._event_snapshot(path[len("/snapshot/"):])
        elif path in ("/snapshot.jpg", "/stream", "/stream.mjpg"):
            names = parse_qs(parts.query).get("camera")
            camera = self.view.resolve(names[0] if names else None)
            if camera is None:
                self._not_found("no such camera")
            elif path == "/snapshot.jpg":
                _, jpeg = self.view.jpeg(camera)
                if jpeg:
                    self._send(jpeg, "image/jpeg")
                else:
                    self._send(b"no frame yet\n", "text/plain", HTTPStatus.SERVICE_UNAVAILABLE)
            else:
                self._stream(camera)
        else:
            self._not_found()

    def _event_snapshot(self, name: str) -> None:
        name = unquote(name)
        crop = name.endswith("-crop.jpg")
        event_id = name[:-len("-crop.jpg")] if crop else name[:-len(".jpg")] if name.endswith(".jpg") else ""
        jpeg = self.view.snapshot(event_id, crop) if valid_event_id(event_id) else None
        if jpeg is None:
            self._not_found("no such snapshot")
        else:
            self._send(jpeg, "image/jpeg")

    def _stream(self, camera: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        seq = -1
        try:
            while not self.view.stopping:
                if not camera:                  # none had a frame when the viewer came: the first one since
                    camera = self.view.resolve(None) or ""
                seq = self.view.wait_frame(seq, timeout=1.0, camera=camera)
                _, jpeg = self.view.jpeg(camera)
                if not jpeg:
                    continue
                self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}"
                                 "\r\n\r\n".encode("ascii") + jpeg + b"\r\n")
                self.wfile.flush()
                time.sleep(self.view.period)     # at most ``fps`` frames per second per viewer
        except (BrokenPipeError, ConnectionResetError, TimeoutError, ssl.SSLError) as exc:
            log.debug("a viewer of the stream went away or stopped reading: %s", exc)
