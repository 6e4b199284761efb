"""The model manifest: what the .tflite file cannot say about itself.

A manifest (``manifest.json`` next to the models) names the model files (CPU, Edge TPU and float
twins), the labels, how frames are normalised before quantization, and the output layout with the
decoder's parameters. ``edge-host`` writes it; the device never needs a hand-written config.

    {
      "format": "edge-manifest/1",
      "name": "ssdlite_mobilenet_v2_person",
      "task": "detection",
      "models": {"cpu": "model_int8.tflite", "edgetpu": "model_int8_edgetpu.tflite",
                 "float": "model_float.tflite"},
      "labels": "labels.txt",
      "input": {"width": 300, "height": 300, "colour": "RGB", "mean": [127.5, 127.5, 127.5],
                "std": [127.5, 127.5, 127.5], "resize": "stretch", "pad_value": 0},
      "output": {"layout": "ssd_postprocess", ...decoder parameters...},
      "provenance": {...free-form: source hash, quantization mode, calibration, licence...},
      "segments": ["model_int8_segment_0_of_2_edgetpu.tflite", "model_int8_segment_1_of_2_edgetpu.tflite"]
    }

``segments`` (optional) lists the files of an Edge TPU pipeline (``edge-host compile --segments K``),
segment 0 first, to run on K Edge TPUs (:mod:`edge.runtime.segments`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge import bounded
from edge.bounded import show
from edge.errors import ModelError

FORMAT = "edge-manifest/1"
MODEL_ROLES = ("cpu", "edgetpu", "float")
COLOURS = ("RGB", "BGR")
RESIZE_MODES = ("stretch", "letterbox", "crop")
TASKS = ("detection", "classification")
TOP_LEVEL_KEYS = frozenset({"format", "name", "task", "models", "labels", "input", "output", "provenance",
                            "allow_files_outside", "segments"})
MAX_SEGMENTS = 8        # segments: edgetpu_compiler documents no bound; no Pi carries more Edge TPUs
MIN_STD = 1e-6          # |std| below this maps every pixel to the input's clip limits
MAX_SIDE = 16384        # input.width/height: larger than any model input
# Where a manifest may name files outside its own directory (with "allow_files_outside": true):
# system locations only root writes. Not /opt/edge-detect: `edge-host deploy` writes there over ssh.
TRUSTED_DIRS = ("/etc/edge-detect", "/usr/share", "/usr/local/share")
INPUT_KEYS = frozenset({"width", "height", "colour", "mean", "std", "resize", "pad_value"})


@dataclass(frozen=True)
class InputSpec:
    """How a frame becomes the model's input, before the model's own quantization applies."""

    colour: str = "RGB"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)      # real = (pixel - mean) / std
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize: str = "stretch"
    pad_value: int = 0
    width: int = 0          # 0: take it from the model
    height: int = 0


@dataclass(frozen=True)
class Manifest:
    path: Path | None                       # None: inferred, no file
    name: str
    task: str = "detection"
    models: dict[str, Path] = field(default_factory=dict)
    labels: Path | None = None
    input: InputSpec = field(default_factory=InputSpec)
    output: dict[str, Any] = field(default_factory=dict)    # {"layout": ..., decoder parameters}
    provenance: dict[str, Any] = field(default_factory=dict)
    input_given: bool = False               # the manifest has an ``input`` table (else the defaults)
    segments: tuple[Path, ...] = ()         # Edge TPU pipeline segment files, segment 0 first

    @property
    def layout(self) -> str | None:
        return self.output.get("layout")

    def model_for(self, role: str) -> Path | None:
        return self.models.get(role)

    def role_of(self, model_path: Path) -> str | None:
        resolved = model_path.resolve()
        return next((role for role, p in self.models.items() if p.resolve() == resolved), None)


def _fail(path: Path, message: str) -> ModelError:
    return ModelError(f"manifest {str(path)!r}: {message}", "see the manifest format in README.md")


def _number(path: Path, key: str, value: Any) -> float:
    """A finite number (not a bool): NaN would pass every range check and silently break the input."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(path, f"{key} = {show(value)} is not a number")
    try:
        number = float(value)
    except OverflowError:
        raise _fail(path, f"{key} = {show(value)} is out of range") from None
    if not math.isfinite(number):
        raise _fail(path, f"{key} = {show(value)} is not a finite number")
    return number


