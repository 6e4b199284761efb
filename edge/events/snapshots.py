"""The best snapshot of each event: JPEG files in a bounded directory.

Per event ``<id>.jpg`` (the whole frame with the box drawn) and, with ``crop``, ``<id>-crop.jpg``
(the box with a margin). A file is written to a temporary name in the same directory and moved
over the old one with ``os.replace``: a reader sees the old snapshot or the new one, never half a
file. Retention removes whole events, oldest first, to keep at most ``max_count`` events,
``max_bytes`` bytes, and nothing older than ``max_age`` seconds.

A write that fails (a full disk, a read-only or unwritable directory) is counted, logged at most
every 30 s, and the snapshot is dropped: detection goes on and the next snapshot tries again.

For the web view: :func:`list_snapshots` and :func:`read_snapshot` (or the store's ``list`` and
``read``) need only the directory and take event ids only; :func:`path_for` refuses anything that
is not an event id (no path can be smuggled in).
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from edge.errors import ConfigError
from edge.telemetry.stats import LogLimiter

log = logging.getLogger(__name__)

# "<start time, 6 decimals>-<6 lowercase letters/digits>", as edge.events.lifecycle.new_event_id makes
EVENT_ID = re.compile(r"[0-9]{1,12}\.[0-9]{6}-[a-z0-9]{6}")
_FILE = re.compile(r"(" + EVENT_ID.pattern + r")(-crop)?\.jpg")
TEMP_PREFIX = ".tmp-"
READ_LIMIT = 64 * 1024 * 1024
BOX_COLOUR = (0, 255, 0)        # BGR
CROP_MARGIN = 0.25              # of the box's size, each side


def valid_event_id(event_id: object) -> bool:
    return isinstance(event_id, str) and EVENT_ID.fullmatch(event_id) is not None


def path_for(directory: str | Path, event_id: str, crop: bool = False) -> Path:
    """The snapshot file of ``event_id`` in ``directory``; ValueError for anything but an event id."""
    if not valid_event_id(event_id):
        raise ValueError(f"{str(event_id)[:80]!r} is not an event id (like 1607123955.475377-ab12cd)")
    return Path(directory) / f"{event_id}{'-crop' if crop else ''}.jpg"


def to_bgr(image: np.ndarray, format: str) -> np.ndarray:
    """A frame's picture as BGR (what cv2.imencode takes)."""
    if format == "BGR":
        return image
    if format == "RGB":
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if format == "YUV420":
        return cv2.cvtColor(image, cv2.COLOR_YUV2BGR_I420)
    raise ValueError(f"frame format {format!r} is not one of BGR, RGB, YUV420")


