"""How a frame becomes a model's input, and where the labels come from, for models brought as found.

Input convention (normalisation, colour order, resize), first rule that applies:

1. ``manifest``: the model's manifest states its ``input``;
2. ``flags``: ``--input-mean/--input-std`` (``[model] input_mean/input_std``);
3. ``tflite-metadata``: TFLite Model Metadata (Model Maker, TF Hub, MediaPipe): NormalizationOptions
   and colour space. A uint8 input takes raw pixels, as the TFLite Task Library feeds it; metadata
   that contradicts the tensor's own quantization is reported. The metadata does not say how to fit
   the aspect ratio: a MediaPipe detector recognised by its tensors is letterboxed as its graph is;
4. ``ultralytics``: Ultralytics export metadata: pixels / 255, RGB, letterboxed with pad 114 (a
   classifier: the centre cropped, as its predictor does);
5. ``preset``: a known model recognised by its tensors, with its publisher's documented values;
6. ``uint8-raw``: a uint8 input with no metadata takes the resized RGB pixels as they are, which is
   the Coral / pycoral convention;
7. otherwise (an int8 or float input with nothing to say how): an error naming the flags. Never a guess.

``--colour`` and ``--resize`` override the colour order and resize mode of whichever rule applied.

Labels, first that exists: ``--labels``, the manifest's, the TFLite Metadata's TENSOR_AXIS_LABELS file
(zipped in the model), the Ultralytics ``names``, a preset's, then ``labels.txt`` / ``<stem>_labels.txt``
/ a single ``*_labels.txt`` beside the model.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.config import ModelConfig
from edge.errors import ModelError
from edge.runtime.manifest import InputSpec, Manifest
from edge.runtime.model import ModelInfo, TensorInfo
from edge.runtime.tflite_metadata import ModelMetadata, read_metadata
from edge.vision.labels import load_labels, parse_labels

log = logging.getLogger(__name__)

ULTRALYTICS_PAD = 114
INPUT_FLAGS = "--input-mean/--input-std (e.g. 127.5 127.5 for [-1, 1], 0 255 for [0, 1])"


@dataclass(frozen=True)
class InputConvention:
    spec: InputSpec
    rule: str           # manifest | flags | tflite-metadata | ultralytics | preset | uint8-raw
    source: str         # where it was read, for the log and `edge info`

    def describe(self) -> str:
        s = self.spec
        mean = _fmt(s.mean)
        std = _fmt(s.std)
        return (f"{self.rule} ({self.source}): real = (pixel - {mean}) / {std}, {s.colour}, {s.resize}"
                + (f" (pad {s.pad_value})" if s.resize == "letterbox" else ""))


@dataclass(frozen=True)
class LabelSource:
    """Where labels come from: a file, or a file zipped in the model, or a name list."""

    rule: str           # flag | manifest | tflite-metadata | ultralytics | preset | beside-model | none
    source: str
    path: Path | None = None
    names: tuple[tuple[int, str], ...] = ()
    model: ModelInfo | None = dataclasses.field(default=None, compare=False, repr=False)

    def load(self) -> dict[int, str]:
        if self.path is not None:
            return load_labels(self.path)
        if self.model is not None:
            text = self.model.associated_file(self.source)
            try:
                return parse_labels(text.decode("utf-8"), source=f"{self.model.path.name}:{self.source}")
            except UnicodeDecodeError as exc:
                raise ModelError(f"labels {self.source!r} in {self.model.path.name} are not UTF-8 ({exc.reason})",
                                 "pass --labels FILE") from None
        return dict(self.names)

    def describe(self) -> str:
        return f"{self.rule} ({self.source})" if self.rule != "none" else "none (class ids are printed)"


def _fmt(values: tuple[float, ...]) -> str:
    values = tuple(v + 0.0 for v in values)     # -0.0 prints as 0
    if len(set(values)) == 1:
        return f"{values[0]:g}"
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _triple(values: tuple[float, ...]) -> tuple[float, float, float]:
    return tuple(values) * 3 if len(values) == 1 else tuple(values)  # type: ignore[return-value]


def raw_pixels(tensor: TensorInfo) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) that make the quantized input equal the pixel: real = scale * (pixel - zero_point)."""
    if tensor.quantization is None or tensor.quantization.per_channel:
        return (0.0,) * 3, (1.0,) * 3
    scale, zero_point = tensor.quantization.scalar()
    return (float(zero_point),) * 3, (1.0 / scale,) * 3


