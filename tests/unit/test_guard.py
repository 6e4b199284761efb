"""The first-frames guard: a wrong normalisation is reported, a right one is not."""

from __future__ import annotations

import logging
import shutil

import numpy as np

from edge.vision.guard import InputGuard
from tests.helpers import run_edge


def _frames(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(20, 230, (1, 32, 32, 3), dtype=np.uint8) for _ in range(n)]


def _watch(inputs, outputs, caplog) -> str:
    guard = InputGuard("m.tflite", "uint8-raw (test)", frames=len(inputs))
    with caplog.at_level(logging.WARNING):
        for x, y in zip(inputs, outputs):
            guard.observe_input(x)
            guard.observe_outputs(y)
    assert guard.done
    return caplog.text


def test_natural_inputs_with_changing_outputs_pass(caplog):
    frames = _frames()
    assert _watch(frames, [(f.mean(axis=(1, 2)),) for f in frames], caplog) == ""


def test_saturated_uint8_input_warns(caplog):
    saturated = [np.where(f > 0, 255, 0).astype(np.uint8) for f in _frames()]
    text = _watch(saturated, [(np.arange(3.0) * i,) for i in range(8)], caplog)
    assert "clip limits 0/255" in text and "--input-mean/--input-std" in text


def test_raw_pixels_fed_to_a_float_model_warn(caplog):
    floats = [f.astype(np.float32) for f in _frames()]
    assert "beyond ±8" in _watch(floats, [(np.arange(3.0) * i,) for i in range(8)], caplog)


def test_frozen_outputs_over_different_frames_warn(caplog):
    frames = _frames()
    text = _watch(frames, [(np.zeros(4, np.uint8),)] * len(frames), caplog)
    assert "outputs are identical over 8 different frames" in text


def test_frozen_outputs_over_a_still_scene_do_not_warn(caplog):
    still = [_frames(1)[0]] * 8
    assert _watch(still, [(np.zeros(4, np.uint8),)] * 8, caplog) == ""


def test_short_run_is_checked_at_the_end(caplog):
    guard = InputGuard("m.tflite", "test", frames=8)
    with caplog.at_level(logging.WARNING):
        for f in _frames(3):
            guard.observe_input(np.where(f > 0, 255, 0).astype(np.uint8))
        guard.finish()
    assert "clip limits" in caplog.text


def test_the_original_bug_is_caught_end_to_end(tmp_path, int8_model):
    """The issue's case: the person detector (uint8, scale 1/128) fed mean 0 / std 1 saturates."""
    model = shutil.copy(int8_model, tmp_path / "person.tflite")
    result = run_edge("run", "-m", str(model), "--input-mean", "0", "--input-std", "1", "--max-frames", "10",
                      "--as-fast-as-possible", "--jsonl", "", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "sit at the uint8 clip limits 0/255" in result.stderr
    assert "flags (--input-mean/--input-std)" in result.stderr
    clean = run_edge("run", "-m", str(model), "--max-frames", "10", "--as-fast-as-possible", "--jsonl", "",
                     cwd=tmp_path)
    assert clean.returncode == 0 and "clip limits" not in clean.stderr and "identical" not in clean.stderr
