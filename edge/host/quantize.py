"""Post-training quantization in every TFLite mode, with the manifest the device needs.

Sources: a Keras model (.keras/.h5), a SavedModel directory, a TF1 frozen graph (input and
output tensor names given, or a TF1 Object Detection API SSD, which is cut and re-wrapped with
``TFLite_Detection_PostProcess`` exactly as ``edge-host export-ssd`` does), or a float .tflite
whose source is lost (quantized with ai-edge-quantizer, no TensorFlow needed for that path).

Modes: ``float32`` (the reference every other mode is compared with), ``float16``, ``dynamic``
(int8 weights, float activations), ``int8`` (full integer; uint8, int8 or float I/O) and
``int16x8`` (int16 activations, int8 weights). Per-channel weights by default; ``per_tensor``
on request. Calibration frames go through the device's own pre-processing
(:mod:`edge.host.calibration`).

A float .tflite is rewritten before ai-edge-quantizer so that XNNPACK can take the int8 model
whole (:mod:`edge.host.fuse`); the comparison table gives XNNPACK's delegated share of every mode
(:mod:`edge.runtime.xnnpack`) next to its size and latency, and says why when int8 is slower.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import statistics
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from edge.errors import ConfigError, EdgeError, ModelError
from edge.host import manifests
from edge.host.calibration import float_inputs, representative_dataset
from edge.host.tf import tensorflow
from edge.runtime.manifest import InputSpec, find_manifest, load_manifest
from edge.runtime.model import DETECTION_POSTPROCESS_OP, ModelInfo, read_model
from edge.runtime.xnnpack import XnnpackShare, delegation

log = logging.getLogger(__name__)

MODES = ("float32", "float16", "dynamic", "int8", "int16x8")
IO_TYPES = ("uint8", "int8", "float")
LAYOUTS = ("auto", "classification", "ssd_postprocess", "ssd_anchors", "raw")
KINDS = ("keras", "saved_model", "frozen_graph", "ssd_graph", "tflite")
_CALIBRATED = ("int8", "int16x8")
DEFAULT_SPEC = InputSpec(colour="RGB", mean=(127.5,) * 3, std=(127.5,) * 3, resize="stretch")


@dataclass(frozen=True)
class SourceModel:
    """What to convert. ``inputs``/``outputs`` are tensor names for a frozen graph."""

    path: Path
    kind: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    input_size: tuple[int, int] | None = None      # (width, height) where the source leaves it open


@dataclass(frozen=True)
class QuantizeOptions:
    name: str
    modes: tuple[str, ...]
    calibration: Path | None = None
    samples: int = 100
    stride: int = 1
    io: str | None = None                   # int8 I/O; None: uint8 (TF sources) / int8 (tflite sources)
    per_tensor: bool = False
    spec: InputSpec | None = None           # None: the source's own (SSD graph, float .tflite manifest), else DEFAULT_SPEC
    labels: list[str] | None = None
    layout: str = "auto"
    anchor_options: Path | None = None      # .tflite + ssd_anchors: SsdAnchorsCalculatorOptions JSON, or a manifest
    latency_runs: int = 20
    latency_threads: int = 1
    fuse: bool = True                       # .tflite: fuse standalone activations before quantizing
    progress: bool = True


@dataclass(frozen=True)
class ModeResult:
    mode: str
    path: Path
    size: int
    latency_ms: float
    input_type: str
    output_types: tuple[str, ...]
    xnnpack: XnnpackShare | None = None     # XNNPACK's delegated share at latency_threads


def detect_source(path: Path, inputs: tuple[str, ...] = (), outputs: tuple[str, ...] = (),
                  input_size: tuple[int, int] | None = None) -> SourceModel:
    """Classify ``path`` as one of :data:`KINDS`; errors say what each kind needs."""
    if not path.exists():
        raise ConfigError(f"model {str(path)!r} does not exist",
                          "give a .keras/.h5 file, a SavedModel directory, a frozen graph .pb or a float .tflite")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ConfigError(f"directory {str(path)!r} is not a SavedModel (no saved_model.pb)")
        return SourceModel(path, "saved_model", input_size=input_size)
    suffix = path.suffix.lower()
    if suffix in (".keras", ".h5", ".hdf5"):
        return SourceModel(path, "keras", input_size=input_size)
    if suffix == ".tflite":
        return SourceModel(path, "tflite")
    if suffix == ".pb":
        if inputs or outputs:
            if not (inputs and outputs):
                raise ConfigError(f"frozen graph {path.name}: give both --input-tensors and --output-tensors")
            if input_size is None:
                raise ConfigError(f"frozen graph {path.name}: --input-size WxH is required with tensor names")
            return SourceModel(path, "frozen_graph", inputs, outputs, input_size)
        return SourceModel(path, "ssd_graph")
    raise ConfigError(f"model {str(path)!r} has suffix {suffix or '(none)'!r}",
                      "expected .keras, .h5, .pb, .tflite or a SavedModel directory")


class _TfSource:
    """Makes fresh TFLite converters (they are stateful) for a TensorFlow source."""

    def __init__(self, source: SourceModel, workdir: Path, labels: list[str] | None, layout: str = "auto"):
        self.source = source
        self.tf = tensorflow()
        self.spec_override: InputSpec | None = None
        self.output: dict | None = None
        self.ssd = False
        self._saved: Path | None = None
        self._signature: str | None = None
        if source.kind == "keras":
            self._saved, self._signature = _export_keras(source.path, workdir / "saved", source.input_size)
        elif source.kind == "saved_model":
            self._saved = source.path
        elif source.kind == "ssd_graph":
            self._saved = self._ssd(workdir / "ssd", labels, postprocess=layout != "ssd_anchors")

    def _ssd(self, directory: Path, labels: list[str] | None, postprocess: bool) -> Path:
        from edge.host import export_ssd as ex
        graph_def = ex.load_graph_def(self.source.path)
        facts, wrapped = ex.inspect_graph(graph_def, ex.GraphTensors(), self.source.path)
        if labels is not None and len(labels) != facts.num_classes:
            raise ConfigError(f"{len(labels)} labels given but the graph predicts {facts.num_classes} classes "
                              "(besides background)", "pass a labels file with one label per class")
        params = ex.PostprocessParams()
        self.spec_override = InputSpec(colour="RGB", mean=(facts.mean,) * 3, std=(facts.std,) * 3,
                                       resize="stretch", width=facts.width, height=facts.height)
        self.output = ex.output_table(facts, params, postprocess)
        self.ssd = postprocess      # the post-processing op's outputs must stay float
        return ex.build_saved_model(wrapped, ex.GraphTensors(), facts, params, postprocess, directory)

    def converter(self):
        tf = self.tf
        if self.source.kind == "frozen_graph":
            w, h = self.source.input_size
            try:
                return tf.compat.v1.lite.TFLiteConverter.from_frozen_graph(
                    str(self.source.path), list(self.source.inputs), list(self.source.outputs),
                    {name: [1, h, w, 3] for name in self.source.inputs})
            except ValueError as exc:   # "Invalid tensors 'x' were found.", unparsable graphs
                raise ConfigError(f"frozen graph {self.source.path.name}: {str(exc).strip().splitlines()[0]}",
                                  "check --input-tensors/--output-tensors against the graph's node names") from None
        keys = [self._signature] if self._signature else None
        return tf.lite.TFLiteConverter.from_saved_model(str(self._saved), signature_keys=keys)


def _export_keras(path: Path, directory: Path, input_size: tuple[int, int] | None) -> tuple[Path, str]:
    """Keras 3 model → SavedModel with a batch-1 ``serve`` endpoint (ExportArchive keeps the weights)."""
    tf = tensorflow()
    import keras
    try:
        model = keras.models.load_model(path, compile=False)
    except (ValueError, OSError, TypeError) as exc:
        raise ModelError(f"cannot load Keras model {str(path)!r}: {str(exc).splitlines()[0]}") from None
    shape = list(model.inputs[0].shape)
    if len(shape) != 4:
        raise ModelError(f"Keras model {path.name} takes input shape {shape}; edge models take images "
                         "[batch, height, width, channels]")
    if input_size:
        shape[1:3] = [input_size[1], input_size[0]]
    if shape[1] is None or shape[2] is None:
        raise ConfigError(f"Keras model {path.name} leaves its input size open ({shape})", "pass --input-size WxH")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda x: model(x, training=False),
                         input_signature=[tf.TensorSpec([1, *shape[1:]], tf.float32)])
    archive.write_out(str(directory), verbose=False)
    return directory, "serve"


def _tf_convert(src: _TfSource, mode: str, options: QuantizeOptions,
                representative: Callable | None) -> bytes:
    tf = src.tf
    converter = src.converter()
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode in _CALIBRATED:
        converter.representative_dataset = representative
        if options.per_tensor:
            converter._experimental_disable_per_channel = True
    if mode == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io = options.io or "uint8"
        if io != "float":
            converter.inference_input_type = {"uint8": tf.uint8, "int8": tf.int8}[io]
            # SSD post-processing stays float behind a DEQUANTIZE: quantizing its outputs would also
            # quantize the count and class ids.
            if not src.ssd:
                converter.inference_output_type = {"uint8": tf.uint8, "int8": tf.int8}[io]
    if mode == "int16x8":
        ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        if src.ssd:
            # TFLite_Detection_PostProcess has no 16x8 kernel; it runs float behind a DEQUANTIZE.
            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        converter.target_spec.supported_ops = ops
    try:
        return converter.convert()
    except (ValueError, RuntimeError, TypeError) as exc:
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        raise EdgeError(f"the TFLite converter failed in mode {mode}: {lines[-1] if lines else exc}") from None


def _densified(path: Path, tensors: list[int]) -> dict[int, np.ndarray]:
    """The dense values of DENSIFY outputs ``tensors``, as the TFLite kernel computes them (one
    invoke on zeros, no delegate, every tensor kept): the sparse formats need no decoder here."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with warnings.catch_warnings():   # "preserve_all_tensors ... for debugging purposes": as intended here
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors", category=UserWarning)
        interpreter = Interpreter(model_path=str(path), num_threads=1, experimental_preserve_all_tensors=True,
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interpreter.invoke()
    return {t: interpreter.get_tensor(t).copy() for t in tensors}


def normalise_float_tflite(path: Path, out: Path) -> list[str]:
    """Rewrite a float .tflite the way ai-edge-quantizer needs it: sparse weights behind DENSIFY
    become dense constants, fp16 weights behind DEQUANTIZE ops become float32 constants, opcodes
    stored only in ``deprecated_builtin_code`` get their ``builtin_code``, and a model without a
    signature gets ``serving_default`` (its inputs and outputs by tensor name). Tensors left unused
    are dropped. Writes ``out``; returns what was changed (empty: nothing to do)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    from edge.host.fuse import drop_unused_tensors

    model = flatbuffer_utils.read_model(str(path))
    changes = []
    fixed = 0
    for code in model.operatorCodes:
        best = max(code.builtinCode, code.deprecatedBuiltinCode)
        if code.builtinCode != best:
            code.builtinCode, fixed = best, fixed + 1
    if fixed:
        changes.append(f"{fixed} opcodes taken from deprecated_builtin_code")
    densify = schema.BuiltinOperator.DENSIFY
    graph = model.subgraphs[0]
    sparse = [op for op in graph.operators if model.operatorCodes[op.opcodeIndex].builtinCode == densify]
    if sparse:
        values = _densified(path, [int(op.outputs[0]) for op in sparse])
        for index, dense in values.items():
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(np.ascontiguousarray(dense).tobytes(), np.uint8)
            model.buffers.append(buffer)
            graph.tensors[index].buffer = len(model.buffers) - 1
        graph.operators = [op for op in graph.operators if op not in sparse]
        changes.append(f"{len(sparse)} sparse weights densified (their DENSIFY ops removed)")
    dequantize = schema.BuiltinOperator.DEQUANTIZE
    folded = 0
    for graph in model.subgraphs:
        keep = []
        for op in graph.operators:
            source = graph.tensors[op.inputs[0]] if op.inputs is not None and len(op.inputs) else None
            data = model.buffers[source.buffer].data if source is not None else None
            if (model.operatorCodes[op.opcodeIndex].builtinCode == dequantize
                    and source.type == schema.TensorType.FLOAT16 and data is not None and len(data)):
                values = np.frombuffer(bytes(bytearray(data)), np.float16).astype(np.float32)
                buffer = schema.BufferT()
                buffer.data = np.frombuffer(values.tobytes(), np.uint8)
                model.buffers.append(buffer)
                graph.tensors[op.outputs[0]].buffer = len(model.buffers) - 1
                folded += 1
            else:
                keep.append(op)
        graph.operators = keep
    if folded:
        changes.append(f"{folded} float16 weights made float32 (their DEQUANTIZE ops removed)")
    if not model.signatureDefs:
        graph = model.subgraphs[0]

        def tensor_map(index: int):
            entry = schema.TensorMapT()
            entry.name, entry.tensorIndex = graph.tensors[index].name, int(index)
            return entry

        signature = schema.SignatureDefT()
        signature.signatureKey, signature.subgraphIndex = "serving_default", 0
        signature.inputs = [tensor_map(i) for i in graph.inputs]
        signature.outputs = [tensor_map(i) for i in graph.outputs]
        model.signatureDefs = [signature]
        changes.append("signature serving_default added")
    if changes:
        drop_unused_tensors(model)
        _drop_unused_buffers(model)
    out.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    return changes


def _drop_unused_buffers(model) -> None:
    """Empty the buffers no tensor or metadata entry uses (the fp16 and sparse originals of
    weights made float32), so they do not stay in the file; buffer indices do not change."""
    used = {t.buffer for g in model.subgraphs for t in g.tensors}
    used.update(m.buffer for m in model.metadata or ())
    for i, buffer in enumerate(model.buffers):
        if i not in used and buffer.data is not None:
            buffer.data = None


# Ops that only move values: an output head is walked back through them to the op computing it.
_SHAPE_OPS = frozenset({"RESHAPE", "CONCATENATION", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE"})


def output_heads(info: ModelInfo) -> list[str]:
    """Output tensor names of the ops making each model output: the shape-only ops before it
    (RESHAPE, CONCATENATION, ...) and the computing ops (e.g. the head convolutions) they gather."""
    producer = {t: op for op in info.ops for t in op.outputs}
    names: list[str] = []
    stack = [t.index for t in info.outputs]
    seen: set[int] = set()
    while stack:
        tensor = stack.pop()
        op = producer.get(tensor)
        if op is None or tensor in seen:
            continue
        seen.add(tensor)
        names.extend(info.tensors[t].name for t in op.outputs)
        if op.name in _SHAPE_OPS:
            stack.extend(t for t in op.inputs if t >= 0 and not info.is_constant(t))
    return names


def _aeq_convert(path: Path, mode: str, options: QuantizeOptions, calibration: list[np.ndarray] | None,
                 float_heads: bool = False) -> bytes:
    """ai-edge-quantizer on a float .tflite (it needs a signature; static modes make the I/O int8).
    ``float_heads``: keep the output heads float (:func:`output_heads`)."""
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_path=str(path)).get_signature_list()
    if not signatures:
        raise ModelError(f"{path.name} has no signature; ai-edge-quantizer needs one",
                         "re-export the float model with a serving signature, or quantize its source model")
    key = next(iter(signatures))
    qt = quantizer.Quantizer(str(path))
    op = qtyping.TFLOperationName.ALL_SUPPORTED
    granularity = (qtyping.QuantGranularity.TENSORWISE if options.per_tensor
                   else qtyping.QuantGranularity.CHANNELWISE)
    if mode == "float16":
        qt.add_weight_only_config(".*", op, 16, algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
    elif mode == "dynamic":
        qt.add_dynamic_config(".*", op, 8, granularity=granularity)
    else:
        qt.add_static_config(".*", op, 8 if mode == "int8" else 16, 8, weight_granularity=granularity)
        if read_model(path).find_op(DETECTION_POSTPROCESS_OP) is not None:
            # The post-processing op's outputs (boxes, class ids, scores, count) must stay float:
            # quantizing them destroys the count and class ids (selective quantization).
            log.info("%s: keeping the %s outputs float", path.name, DETECTION_POSTPROCESS_OP)
            qt.update_quantization_recipe(".*", qtyping.TFLOperationName.OUTPUT,
                                          algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
        elif float_heads:
            # Raw detector heads: score logits span hundreds (MediaPipe clips them at ±100) and
            # calibration frames without the object leave the top of that range unseen, so int8
            # would clamp every positive logit; the heads are cheap, keep them float.
            info = read_model(path)
            names = output_heads(info)
            log.info("%s: keeping the output heads float (the %d ops making %s)", path.name, len(names),
                     ", ".join(t.name for t in info.outputs))
            if not all(names):
                log.warning("%s: %d head ops have no output tensor name; ai-edge-quantizer cannot select them, "
                            "they are quantized", path.name, names.count(""))
            scopes = "|".join(re.escape(n) for n in names if n)
            qt.update_quantization_recipe(f"^(?:{scopes});$", op,
                                          algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
            qt.update_quantization_recipe(".*", qtyping.TFLOperationName.OUTPUT,
                                          algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    result = None
    if qt.need_calibration:
        name = signatures[key]["inputs"][0]
        result = qt.calibrate({key: [{name: x} for x in calibration]})
    try:
        return bytes(qt.quantize(result, enable_progress_report=False).quantized_model)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise EdgeError(f"ai-edge-quantizer failed in mode {mode}: {exc}") from None


def latency_ms(path: Path, runs: int, threads: int = 2) -> float:
    """Median invoke time over ``runs`` (after two warm-up runs) with XNNPACK on the CPU."""
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    times = []
    for i in range(runs + 2):
        start = time.perf_counter()
        interpreter.invoke()
        if i >= 2:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times) if times else float("nan")


def measure_modes(paths: list[Path], runs: int, threads: int = 1) -> list[tuple[float, XnnpackShare]]:
    """(median invoke ms, XNNPACK's delegated share) of every model, measured side by side: the
    invokes are interleaved (model 1, 2, ..., 1, 2, ...) so that a slower or busier stretch of a
    shared machine hits every model alike. Two warm-up invokes each; inputs are zeros."""
    from ai_edge_litert.interpreter import Interpreter
    interpreters, shares = [], []
    for path in paths:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
        shares.append(delegation(interpreter))
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        for _ in range(2):
            interpreter.invoke()
        interpreters.append(interpreter)
    times: list[list[float]] = [[] for _ in paths]
    for _ in range(runs):
        for interpreter, samples in zip(interpreters, times):
            start = time.perf_counter()
            interpreter.invoke()
            samples.append((time.perf_counter() - start) * 1000)
    return [(statistics.median(t) if t else float("nan"), share) for t, share in zip(times, shares)]


def _layout(info: ModelInfo, requested: str) -> str:
    if requested != "auto":
        return requested
    if info.find_op(DETECTION_POSTPROCESS_OP) is not None:
        return "ssd_postprocess"
    if len(info.outputs) == 1 and len(info.outputs[0].shape) == 2:
        return "classification"
    raise ConfigError(f"cannot tell the output layout of {info.path.name} (outputs "
                      f"{[list(t.shape) for t in info.outputs]})", f"pass --layout (one of {', '.join(LAYOUTS[1:])})")


def _model_size(info: ModelInfo) -> tuple[int, int]:
    shape = info.inputs[0].shape
    if len(shape) != 4 or shape[3] != 3:
        raise ModelError(f"{info.path.name} takes input {list(shape)}; edge models take [1, height, width, 3] images")
    return int(shape[2]), int(shape[1])


def quantize(source: SourceModel, out_dir: Path, options: QuantizeOptions) -> list[ModeResult]:
    """Write ``<name>_<mode>.tflite`` and ``<name>_<mode>.json`` per mode (plus ``manifest.json``
    naming the int8 and float32 models, and ``comparison.md`` when several modes are written)."""
    bad = [m for m in options.modes if m not in MODES]
    if bad:
        raise ConfigError(f"unknown mode {bad[0]!r}", f"valid: {', '.join(MODES)}, all")
    if options.io not in (None, *IO_TYPES):
        raise ConfigError(f"unknown I/O type {options.io!r}", f"valid: {', '.join(IO_TYPES)}")
    if options.layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {options.layout!r}", f"valid: {', '.join(LAYOUTS)}")
    if source.kind == "tflite" and options.io not in (None, "int8"):
        raise ConfigError(f"--io {options.io} is not available for a .tflite source",
                          "ai-edge-quantizer makes static int8 models with int8 I/O (use --io int8)")
    if options.layout == "ssd_anchors" and source.kind not in ("ssd_graph", "tflite"):
        raise ConfigError("--layout ssd_anchors needs the anchors, which edge-host reads from a TF1 Object "
                          "Detection API SSD graph, or takes from --anchor-options for a float .tflite",
                          "give the SSD frozen graph or a float .tflite, or --layout raw")
    if options.anchor_options is not None and (source.kind != "tflite"
                                               or options.layout not in ("auto", "ssd_anchors")):
        raise ConfigError(f"--anchor-options is given with a {source.kind} source and --layout {options.layout}",
                          "anchor options are for a float .tflite source with --layout ssd_anchors")
    if options.latency_runs <= 0 or options.latency_threads <= 0:
        raise ConfigError(f"latency runs {options.latency_runs} / threads {options.latency_threads} "
                          "must be positive")
    needs_data = any(m in _CALIBRATED for m in options.modes)
    if needs_data and options.calibration is None:
        raise ConfigError(f"modes {', '.join(m for m in options.modes if m in _CALIBRATED)} need calibration data",
                          "pass --calibration (a video, an image folder or a .npy array)")
    if needs_data and not Path(options.calibration).exists():
        raise ConfigError(f"calibration data {str(options.calibration)!r} does not exist",
                          "give a video file, an image folder or a .npy array")
    if options.samples <= 0 or options.stride <= 0:
        raise ConfigError(f"samples {options.samples} / stride {options.stride} must be positive")
    if source.kind == "tflite":
        precision = read_model(source.path).precision
        if precision not in ("float32", "float16"):
            raise ConfigError(f"{source.path.name} is already quantized ({precision})",
                              "give the float model (or its source)")
    modes = ("float32",) + tuple(m for m in MODES[1:] if m in options.modes)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {m: out_dir / f"{options.name}_{m}.tflite" for m in modes}
    with tempfile.TemporaryDirectory(prefix="edge-quantize-") as tmp:
        if source.kind == "tflite":
            src = None
            normalised = Path(tmp) / source.path.name
            changes = normalise_float_tflite(source.path, normalised)
            if changes:
                log.info("%s normalised for ai-edge-quantizer: %s", source.path.name, "; ".join(changes))
            source_for_aeq = normalised if changes else source.path
            shutil.copyfile(source_for_aeq, paths["float32"])     # the float32 model is the (normalised) source
            source_for_aeq = _rewritten(source_for_aeq, Path(tmp) / f"fused_{source.path.name}", options)
        else:
            src = _TfSource(source, Path(tmp), options.labels, options.layout)
            log.info("converting %s to float32", source.path.name)
            paths["float32"].write_bytes(_tf_convert(src, "float32", options, None))
        float_info = read_model(paths["float32"])
        spec, labels_list, source_output = _source_facts(source, src, options, float_info)
        width, height = _model_size(float_info)
        calibration_inputs: list[np.ndarray] | None = None      # read once, for every calibrated mode
        for mode in modes[1:]:
            log.info("converting %s to %s%s", source.path.name, mode,
                     " (per-tensor)" if options.per_tensor and mode in _CALIBRATED else "")
            if src is None:
                if mode in _CALIBRATED and calibration_inputs is None:
                    calibration_inputs = list(float_inputs(options.calibration, spec, (width, height),
                                                           stride=options.stride, limit=options.samples))
                    if not calibration_inputs:
                        raise ConfigError(f"calibration data {str(options.calibration)!r} yielded no frames")
                data = calibration_inputs if mode in _CALIBRATED else None
                float_heads = (source_output or {}).get("layout") == "ssd_anchors"
                paths[mode].write_bytes(_aeq_convert(source_for_aeq, mode, options, data, float_heads))
            else:
                rep = (representative_dataset(options.calibration, spec, (width, height), samples=options.samples,
                                              stride=options.stride, progress=options.progress)
                       if mode in _CALIBRATED else None)
                paths[mode].write_bytes(_tf_convert(src, mode, options, rep))
        output = source_output or {"layout": _layout(float_info, options.layout)}
    if output.get("layout") == "raw":
        output = {}
    if output.get("layout") == "classification" and labels_list is not None:
        classes = float_info.outputs[0].shape[-1]
        if len(labels_list) != classes:
            raise ConfigError(f"{len(labels_list)} labels given but the model predicts {classes} classes",
                              "pass a labels file with one label per class")
    labels = manifests.write_labels(out_dir, labels_list)
    task = "classification" if output.get("layout") == "classification" else "detection"
    source_sha256 = manifests.source_sha256(source.path)     # the same for every mode: hash it once
    results = []
    log.info("measuring %s side by side (%d invokes each, %d thread%s)", ", ".join(modes), options.latency_runs,
             options.latency_threads, "s" if options.latency_threads > 1 else "")
    measured = measure_modes([paths[m] for m in modes], options.latency_runs, options.latency_threads)
    for mode, (latency, share) in zip(modes, measured):
        # float32 is always written: every other mode's float twin.
        models = {"cpu": paths[mode].name, "float": paths["float32"].name}
        manifests.write_manifest(
            paths[mode].with_suffix(".json"), name=options.name, task=task, models=models, labels=labels,
            input=manifests.input_dict(spec, width, height), output=output,
            provenance=_provenance(source, mode, options, source_sha256))
        info = float_info if mode == "float32" else read_model(paths[mode])
        results.append(ModeResult(mode, paths[mode], paths[mode].stat().st_size, latency, info.inputs[0].type,
                                  tuple(t.type for t in info.outputs), share))
    if "int8" in paths:
        shutil.copyfile(paths["int8"].with_suffix(".json"), out_dir / "manifest.json")
    if len(results) > 1:
        (out_dir / "comparison.md").write_text(comparison_table(results, options.latency_threads), encoding="utf-8")
        (out_dir / "comparison.json").write_text(
            json.dumps(comparison_json(results, options.latency_threads), indent=2) + "\n", encoding="utf-8")
    return results


def _rewritten(path: Path, out: Path, options: QuantizeOptions) -> Path:
    """The float model ai-edge-quantizer gets: ``path`` with its standalone activations fused
    (:mod:`edge.host.fuse`), unless ``options.fuse`` is off."""
    if not options.fuse:
        log.info("%s: standalone activations are not fused (fuse off): XNNPACK may split the int8 graph",
                 path.name)
        return path
    from edge.host.fuse import rewrite_for_xnnpack
    changes = rewrite_for_xnnpack(path, out)
    if not changes:
        return path
    log.info("%s rewritten for XNNPACK before quantizing: %s", path.name, "; ".join(changes))
    return out


def _source_facts(source: SourceModel, src: "_TfSource | None", options: QuantizeOptions, float_info: ModelInfo
                  ) -> tuple[InputSpec, list[str] | None, dict | None]:
    """(input spec, labels, output table): an SSD graph's own values win; a float .tflite's manifest
    fills what the flags leave open; otherwise the flags, else :data:`DEFAULT_SPEC`."""
    if src is not None and src.spec_override is not None:
        given = options.spec
        if given is not None and (given.mean, given.std, given.colour) != (
                src.spec_override.mean, src.spec_override.std, src.spec_override.colour):
            log.warning("%s: the graph's own normalisation (mean %.1f, std %.1f, RGB) is used, not the flags",
                        source.path.name, src.spec_override.mean[0], src.spec_override.std[0])
        return src.spec_override, options.labels, dict(src.output)
    if source.kind == "tflite":
        anchors = _anchor_output(options, float_info) if options.anchor_options is not None else None
        found = find_manifest(source.path)
        if found is not None:
            manifest = load_manifest(found)
            log.info("%s: %s from its manifest %s", source.path.name,
                     "labels and layout" if options.spec else "input normalisation, labels and layout", found.name)
            labels = options.labels
            if labels is None and manifest.labels:
                if manifest.labels.is_file():
                    labels = manifests.read_labels(manifest.labels)
                else:
                    log.warning("%s names labels %s, which does not exist: the quantized models get no labels "
                                "(pass --labels)", found.name, manifest.labels)
            output = manifest.output if options.layout in ("auto", manifest.layout) and manifest.output else None
            spec = options.spec or replace(manifest.input, width=0, height=0)
            if anchors is None and output is None:
                anchors = _tflite_output(options, float_info, _mediapipe_preset(options, float_info))
            return spec, labels, anchors or (dict(output) if output else None)
        output = anchors or _tflite_output(options, float_info, _mediapipe_preset(options, float_info))
        if options.spec is not None:
            return options.spec, options.labels, output
        return (*_convention_of(float_info, options.labels), output)
    if options.spec is None:
        log.info("input normalisation: (pixel - 127.5) / 127.5, RGB (the default; see --mean/--std/--colour)")
    return options.spec or DEFAULT_SPEC, options.labels, None


def _convention_of(float_info: ModelInfo, labels: list[str] | None) -> tuple[InputSpec, list[str] | None]:
    """A float .tflite with no manifest and no flags: the device's own rules (TFLite Metadata,
    Ultralytics metadata, a MediaPipe preset; never a guess), so calibration sees what the device
    will feed; labels from the same rules when --labels is not given."""
    from edge.config import ModelConfig
    from edge.runtime.conventions import resolve_input, resolve_labels
    from edge.runtime.manifest import Manifest

    bare = Manifest(path=None, name=float_info.path.stem)
    try:
        convention = resolve_input(float_info, bare, ModelConfig())
    except ModelError as exc:     # the device's remedy names edge run's flags; these are quantize's
        raise ModelError(exc.message, "pass --mean/--std (e.g. 127.5 127.5 for [-1, 1], 0 255 for [0, 1]) "
                                      "and --colour, or put a manifest beside the model") from None
    log.info("%s: input normalisation %s (see --mean/--std/--colour)", float_info.path.name, convention.describe())
    if labels is None:
        found = resolve_labels(float_info, bare, ModelConfig()).load()
        if found and sorted(found) == list(range(len(found))):
            labels = [found[i] for i in range(len(found))]
    return replace(convention.spec, width=0, height=0), labels


def _mediapipe_preset(options: QuantizeOptions, float_info: ModelInfo):
    """The MediaPipe detector preset (:mod:`edge.vision.decode.mediapipe_presets`) the model
    is, when the layout is ``auto`` or ``ssd_anchors``; else None."""
    if options.layout not in ("auto", "ssd_anchors"):
        return None
    from edge.vision.decode.mediapipe_presets import find_preset
    return find_preset(float_info)


def _tflite_output(options: QuantizeOptions, float_info: ModelInfo, preset) -> dict | None:
    """The output table of a float .tflite without anchor options or a manifest giving them: a
    MediaPipe detector the device recognises (``preset``) brings its own; with ``--layout
    ssd_anchors`` anything else is an error; otherwise None (the layout is told from the model)."""
    from edge.vision.decode.mediapipe_presets import preset_output
    if preset is None and options.layout != "ssd_anchors":
        return None
    if preset is None:
        outputs = ", ".join(f"{t.name} {list(t.shape)}" for t in float_info.outputs)
        raise ConfigError(f"--layout ssd_anchors: {float_info.path.name} (outputs {outputs}) comes without anchors",
                          "pass --anchor-options FILE.json (SsdAnchorsCalculatorOptions, or a manifest whose "
                          "output has anchor_options or anchors)")
    log.info("%s is MediaPipe's %s: its anchor options and decoding go into the manifest (%s)",
             float_info.path.name, preset.name, preset.source)
    return {"layout": "ssd_anchors", **preset_output(preset)}


def _anchor_output(options: QuantizeOptions, float_info: ModelInfo) -> dict:
    """The ``ssd_anchors`` output table from ``--anchor-options``: a JSON file of
    SsdAnchorsCalculatorOptions, or a manifest (its ``output`` table, which must give
    ``anchor_options`` or ``anchors``). The anchor count must match the model's outputs."""
    from edge.vision.decode.mediapipe_anchors import AnchorOptions, generate
    path = Path(options.anchor_options)
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--anchor-options {str(path)!r} does not exist",
                          "give a JSON file of SsdAnchorsCalculatorOptions or a manifest") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--anchor-options {str(path)!r} is not JSON ({exc})") from None
    if not isinstance(table, dict):
        raise ConfigError(f"--anchor-options {str(path)!r} holds a {type(table).__name__}",
                          "expected a JSON object: SsdAnchorsCalculatorOptions, or a manifest")
    if "output" in table:
        output = dict(table["output"])
        if output.get("layout", "ssd_anchors") != "ssd_anchors" or not ("anchor_options" in output
                                                                         or "anchors" in output):
            raise ConfigError(f"--anchor-options {path.name}: its output (layout {output.get('layout')!r}) "
                              "gives no anchor_options or anchors", "give a manifest with an ssd_anchors output")
    else:
        output = {"anchor_options": table}
    output = {"layout": "ssd_anchors", **{k: v for k, v in output.items() if k != "layout"}}
    if "anchor_options" in output:
        try:
            count = len(generate(AnchorOptions.from_dict(output["anchor_options"])))
        except ModelError as exc:
            raise ConfigError(f"--anchor-options {path.name}: {exc}") from None
    else:
        count = len(output["anchors"])
    rows = [t.shape[1] for t in float_info.outputs if len(t.shape) >= 2]
    if count not in rows:
        raise ConfigError(f"--anchor-options {path.name} makes {count} anchors but {float_info.path.name}'s "
                          f"outputs have {rows} rows", "give the options of this model's anchors")
    log.info("%s: %d anchors from %s", float_info.path.name, count, path.name)
    return output


