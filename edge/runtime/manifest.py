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
      "provenance": {...free-form: source hash, quantization mode, calibration, licence...}
    }
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import ModelError

FORMAT = "edge-manifest/1"
MODEL_ROLES = ("cpu", "edgetpu", "float")
COLOURS = ("RGB", "BGR")
RESIZE_MODES = ("stretch", "letterbox", "crop")
TOP_LEVEL_KEYS = frozenset({"format", "name", "task", "models", "labels", "input", "output", "provenance"})
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


def _triple(path: Path, key: str, value: Any) -> tuple[float, float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),) * 3
    if isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value):
        return tuple(float(v) for v in value)
    raise _fail(path, f"input.{key} = {value!r} is not a number or a list of 3 numbers")


def _input_spec(path: Path, table: Any) -> InputSpec:
    if not isinstance(table, dict):
        raise _fail(path, f"input = {table!r} is not an object")
    unknown = sorted(set(table) - INPUT_KEYS)
    if unknown:
        raise _fail(path, f"unknown key input.{unknown[0]} (valid: {', '.join(sorted(INPUT_KEYS))})")
    colour = table.get("colour", "RGB")
    if colour not in COLOURS:
        raise _fail(path, f"input.colour = {colour!r} is not one of {', '.join(COLOURS)}")
    resize = table.get("resize", "stretch")
    if resize not in RESIZE_MODES:
        raise _fail(path, f"input.resize = {resize!r} is not one of {', '.join(RESIZE_MODES)}")
    std = _triple(path, "std", table.get("std", 1.0))
    if any(s == 0 for s in std):
        raise _fail(path, f"input.std = {list(std)} contains 0")
    return InputSpec(colour=colour, mean=_triple(path, "mean", table.get("mean", 0.0)), std=std,
                     resize=resize, pad_value=int(table.get("pad_value", 0)),
                     width=int(table.get("width", 0)), height=int(table.get("height", 0)))


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest; relative paths in it are relative to its directory."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"manifest {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read manifest {str(path)!r}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise _fail(path, f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _fail(path, "the top level is not an object")
    if data.get("format") != FORMAT:
        raise _fail(path, f"format = {data.get('format')!r}, expected {FORMAT!r}")
    unknown = sorted(set(data) - TOP_LEVEL_KEYS)
    if unknown:
        raise _fail(path, f"unknown key {unknown[0]!r} (valid: {', '.join(sorted(TOP_LEVEL_KEYS))})")
    base = path.parent
    models = data.get("models", {})
    if not isinstance(models, dict) or not models:
        raise _fail(path, "models must name at least one model file, e.g. {\"cpu\": \"model.tflite\"}")
    bad_roles = sorted(set(models) - set(MODEL_ROLES))
    if bad_roles:
        raise _fail(path, f"unknown model role {bad_roles[0]!r} (valid: {', '.join(MODEL_ROLES)})")
    output = data.get("output", {})
    if not isinstance(output, dict):
        raise _fail(path, f"output = {output!r} is not an object")
    return Manifest(
        path=path,
        name=str(data.get("name", path.parent.name)),
        task=str(data.get("task", "detection")),
        models={role: base / str(p) for role, p in models.items()},
        labels=base / data["labels"] if data.get("labels") else None,
        input=_input_spec(path, data.get("input", {})),
        output=dict(output),
        provenance=dict(data.get("provenance", {})),
        input_given="input" in data,
    )


def find_manifest(model_path: Path) -> Path | None:
    """The manifest that describes ``model_path``: ``<stem>.json`` or the directory's manifest.json."""
    sidecar = model_path.with_suffix(".json")
    if sidecar.is_file():
        return sidecar
    shared = model_path.parent / "manifest.json"
    if shared.is_file() and load_manifest(shared).role_of(model_path):
        return shared
    return None
