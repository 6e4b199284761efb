"""What a .tflite model is, read from the file itself: tensors, quantization, ops, signatures.

:func:`read_model` parses the flatbuffer directly (see :mod:`edge.runtime.flatbuffer`), so it
works for every runtime and for ``_edgetpu`` models on machines without an Edge TPU. Tensor roles
come from here (op, names, signature), never from guessing by tensor size.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge import bounded
from edge.errors import ModelError
from edge.runtime import flatbuffer
from edge.runtime.tflite_schema import ACTIVATIONS, BUILTIN_OPERATORS, BUILTIN_OPTIONS, TENSOR_TYPES

EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
DETECTION_POSTPROCESS_OP = "TFLite_Detection_PostProcess"

# Ops whose first input is the activation and whose weights decide the model's precision.
WEIGHT_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV",
                        "CONV_3D", "BATCH_MATMUL"})

_NUMPY_DTYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT32": np.int32, "UINT8": np.uint8,
                 "INT64": np.int64, "BOOL": np.bool_, "INT16": np.int16, "INT8": np.int8,
                 "FLOAT64": np.float64, "UINT32": np.uint32, "UINT16": np.uint16, "UINT64": np.uint64}


@dataclass(frozen=True)
class Quantization:
    """Affine quantization: real = scale * (q - zero_point); per-channel along ``axis`` if several."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int = 0

    @property
    def per_channel(self) -> bool:
        return len(self.scale) > 1

    def scalar(self) -> tuple[float, int]:
        """(scale, zero_point) of a per-tensor quantization."""
        if self.per_channel:
            raise ModelError(f"expected per-tensor quantization, found {len(self.scale)} channel scales")
        return self.scale[0], self.zero_point[0]


@dataclass(frozen=True)
class TensorInfo:
    index: int
    name: str
    shape: tuple[int, ...]
    type: str                       # TFLite TensorType name, e.g. "UINT8"
    quantization: Quantization | None
    shape_signature: tuple[int, ...] = ()
    buffer: int = 0                 # index into the model's buffers; 0 = no data (not a constant)

    @property
    def dtype(self) -> type:
        try:
            return _NUMPY_DTYPES[self.type]
        except KeyError:
            raise ModelError(f"tensor {self.name!r} has type {self.type}, which edge cannot handle") from None

    @property
    def quantized(self) -> bool:
        return self.quantization is not None and self.type in ("UINT8", "INT8", "INT16")

    @property
    def dynamic(self) -> bool:
        return any(d < 0 for d in self.shape_signature)

    def describe(self) -> str:
        q = ""
        if self.quantization:
            if self.quantization.per_channel:
                q = f" per-channel({len(self.quantization.scale)})"
            else:
                q = f" scale={self.quantization.scale[0]:.6g} zp={self.quantization.zero_point[0]}"
        return f"{self.name} {list(self.shape)} {self.type.lower()}{q}"


@dataclass(frozen=True)
class OpInfo:
    name: str                    # builtin name (e.g. "CONV_2D") or custom code
    custom: bool
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options_type: str = "NONE"   # BuiltinOptions union tag, e.g. "Conv2DOptions"
    options: flatbuffer.Table | None = field(default=None, compare=False, repr=False)

    def option(self, index: int, fmt: str, default: int | float = 0) -> int | float:
        """Scalar field ``index`` (schema order) of the builtin options table, or ``default``."""
        return self.options.scalar(index, fmt, default) if self.options is not None else default

    @property
    def fused_activation(self) -> str:
        """The fused activation (``NONE``, ``RELU``, ``RELU6``...) of ops that have one, else NONE."""
        at = _FUSED_ACTIVATION_FIELD.get(self.options_type)
        if at is None:
            return "NONE"
        code = int(self.option(at, "b"))
        return ACTIVATIONS[code] if 0 <= code < len(ACTIVATIONS) else f"ACTIVATION_{code}"