def _provenance(source: SourceModel, mode: str, options: QuantizeOptions, source_sha256: str) -> dict:
    quant: dict = {"mode": mode}
    if mode in _CALIBRATED:
        quant.update(per_channel=not options.per_tensor, calibration=Path(options.calibration).name,
                     samples=options.samples, stride=options.stride)
    if mode == "int8":
        quant["io"] = options.io or ("int8" if source.kind == "tflite" else "uint8")
    prov = {"source": source.path.name, "source_sha256": source_sha256,
            "source_kind": source.kind, "exporter": "edge-host quantize", "quantization": quant}
    if source.kind == "tflite":
        prov["quantizer"] = "ai-edge-quantizer"
    else:
        prov["tensorflow"] = tensorflow().__version__
    return prov


def comparison_table(results: list[ModeResult], threads: int = 1) -> str:
    """Markdown: size, CPU latency and XNNPACK's delegated share of every mode, relative to
    float32, with a sentence for each mode slower than float32 saying why."""
    base = next((r for r in results if r.mode == "float32"), results[0])
    lines = [f"| mode | file | size (KB) | size vs float32 | latency (ms, median, {threads} thread"
             f"{'s' if threads > 1 else ''}) | latency vs float32 | XNNPACK partitions | XNNPACK nodes | "
             "input | outputs |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in results:
        share = r.xnnpack
        partitions = str(share.partitions) if share else "-"
        nodes = f"{share.delegated_nodes}/{share.total_nodes}" if share else "-"
        lines.append(f"| {r.mode} | {r.path.name} | {r.size / 1024:.0f} | {r.size / base.size:.2f} | "
                     f"{r.latency_ms:.2f} | {r.latency_ms / base.latency_ms:.2f} | {partitions} | {nodes} | "
                     f"{r.input_type} | {', '.join(sorted(set(r.output_types)))} |")
    notes = [f"- {why}" for why in (why_slower(r, base) for r in results if r is not base) if why]
    return "\n".join(lines) + "\n" + ("\n" + "\n".join(notes) + "\n" if notes else "")


def comparison_json(results: list[ModeResult], threads: int = 1) -> dict:
    base = next((r for r in results if r.mode == "float32"), results[0])
    return {"latency_threads": threads, "modes": [
        {"mode": r.mode, "file": r.path.name, "size_bytes": r.size, "size_vs_float32": round(r.size / base.size, 4),
         "latency_ms": round(r.latency_ms, 4), "latency_vs_float32": round(r.latency_ms / base.latency_ms, 4),
         "input": r.input_type, "outputs": list(r.output_types),
         "xnnpack": r.xnnpack.as_dict() if r.xnnpack else None, "slower_because": why_slower(r, base)}
        for r in results]}


def float_ops_inside(info: ModelInfo) -> Counter:
    """Ops of a quantized model that compute in float (QUANTIZE/DEQUANTIZE aside), by name."""
    return Counter(op.name for op in info.ops if op.name not in ("QUANTIZE", "DEQUANTIZE") and op.outputs
                   and info.tensors[op.outputs[0]].type in ("FLOAT32", "FLOAT16"))


def why_slower(result: ModeResult, base: ModeResult) -> str | None:
    """Why ``result`` runs slower than the float32 model ``base`` (None when it does not)."""
    if result.latency_ms <= base.latency_ms or result.xnnpack is None or base.xnnpack is None:
        return None
    ratio = result.latency_ms / base.latency_ms
    head = f"{result.mode} is {ratio:.2f}x slower than float32"
    share, float_share = result.xnnpack, base.xnnpack

    def listed(counts: Counter) -> str:
        return ", ".join(f"{n} {op}" for op, n in counts.most_common())

    if share.partitions > float_share.partitions or share.fraction < float_share.fraction:
        def parts(n: int) -> str:
            return f"{n} partition{'s' if n != 1 else ''}"
        split = (f"XNNPACK splits it into {parts(share.partitions)}" if share.partitions > float_share.partitions
                 else f"XNNPACK takes it as {parts(share.partitions)}")
        return (f"{head}: {split} and leaves {share.total_nodes - share.delegated_nodes} of {share.total_nodes} "
                f"nodes to TFLite's reference kernels ({listed(share.cpu_ops)}), against "
                f"{parts(float_share.partitions)} and {float_share.delegated_nodes}/{float_share.total_nodes} "
                "nodes for float32.")
    info = read_model(result.path)
    kept = float_ops_inside(info) if result.mode in ("int8", "int16x8") else Counter()
    if kept:
        converts = Counter(op.name for op in info.ops if op.name in ("QUANTIZE", "DEQUANTIZE"))
        return (f"{head} although XNNPACK takes it whole ({share.describe()}): {listed(kept)} compute in "
                f"float inside it (ops ai-edge-quantizer does not quantize, or output heads kept float), with "
                f"{listed(converts)} converting around them; the rest is XNNPACK's own int8 kernels against "
                "its float32 ones for these layer shapes on this CPU.")
    return (f"{head} although XNNPACK takes both alike ({share.describe()}): the difference is XNNPACK's "
            f"own {result.mode} kernels against its float32 ones for these layer shapes on this CPU; measure "
            "on the target device.")


def parse_modes(text: str) -> tuple[str, ...]:
    """``all`` or a comma-separated list of :data:`MODES`; an unknown name is an error."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if names == ["all"]:
        return MODES
    bad = [n for n in names if n not in MODES]
    if bad or not names:
        raise ConfigError(f"unknown mode {bad[0] if bad else text!r}", f"valid: {', '.join(MODES)}, all")
    return tuple(names)
