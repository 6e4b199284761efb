"""Static check of a .tflite file against the Edge TPU's documented model requirements.

Source: "TensorFlow models on the Edge TPU" (https://coral.ai/docs/edgetpu/models-intro/), sections
"Model requirements" and "Supported operations":

- tensor parameters quantized to 8 bits (int8/uint8; biases int32), activations int8/uint8;
- tensor sizes constant at compile time (no dynamic shapes), model parameters constant;
- tensors 1-, 2- or 3-dimensional; with more dimensions only the 3 innermost may exceed 1;
- only the operations of the supported-operations table, with their listed limitations;
- the compiler partitions the graph once: from the first op that cannot run on the Edge TPU on,
  that op and every op depending on it run on the CPU, even the supported ones.

This predicts what ``edgetpu_compiler`` will map without needing the compiler (which exists only for
x86-64 Linux). The compiler has limits that cannot be read from the file (on-chip memory, "certain
reshapes might not be mapped for large tensor sizes", and RESIZE_BILINEAR / RESIZE_NEAREST_NEIGHBOR,
which "depending on input/output size ... might not be mapped to the Edge TPU to avoid loss in
precision" by an undisclosed rule, google-coral/edgetpu#31), so the real mapping is the compiler's
log (``edge-host compile``); this check says why an op cannot map, and names the resize ops whose
mapping the compiler decides by size (``size_dependent``) with what would follow if one stayed on
the CPU. ``check_model(model, assume_cpu={i})`` replays that case, e.g. from a compiler log.

Checked against the real compiler's output: tests/conformance/test_edgetpu_twins.py compares this
prediction with the ``_edgetpu`` twins of Coral's test models, made by Google's edgetpu_compiler.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.runtime.model import ModelInfo, OpInfo, read_model

QUANTIZED_TYPES = frozenset({"INT8", "UINT8"})
# Constant inputs may also be int32 (quantized biases) or integer shape/axis/padding operands.
CONSTANT_TYPES = QUANTIZED_TYPES | {"INT32", "INT64"}

# TFLite builtin name -> limitation text of the supported-operations table ("" = none listed).
SUPPORTED_OPS: dict[str, str] = {
    "ADD": "",
    "AVERAGE_POOL_2D": "No fused activation function.",
    "CONCATENATION": "No fused activation function. If any input is a compile-time constant tensor, there "
                     "must be only 2 inputs, and this constant tensor must be all zeroes.",
    "CONV_2D": "Must use the same dilation in x and y dimensions.",
    "DEPTHWISE_CONV_2D": "Must use the same dilation in x and y dimensions.",
    "EXPAND_DIMS": "",
    "FULLY_CONNECTED": "Only the default format is supported for fully-connected weights. Output tensor is "
                       "one-dimensional.",
    "L2_NORMALIZATION": "",
    "LOGISTIC": "",
    "LSTM": "Unidirectional LSTM only.",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "Unidirectional LSTM only.",
    "MAXIMUM": "",
    "MAX_POOL_2D": "No fused activation function.",
    "MEAN": "No reduction in batch dimension. If a z-reduction, the z-dimension must be multiple of 4.",
    "MINIMUM": "",
    "MUL": "",
    "PACK": "No packing in batch dimension.",
    "PAD": "No padding in batch dimension.",
    "PRELU": "Alpha must be 1-dimensional (only the innermost dimension can be >1 size).",
    "QUANTIZE": "",
    "REDUCE_MAX": "Cannot operate on the batch dimension.",
    "REDUCE_MIN": "Cannot operate on the batch dimension.",
    "RELU": "",
    "RELU6": "",
    "RELU_N1_TO_1": "",
    "RESHAPE": "Certain reshapes might not be mapped for large tensor sizes.",
    "RESIZE_BILINEAR": "Input/output is a 3-dimensional tensor.",
    "RESIZE_NEAREST_NEIGHBOR": "Input/output is a 3-dimensional tensor.",
    "RSQRT": "",
    "SLICE": "",
    "SOFTMAX": "Supports only 1-D input tensor with a max of 16,000 elements.",
    "SPACE_TO_DEPTH": "",
    "SPLIT": "No splitting in batch dimension.",
    "SQUEEZE": "",
    "SQUARED_DIFFERENCE": "",
    "STRIDED_SLICE": "Supported only when all strides are equal to 1, with ellipsis-axis-mask == 0 and "
                     "new-axis-mask == 0.",
    "SUB": "",
    "SUM": "Cannot operate on the batch dimension.",
    "TANH": "",
    "TRANSPOSE": "",
    "TRANSPOSE_CONV": "",
}

SOFTMAX_MAX_ELEMENTS = 16000

# The LSTM ops' cell-state input (TFLite schema: input 19 of LSTM and UNIDIRECTIONAL_SEQUENCE_LSTM).
# In a full-integer LSTM it is int16 by TFLite's quantization spec (8-bit activations, 16-bit cell
# state); the compiler maps such an LSTM whole (keras_lstm_mnist_ptq_edgetpu.tflite of Coral's test
# data: its int16 cell state is an input of edgetpu-custom-op).
LSTM_OPS = frozenset({"LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM"})
LSTM_CELL_STATE_INPUT = 19

# Ops the compiler maps or not depending on tensor sizes, by a rule it does not disclose.
SIZE_DEPENDENT_OPS = frozenset({"RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"})

# Status categories, worded like the compiler's operation log where it has a wording.
UNSUPPORTED_OP = "Operation not supported"
UNSUPPORTED_TYPE = "Operation is working on an unsupported data type"
DYNAMIC_SHAPE = "Tensor has a dynamic shape"
TOO_MANY_DIMS = "Tensor has more than 3 dimensions larger than 1"
LIMITATION = "Operation violates a documented limitation"
ASSUMED_CPU = "Assumed on the CPU (given by the caller)"
AFTER_CPU_OP = "More than one subgraph is not supported"     # the compiler's words for ops after a CPU op


@dataclass(frozen=True)
class OpVerdict:
    """One operator of the graph: can it run on the Edge TPU, and will it?"""

    index: int
    name: str
    reason: str = ""          # status category: why the op itself cannot run on the Edge TPU ("" = it can)
    detail: str = ""          # the specific tensor, value or limitation
    blocked_by: int | None = None   # index of the CPU op it depends on (mapped ops only after it)
    input_conversion: bool = False  # a float->int QUANTIZE of a model input, left on the CPU

    @property
    def supported(self) -> bool:
        return not self.reason

    @property
    def on_tpu(self) -> bool:
        return self.supported and self.blocked_by is None

    @property
    def status(self) -> str:
        if self.on_tpu:
            return "Mapped to Edge TPU"
        return self.reason or AFTER_CPU_OP

    def describe(self) -> str:
        if self.on_tpu:
            return f"#{self.index} {self.name}: mapped to Edge TPU"
        if self.reason:
            return f"#{self.index} {self.name}: {self.reason}: {self.detail}"
        return f"#{self.index} {self.name}: depends on op #{self.blocked_by}, which runs on the CPU"


@dataclass(frozen=True)
class CheckReport:
    path: Path
    verdicts: tuple[OpVerdict, ...]
    problems: tuple[str, ...]     # model-level findings (not quantized, several subgraphs, ...)
    # Mapped ops whose mapping the compiler decides by size (SIZE_DEPENDENT_OPS): (index, CPU ops
    # of the whole model if that op stayed on the CPU, with everything depending on it).
    size_dependent: tuple[tuple[int, int], ...] = ()

    @property
    def tpu_ops(self) -> int:
        return sum(v.on_tpu for v in self.verdicts)

    @property
    def cpu_ops(self) -> int:
        return len(self.verdicts) - self.tpu_ops

    @property
    def tpu_subgraphs(self) -> int:
        """Edge TPU subgraphs (``edgetpu-custom-op`` ops) the compiler would make: it partitions once,
        so every mapped op is in one subgraph."""
        return 1 if self.tpu_ops else 0

    def cpu_op_counts(self) -> dict[str, int]:
        """Operator name -> how many of them run on the CPU (what stays outside edgetpu-custom-op)."""
        return dict(Counter(v.name for v in self.verdicts if not v.on_tpu))

    @property
    def first_cpu_op(self) -> OpVerdict | None:
        """The first op (graph order) that cannot run on the Edge TPU, input conversions aside."""
        return next((v for v in self.verdicts if not v.supported and not v.input_conversion), None)

    def table(self) -> list[tuple[str, int, str]]:
        """(operator, count, status) rows, like the compiler's operation table."""
        counts = Counter((v.name, v.status) for v in self.verdicts)
        return [(name, n, status) for (name, status), n in counts.items()]

    def lines(self, details: bool = False) -> list[str]:
        """The report; ``details`` adds one line per op that runs on the CPU."""
        out = [f"model: {self.path}"]
        out += [f"problem: {p}" for p in self.problems]
        out.append(f"{'Operator':<32}{'Count':<8}Status")
        out += [f"{name:<32}{n:<8}{status}" for name, n, status in self.table()]
        out.append(f"Number of operations that would run on Edge TPU: {self.tpu_ops}")
        out.append(f"Number of operations that would run on CPU: {self.cpu_ops}")
        out.append(f"Number of Edge TPU subgraphs: {self.tpu_subgraphs}")
        first = self.first_cpu_op
        if first is not None:
            out.append(f"first op on the CPU: {first.describe()}")
        for index, cpu_ops in self.size_dependent:
            out.append(f"size-dependent: #{index} {self.verdicts[index].name} may stay on the CPU (the compiler "
                       f"decides by input/output size); then {cpu_ops} ops would run on the CPU")
        if details:
            out += [f"  {v.describe()}" for v in self.verdicts if not v.on_tpu]
        return out

    def as_dict(self) -> dict:
        first = self.first_cpu_op
        return {"model": str(self.path), "tpu_ops": self.tpu_ops, "cpu_ops": self.cpu_ops,
                "tpu_subgraphs": self.tpu_subgraphs, "cpu_op_counts": self.cpu_op_counts(),
                "problems": list(self.problems),
                "size_dependent": [{"index": i, "operator": self.verdicts[i].name, "cpu_ops_if_on_cpu": n}
                                   for i, n in self.size_dependent],
                "first_cpu_op": None if first is None else {"index": first.index, "name": first.name,
                                                            "reason": first.reason, "detail": first.detail},
                "operators": [{"operator": o, "count": n, "status": s} for o, n, s in self.table()]}