def _agrees_with_raw(mean: tuple, std: tuple, tensor: TensorInfo) -> bool:
    """True when (pixel - mean) / std, quantized by the tensor, is the pixel itself to within one code."""
    scale, zero_point = tensor.quantization.scalar()
    pixels = np.arange(256.0)[:, None]
    codes = (pixels - np.asarray(mean)) / np.asarray(std) / scale + zero_point
    return bool(np.abs(codes - pixels).max() <= 1.0)


def _from_metadata(meta: ModelMetadata, tensor: TensorInfo, where: str) -> InputSpec | None:
    """The metadata's convention, or None when it has no NormalizationOptions (it then says nothing of
    the input's values: Ultralytics' own TFLITE_METADATA, for one, carries only names and licence)."""
    image = meta.image_input
    if image.color_space == "GRAYSCALE":
        raise ModelError(f"{where}: the model takes GRAYSCALE images; edge feeds 3-channel frames")
    if not image.normalization:
        return None
    if tensor.type == "UINT8":
        mean, std = raw_pixels(tensor)
        finite = all(math.isfinite(v) for v in image.mean + image.std) and min(map(abs, image.std)) >= 1e-6
        if finite and len(image.mean) in (1, 3) and len(image.std) in (1, 3) \
                and not tensor.quantization.per_channel \
                and not _agrees_with_raw(_triple(image.mean), _triple(image.std), tensor):
            log.warning("%s: the metadata's normalisation (mean %s, std %s) contradicts the uint8 input's "
                        "quantization; feeding raw pixels as the TFLite Task Library does (override with %s)",
                        where, _fmt(image.mean), _fmt(image.std), INPUT_FLAGS)
        return InputSpec(colour="RGB", mean=mean, std=std)
    if len(image.mean) not in (1, 3) or len(image.std) not in (1, 3) \
            or not all(math.isfinite(v) for v in image.mean + image.std) or min(map(abs, image.std)) < 1e-6:
        raise ModelError(f"{where}: NormalizationOptions mean {list(image.mean)[:3]} std {list(image.std)[:3]} "
                         "are not 1 or 3 finite values with |std| ≥ 1e-6", f"pass {INPUT_FLAGS}")
    return InputSpec(colour="RGB", mean=_triple(image.mean), std=_triple(image.std))


def _from_ultralytics(model: ModelInfo) -> tuple[InputSpec, str] | None:
    from edge.runtime import ultralytics

    meta = ultralytics.read_metadata(model)
    if meta is None:
        return None
    # Ultralytics' predictors letterbox detection inputs (pad 114) and centre-crop classifier inputs.
    resize = "crop" if meta.task == "classify" else "letterbox"
    return InputSpec(colour="RGB", mean=(0.0,) * 3, std=(255.0,) * 3, resize=resize,
                     pad_value=ULTRALYTICS_PAD), meta.source


def _from_preset(model: ModelInfo) -> tuple[InputSpec, str] | None:
    """A MediaPipe detector recognised by its tensors: the float range its graph config converts to,
    letterboxed (keep_aspect_ratio, BORDER_ZERO: black pixels) when the graph says so."""
    from edge.vision.decode.mediapipe_presets import find_preset

    preset = find_preset(model)
    if preset is None:
        return None
    low, high = preset.input_range
    std = 255.0 / (high - low)
    return InputSpec(colour="RGB", mean=(-low * std,) * 3, std=(std,) * 3,
                     resize="letterbox" if preset.keep_aspect_ratio else "stretch", pad_value=0), preset.source


def _with_exporter_geometry(spec: InputSpec, model: ModelInfo) -> InputSpec:
    """TFLite Metadata says nothing of aspect ratio: Ultralytics' metadata or a recognised MediaPipe
    model's graph config does."""
    found = _from_ultralytics(model) or _from_preset(model)
    if found is None:
        return spec
    return dataclasses.replace(spec, resize=found[0].resize, pad_value=found[0].pad_value)


