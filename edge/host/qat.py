"""Quantization-aware training: fine-tune a classifier with fake-quant, export Edge TPU-ready int8.

tensorflow-model-optimization 0.8.1 accepts only tf_keras (Keras 2) models, and TensorFlow picks
Keras 2 or 3 once, at import (``TF_USE_LEGACY_KERAS``). The training therefore runs in a child
process (``python -m edge.host.qat``) started with ``TF_USE_LEGACY_KERAS=1``, whatever the parent
has imported. The child reads the labelled folder through the device's own pre-processing,
trains (float first when no model is given), fine-tunes with fake-quant for N epochs, and
converts three models with static batch-1 shapes: the float twin, a post-training int8 model
(for comparison) and the QAT int8 model (all ops int8, uint8 or int8 I/O). The parent checks the
Edge TPU requirements on the result and writes the manifest and the report.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge.errors import ConfigError, EdgeError, ModelError
from edge.host import manifests
from edge.host.calibration import labelled_images
from edge.runtime.manifest import InputSpec
from edge.runtime.model import read_model

log = logging.getLogger(__name__)

BASES = ("small-cnn", "mobilenetv2")
# Integer types an Edge TPU op may touch: int8/uint8 activations and weights, int32 biases.
_INTEGER = frozenset({"INT8", "UINT8", "INT32"})


@dataclass(frozen=True)
class QatOptions:
    data: str
    out: str
    name: str = "qat"
    model: str | None = None          # a tf_keras .h5/.keras classifier; None: train ``base`` first
    base: str = "small-cnn"
    size: tuple[int, int] = (32, 32)  # (width, height) of a model built here
    epochs: int = 3
    float_epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    validation_split: float = 0.25
    io: str = "uint8"
    mean: list[float] = field(default_factory=lambda: [127.5] * 3)
    std: list[float] = field(default_factory=lambda: [127.5] * 3)
    colour: str = "RGB"
    seed: int = 0
    ptq: bool = True


def _check(options: QatOptions) -> list[str]:
    """Validate everything the child would trip over; returns the class names."""
    data = Path(options.data)
    if not data.is_dir():
        raise ConfigError(f"training data {options.data!r} is not a folder",
                          "give a folder with one subfolder of images per class")
    classes = sorted(p.name for p in data.iterdir() if p.is_dir())
    images = labelled_images(data)
    if len(classes) < 2 or not images:
        raise ConfigError(f"training data {options.data!r} has {len(classes)} class subfolders and {len(images)} "
                          "images", "expected one subfolder of images per class, at least two classes")
    if options.model and not Path(options.model).is_file():
        raise ConfigError(f"model {options.model!r} does not exist", "a tf_keras .h5 or .keras classifier")
    if options.base not in BASES:
        raise ConfigError(f"unknown base {options.base!r}", f"valid: {', '.join(BASES)}")
    if not 0 < options.validation_split < 1:
        raise ConfigError(f"validation split {options.validation_split} is not between 0 and 1")
    if options.io not in ("uint8", "int8"):
        raise ConfigError(f"--io {options.io!r}: the Edge TPU takes uint8 or int8 I/O")
    if options.epochs <= 0 or options.float_epochs < 0:
        raise ConfigError(f"epochs {options.epochs} / float epochs {options.float_epochs} must be positive")
    if any(s == 0 for s in options.std):
        raise ConfigError(f"--std {options.std} contains 0")
    missing = [m for m in ("tensorflow", "tf_keras", "tensorflow_model_optimization")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise EdgeError(f"edge-host qat needs {', '.join(missing)}, which is not installed",
                        "pip install 'edge-detect[host]' and then pip install --no-deps tf-keras==2.21.0 "
                        "tensorflow-model-optimization==0.8.1")
    return classes


def edgetpu_problems(path: Path) -> list[str]:
    """What keeps ``path`` from the Edge TPU's requirements (static shapes, one subgraph, every op
    on int8/uint8 tensors with int32 biases); empty when it meets them."""
    info = read_model(path)
    problems = []
    if info.subgraphs != 1:
        problems.append(f"{info.subgraphs} subgraphs")
    for t in (*info.inputs, *info.outputs):
        if t.dynamic:
            problems.append(f"tensor {t.name!r} has a dynamic shape {list(t.shape_signature)}")
        if t.type not in ("INT8", "UINT8"):
            problems.append(f"model I/O tensor {t.name!r} is {t.type}")
    for op in info.ops:
        types = {info.tensors[i].type for i in (*op.inputs, *op.outputs) if i >= 0}
        if not types <= _INTEGER:
            problems.append(f"op {op.name} touches {', '.join(sorted(types - _INTEGER))} tensors")
            break
    return problems


def run(options: QatOptions) -> dict:
    """Train in a child process, check the result, write manifest and report; returns the report."""
    classes = _check(options)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    log.info("training in a child process with TF_USE_LEGACY_KERAS=1 (tf_keras + tensorflow-model-optimization)")
    proc = subprocess.run([sys.executable, "-m", "edge.host.qat", json.dumps(asdict(options))], env=env,
                          stdout=None, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        ours = [ln for ln in lines if ln.startswith("edge-host: error: ")]
        detail = ours[-1][len("edge-host: error: "):] if ours else (lines[-1] if lines else f"exit {proc.returncode}")
        raise EdgeError(f"QAT failed: {detail}")
    report = json.loads((out / "qat_report.json").read_text(encoding="utf-8"))
    qat_path = out / report["models"]["qat_int8"]
    problems = edgetpu_problems(qat_path)
    report["edgetpu_requirements"] = problems or "met"
    if problems:
        raise ModelError(f"{qat_path.name} does not meet the Edge TPU requirements: {'; '.join(problems)}")
    spec = InputSpec(colour=options.colour, mean=tuple(options.mean), std=tuple(options.std))
    width, height = report["input_size"]
    labels = manifests.write_labels(out, classes)
    common = dict(name=options.name, task="classification", labels=labels,
                  input=manifests.input_dict(spec, width, height), output={"layout": "classification"})
    prov = {"source": Path(options.model).name if options.model else f"{options.base} trained here",
            "source_sha256": manifests.sha256(Path(options.model)) if options.model else None,
            "exporter": "edge-host qat", "tensorflow": report["versions"]["tensorflow"],
            "tfmot": report["versions"]["tfmot"], "training_data": Path(options.data).name,
            "epochs": options.epochs, "float_epochs": options.float_epochs if not options.model else 0}
    manifests.write_manifest(out / "manifest.json", models={"cpu": qat_path.name, "float": report["models"]["float"]},
                             provenance={**prov, "quantization": {"mode": "qat-int8", "io": options.io}}, **common)
    if report["models"].get("ptq_int8"):
        manifests.write_manifest(
            out / Path(report["models"]["ptq_int8"]).with_suffix(".json").name,
            models={"cpu": report["models"]["ptq_int8"], "float": report["models"]["float"]},
            provenance={**prov, "quantization": {"mode": "int8", "io": options.io, "per_channel": True}}, **common)
    (out / "qat_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "qat_report.md").write_text(markdown(report), encoding="utf-8")
    return report


def markdown(report: dict) -> str:
    acc = report["accuracy"]
    rows = [("float (Keras)", "float_keras", report["models"]["float"]),
            ("post-training int8", "ptq_int8", report["models"].get("ptq_int8")),
            ("QAT (Keras, fake-quant)", "qat_keras", None),
            ("QAT int8", "qat_int8", report["models"]["qat_int8"])]
    lines = [f"# QAT report: {report['name']}", "",
             f"{report['train_samples']} training and {report['val_samples']} held-out images, "
             f"{len(report['classes'])} classes, input {report['input_size'][0]}x{report['input_size'][1]}; "
             f"{report['float_epochs']} float epochs, {report['epochs']} QAT epochs.", "",
             "| model | held-out top-1 | file |", "|---|---:|---|"]
    for title, key, file in rows:
        if key in acc:
            lines.append(f"| {title} | {acc[key]:.4f} | {file or '–'} |")
    req = report.get("edgetpu_requirements", "not checked")
    lines += ["", f"Edge TPU requirements (all ops int8, static shapes, {report['io']} I/O): "
                  f"{req if isinstance(req, str) else '; '.join(req)}."]
    return "\n".join(lines) + "\n"


def write_digits(folder: Path, size: int = 32) -> int:
    """scikit-learn's bundled digits (1797 8x8 images, offline) as a class-per-subfolder folder of
    ``size`` x ``size`` PNGs; returns the number of images. A small real dataset for QAT demos."""
    import cv2
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise EdgeError("the digits demo data comes from scikit-learn", "pip install scikit-learn") from None
    digits = load_digits()
    for c in range(10):
        (folder / str(c)).mkdir(parents=True, exist_ok=True)
    for i, (image, target) in enumerate(zip(digits.images, digits.target)):
        pixels = cv2.resize((image * 255 / 16).astype(np.uint8), (size, size), interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(folder / str(target) / f"{i:04d}.png"), pixels)
    return len(digits.images)


# ---------------------------------------------------------------------------------------------
# the child process (TF_USE_LEGACY_KERAS=1): everything below imports tf_keras

def _load_data(options: QatOptions, size: tuple[int, int]):
    import cv2

    from edge.capture.base import Frame
    from edge.runtime.model import TensorInfo
    from edge.vision.preprocess import Preprocessor
    width, height = size
    spec = InputSpec(colour=options.colour, mean=tuple(options.mean), std=tuple(options.std))
    pre = Preprocessor(spec, TensorInfo(0, "input", (1, height, width, 3), "FLOAT32", None), (1, height, width, 3))
    items = labelled_images(Path(options.data))
    x = np.empty((len(items), height, width, 3), np.float32)
    y = np.empty(len(items), np.int64)
    for i, (path, cls) in enumerate(items):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ConfigError(f"cannot decode image {str(path)!r}")
        pre(Frame(image=image, index=i, timestamp=0.0, captured_ns=0), x[i:i + 1])
        y[i] = cls
    order = np.random.default_rng(options.seed).permutation(len(items))
    n_val = max(1, int(round(len(items) * options.validation_split)))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def _build(keras, base: str, size: tuple[int, int], classes: int):
    width, height = size
    if base == "mobilenetv2":
        model = keras.applications.MobileNetV2(input_shape=(height, width, 3), alpha=0.35, weights=None,
                                               classes=classes, classifier_activation="softmax")
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9        # 0.999 trains badly in short runs
        return model
    layers = keras.layers
    return keras.Sequential([
        layers.InputLayer(input_shape=(height, width, 3)),
        layers.Conv2D(16, 3, padding="same"), layers.BatchNormalization(momentum=0.9), layers.ReLU(6.0),
        layers.MaxPooling2D(),
        layers.Conv2D(32, 3, padding="same"), layers.BatchNormalization(momentum=0.9), layers.ReLU(6.0),
        layers.MaxPooling2D(),
        layers.Conv2D(64, 3, padding="same"), layers.BatchNormalization(momentum=0.9), layers.ReLU(6.0),
        layers.GlobalAveragePooling2D(),
        layers.Dense(classes), layers.Softmax(),
    ])


def _convert(tf, model, size, int8: bool, io: str, representative) -> bytes:
    width, height = size
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, height, width, 3], tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], model)
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = {"uint8": tf.uint8, "int8": tf.int8}[io]
    return converter.convert()


def tflite_top1(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a .tflite classifier on float inputs ``x`` (quantized with its input scale)."""
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = inp["quantization"]
    correct = 0
    for i in range(len(x)):
        sample = x[i:i + 1]
        if scale:
            info = np.iinfo(inp["dtype"])
            sample = np.clip(np.round(sample / scale + zero), info.min, info.max)
        interpreter.set_tensor(inp["index"], sample.astype(inp["dtype"]))
        interpreter.invoke()
        # The order of the raw integers is the order of the real values (positive scale).
        correct += int(np.argmax(interpreter.get_tensor(out["index"]).reshape(-1)) == y[i])
    return correct / len(x)


