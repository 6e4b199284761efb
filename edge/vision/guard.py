"""A check on the first frames that the input convention is right: silently wrong output must not happen.

A wrong normalisation shows in two ways that need no reference answer:

* the input tensor sits at its clip limits: most quantized values at the type's minimum or maximum
  (every pixel ≥ 1 mapped to 255 when a uint8 model is fed mean 0 / std 1), or a float input far
  outside any normalised range (raw pixels fed to a model that wants [-1, 1]);
* the outputs do not change while the frames do: the model sees the same saturated picture.

:class:`InputGuard` looks at the first ``frames`` inputs and outputs and logs one warning naming the
likely cause and the flags that fix it. It costs nothing after those frames.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

CLIPPED_SHARE = 0.5          # more than this share of input values at a clip limit is suspicious
FLOAT_LIMIT = 8.0            # |value| above this in a float input: raw pixels, not a normalised range
INPUT_CHANGE = 2.0           # mean absolute change (in 8-bit pixel units) that makes two frames different
REMEDY = ("check the input normalisation: pass --input-mean/--input-std (e.g. 127.5 127.5 for [-1, 1], "
          "0 255 for [0, 1]) or give a manifest; `edge info -m MODEL` shows the convention in use")


class InputGuard:
    """Watches the first ``frames`` frames; ``describe`` names the convention in the warning."""

    def __init__(self, model_name: str, describe: str, frames: int = 8):
        self.model_name = model_name
        self.describe = describe
        self.frames = frames
        self._inputs: list[np.ndarray] = []
        self._outputs: list[tuple[np.ndarray, ...]] = []
        self._warned = False

    @property
    def done(self) -> bool:
        return self._warned or (len(self._inputs) >= self.frames and len(self._outputs) >= self.frames)

    def observe_input(self, tensor: np.ndarray) -> None:
        """Called with the preprocessed input of each of the first frames (the capture's buffer)."""
        if len(self._inputs) < self.frames:
            self._inputs.append(tensor.copy())
            if len(self._inputs) == self.frames:
                self._check_inputs()

    def observe_outputs(self, outputs: tuple[np.ndarray, ...]) -> None:
        if len(self._outputs) < self.frames:
            self._outputs.append(tuple(o.copy() for o in outputs))
            if len(self._outputs) == self.frames:
                self._check_outputs()

    def finish(self) -> None:
        """At the end of a run shorter than ``frames``: check what was seen."""
        if 1 < len(self._inputs) < self.frames:
            self._check_inputs()
        if 1 < len(self._outputs) < self.frames:
            self._check_outputs()

    def _warn(self, what: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("%s: %s with input convention %s — %s", self.model_name, what, self.describe, REMEDY)

    def _check_inputs(self) -> None:
        share, what = clipped_share(np.stack(self._inputs))
        if share > CLIPPED_SHARE:
            self._warn(f"{share:.0%} of the input values over the first {len(self._inputs)} frames {what}")

    def _check_outputs(self) -> None:
        if len(self._inputs) < 2 or not _inputs_change(self._inputs):
            return
        first = self._outputs[0]
        if all(all(np.array_equal(a, b) for a, b in zip(first, later)) for later in self._outputs[1:]):
            self._warn(f"the outputs are identical over {len(self._outputs)} different frames")


def clipped_share(inputs: np.ndarray) -> tuple[float, str]:
    """(share, description) of input values at the clip limits of their type (or, for a float input,
    beyond any normalised range)."""
    if np.issubdtype(inputs.dtype, np.integer):
        info = np.iinfo(inputs.dtype)
        share = float(np.mean((inputs == info.min) | (inputs == info.max)))
        return share, f"sit at the {inputs.dtype} clip limits {info.min}/{info.max}"
    share = float(np.mean(np.abs(inputs) > FLOAT_LIMIT))
    return share, f"lie beyond ±{FLOAT_LIMIT:g} (raw pixels, not a normalised range)"


def _inputs_change(inputs: list[np.ndarray]) -> bool:
    """True when the frames differ by more than noise (in 8-bit pixel units for quantized inputs)."""
    first = inputs[0].astype(np.float32)
    scale = 1.0 if np.issubdtype(inputs[0].dtype, np.integer) else 127.5 / max(float(np.abs(first).max()), 1e-6)
    return any(float(np.mean(np.abs(x.astype(np.float32) - first))) * scale > INPUT_CHANGE for x in inputs[1:])