# Schema field index of fused_activation_function in each options table that carries one.
_FUSED_ACTIVATION_FIELD = {"Conv2DOptions": 3, "DepthwiseConv2DOptions": 4, "Pool2DOptions": 5,
                           "ConcatenationOptions": 1, "FullyConnectedOptions": 0, "AddOptions": 0,
                           "MulOptions": 0, "SubOptions": 0, "DivOptions": 0, "L2NormOptions": 0,
                           "TransposeConvOptions": 3, "SVDFOptions": 1, "RNNOptions": 0,
                           "LSTMOptions": 0, "SequenceRNNOptions": 1,
                           "UnidirectionalSequenceLSTMOptions": 0, "Conv3DOptions": 4}


@dataclass(frozen=True)
class Signature:
    key: str
    inputs: dict[str, int]        # signature name -> tensor index
    outputs: dict[str, int]


@dataclass(frozen=True)
class ModelInfo:
    """Everything :mod:`edge` needs to know about a model before running it."""

    path: Path
    size_bytes: int
    description: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    tensors: tuple[TensorInfo, ...]
    ops: tuple[OpInfo, ...]
    subgraphs: int
    signatures: tuple[Signature, ...]
    metadata: tuple[str, ...]
    associated_files: tuple[str, ...]   # files zipped behind the flatbuffer (TFLite Support metadata)
    buffer_spans: tuple[tuple[int, int], ...] = ()   # (file offset, byte length) of each buffer
    metadata_buffers: tuple[int, ...] = ()           # buffer index of each ``metadata`` entry

    def _read_span(self, start: int, length: int, what: str) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(start)
            raw = f.read(length)
        if len(raw) != length:
            raise ModelError(f"{str(self.path)!r}: {what} is truncated", "re-export or re-download the model")
        return raw

    def metadata_bytes(self, name: str) -> bytes | None:
        """The bytes of the model's metadata entry ``name`` (e.g. TFLITE_METADATA), or None."""
        for entry, buffer in zip(self.metadata, self.metadata_buffers):
            if entry == name and 0 < buffer < len(self.buffer_spans) and self.buffer_spans[buffer][1]:
                return self._read_span(*self.buffer_spans[buffer], f"metadata {name!r}")
        return None

    def associated_file(self, name: str, max_bytes: int = 1 << 20) -> bytes:
        """A file zipped behind the flatbuffer (labels, exporter metadata), at most ``max_bytes``."""
        try:
            with zipfile.ZipFile(self.path) as archive:
                member = archive.getinfo(name)
                if member.file_size > max_bytes:
                    raise ModelError(f"{self.path.name}: associated file {name!r} has {member.file_size} bytes, "
                                     f"more than the {max_bytes} allowed")
                return archive.read(member)
        except KeyError:
            raise ModelError(f"{self.path.name} has no associated file {name!r}",
                             f"its associated files: {', '.join(self.associated_files) or 'none'}") from None
        except (OSError, zipfile.BadZipFile, RuntimeError) as exc:
            raise ModelError(f"cannot read associated file {name!r} of {self.path.name}: {exc}") from None

    def is_constant(self, tensor_index: int) -> bool:
        """True when the tensor's value is stored in the model (weights, biases, shapes, axes)."""
        buffer = self.tensors[tensor_index].buffer
        return 0 < buffer < len(self.buffer_spans) and self.buffer_spans[buffer][1] > 0

    def constant(self, tensor_index: int) -> np.ndarray | None:
        """The stored value of a constant tensor (read from the file on demand), else None."""
        if not self.is_constant(tensor_index):
            return None
        tensor = self.tensors[tensor_index]
        raw = self._read_span(*self.buffer_spans[tensor.buffer], f"buffer of tensor {tensor.name!r}")
        return np.frombuffer(raw, dtype=tensor.dtype).reshape(tensor.shape)

    @property
    def op_counts(self) -> Counter:
        return Counter(op.name for op in self.ops)

    @property
    def edgetpu(self) -> bool:
        """True when compiled by edgetpu_compiler (contains the edgetpu-custom-op)."""
        return any(op.custom and op.name == EDGETPU_CUSTOM_OP for op in self.ops)

    def find_op(self, name: str) -> OpInfo | None:
        return next((op for op in self.ops if op.name == name), None)

    def output_position(self, tensor_index: int) -> int:
        """Position of tensor ``tensor_index`` among the model outputs (interpreter output order)."""
        for position, tensor in enumerate(self.outputs):
            if tensor.index == tensor_index:
                return position
        raise ModelError(f"tensor {tensor_index} of {self.path.name} is not a model output")

    @property
    def precision(self) -> str:
        """int8 (full integer), int16x8, dynamic-range, float16 or float32."""
        if self.edgetpu:
            return "int8"
        weight_ops = [op for op in self.ops if op.name in WEIGHT_OPS]
        if not weight_ops:
            return "int8" if all(t.quantized for t in self.inputs) else "float32"
        activations = {self.tensors[op.inputs[0]].type for op in weight_ops}
        if activations <= {"INT8", "UINT8"}:
            return "int8"
        if "INT16" in activations:
            return "int16x8"
        weights = {self.tensors[op.inputs[1]].type for op in weight_ops if len(op.inputs) > 1}
        if "INT8" in weights:
            return "dynamic-range"
        if any(op.name == "DEQUANTIZE" and self.tensors[op.inputs[0]].type == "FLOAT16" for op in self.ops):
            return "float16"
        return "float32"

    def summary(self) -> list[str]:
        lines = [f"model: {self.path} ({self.size_bytes / 1e6:.2f} MB, {self.precision}"
                 f"{', Edge TPU compiled' if self.edgetpu else ''})"]
        lines += [f"  input  {t.describe()}" for t in self.inputs]
        lines += [f"  output {t.describe()}" for t in self.outputs]
        ops = ", ".join(f"{name}×{n}" for name, n in sorted(self.op_counts.items()))
        lines.append(f"  ops: {ops}")
        for sig in self.signatures:
            lines.append(f"  signature {sig.key!r}: inputs {sorted(sig.inputs)} outputs {sorted(sig.outputs)}")
        if self.associated_files:
            lines.append(f"  associated files: {', '.join(self.associated_files)}")
        return lines