def _child(options: QatOptions) -> None:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    tf.random.set_seed(options.seed)
    np.random.seed(options.seed)
    out = Path(options.out)
    classes = sorted(p.name for p in Path(options.data).iterdir() if p.is_dir())
    started = time.monotonic()
    if options.model:
        try:
            model = keras.models.load_model(options.model, compile=False)
        except (ValueError, OSError, TypeError) as exc:
            raise ModelError(f"cannot load {options.model!r} with tf_keras: {str(exc).splitlines()[0]}",
                             "QAT needs a Keras 2 (tf_keras) Sequential or Functional model") from None
        shape = model.inputs[0].shape
        if shape[1] is None or shape[2] is None or shape[3] != 3:
            raise ModelError(f"model input shape {list(shape)}: QAT needs a fixed [H, W, 3] image input")
        size = (int(shape[2]), int(shape[1]))
        if model.outputs[0].shape[-1] != len(classes):
            raise ConfigError(f"the model predicts {model.outputs[0].shape[-1]} classes but {options.data!r} has "
                              f"{len(classes)} class subfolders")
    else:
        size = tuple(options.size)
        model = _build(keras, options.base, size, len(classes))
    x_train, y_train, x_val, y_val = _load_data(options, size)
    loss = keras.losses.SparseCategoricalCrossentropy()

    def fit(m, epochs, lr):
        m.compile(keras.optimizers.Adam(lr), loss, metrics=["accuracy"])
        m.fit(x_train, y_train, batch_size=options.batch_size, epochs=epochs, shuffle=True, verbose=2)
        return float(m.evaluate(x_val, y_val, verbose=0)[1])

    accuracy = {}
    if not options.model and options.float_epochs:
        fit(model, options.float_epochs, options.learning_rate)
    model.compile(keras.optimizers.Adam(options.learning_rate), loss, metrics=["accuracy"])
    accuracy["float_keras"] = float(model.evaluate(x_val, y_val, verbose=0)[1])

    def representative():
        for i in range(min(100, len(x_train))):
            yield [x_train[i:i + 1]]

    names = {"float": f"{options.name}_float.tflite", "qat_int8": f"{options.name}_qat_int8.tflite"}
    (out / names["float"]).write_bytes(_convert(tf, model, size, False, options.io, None))
    if options.ptq:
        names["ptq_int8"] = f"{options.name}_ptq_int8.tflite"
        (out / names["ptq_int8"]).write_bytes(_convert(tf, model, size, True, options.io, representative))
        accuracy["ptq_int8"] = tflite_top1(out / names["ptq_int8"], x_val, y_val)
    try:
        q_model = tfmot.quantization.keras.quantize_model(model)
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"tensorflow-model-optimization cannot quantize this model: {str(exc).splitlines()[0]}",
                         "QAT supports Sequential/Functional tf_keras models with supported layers") from None
    accuracy["qat_keras"] = fit(q_model, options.epochs, options.learning_rate / 10)
    (out / names["qat_int8"]).write_bytes(_convert(tf, q_model, size, True, options.io, representative))
    accuracy["qat_int8"] = tflite_top1(out / names["qat_int8"], x_val, y_val)
    report = {"name": options.name, "classes": classes, "input_size": list(size), "io": options.io,
              "train_samples": int(len(x_train)), "val_samples": int(len(x_val)), "epochs": options.epochs,
              "float_epochs": 0 if options.model else options.float_epochs, "accuracy": accuracy, "models": names,
              "seconds": round(time.monotonic() - started, 1),
              "versions": {"tensorflow": tf.__version__, "tfmot": tfmot.__version__, "tf_keras": keras.__version__}}
    (out / "qat_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = QatOptions(**json.loads(argv[0]))
    try:
        _child(options)
    except EdgeError as exc:
        print(f"edge-host: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
