"""The metadata Ultralytics zips behind its TFLite exports, read without Ultralytics.

Every Ultralytics TFLite export carries one text file in a zip archive appended to the
flatbuffer (``zipfile`` finds it from the end of the file). Its name and format changed over the
versions (read from ``ultralytics/engine/exporter.py`` and ``nn/autobackend.py``):

==================  =====================================================  ======================
name                written by                                             format
==================  =====================================================  ======================
``temp_meta.txt``   ultralytics 8.0.x – 8.3.116 via tflite-support's        ``str(dict)``: a Python
                    MetadataPopulator, and 8.3.117+ on Python < 3.12         literal (int dict keys)
``metadata.json``   ultralytics 8.3.117+ (PR #16413; the only one on        JSON, ``indent=2``
                    Python ≥ 3.12 and in today's exporter)                  (dict keys are strings)
``meta.txt``        the YOLOv5 repository (``add_tflite_metadata``,         ``str(dict)`` with only
                    PR #9903): a [1, N, 5+nc] head                          ``stride`` and ``names``
``metadata.txt``    no Ultralytics version found writing it; read because    Python literal
                    edge read it before
==================  =====================================================  ======================

Keys of the Ultralytics dict: ``description``, ``author``, ``date``, ``version``, ``license``,
``docs``, ``stride``, ``task`` (detect | classify | pose | segment | obb), ``batch``, ``imgsz``
([height, width]), ``names`` ({id: name}), ``kpt_shape`` ([K, 2|3], pose only) and, in 8.3.x,
``args`` (the export arguments of the format: ``batch``, ``half``, ``int8``, ``nms``, ...) and
``channels``. Unknown keys are kept in ``raw``.

Units (Ultralytics ``nn/modules/head.py``): a head exported with ``format=tflite`` or ``edgetpu``
divides boxes by the input size since PR #3837 (July 2023, between 8.0.136 and 8.0.145; the
``tflite`` file of a ``format=saved_model`` export keeps pixels), and pose keypoints since 8.3.26
(PR #17281); before, they are input pixels.
"""

from __future__ import annotations

import ast
import functools
import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edge.errors import ModelError
from edge.runtime.model import ModelInfo

log = logging.getLogger(__name__)

# Associated-file name → parser, in the order they are looked for (newest format first).
FILES = {"metadata.json": "json", "temp_meta.txt": "literal", "meta.txt": "literal", "metadata.txt": "literal"}
YOLOV5_FILE = "meta.txt"
MAX_BYTES = 1 << 20
TASKS = frozenset({"detect", "classify", "pose", "segment", "obb"})
UNSUPPORTED = {"segment": "masks", "obb": "rotated boxes"}
BOXES_NORMALIZED_SINCE = (8, 0, 136)     # PR #3837, merged 2023-07-19 (8.0.145 is of 2023-07-30)
KEYPOINTS_NORMALIZED_SINCE = (8, 3, 26)  # PR #17281


@dataclass(frozen=True)
class UltralyticsMeta:
    source: str                        # associated-file name it was read from, e.g. "temp_meta.txt"
    task: str                          # detect | classify | pose | segment | obb
    names: dict[int, str]              # class id → name
    imgsz: tuple[int, int]             # (height, width) in pixels, as exported
    stride: int                        # the largest stride of the head, pixels
    kpt_shape: tuple[int, int] | None  # pose: (keypoints, 2 or 3)
    raw: dict                          # the whole dict as read

    @property
    def version(self) -> tuple[int, ...] | None:
        """The exporting ultralytics version, e.g. (8, 3, 40); None when absent or not numeric."""
        text = str(self.raw.get("version", ""))
        parts = text.split(".")[:3]
        if len(parts) < 2 or not all(p.isdigit() for p in parts):
            return None
        return tuple(int(p) for p in parts)

    @property
    def task_recorded(self) -> bool:
        """False for files without a ``task`` key (YOLOv5's meta.txt, early 8.0): ``task`` is then a guess."""
        return "task" in self.raw

    @property
    def export_args(self) -> dict:
        args = self.raw.get("args")
        return args if isinstance(args, dict) else {}


def read_metadata(model: ModelInfo) -> UltralyticsMeta | None:
    """The Ultralytics (or YOLOv5) metadata zipped behind ``model``; None when it has none.

    Malformed or oversized content is logged as a warning naming the file and gives None.
    """
    name = next((n for n in FILES if n in model.associated_files), None)
    if name is None:
        return None
    path = Path(model.path)
    try:
        stamp = path.stat()
    except OSError as exc:
        log.warning("%s: cannot read its %s (%s); ignoring it", path.name, name, exc.strerror)
        return None
    version = (stamp.st_ino, stamp.st_size, stamp.st_mtime_ns, stamp.st_ctime_ns)
    return _load(str(path), version, name, model.inputs[0].shape if model.inputs else ())


@functools.lru_cache(maxsize=16)
def _load(path: str, version: tuple[int, ...], name: str, input_shape: tuple[int, ...]) -> UltralyticsMeta | None:
    """Cached per file version (inode, size, times), so each warning is logged once per model."""
    text = _read_member(Path(path), name)
    if text is None:
        return None
    data = _parse(Path(path).name, name, text)
    if data is None:
        return None
    absent = [key for key in ("task", "imgsz", "stride") if key not in data]
    if absent:
        log.info("%s: %s has no %s; taking task detect, imgsz from the model input, stride 32",
                 Path(path).name, name, ", ".join(absent))
    try:
        return _meta(name, data, input_shape)
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("%s: %s is not Ultralytics metadata (%s); ignoring it", Path(path).name, name, exc)
        return None


