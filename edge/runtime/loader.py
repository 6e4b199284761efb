"""From ``[model]`` settings to a running backend: which file, which device, and why.

``--device auto`` uses an Edge TPU when one is present and an Edge TPU model is available (the
given file or the manifest's ``edgetpu`` twin); otherwise the CPU model (the given file or the
``cpu`` twin) on XNNPACK. Every choice, and every fall-back, is logged with its reason.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from edge.config import ModelConfig
from edge.errors import DelegateError, ModelError
from edge.resources import default_model_dir
from edge.runtime import edgetpu
from edge.runtime.conventions import InputConvention, LabelSource, resolve_input, resolve_labels
from edge.runtime.backend import Backend, TFLiteBackend
from edge.runtime.interpreter import Runtime, load_runtime
from edge.runtime.manifest import Manifest, find_manifest, load_manifest
from edge.runtime.model import ModelInfo, read_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSet:
    """The model the user named, its manifest, and the twins the manifest lists."""

    requested: Path                # the .tflite the user named (or the manifest's first choice)
    requested_role: str            # "cpu" or "edgetpu"
    manifest: Manifest             # its ``input`` is the resolved convention's
    convention: InputConvention | None = None   # how frames become the input, and which rule said so
    labels: LabelSource = LabelSource("none", "")

    def path_for(self, role: str) -> Path | None:
        """The model for ``role`` ('cpu' or 'edgetpu'): the requested file when it fits, else its twin."""
        if self.requested_role == role:
            return self.requested
        return self.manifest.model_for(role)


# In Loaded.reason when --device auto fell back to the CPU twin because the delegate failed.
TPU_UNUSABLE = "Edge TPU unusable"


@dataclass
class Loaded:
    model: ModelInfo
    models: ModelSet     # what was resolved: the fail-over wrapper opens the twins from it
    backend: Backend
    runtime: Runtime
    reason: str

    @property
    def manifest(self) -> Manifest:
        return self.models.manifest


EDGETPU_SUFFIX = "_edgetpu"


def _twin(model_path: Path, role: str) -> Path | None:
    """The other half of a Coral-zoo pair beside ``model_path``: ``X_edgetpu.tflite`` ↔ ``X.tflite``."""
    stem = model_path.stem
    if role == "edgetpu":
        if not stem.endswith(EDGETPU_SUFFIX):
            return None
        twin = model_path.with_name(stem[:-len(EDGETPU_SUFFIX)] + model_path.suffix)
    else:
        twin = model_path.with_name(stem + EDGETPU_SUFFIX + model_path.suffix)
    return twin if twin.is_file() else None


def _inferred_manifest(model_path: Path, info: ModelInfo) -> Manifest:
    """The manifest of a model given without one: its role is what the file is (compiled or not), and
    the twin beside it (Coral-zoo naming) takes the other role when it is what its name says."""
    role = "edgetpu" if info.edgetpu else "cpu"
    models = {role: model_path}
    twin = _twin(model_path, role)
    if twin is not None:
        other = "cpu" if role == "edgetpu" else "edgetpu"
        if read_model(twin).edgetpu == (other == "edgetpu"):
            models[other] = twin
            log.info("%s: %s twin %s found beside it", model_path.name, other, twin.name)
        else:
            log.warning("%s: %s is named as its %s twin but is%s compiled for the Edge TPU; not paired",
                        model_path.name, twin.name, other, "" if other == "cpu" else " not")
    return Manifest(path=None, name=model_path.stem, models=models)


def resolve(cfg: ModelConfig) -> ModelSet:
    """Find the model file and its manifest from ``[model] path`` / ``manifest``."""
    path = Path(cfg.path) if cfg.path else default_model_dir()
    manifest_path = Path(cfg.manifest) if cfg.manifest else None
    if path.suffix == ".json":
        manifest_path, path = path, None
    elif path.is_dir():
        manifest_path = manifest_path or path / "manifest.json"
        if not manifest_path.is_file():
            raise ModelError(f"model directory {str(path)!r} has no manifest.json",
                             "give the .tflite file itself, or write a manifest (see README)")
        path = None
    elif not path.exists():
        raise ModelError(f"model file {str(path)!r} does not exist",
                         "give a .tflite file or a model directory with manifest.json")
    if manifest_path is None:
        manifest_path = find_manifest(path)
    info = read_model(path) if path is not None else None
    manifest = load_manifest(manifest_path) if manifest_path else _inferred_manifest(path, info)
    if path is None:
        path = manifest.model_for("cpu") or manifest.model_for("edgetpu")
        if path is None:
            raise ModelError(f"manifest {str(manifest_path)!r} names neither a cpu nor an edgetpu model")
        info = read_model(path)
    role = manifest.role_of(path)
    if role not in ("cpu", "edgetpu"):
        role = "edgetpu" if info.edgetpu else "cpu"
    convention = resolve_input(info, manifest, cfg)
    labels = resolve_labels(info, manifest, cfg)
    manifest = dataclasses.replace(manifest, input=convention.spec)
    return ModelSet(path, role, manifest, convention, labels)


def check_precision(model: ModelInfo, allow_float: bool, *, edgetpu_device: bool = False) -> None:
    """An Edge TPU runs only full-integer int8 models: refuse others there. On the CPU a float or
    mixed model runs as the user brought it (MediaPipe and TF Hub detectors are float), with a warning
    that int8 would be faster, unless ``allow_float`` says the user knows."""
    if model.precision == "int8":
        return
    if edgetpu_device:
        raise ModelError(f"{model.path.name} is a {model.precision} model; the Edge TPU runs only full-integer "
                         "int8 models", "quantize it with `edge-host quantize --mode int8` and compile it")
    if not allow_float:
        log.warning("%s is a %s model: it runs on the CPU, slower than its int8 quantization would, and cannot "
                    "run on the Edge TPU (`edge-host quantize --mode int8`; --allow-float silences this)",
                    model.path.name, model.precision)


def _open_cpu(models: ModelSet, cfg: ModelConfig, runtime: Runtime, why: str) -> Loaded:
    path = models.path_for("cpu")
    if path is None:
        raise ModelError(f"{models.requested.name} is compiled for the Edge TPU and {why}",
                         "connect an Edge TPU, or name the CPU twin as models.cpu in the manifest")
    model = read_model(path)
    if model.edgetpu:
        raise ModelError(f"{path.name} is compiled for the Edge TPU and {why}",
                         "name a CPU model as models.cpu in the manifest")
    check_precision(model, cfg.allow_float)
    backend = TFLiteBackend(model, runtime, threads=cfg.threads)
    reason = f"CPU ({backend.name}): {why}"
    log.info("running %s on %s", path.name, reason)
    return Loaded(model, models, backend, runtime, reason)


def _open_edgetpu(models: ModelSet, cfg: ModelConfig, runtime: Runtime, spec: edgetpu.DeviceSpec,
                  why: str) -> Loaded:
    path = models.path_for("edgetpu")
    if path is None:
        raise ModelError(f"{models.requested.name} is not compiled for the Edge TPU and its manifest names no "
                         "edgetpu twin", "compile it with `edge-host compile`, or use --device cpu")
    model = read_model(path)
    check_precision(model, allow_float=False, edgetpu_device=True)
    delegate = edgetpu.load_delegate(runtime, spec)
    backend = TFLiteBackend(model, runtime, threads=cfg.threads, delegates=[delegate],
                            name=f"edgetpu:{spec.delegate_option or 'auto'}")
    reason = f"Edge TPU ({spec}): {why}"
    log.info("running %s on %s", path.name, reason)
    return Loaded(model, models, backend, runtime, reason)


def load(cfg: ModelConfig, models: ModelSet | None = None) -> Loaded:
    """Resolve (unless ``models`` is given), choose the device, and open the backend."""
    spec = edgetpu.parse_device(cfg.device)
    models = models or resolve(cfg)
    runtime = load_runtime(cfg.runtime)
    if spec.backend == "cpu":
        return _open_cpu(models, cfg, runtime, "requested with --device cpu")
    if spec.backend == "edgetpu":
        return _open_edgetpu(models, cfg, runtime, spec, "requested with --device " + cfg.device)
    devices = edgetpu.enumerate_devices()
    tpu_model = models.path_for("edgetpu")
    if not devices:
        return _open_cpu(models, cfg, runtime, "no Edge TPU found")
    if tpu_model is None:
        return _open_cpu(models, cfg, runtime, f"Edge TPU present ({devices[0]}) but no Edge TPU model "
                                               "(compile one with `edge-host compile`)")
    try:
        return _open_edgetpu(models, cfg, runtime, spec, f"found {devices[0]}")
    except DelegateError as exc:
        if models.path_for("cpu") is None:
            raise
        log.warning("%s (%s); falling back to the CPU twin", TPU_UNUSABLE, exc)
        return _open_cpu(models, cfg, runtime, f"{TPU_UNUSABLE}: {exc.message}")
