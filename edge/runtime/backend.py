"""Backends run one model: write the input tensor, invoke, read the outputs.

Every backend follows the :class:`Backend` protocol: the TFLite interpreter on the CPU (XNNPACK),
the same interpreter with the Edge TPU delegate, or a simulated accelerator for benchmarks.
:mod:`edge.runtime.loader` decides which one runs a model.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Protocol

import numpy as np

from edge.errors import ModelError
from edge.runtime import xnnpack as xnnpack_share
from edge.runtime.interpreter import Runtime, first_line
from edge.runtime.model import EDGETPU_CUSTOM_OP, ModelInfo

log = logging.getLogger(__name__)


def copy_input(dst: np.ndarray, src: np.ndarray) -> None:
    """Copy ``src`` into the input tensor view ``dst`` (same shape and dtype, both C-contiguous).

    A memoryview copy is a plain memcpy that keeps the GIL (np.copyto releases it for large
    arrays, and getting it back can mean waiting for another thread's Python work).
    """
    memoryview(dst).cast("B")[:] = memoryview(src).cast("B")


class Backend(Protocol):
    """One loaded model on one device."""

    name: str           # what runs it, for logs and metrics, e.g. "cpu/xnnpack x2"
    model: ModelInfo
    input_shape: tuple[int, ...]   # NHWC after allocation

    def input_view(self) -> np.ndarray:
        """A writable view of the input tensor; drop it before :meth:`invoke`."""

    def invoke(self) -> None: ...

    def outputs(self) -> tuple[np.ndarray, ...]:
        """Copies of the output tensors, in the model's output order."""

    def close(self) -> None: ...


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class TFLiteBackend:
    """A TFLite interpreter, with optional delegates (XNNPACK is the runtime's default on CPU)."""

    def __init__(self, model: ModelInfo, runtime: Runtime, *, threads: int = 0,
                 delegates: list | None = None, xnnpack: bool = True, name: str | None = None):
        self.model = model
        self.runtime = runtime
        self.threads = threads or default_threads()
        try:
            self._interpreter = runtime.make_interpreter(
                str(model.path), num_threads=self.threads, delegates=delegates, xnnpack=xnnpack)
            self._resize_dynamic_inputs()
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise self._load_error(exc) from None
        detail = self._interpreter.get_input_details()[0]
        self._input_index = int(detail["index"])
        self.input_shape = tuple(int(d) for d in detail["shape"])
        self._output_indices = [t.index for t in model.outputs]
        # What XNNPACK really took (None: not asked for, or another delegate runs the model).
        self.xnnpack: xnnpack_share.XnnpackShare | None = None
        if delegates:
            self.name = name or "delegate"
        else:
            applied = self._check_xnnpack() if xnnpack else False
            self.name = name or f"cpu/{'xnnpack' if applied else 'builtin'} x{self.threads}"

    def _check_xnnpack(self) -> bool:
        """Whether the XNNPACK delegate is in the graph; a warning when it was asked for and is not.

        The runtime applies it at allocation and carries on silently without it when it cannot
        initialise (e.g. "Error in cpuinfo" when /proc/cpuinfo is hidden, as by systemd's
        ProcSubset=pid): the model then runs on the reference kernels, tens of times slower.
        """
        try:
            self.xnnpack = xnnpack_share.delegation(self._interpreter)
        except UnicodeDecodeError as exc:     # the runtime decodes op names from the file: a corrupt one
            raise ModelError(f"{self.model.path.name}: an operator name is not UTF-8 ({exc.reason} at byte "
                             f"{exc.start}): the file is corrupt", "re-export or re-download the model") from None
        except (AttributeError, KeyError, TypeError) as exc:
            log.warning("cannot tell whether XNNPACK was applied to %s (%s %s has no usable "
                        "_get_ops_details: %s); reporting it as asked", self.model.path.name,
                        self.runtime.name, self.runtime.version, exc)
            return True
        if self.xnnpack.partitions == 0:
            log.warning("XNNPACK was asked for but not applied to %s: it runs on TFLite's reference "
                        "kernels, many times slower. XNNPACK fails to start when /proc/cpuinfo cannot "
                        "be read (systemd ProcSubset=pid, a container); `edge doctor` checks it",
                        self.model.path.name)
            return False
        log.info("XNNPACK applied to %s: %s", self.model.path.name, self.xnnpack.describe())
        return True

    def _resize_dynamic_inputs(self) -> None:
        for tensor in self.model.inputs:
            if tensor.dynamic:
                shape = [1 if d < 0 else d for d in tensor.shape_signature]
                log.info("input %s has dynamic shape %s; resizing to %s", tensor.name,
                         list(tensor.shape_signature), shape)
                self._interpreter.resize_tensor_input(tensor.index, shape, strict=False)

    def _load_error(self, exc: Exception) -> ModelError:
        text = first_line(exc)
        if EDGETPU_CUSTOM_OP in str(exc):
            return ModelError(f"{self.model.path.name} is compiled for the Edge TPU and cannot run on the "
                              "CPU", "use --device edgetpu, or name its CPU twin as models.cpu in the manifest")
        return ModelError(f"{self.runtime.name} {self.runtime.version} cannot load "
                          f"{str(self.model.path)!r}: {text}")

    def input_view(self) -> np.ndarray:
        return self._interpreter.tensor(self._input_index)()

    def invoke(self) -> None:
        self._interpreter.invoke()

    def outputs(self) -> tuple[np.ndarray, ...]:
        get = self._interpreter.get_tensor
        return tuple(get(i) for i in self._output_indices)

    @property
    def interpreter(self) -> Any:
        return self._interpreter

    def close(self) -> None:
        self._interpreter = None