def _quantization(table: flatbuffer.Table | None) -> Quantization | None:
    if table is None:
        return None
    scales = table.scalars(2, "f")
    zero_points = table.scalars(3, "q")
    if not scales:
        return None
    if len(zero_points) != len(scales):
        zero_points = tuple(zero_points[:1]) * len(scales) if zero_points else (0,) * len(scales)
    return Quantization(tuple(float(s) for s in scales), tuple(int(z) for z in zero_points),
                        int(table.scalar(6, "i")))


def _tensor(index: int, table: flatbuffer.Table) -> TensorInfo:
    type_code = int(table.scalar(1, "b"))
    type_name = TENSOR_TYPES[type_code] if 0 <= type_code < len(TENSOR_TYPES) else f"TYPE_{type_code}"
    shape = tuple(int(d) for d in table.scalars(0, "i"))
    signature = tuple(int(d) for d in table.scalars(7, "i")) or shape
    return TensorInfo(index, table.string(3) or f"tensor_{index}", shape, type_name,
                      _quantization(table.table(4)), signature, int(table.scalar(2, "I")))


def _buffer_span(table: flatbuffer.Table) -> tuple[int, int]:
    """Where a Buffer's bytes are: inline data, or (models > 2 GB) an offset/size into the file."""
    start, n = table.vector_span(0)
    if n:
        return start, n
    offset, size = int(table.scalar(1, "Q")), int(table.scalar(2, "Q"))
    return (offset, size) if offset > 1 else (0, 0)


def _options(op: flatbuffer.Table) -> flatbuffer.Table | None:
    """The op's builtin options, detached from the file's bytes (a ModelInfo lives as long as the run)."""
    options = op.table(4)
    return options.detached() if options is not None else None


def _options_type(code: int) -> str:
    return BUILTIN_OPTIONS[code] if 0 <= code < len(BUILTIN_OPTIONS) else f"OPTIONS_{code}"


def _opcode_name(table: flatbuffer.Table) -> tuple[str, bool]:
    # The real code is the larger of the deprecated int8 field and the int32 field (schema v3a).
    code = max(int(table.scalar(0, "b")), int(table.scalar(3, "i")))
    if not 0 <= code < len(BUILTIN_OPERATORS):
        return f"BUILTIN_{code}", False
    if BUILTIN_OPERATORS[code] == "CUSTOM":
        return table.string(1) or "CUSTOM", True
    return BUILTIN_OPERATORS[code], False