def _flags(cfg: ModelConfig) -> InputSpec | None:
    if not cfg.input_mean and not cfg.input_std:
        return None
    if not (cfg.input_mean and cfg.input_std):
        missing = "--input-std" if cfg.input_mean else "--input-mean"
        raise ModelError(f"{missing} is missing: give --input-mean and --input-std together",
                         "e.g. --input-mean 127.5 --input-std 127.5 for [-1, 1]")
    std = _triple(cfg.input_std)
    if any(abs(s) < 1e-6 for s in std):
        raise ModelError(f"--input-std {list(cfg.input_std)} contains 0 (or a value below 1e-6)",
                         "std divides the pixel: e.g. 127.5 or 255")
    return InputSpec(mean=_triple(cfg.input_mean), std=std)


def _overrides(spec: InputSpec, cfg: ModelConfig) -> InputSpec:
    changes = {}
    if cfg.colour:
        changes["colour"] = cfg.colour
    if cfg.resize:
        changes["resize"] = cfg.resize
    return dataclasses.replace(spec, **changes) if changes else spec


def resolve_input(model: ModelInfo, manifest: Manifest, cfg: ModelConfig) -> InputConvention:
    """The input convention of ``model`` by the rules above; ModelError when nothing can tell."""
    tensor = model.inputs[0]
    name = model.path.name
    flags = _flags(cfg)
    if manifest.path is not None and manifest.input_given:
        if flags is not None:
            log.warning("%s: --input-mean/--input-std ignored: the manifest %s states the input normalisation "
                        "(edit its input table to change it)", name, manifest.path)
        return InputConvention(_overrides(manifest.input, cfg), "manifest", str(manifest.path))
    if flags is not None:
        return InputConvention(_overrides(flags, cfg), "flags", "--input-mean/--input-std")
    meta = read_metadata(model)
    if meta is not None:
        spec = _from_metadata(meta, tensor, f"{name}: TFLITE_METADATA")
        if spec is not None:
            spec = _with_exporter_geometry(spec, model)
            return InputConvention(_overrides(spec, cfg), "tflite-metadata", f"TFLITE_METADATA of {name}")
    for rule, found in (("ultralytics", _from_ultralytics(model)), ("preset", _from_preset(model))):
        if found is not None:
            return InputConvention(_overrides(found[0], cfg), rule, found[1])
    if tensor.type == "UINT8":
        mean, std = raw_pixels(tensor)
        return InputConvention(_overrides(InputSpec(mean=mean, std=std), cfg), "uint8-raw",
                               "uint8 input without metadata: raw RGB pixels, as pycoral feeds them")
    raise ModelError(f"cannot tell how {name} wants its {tensor.type.lower()} input normalised: it has no "
                     "manifest, no TFLite Metadata and no exporter metadata",
                     f"pass {INPUT_FLAGS}, or write a manifest")


def _beside(model_path: Path) -> Path | None:
    folder = model_path.parent
    stem = model_path.stem.removesuffix("_edgetpu")
    for candidate in (folder / f"{stem}_labels.txt", folder / f"{model_path.stem}_labels.txt", folder / "labels.txt"):
        if candidate.is_file():
            return candidate
    others = sorted(folder.glob("*_labels.txt"))
    return others[0] if len(others) == 1 else None


def resolve_labels(model: ModelInfo, manifest: Manifest, cfg: ModelConfig) -> LabelSource:
    """Where the labels of ``model`` come from, by the rules above (``none`` when nothing has them)."""
    if cfg.labels:
        return LabelSource("flag", cfg.labels, path=Path(cfg.labels))
    if manifest.labels is not None:
        return LabelSource("manifest", str(manifest.labels), path=manifest.labels)
    meta = read_metadata(model)
    if meta is not None:
        from edge.runtime.ultralytics import FILES as ULTRALYTICS_FILES

        # Ultralytics 8.0-8.3 typed its metadata dict (temp_meta.txt) TENSOR_AXIS_LABELS: not labels.
        present = [f for f in meta.label_files if f in model.associated_files and f not in ULTRALYTICS_FILES]
        if present:
            return LabelSource("tflite-metadata", present[0], model=model)
    from edge.runtime import ultralytics

    ultra = ultralytics.read_metadata(model)
    if ultra is not None and ultra.names:
        return LabelSource("ultralytics", ultra.source, names=tuple(sorted(ultra.names.items())))
    from edge.vision.decode.mediapipe_presets import find_preset

    preset = find_preset(model)
    if preset is not None:
        return LabelSource("preset", preset.source, names=((0, preset.label),))
    beside = _beside(model.path)
    if beside is not None:
        return LabelSource("beside-model", str(beside), path=beside)
    return LabelSource("none", "")