def _int(path: Path, key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(path, f"{key} = {show(value)} is not an integer from {low} to {high}")
    return value


def _string(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value or "\0" in value:
        raise _fail(path, f"{key} = {show(value)} is not a non-empty string")
    return value


def _triple(path: Path, key: str, value: Any) -> tuple[float, float, float]:
    items = value if isinstance(value, list) else [value]
    if len(items) not in (1, 3):
        raise _fail(path, f"input.{key} = {show(value)} is not a number or a list of 3 numbers")
    numbers = tuple(_number(path, f"input.{key}", v) for v in items)
    return numbers * 3 if len(numbers) == 1 else numbers


def _input_spec(path: Path, table: Any) -> InputSpec:
    if not isinstance(table, dict):
        raise _fail(path, f"input = {show(table)} is not an object")
    unknown = sorted(set(table) - INPUT_KEYS)
    if unknown:
        raise _fail(path, f"unknown key input.{unknown[0][:60]} (valid: {', '.join(sorted(INPUT_KEYS))})")
    colour = table.get("colour", "RGB")
    if colour not in COLOURS:
        raise _fail(path, f"input.colour = {show(colour)} is not one of {', '.join(COLOURS)}")
    resize = table.get("resize", "stretch")
    if resize not in RESIZE_MODES:
        raise _fail(path, f"input.resize = {show(resize)} is not one of {', '.join(RESIZE_MODES)}")
    std = _triple(path, "std", table.get("std", 1.0))
    if any(abs(s) < MIN_STD for s in std):
        raise _fail(path, f"input.std = {list(std)} contains 0 (or a value below {MIN_STD:g}, which would "
                          "saturate every input value)")
    return InputSpec(colour=colour, mean=_triple(path, "mean", table.get("mean", 0.0)), std=std, resize=resize,
                     pad_value=_int(path, "input.pad_value", table.get("pad_value", 0), 0, 255),
                     width=_int(path, "input.width", table.get("width", 0), 0, MAX_SIDE),
                     height=_int(path, "input.height", table.get("height", 0), 0, MAX_SIDE))


def _segments(path: Path, value: Any, allow_outside: bool) -> tuple[Path, ...]:
    if not isinstance(value, list) or not 2 <= len(value) <= MAX_SEGMENTS:
        raise _fail(path, f"segments = {show(value)} is not a list of 2 to {MAX_SEGMENTS} file names")
    files = tuple(_confined(path, f"segments[{i}]", name, allow_outside) for i, name in enumerate(value))
    for i, name in enumerate(value):
        if value.index(name) != i:
            raise _fail(path, f"segments[{i}] = {show(name)} repeats segments[{value.index(name)}]")
    return files


def trusted_location(path: Path) -> bool:
    """True when ``path`` (resolved) lies under one of :data:`TRUSTED_DIRS` (root-owned system places)."""
    resolved = path.resolve()
    return any(resolved.is_relative_to(Path(d).resolve()) for d in TRUSTED_DIRS)


def _confined(path: Path, key: str, value: Any, allow_outside: bool) -> Path:
    """``value`` (a file name from the manifest at ``path``) as a path inside the manifest's directory.

    Absolute names, ``..`` and symlinks that leave the directory are refused unless ``allow_outside``
    (the manifest is in a trusted location and says ``"allow_files_outside": true``)."""
    name = _string(path, key, value)
    base = path.parent
    target = base / name
    if allow_outside:
        return target
    inside = base.resolve()
    if Path(name).is_absolute() or not target.resolve().is_relative_to(inside):
        raise ModelError(f"manifest {str(path)!r}: {key} = {show(name)} resolves outside the manifest's "
                         f"directory {str(base)!r}",
                         "keep the models and labels beside manifest.json (no absolute paths, '..' or symlinks "
                         "leading out)")
    return target


def load_manifest(path: str | Path, *, confine: bool = True) -> Manifest:
    """Read and validate a manifest; relative paths in it are relative to its directory.

    With ``confine`` (the default; host tools checking a manifest they just wrote pass False) every
    file it names must resolve inside its directory, unless the manifest lies in a trusted system
    location (:data:`TRUSTED_DIRS`) and sets ``"allow_files_outside": true``.
    """
    path = Path(path)
    try:
        text = bounded.read_text(path, bounded.MANIFEST_MAX, "manifest", ModelError)
    except FileNotFoundError:
        raise ModelError(f"manifest {str(path)!r} does not exist") from None
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise _fail(path, f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except (ValueError, RecursionError) as exc:   # NaN/Infinity literals; nesting beyond the recursion limit
        reason = "nests too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise _fail(path, f"not a valid manifest ({reason})") from None
    if not isinstance(data, dict):
        raise _fail(path, "the top level is not an object")
    if data.get("format") != FORMAT:
        raise _fail(path, f"format = {show(data.get('format'))}, expected {FORMAT!r}")
    unknown = sorted(set(data) - TOP_LEVEL_KEYS)
    if unknown:
        raise _fail(path, f"unknown key {show(unknown[0])} (valid: {', '.join(sorted(TOP_LEVEL_KEYS))})")
    allow_outside = data.get("allow_files_outside", False)
    if not isinstance(allow_outside, bool):
        raise _fail(path, f"allow_files_outside = {show(allow_outside)} is not true or false")
    if allow_outside and not trusted_location(path):
        raise _fail(path, "allow_files_outside is honoured only for a manifest under "
                          f"{' or '.join(TRUSTED_DIRS)}")
    allow_outside = allow_outside or not confine
    models = data.get("models", {})
    if not isinstance(models, dict) or not models:
        raise _fail(path, "models must name at least one model file, e.g. {\"cpu\": \"model.tflite\"}")
    bad_roles = sorted(set(models) - set(MODEL_ROLES))
    if bad_roles:
        raise _fail(path, f"unknown model role {show(bad_roles[0])} (valid: {', '.join(MODEL_ROLES)})")
    output = data.get("output", {})
    if not isinstance(output, dict):
        raise _fail(path, f"output = {show(output)} is not an object")
    layout = output.get("layout")
    if layout is not None and not isinstance(layout, str):
        raise _fail(path, f"output.layout = {show(layout)} is not a string")
    provenance = data.get("provenance", {})
    if not isinstance(provenance, dict):
        raise _fail(path, f"provenance = {show(provenance)} is not an object")
    labels = data.get("labels")
    return Manifest(
        path=path,
        name=_string(path, "name", data["name"]) if "name" in data else path.parent.name,
        task=_choice(path, "task", data.get("task", "detection"), TASKS),
        models={role: _confined(path, f"models.{role}", p, allow_outside) for role, p in models.items()},
        labels=_confined(path, "labels", labels, allow_outside) if labels is not None else None,
        input=_input_spec(path, data.get("input", {})),
        output=dict(output),
        provenance=dict(provenance),
        input_given="input" in data,
        segments=_segments(path, data["segments"], allow_outside) if "segments" in data else (),
    )


def _choice(path: Path, key: str, value: Any, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise _fail(path, f"{key} = {show(value)} is not one of {', '.join(valid)}")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def find_manifest(model_path: Path) -> Path | None:
    """The manifest that describes ``model_path``: ``<stem>.json`` or the directory's manifest.json."""
    sidecar = model_path.with_suffix(".json")
    if sidecar.is_file():
        return sidecar
    shared = model_path.parent / "manifest.json"
    if shared.is_file() and load_manifest(shared).role_of(model_path):
        return shared
    return None
