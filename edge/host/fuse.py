"""Float-graph rewrites, before ai-edge-quantizer, so that XNNPACK takes the int8 model whole.

XNNPACK runs RELU, RELU6 and PRELU in float only (its delegate checks the tensors are
float32/float16). Graphs converted from other frameworks often keep activations as nodes of their
own: the float model still runs as one XNNPACK partition (XNNPACK fuses them internally), but
once quantized every such node falls back to TFLite's reference kernels and splits the graph
(MediaPipe's face detector: 17 RELUs, 18 partitions, int8 several times slower than float).

* :func:`fuse_activations` makes a RELU / RELU6 / RELU_N1_TO_1 whose input comes from a CONV_2D,
  DEPTHWISE_CONV_2D, ADD, SUB, MUL or FULLY_CONNECTED without an activation (and used by nothing
  else) that op's fused activation: exact in float, and the int8 op clamps in its requantization.
* :func:`fold_pads` folds a symmetric zero PAD before a stride-1 k x k convolution into the
  convolution's SAME padding: exact. The float model runs as fast either way; the int8 one
  measured 10% faster without them (MediaPipe's full-range face detector: 36 such PADs).

PRELU is left alone: ai-edge-quantizer 0.10 does not quantize it (it stays float between a
DEQUANTIZE and a QUANTIZE, all three run by XNNPACK), and rewriting it as int8 MUL/ADD ops
(x + (1 - a) relu(-x)) measured slower than that on MediaPipe's palm detector.

It works on the object API of the TFLite schema (``ai_edge_litert.schema_py_generated``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FUSABLE_ACTIVATIONS = ("RELU", "RELU6", "RELU_N1_TO_1")
FUSING_OPS = {   # op → its BuiltinOptions table name
    "CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions", "ADD": "AddOptions",
    "SUB": "SubOptions", "MUL": "MulOptions", "FULLY_CONNECTED": "FullyConnectedOptions"}


def _schema():
    from ai_edge_litert import schema_py_generated as schema
    return schema


def _op_name(model, op) -> str:
    schema = _schema()
    code = model.operatorCodes[op.opcodeIndex]
    number = max(code.builtinCode, code.deprecatedBuiltinCode)
    return next((k for k, v in vars(schema.BuiltinOperator).items() if v == number and not k.startswith("_")),
                str(number))


def _consumers(graph) -> dict[int, list]:
    uses: dict[int, list] = {}
    for op in graph.operators:
        for t in op.inputs if op.inputs is not None else ():
            if t >= 0:
                uses.setdefault(int(t), []).append(op)
    return uses


def _options(model, op, name: str):
    """The op's builtin options table, created (all defaults) when the file leaves it out."""
    schema = _schema()
    if op.builtinOptions is None:
        op.builtinOptionsType = getattr(schema.BuiltinOptions, name)
        op.builtinOptions = getattr(schema, name + "T")()
    return op.builtinOptions


def fuse_activations(model) -> int:
    """Fold standalone RELU / RELU6 / RELU_N1_TO_1 into the op producing their input, in every
    subgraph (see the module doc). Returns how many were folded."""
    schema = _schema()
    activation = {"RELU": schema.ActivationFunctionType.RELU, "RELU6": schema.ActivationFunctionType.RELU6,
                  "RELU_N1_TO_1": schema.ActivationFunctionType.RELU_N1_TO_1}
    folded = 0
    for graph in model.subgraphs:
        producers = {int(t): op for op in graph.operators for t in (op.outputs if op.outputs is not None else ())}
        uses = _consumers(graph)
        outputs = {int(t) for t in graph.outputs}
        removed = set()
        for op in graph.operators:
            name = _op_name(model, op)
            if name not in FUSABLE_ACTIVATIONS:
                continue
            source = int(op.inputs[0])
            producer = producers.get(source)
            if (producer is None or id(producer) in removed or len(uses.get(source, ())) != 1
                    or source in outputs or len(producer.outputs) != 1):
                continue
            kind = _op_name(model, producer)
            if kind not in FUSING_OPS:
                continue
            options = _options(model, producer, FUSING_OPS[kind])
            if options.fusedActivationFunction != schema.ActivationFunctionType.NONE:
                continue
            options.fusedActivationFunction = activation[name]
            producer.outputs = [int(op.outputs[0])]
            producers[int(op.outputs[0])] = producer
            removed.add(id(op))
            folded += 1
        graph.operators = [op for op in graph.operators if id(op) not in removed]
    return folded