def _associated_files(data: bytes) -> tuple[str, ...]:
    """Names of files zipped behind the model (TFLite Support metadata packs labels this way)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return tuple(archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return ()


# No tensor of a model a Pi runs comes near this; a corrupt shape (one flipped dimension) does, and
# the interpreter would then allocate it (17 GB from one word of a fuzzed MobileNet).
MAX_TENSOR_BYTES = 1 << 30


def _check_tensor_sizes(path: Path, tensors: tuple[TensorInfo, ...]) -> None:
    for tensor in tensors:
        if any(d < -1 for d in tensor.shape):
            raise ModelError(f"{str(path)!r} is not a valid TFLite model (tensor {tensor.name[:60]!r} has shape "
                             f"{list(tensor.shape)[:8]})", "re-export or re-download the .tflite file")
        dtype = _NUMPY_DTYPES.get(tensor.type)
        size = math.prod(max(d, 1) for d in tensor.shape) * (np.dtype(dtype).itemsize if dtype else 8)
        if size > MAX_TENSOR_BYTES:
            raise ModelError(f"{str(path)!r}: tensor {tensor.name[:60]!r} has shape {list(tensor.shape)[:8]} "
                             f"({size / (1 << 30):.3g} GiB), more than the {MAX_TENSOR_BYTES >> 30} GiB any model "
                             "edge runs needs: the model is corrupt", "re-export or re-download the .tflite file")


def read_model(path: str | Path) -> ModelInfo:
    """Parse a .tflite file; :class:`ModelError` names the file and what is wrong with it."""
    path = Path(path)
    try:
        # Checked by stat before a byte is read: a regular file of at most 2 GiB (no /dev/zero, no FIFO).
        data = bounded.read_bytes(path, bounded.MODEL_MAX, "model file", ModelError)
    except FileNotFoundError:
        raise ModelError(f"model file {str(path)!r} does not exist",
                         "give a .tflite file or a model directory with manifest.json") from None
    try:
        model = flatbuffer.root(data, identifier=b"TFL3")
        opcodes = [_opcode_name(t) for t in model.tables(1)]
        subgraphs = model.tables(2)
        if not subgraphs:
            raise flatbuffer.FlatBufferError("no subgraphs")
        main = subgraphs[0]
        tensors = tuple(_tensor(i, t) for i, t in enumerate(main.tables(0)))
        ops = []
        for op in main.tables(3):
            name, custom = opcodes[int(op.scalar(0, "I"))]
            ops.append(OpInfo(name, custom, tuple(op.scalars(1, "i")), tuple(op.scalars(2, "i")),
                              _options_type(int(op.scalar(3, "B"))), _options(op)))
        signatures = []
        for sig in model.tables(7):
            maps = [{m.string(0) or "": int(m.scalar(1, "I")) for m in sig.tables(i)} for i in (0, 1)]
            signatures.append(Signature(sig.string(2) or "", maps[0], maps[1]))
        metadata_tables = model.tables(6)
        metadata = tuple(m.string(0) or "" for m in metadata_tables)
        metadata_buffers = tuple(int(m.scalar(1, "I")) for m in metadata_tables)
        inputs = tuple(tensors[i] for i in main.scalars(1, "i"))
        outputs = tuple(tensors[i] for i in main.scalars(2, "i"))
        buffer_spans = tuple(_buffer_span(b) for b in model.tables(4))
    except (flatbuffer.FlatBufferError, IndexError, struct.error, UnicodeDecodeError, RecursionError) as exc:
        raise ModelError(f"{str(path)!r} is not a valid TFLite model ({exc})",
                         "re-export or re-download the .tflite file") from None
    _check_tensor_sizes(path, tensors)
    return ModelInfo(path=path, size_bytes=len(data), description=model.string(3) or "",
                     inputs=inputs, outputs=outputs, tensors=tensors, ops=tuple(ops),
                     subgraphs=len(subgraphs), signatures=tuple(signatures), metadata=metadata,
                     associated_files=_associated_files(data), buffer_spans=buffer_spans,
                     metadata_buffers=metadata_buffers)