def _effective_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape without leading 1s (a [1, 1000] tensor is one-dimensional for the Edge TPU)."""
    i = 0
    while i < len(shape) - 1 and shape[i] == 1:
        i += 1
    return tuple(shape[i:])


def _axes(model: ModelInfo, tensor_index: int, rank: int) -> tuple[int, ...] | None:
    value = model.constant(tensor_index)
    if value is None:
        return None
    return tuple(int(a) % rank if rank else int(a) for a in np.atleast_1d(value))


def _tensor_problem(model: ModelInfo, index: int, allowed: frozenset[str] = QUANTIZED_TYPES) -> tuple[str, str]:
    """(category, detail) of why tensor ``index`` cannot be used on the Edge TPU, or ('', '').

    ``allowed``: the quantized types accepted for this (non-constant) tensor.
    """
    tensor = model.tensors[index]
    if model.is_constant(index):
        if tensor.type not in CONSTANT_TYPES:
            return UNSUPPORTED_TYPE, f"{tensor.type.lower()} constant {tensor.name!r}"
        return "", ""
    if tensor.type not in allowed or tensor.quantization is None:
        return UNSUPPORTED_TYPE, f"{tensor.type.lower()} tensor {tensor.name!r}, expected quantized int8/uint8"
    if tensor.dynamic:
        return DYNAMIC_SHAPE, f"{tensor.name!r} has shape signature {list(tensor.shape_signature)}"
    if len(tensor.shape) > 3 and any(d > 1 for d in tensor.shape[:-3]):
        return TOO_MANY_DIMS, f"{tensor.name!r} {list(tensor.shape)}"
    return "", ""


def _op_limit(model: ModelInfo, op: OpInfo) -> str:
    """The violated limitation of the supported-operations table, or ''."""
    name = op.name
    inputs = [i for i in op.inputs if i >= 0]
    first_shape = model.tensors[inputs[0]].shape if inputs else ()
    if name in ("AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION") and op.fused_activation != "NONE":
        return f"fused activation {op.fused_activation} is not supported (no fused activation allowed)"
    if name == "CONCATENATION":
        constants = [i for i in inputs if model.is_constant(i)]
        if constants and (len(inputs) != 2 or any(np.any(model.constant(i)) for i in constants)):
            return "a constant input is only supported as the all-zero second of 2 inputs (zero padding)"
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        at = 4 if name == "CONV_2D" else 5
        dilation_w, dilation_h = op.option(at, "i", 1), op.option(at + 1, "i", 1)
        if dilation_w != dilation_h:
            return f"dilation {dilation_w}x{dilation_h}: x and y dilation must be equal"
    if name == "FULLY_CONNECTED":
        if op.option(1, "b") != 0:
            return "weights in a shuffled format; only the default format is supported"
        out = model.tensors[op.outputs[0]].shape
        if len(_effective_shape(out)) > 1:
            return f"output {list(out)} is not one-dimensional"
    if name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN") and len(inputs) > 1:
        axes = _axes(model, inputs[1], len(first_shape))
        if axes is None:
            return "reduction axes are not a compile-time constant"
        if 0 in axes and len(first_shape) > 1:
            return f"reduction over the batch dimension (axes {list(axes)})"
        if name == "MEAN" and len(first_shape) - 1 in axes and first_shape and first_shape[-1] % 4:
            return f"z-reduction over {first_shape[-1]} channels, which is not a multiple of 4"
    if name == "PACK" and op.option(1, "i") == 0 and len(first_shape) > 0:
        return "packing in the batch dimension (axis 0)"
    if name == "PAD" and len(inputs) > 1:
        paddings = model.constant(inputs[1])
        if paddings is None:
            return "paddings are not a compile-time constant"
        if len(first_shape) > 1 and np.any(paddings.reshape(-1, 2)[0]):
            return f"padding in the batch dimension ({paddings.reshape(-1, 2)[0].tolist()})"
    if name == "PRELU" and len(inputs) > 1:
        alpha = model.tensors[inputs[1]].shape
        if any(d > 1 for d in alpha[:-1]):
            return f"alpha {list(alpha)}: only the innermost dimension may be larger than 1"
    if name == "SPLIT" and len(inputs) > 1:
        rank = len(model.tensors[inputs[1]].shape)
        axes = _axes(model, inputs[0], rank)
        if axes is None:
            return "split axis is not a compile-time constant"
        if 0 in axes and rank > 1:
            return "splitting in the batch dimension (axis 0)"
    if name == "SOFTMAX":
        shape = _effective_shape(first_shape)
        if len(shape) > 1 or int(np.prod(shape)) > SOFTMAX_MAX_ELEMENTS:
            return f"input {list(first_shape)}: only a 1-D input of at most {SOFTMAX_MAX_ELEMENTS} elements"
    if name == "STRIDED_SLICE":
        strides = model.constant(inputs[3]) if len(inputs) > 3 else None
        if strides is None or np.any(strides != 1):
            return f"strides {None if strides is None else strides.tolist()}: all strides must be 1"
        if op.option(2, "i") or op.option(3, "i"):
            return "ellipsis_mask and new_axis_mask must be 0"
    if name in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR") and len(first_shape) == 4 and first_shape[0] > 1:
        return f"input {list(first_shape)} is not 3-dimensional (batch > 1)"
    return ""


def _allowed_input_types(op: OpInfo, position: int) -> frozenset[str]:
    """Quantized types accepted for input ``position`` of ``op`` (int16 only for an LSTM's cell state)."""
    if op.name in LSTM_OPS and position == LSTM_CELL_STATE_INPUT:
        return QUANTIZED_TYPES | {"INT16"}
    return QUANTIZED_TYPES


def _op_reason(model: ModelInfo, op: OpInfo) -> tuple[str, str]:
    """(category, detail) of why ``op`` itself cannot run on the Edge TPU, or ('', '')."""
    if op.custom:
        return UNSUPPORTED_OP, f"custom op {op.name!r} is not in the Edge TPU's supported operations"
    if op.name not in SUPPORTED_OPS:
        return UNSUPPORTED_OP, f"{op.name} is not in the Edge TPU's supported operations"
    for position, index in enumerate(op.inputs):
        if index >= 0:
            problem = _tensor_problem(model, index, _allowed_input_types(op, position))
            if problem[0]:
                return problem
    for index in op.outputs:
        if index >= 0:
            problem = _tensor_problem(model, index)
            if problem[0]:
                return problem
    limit = _op_limit(model, op)
    return (LIMITATION, f"{limit} (documented: {SUPPORTED_OPS[op.name]})") if limit else ("", "")


def _is_input_conversion(model: ModelInfo, op: OpInfo) -> bool:
    """A QUANTIZE of a float model input: the compiler leaves it on the CPU and maps what follows."""
    model_inputs = {t.index for t in model.inputs}
    return (op.name == "QUANTIZE" and len(op.inputs) == 1 and op.inputs[0] in model_inputs
            and model.tensors[op.inputs[0]].type not in QUANTIZED_TYPES
            and model.tensors[op.outputs[0]].type in QUANTIZED_TYPES)


def check_model(model: ModelInfo, assume_cpu: frozenset[int] | set[int] = frozenset()) -> CheckReport:
    """Predict the Edge TPU mapping of the main subgraph of ``model``.

    ``assume_cpu``: indices of ops to treat as staying on the CPU although the file shows no reason
    (the compiler's size-dependent decisions, e.g. read from its log); what depends on them follows.
    """
    problems = []
    if model.edgetpu:
        problems.append("the model is already compiled for the Edge TPU (contains edgetpu-custom-op)")
    if model.subgraphs > 1:
        problems.append(f"{model.subgraphs} subgraphs: the Edge TPU compiler maps only the main one "
                        "(ops in the others run on the CPU)")
    if model.precision != "int8":
        problems.append(f"the model is {model.precision}, not full-integer int8: the compiler rejects it "
                        "(\"Model not quantized\"); quantize it with edge-host quantize --mode int8")
    unknown = sorted(i for i in assume_cpu if not 0 <= i < len(model.ops))
    if unknown:
        raise ValueError(f"assume_cpu: no op #{unknown[0]} in {model.path.name} (ops 0..{len(model.ops) - 1})")
    verdicts = _partition(model, frozenset(assume_cpu))
    size_dependent = tuple(
        (v.index, sum(not w.on_tpu for w in _partition(model, frozenset(assume_cpu) | {v.index})))
        for v in verdicts if v.on_tpu and v.name in SIZE_DEPENDENT_OPS)
    return CheckReport(model.path, verdicts, tuple(problems), size_dependent)


def _partition(model: ModelInfo, assume_cpu: frozenset[int]) -> tuple[OpVerdict, ...]:
    """One verdict per op: its own reason, else the CPU op it depends on (the compiler partitions once)."""
    producer = {t: i for i, op in enumerate(model.ops) for t in op.outputs}
    verdicts: list[OpVerdict] = []
    cpu_source: dict[int, int] = {}       # op index -> the CPU op it depends on (itself if unsupported)
    for i, op in enumerate(model.ops):
        reason, detail = _op_reason(model, op)
        if not reason and i in assume_cpu:
            reason, detail = ASSUMED_CPU, "the compiler keeps it on the CPU (size-dependent limit)"
        conversion = bool(reason) and _is_input_conversion(model, op)
        blocked = None
        for t in op.inputs:
            src = producer.get(t)
            if src is not None and src in cpu_source:
                blocked = cpu_source[src]
                break
        if reason and not conversion:
            cpu_source[i] = i if blocked is None else blocked
        elif blocked is not None:
            cpu_source[i] = blocked
        verdicts.append(OpVerdict(i, op.name, reason, detail, blocked if not reason else None, conversion))
    return tuple(verdicts)


def check_file(path: str | Path) -> CheckReport:
    return check_model(read_model(path))
