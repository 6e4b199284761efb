"""Edge TPU → CPU twin fail-over, and periodic return to the Edge TPU.

A USB Coral that resets mid-run makes libedgetpu's invoke raise (RuntimeError from the
interpreter); a delegate that cannot load at start raises DelegateError. Either way a service
should keep detecting, slower, on the CPU twin the manifest names, log why, and try the Edge TPU
again every ``[service] tpu_retry`` seconds. A stuck invoke (one that never returns) is not
handled here: the frame-progress watchdog stops pinging and systemd restarts the service.

:class:`FailoverBackend` follows the :class:`~edge.runtime.backend.Backend` protocol. It gives the
pipeline its own input buffer and copies it into the active interpreter at invoke time, so a frame
whose invoke failed on the Edge TPU is re-run on the CPU with the same input.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable

import numpy as np

from edge.errors import EdgeError
from edge.runtime.backend import Backend, copy_input
from edge.telemetry.stats import PipelineStats

log = logging.getLogger(__name__)

# What an interpreter raises when its delegate's device went away (libedgetpu reports a failed
# invoke through the interpreter as RuntimeError; some runtimes use ValueError).
INVOKE_ERRORS = (RuntimeError, ValueError, OSError)


class FailoverBackend:
    """Runs on ``primary`` (Edge TPU) while it works, on the fallback (CPU twin) when it does not."""

    def __init__(self, primary: Backend | None, open_primary: Callable[[], Backend],
                 open_fallback: Callable[[], Backend], *, retry: float = 300.0,
                 stats: PipelineStats | None = None, fallback: Backend | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if primary is None and fallback is None:
            raise ValueError("FailoverBackend needs a primary or a fallback backend to start with")
        self.open_primary = open_primary
        self.open_fallback = open_fallback
        self.retry = retry
        self.stats = stats
        self.clock = clock
        self.primary = primary
        self.fallback = fallback
        self.active: Backend = primary if primary is not None else fallback  # type: ignore[assignment]
        self.model = self.active.model
        self.input_shape = self.active.input_shape
        view = self.active.input_view()
        self._staging = np.zeros(view.shape, view.dtype)
        del view
        self._next_retry = clock() + retry if primary is None and retry > 0 else float("inf")
        self.returns = 0

    @property
    def name(self) -> str:
        return self.active.name if self.active is self.primary else f"{self.active.name} (Edge TPU fallback)"

    @property
    def on_primary(self) -> bool:
        return self.primary is not None and self.active is self.primary

    def input_view(self) -> np.ndarray:
        return self._staging

    def _run(self, backend: Backend) -> None:
        view = backend.input_view()
        if view.shape != self._staging.shape or view.dtype != self._staging.dtype:
            raise EdgeError(f"the fallback model {backend.model.path.name} takes {view.dtype}{list(view.shape)}, "
                            f"the Edge TPU model {self._staging.dtype}{list(self._staging.shape)}",
                            "make the manifest's cpu and edgetpu twins from the same quantized model")
        copy_input(view, self._staging)
        del view
        backend.invoke()

    def _switch(self, backend: Backend) -> None:
        self.active = backend
        if self.stats is not None:
            self.stats.backend = self.name

    def _fall_back(self, exc: BaseException) -> None:
        assert self.primary is not None
        log.error("Edge TPU invoke failed (%s: %s); falling back to the CPU twin%s", type(exc).__name__, exc,
                  f", retrying the Edge TPU every {self.retry:.0f} s" if self.retry > 0 else "")
        self.primary.close()
        self.primary = None
        if self.fallback is None:
            self.fallback = self.open_fallback()
        self._switch(self.fallback)
        if self.stats is not None:
            self.stats.count("tpu_fallbacks")
        self._next_retry = self.clock() + self.retry if self.retry > 0 else float("inf")

    def _maybe_return(self) -> None:
        if self.primary is not None or self.clock() < self._next_retry:
            return
        try:
            primary = self.open_primary()
        except EdgeError as exc:
            log.warning("Edge TPU still unusable (%s); next try in %.0f s", exc, self.retry)
            self._next_retry = self.clock() + self.retry
            return
        self.primary = primary
        self._switch(primary)
        self.returns += 1
        log.info("back on the Edge TPU (%s)", primary.name)

    def invoke(self) -> None:
        self._maybe_return()
        if self.active is self.primary:
            try:
                self._run(self.active)
                return
            except INVOKE_ERRORS as exc:
                self._fall_back(exc)
        self._run(self.active)

    def outputs(self) -> tuple[np.ndarray, ...]:
        return self.active.outputs()

    def close(self) -> None:
        for backend in (self.primary, self.fallback):
            if backend is not None:
                backend.close()


def wrap_for_failover(loaded, config, stats: PipelineStats | None = None) -> Backend:
    """The backend the service runs: ``loaded.backend``, wrapped when an Edge TPU is or was involved.

    Wrapped when the Edge TPU runs and the manifest names a CPU twin (mid-run fail-over), or when
    ``--device auto`` fell back to the CPU at start because the Edge TPU was unusable (retry).
    """
    from edge.runtime import loader

    backend = loaded.backend
    models = loaded.models
    if models.path_for("cpu") is None or models.path_for("edgetpu") is None:
        return backend
    device = config.model.device if config.model.device.startswith("edgetpu") else "edgetpu"
    retry = config.service.tpu_retry

    def open_with(dev: str) -> Callable[[], Backend]:
        return lambda: loader.load(dataclasses.replace(config.model, device=dev), models).backend

    if backend.name.startswith("edgetpu"):
        return FailoverBackend(backend, open_with(device), open_with("cpu"), retry=retry, stats=stats)
    if config.model.device == "auto" and loader.TPU_UNUSABLE in loaded.reason:
        log.info("Edge TPU unusable at start; running on the CPU twin and retrying it every %.0f s", retry)
        return FailoverBackend(None, open_with(device), open_with("cpu"), retry=retry, stats=stats,
                               fallback=backend)
    return backend