def fold_pads(model) -> int:
    """Fold a zero PAD of (k - 1) / 2 rows and columns on each side into the stride-1 k x k
    CONV_2D / DEPTHWISE_CONV_2D (VALID) that alone takes it, which becomes SAME: exact, and one
    pass over the activations fewer. Returns how many were folded."""
    schema = _schema()
    folded = 0
    for graph in model.subgraphs:
        uses = _consumers(graph)
        outputs = {int(t) for t in graph.outputs}
        removed = set()
        for op in graph.operators:
            if _op_name(model, op) != "PAD" or len(op.inputs) != 2:
                continue
            padded = int(op.outputs[0])
            consumers = uses.get(padded, [])
            if len(consumers) != 1 or padded in outputs:
                continue
            conv = consumers[0]
            if _op_name(model, conv) not in ("CONV_2D", "DEPTHWISE_CONV_2D") or int(conv.inputs[0]) != padded:
                continue
            options = conv.builtinOptions
            if (options is None or options.padding != schema.Padding.VALID or (options.strideW, options.strideH) != (1, 1)
                    or (options.dilationWFactor, options.dilationHFactor) != (1, 1)):
                continue
            paddings = _int_constant(model, graph, int(op.inputs[1]))
            kernel = graph.tensors[int(conv.inputs[1])].shape   # [O, kh, kw, I] or [1, kh, kw, C]
            if paddings is None or paddings.shape != (4, 2) or kernel is None or len(kernel) != 4:
                continue
            kh, kw = int(kernel[1]), int(kernel[2])
            if kh % 2 == 0 or kw % 2 == 0:
                continue
            same = [[0, 0], [(kh - 1) // 2] * 2, [(kw - 1) // 2] * 2, [0, 0]]
            if paddings.tolist() != same:
                continue
            options.padding = schema.Padding.SAME
            conv.inputs = [int(op.inputs[0]), *[int(t) for t in conv.inputs[1:]]]
            removed.add(id(op))
            folded += 1
        graph.operators = [op for op in graph.operators if id(op) not in removed]
    return folded


def _int_constant(model, graph, index: int) -> np.ndarray | None:
    tensor = graph.tensors[index]
    data = model.buffers[tensor.buffer].data if tensor.buffer else None
    if data is None or not len(data) or tensor.type not in (_schema().TensorType.INT32, _schema().TensorType.INT64):
        return None
    dtype = np.int32 if tensor.type == _schema().TensorType.INT32 else np.int64
    return np.frombuffer(bytes(bytearray(data)), dtype).reshape(tuple(tensor.shape))


def drop_unused_tensors(model) -> int:
    """Remove tensors no op, graph input/output or signature uses (a fused op's old output: the
    quantizer's calibration reads every tensor and fails on one with no data). Returns how many."""
    dropped = 0
    for index, graph in enumerate(model.subgraphs):
        used = {int(t) for t in graph.inputs} | {int(t) for t in graph.outputs}
        for op in graph.operators:
            for field in (op.inputs, op.outputs, op.intermediates):
                used.update(int(t) for t in (field if field is not None else ()) if t >= 0)
        signatures = [s for s in model.signatureDefs or () if s.subgraphIndex == index]
        for signature in signatures:
            used.update(int(m.tensorIndex) for m in (signature.inputs or []) + (signature.outputs or []))
        keep = sorted(used)
        if len(keep) == len(graph.tensors):
            continue
        new = {old: i for i, old in enumerate(keep)}
        dropped += len(graph.tensors) - len(keep)
        graph.tensors = [graph.tensors[i] for i in keep]

        def remap(field):
            return None if field is None else [new[int(t)] if t >= 0 else int(t) for t in field]

        for op in graph.operators:
            op.inputs, op.outputs, op.intermediates = remap(op.inputs), remap(op.outputs), remap(op.intermediates)
        graph.inputs, graph.outputs = remap(graph.inputs), remap(graph.outputs)
        for signature in signatures:
            for entry in (signature.inputs or []) + (signature.outputs or []):
                entry.tensorIndex = new[int(entry.tensorIndex)]
    return dropped


def rewrite_for_xnnpack(path: Path, out: Path) -> list[str]:
    """Fuse the standalone activations and fold the PADs of the float model ``path``, write
    ``out``; returns what was changed (empty: nothing, and ``out`` is not written)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    changes = []
    folded = fuse_activations(model)
    if folded:
        changes.append(f"{folded} standalone activations fused into the op before them")
    pads = fold_pads(model)
    if pads:
        changes.append(f"{pads} PADs folded into the stride-1 convolution after them (SAME padding)")
    if changes:
        drop_unused_tensors(model)
        out.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    return changes