def _read_member(path: Path, name: str) -> str | None:
    """The text of zip member ``name``, refused (None, logged) above MAX_BYTES or when unreadable."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(name)
            if info.file_size > MAX_BYTES:
                log.warning("%s: %s declares %d bytes, more than the %d read; ignoring it",
                            path.name, name, info.file_size, MAX_BYTES)
                return None
            with archive.open(info) as member:
                raw = member.read(MAX_BYTES + 1)   # the header may lie about the size
    except (OSError, KeyError, zipfile.BadZipFile, RuntimeError, EOFError) as exc:
        log.warning("%s: cannot read %s (%s); ignoring it", path.name, name, exc)
        return None
    if len(raw) > MAX_BYTES:
        log.warning("%s: %s is over %d bytes; ignoring it", path.name, name, MAX_BYTES)
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        log.warning("%s: %s is not UTF-8 text (%s); ignoring it", path.name, name, exc)
        return None


def _parse(model_name: str, name: str, text: str) -> dict | None:
    """JSON or a Python literal (never evaluated as code) → dict; None, logged, otherwise."""
    try:
        data = json.loads(text) if FILES[name] == "json" else ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        log.warning("%s: %s is malformed (%s); ignoring it", model_name, name, exc)
        return None
    if not isinstance(data, dict):
        log.warning("%s: %s holds a %s, not a dict; ignoring it", model_name, name, type(data).__name__)
        return None
    return data


def _meta(name: str, data: dict, input_shape: tuple[int, ...]) -> UltralyticsMeta:
    """The typed view of ``data``; KeyError/TypeError/ValueError name the bad key."""
    task = str(data.get("task", "detect"))
    if task not in TASKS:
        raise ValueError(f"task {task!r} is not one of {', '.join(sorted(TASKS))}")
    return UltralyticsMeta(source=name, task=task, names=_names(data["names"]),
                           imgsz=_imgsz(data.get("imgsz"), input_shape), stride=int(data.get("stride", 32)),
                           kpt_shape=_kpt_shape(data.get("kpt_shape")), raw=data)


def _names(value: object) -> dict[int, str]:
    """{id: name} from a dict (int or, in JSON, string keys) or a list."""
    if isinstance(value, (list, tuple)):
        value = dict(enumerate(value))
    if not isinstance(value, dict) or not value:
        raise ValueError(f"names is {type(value).__name__}, expected a non-empty dict or list")
    names = {int(k): str(v) for k, v in value.items()}
    if min(names) < 0:
        raise ValueError(f"names has a negative class id {min(names)}")
    return names


def _imgsz(value: object, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(height, width): Ultralytics writes [h, w] (an int for square in some versions); the
    YOLOv5 file has none, so the model's NHWC input says it."""
    if value is None:
        if len(input_shape) != 4:
            raise ValueError("no imgsz and no NHWC input to take it from")
        return int(input_shape[1]), int(input_shape[2])
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    raise ValueError(f"imgsz = {value!r}, expected [height, width]")


def _kpt_shape(value: object) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and len(value) == 2 and int(value[1]) in (2, 3) and int(value[0]) > 0:
        return int(value[0]), int(value[1])
    raise ValueError(f"kpt_shape = {value!r}, expected [keypoints, 2 or 3]")


def refuse_unsupported(meta: UltralyticsMeta, model_name: str) -> None:
    """A one-line ModelError for exports edge cannot decode (segment, obb, in-model NMS)."""
    if meta.task in UNSUPPORTED:
        raise ModelError(f"{model_name}: Ultralytics {meta.task} models are not supported (their "
                         f"{UNSUPPORTED[meta.task]} have no decoder in edge)",
                         "export a detect or pose model (yolo export model=yolo11n.pt format=tflite)")
    if meta.export_args.get("nms") is True or meta.raw.get("end2end") is True:
        raise ModelError(f"{model_name} was exported with the NMS inside the model (nms=True or end2end); edge "
                         "decodes the raw [1, 4+nc, N] head", "export again with nms=False")


def box_units(meta: UltralyticsMeta) -> tuple[str, str]:
    """("normalized" | "pixels", why) for the boxes of an Ultralytics TFLite export."""
    if "keras" in meta.export_args:
        return "pixels", "exported with format=saved_model (its head keeps input pixels)"
    if meta.source == YOLOV5_FILE:
        return "normalized", "YOLOv5 TFLite exports divide boxes by the input size"
    version = meta.version
    if version is not None and version < BOXES_NORMALIZED_SINCE:
        return "pixels", f"ultralytics {meta.raw.get('version')} predates normalised TFLite boxes (PR #3837)"
    return "normalized", f"ultralytics {meta.raw.get('version', '(version not recorded)')} TFLite export"


def keypoint_units(meta: UltralyticsMeta) -> tuple[str, str]:
    """("normalized" | "pixels", why) for the keypoints of an Ultralytics pose export."""
    if "keras" in meta.export_args:
        return "pixels", "exported with format=saved_model (its head keeps input pixels)"
    version = meta.version
    if version is None:
        return "normalized", "no ultralytics version recorded; taking today's normalised keypoints"
    if version < KEYPOINTS_NORMALIZED_SINCE:
        return "pixels", f"ultralytics {meta.raw.get('version')} predates normalised TFLite keypoints (8.3.26)"
    return "normalized", f"ultralytics {meta.raw.get('version')} TFLite export"
