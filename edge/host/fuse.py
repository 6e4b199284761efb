"""Float-graph rewrites, before ai-edge-quantizer, so that XNNPACK takes the int8 model whole.

XNNPACK runs RELU, RELU6 and PRELU in float only (its delegate checks the tensors are
float32/float16). Graphs converted from other frameworks often keep activations as nodes of their
own: the float model still runs as one XNNPACK partition (XNNPACK fuses them internally), but
once quantized every such node falls back to TFLite's reference kernels and splits the graph
(MediaPipe's face detector: 17 RELUs, 18 partitions, int8 several times slower than float).

:func:`fuse_activations` makes a RELU / RELU6 / RELU_N1_TO_1 whose input comes from a CONV_2D,
DEPTHWISE_CONV_2D, ADD, SUB, MUL or FULLY_CONNECTED without an activation (and used by nothing
else) that op's fused activation: exact in float, and the int8 op clamps in its requantization.

Tried and left out, as they measured no faster on XNNPACK here: folding the explicit PADs before
stride-1 convolutions into SAME padding (MediaPipe's full-range face detector has 36), and
rewriting PRELU (which ai-edge-quantizer 0.10 does not quantize: it stays float between a
DEQUANTIZE and a QUANTIZE, all three run by XNNPACK) as int8 MUL/ADD ops, x + (1 - a) relu(-x).

It works on the object API of the TFLite schema (``ai_edge_litert.schema_py_generated``).
"""

from __future__ import annotations

from pathlib import Path

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
    """Fuse the standalone activations of the float model ``path``, write ``out``; returns what
    was changed (empty: nothing, and ``out`` is not written)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    changes = []
    folded = fuse_activations(model)
    if folded:
        changes.append(f"{folded} standalone activations fused into the op before them")
    if changes:
        drop_unused_tensors(model)
        out.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    return changes