def draw_box(image: np.ndarray, box: Sequence[float], label: str = "", score: float | None = None) -> np.ndarray:
    """A copy of the BGR ``image`` with ``box`` (and its label and score) drawn."""
    out = image.copy()
    h, w = out.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, x1 = max(0, min(w - 1, x0)), max(0, min(w - 1, x1))
    y0, y1 = max(0, min(h - 1, y0)), max(0, min(h - 1, y1))
    thickness = max(1, round(min(w, h) / 200))
    cv2.rectangle(out, (x0, y0), (x1, y1), BOX_COLOUR, thickness)
    if label:
        text = f"{label} {score:.2f}" if score is not None else label
        scale = max(0.4, min(w, h) / 600)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y0 - 4 if y0 - th - base - 4 >= 0 else min(h - 1, y0 + th + 4)
        cv2.rectangle(out, (x0, ty - th - 2), (x0 + tw + 2, ty + base - 2), BOX_COLOUR, cv2.FILLED)
        cv2.putText(out, text, (x0 + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def crop_box(image: np.ndarray, box: Sequence[float], margin: float = CROP_MARGIN) -> np.ndarray:
    """The part of ``image`` around ``box``, ``margin`` of its size added each side, clipped."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    left, top = max(0, int(x0 - mx)), max(0, int(y0 - my))
    right, bottom = min(w, int(np.ceil(x1 + mx))), min(h, int(np.ceil(y1 + my)))
    if right <= left or bottom <= top:       # a box outside the frame: the whole frame
        return image
    return image[top:bottom, left:right]


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"cv2.imencode could not encode a {image.shape} {image.dtype} picture as JPEG")
    return data.tobytes()


@dataclass(frozen=True)
class SnapshotInfo:
    event_id: str
    mtime: float        # seconds since the epoch
    bytes: int          # both files
    has_crop: bool


class SnapshotStore:
    """A bounded directory of event snapshots. Not thread-safe: one writer (the post-processing
    thread); :meth:`read` and :meth:`list` may run on other threads (they only read files)."""

    WARN_PERIOD = 30.0
    AGE_CHECK_PERIOD = 60.0

    def __init__(self, directory: str | Path, *, max_count: int = 1000, max_bytes: int = 200_000_000,
                 max_age: float = 14 * 86400.0, quality: int = 85, crop: bool = True,
                 errors: Callable[[str], None] | None = None):
        self.directory = Path(directory)
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.quality = quality
        self.crop = crop
        self.errors = errors            # e.g. PipelineStats.error: called with "snapshot_write" per failure
        self.failed = 0                 # snapshots that could not be written
        self.removed = 0                # events' snapshots removed by retention
        self._warn = LogLimiter(self.WARN_PERIOD)
        self._next_age_check = 0.0
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if not os.access(self.directory, os.W_OK | os.X_OK):
                raise PermissionError(13, "Permission denied")
            self._index: dict[str, list] = self._scan()      # id -> [mtime, bytes, has_crop]
        except OSError as exc:
            raise ConfigError(f"cannot keep snapshots in {str(self.directory)!r}: {exc.strerror or exc}",
                              "choose a writable directory with events.snapshot_dir") from None
        self._total = sum(entry[1] for entry in self._index.values())
        self._enforce(time.time())

    def _scan(self) -> dict[str, list]:
        index: dict[str, list] = {}
        for entry in os.scandir(self.directory):
            if entry.name.startswith(TEMP_PREFIX):       # left by a crash mid-write
                self._unlink(entry.path)
                continue
            match = _FILE.fullmatch(entry.name)
            if match is None or not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
            item = index.setdefault(match.group(1), [0.0, 0, False])
            item[0] = max(item[0], st.st_mtime)
            item[1] += st.st_size
            item[2] = item[2] or match.group(2) is not None
        return index

    # --- writing -----------------------------------------------------------------------------

    def save(self, event_id: str, image: np.ndarray, box: Sequence[float], label: str = "",
             score: float | None = None) -> bytes | None:
        """Write the snapshot of ``event_id`` (BGR ``image``, its ``box``), replacing any older one.

        Returns the JPEG with the box drawn (for the listeners) even when it could not be stored;
        None only when it could not be encoded. Use :meth:`has` to know whether it is on disk.
        """
        path = path_for(self.directory, event_id)
        try:
            full = encode_jpeg(draw_box(image, box, label, score), self.quality)
            crop = encode_jpeg(crop_box(image, box), self.quality) if self.crop else None
        except (ValueError, cv2.error) as exc:
            self._fail(f"cannot encode the snapshot of {event_id}: {exc}")
            return None
        previous = self._index.pop(event_id, None)
        if previous is not None:
            self._total -= previous[1]
        written = self._write(path, full)
        if written and crop is not None:
            if not self._write(path_for(self.directory, event_id, crop=True), crop):
                self._unlink(path)          # an event has both files or neither
                written = False
        if written:
            entry = [time.time(), len(full) + (len(crop) if crop is not None else 0), crop is not None]
            self._index[event_id] = entry
            self._total += entry[1]
            self._enforce(entry[0], keep=event_id)
        elif previous is not None and path.exists():   # the old snapshot is still there
            self._index[event_id] = previous
            self._total += previous[1]
        return full

    def _write(self, path: Path, data: bytes) -> bool:
        temp = path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{path.name}")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(temp, path)
            return True
        except OSError as exc:
            self._unlink(temp)
            self._fail(f"cannot write snapshot {path}: {exc.strerror or exc}; snapshot dropped")
            return False

    def _fail(self, message: str) -> None:
        self.failed += 1
        if self.errors is not None:
            self.errors("snapshot_write")
        self._warn.warning(log, "%s (%d so far); detection goes on", message, self.failed)

    def _unlink(self, path: str | Path) -> bool:
        try:
            os.unlink(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            self._warn.warning(log, "cannot remove %s: %s", path, exc.strerror or exc)
            return False

    # --- retention ---------------------------------------------------------------------------

    def _enforce(self, now: float, keep: str | None = None) -> None:
        """Remove the oldest events' snapshots beyond the limits (never ``keep``, just written)."""
        check_age = self.max_age > 0 and now >= self._next_age_check
        over = ((self.max_count and len(self._index) > self.max_count)
                or (self.max_bytes and self._total > self.max_bytes))
        if not (over or check_age):
            return
        if check_age:
            self._next_age_check = now + self.AGE_CHECK_PERIOD
        oldest_first = sorted(self._index.items(), key=lambda kv: kv[1][0])
        for event_id, (mtime, size, _) in oldest_first:
            if event_id == keep:
                continue
            too_old = self.max_age > 0 and now - mtime > self.max_age
            too_many = self.max_count and len(self._index) > self.max_count
            too_big = self.max_bytes and self._total > self.max_bytes
            if not (too_old or too_many or too_big):
                if not check_age:
                    break                           # sorted by age: nothing further is over a limit
                continue
            self.remove(event_id)

    def remove(self, event_id: str) -> None:
        """Remove the snapshots of ``event_id`` (retention; or an event the user deleted)."""
        entry = self._index.pop(event_id, None)
        ok = self._unlink(path_for(self.directory, event_id))
        ok = self._unlink(path_for(self.directory, event_id, crop=True)) and ok
        if entry is not None:
            self._total -= entry[1]
            self.removed += 1
        if not ok and entry is not None:     # still on disk: keep counting it
            self._index[event_id] = entry
            self._total += entry[1]

    # --- reading (the web view) --------------------------------------------------------------

    def has(self, event_id: str) -> bool:
        return event_id in self._index

    @property
    def count(self) -> int:
        return len(self._index)

    @property
    def total_bytes(self) -> int:
        return self._total

    def list(self) -> list[SnapshotInfo]:
        """The events with a snapshot on disk, newest first (read from the directory)."""
        return list_snapshots(self.directory)

    def read(self, event_id: str, crop: bool = False) -> bytes | None:
        """The JPEG of ``event_id`` (see :func:`read_snapshot`)."""
        return read_snapshot(self.directory, event_id, crop)


# --- reading without a store (the web view, another process) ---------------------------------------

def list_snapshots(directory: str | Path) -> list[SnapshotInfo]:
    """The events with a snapshot in ``directory``, newest first; an unreadable directory: none."""
    index: dict[str, list] = {}
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    for entry in entries:
        match = _FILE.fullmatch(entry.name)
        if match is None:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        item = index.setdefault(match.group(1), [0.0, 0, False])
        item[0] = max(item[0], st.st_mtime)
        item[1] += st.st_size
        item[2] = item[2] or match.group(2) is not None
    return sorted((SnapshotInfo(event_id, mtime, size, crop) for event_id, (mtime, size, crop) in index.items()),
                  key=lambda s: s.mtime, reverse=True)


def read_snapshot(directory: str | Path, event_id: str, crop: bool = False) -> bytes | None:
    """The JPEG of ``event_id`` in ``directory`` (the crop with ``crop``); None when there is none
    (or it is larger than READ_LIMIT); ValueError for anything that is not an event id. Symbolic
    links are not followed."""
    path = path_for(directory, event_id, crop)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            data = f.read(READ_LIMIT + 1)
    except OSError:
        return None
    return data if len(data) <= READ_LIMIT else None
