"""A SIMULATED accelerator: a backend that takes a fixed time per inference and releases the GIL.

It exists for benchmarks only: it shows how close the pipeline comes to an accelerator-bound
limit (an Edge TPU sleeps in libedgetpu while the USB transfer and the TPU run, with the GIL
released) on a machine that has no accelerator. It never computes anything: :meth:`invoke` sleeps
for ``seconds`` (``time.sleep`` releases the GIL) and :meth:`outputs` returns the outputs a real
backend produced for one real frame, so decoding and publishing downstream do real work.

Its :attr:`name` always starts with ``SIMULATED`` so no report can mistake it for a measurement
of hardware. The figure usually given is Coral's published 7.2 ms for SSD MobileNet v2 on the USB
Accelerator (https://coral.ai/docs/edgetpu/benchmarks/).
"""

from __future__ import annotations

import time

import numpy as np

from edge.errors import ConfigError
from edge.runtime.backend import Backend
from edge.runtime.model import ModelInfo

# Coral's published inference time of SSD MobileNet v2 (300x300) on the USB Accelerator, in ms.
CORAL_USB_SSD_MOBILENET_V2_MS = 7.2


class SimulatedBackend:
    """Sleeps ``seconds`` per invoke; input and outputs have the shapes of the real model."""

    def __init__(self, model: ModelInfo, input_shape: tuple[int, ...], input_dtype: np.dtype,
                 outputs: tuple[np.ndarray, ...], seconds: float):
        if not seconds > 0:
            raise ConfigError(f"simulated inference time {seconds * 1e3!r} ms is not positive",
                              "give a time per inference in milliseconds, e.g. 7.2")
        self.model = model
        self.input_shape = tuple(input_shape)
        self.seconds = float(seconds)
        self.name = f"SIMULATED accelerator {self.seconds * 1e3:g} ms"
        self._input = np.zeros(self.input_shape, dtype=input_dtype)
        self._outputs = tuple(np.array(o, copy=True) for o in outputs)

    @classmethod
    def like(cls, backend: Backend, seconds: float) -> SimulatedBackend:
        """A simulation of ``backend``'s model: its current outputs (after one real invoke) are replayed."""
        view = backend.input_view()
        dtype = view.dtype
        del view
        return cls(backend.model, backend.input_shape, dtype, backend.outputs(), seconds)

    def input_view(self) -> np.ndarray:
        return self._input

    def invoke(self) -> None:
        time.sleep(self.seconds)

    def outputs(self) -> tuple[np.ndarray, ...]:
        return tuple(o.copy() for o in self._outputs)

    def close(self) -> None:
        self._outputs = ()


class RecordingSimulatedBackend(SimulatedBackend):
    """A SIMULATED accelerator for a running daemon: once every ``refresh`` seconds a frame runs on
    the real ``backend`` (the CPU) and its outputs are replayed for the frames until the next one, so
    detections, tracks and events follow the scene (up to ``refresh`` late). Every invoke takes
    ``seconds``; a real one that takes longer takes its own time (about 1 frame per second)."""

    def __init__(self, backend: Backend, seconds: float, refresh: float = 1.0):
        view = backend.input_view()
        dtype = view.dtype
        del view
        super().__init__(backend.model, backend.input_shape, dtype, backend.outputs(), seconds)
        self._real: Backend | None = backend
        self.refresh = refresh
        self._recorded = float("-inf")

    def invoke(self) -> None:
        start = time.monotonic()
        if self._real is not None and start - self._recorded >= self.refresh:
            self._recorded = start
            view = self._real.input_view()
            view[...] = self._input
            del view
            self._real.invoke()
            self._outputs = self._real.outputs()
        left = self.seconds - (time.monotonic() - start)
        if left > 0:
            time.sleep(left)

    def close(self) -> None:
        if self._real is not None:
            self._real.close()
            self._real = None
        super().close()
