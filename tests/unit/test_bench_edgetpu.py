"""The Edge TPU raw variant, with fakes: no Edge TPU, libedgetpu or edgetpu_compiler exists here.

The model is the default int8 model with its custom op renamed ``edgetpu-custom-op`` (as
edgetpu_compiler output carries it, see tests.helpers.fake_edgetpu_model); the runtime is a fake of
the documented TFLite Python API (``load_delegate(library, options)``, ``Interpreter(model_path,
num_threads, experimental_delegates)``), and enumeration is replaced by one USB Coral.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge.bench import raw
from edge.errors import DelegateError
from edge.runtime import edgetpu
from edge.runtime.interpreter import Runtime
from edge.runtime.loader import ModelSet
from edge.runtime.manifest import Manifest
from tests.helpers import fake_edgetpu_model

USB_CORAL = edgetpu.TpuDevice("usb", "/sys/bus/usb/devices/2-1", "usb, 5000 Mbit/s")


class _FakeInterpreter:
    made: list[dict] = []

    def __init__(self, model_path, num_threads=None, experimental_delegates=None):
        self.kwargs = {"model_path": model_path, "num_threads": num_threads, "delegates": experimental_delegates}
        _FakeInterpreter.made.append(self.kwargs)
        self._input = np.zeros((1, 300, 300, 3), np.uint8)
        self.invokes = 0

    def allocate_tensors(self):
        pass

    def get_input_details(self):
        return [{"index": 0, "shape": np.array(self._input.shape)}]

    def tensor(self, index):
        return lambda: self._input

    def invoke(self):
        self.invokes += 1

    def get_tensor(self, index):
        return np.zeros(4, np.float32)


@pytest.fixture
def models(tmp_path, int8_model):
    tpu = fake_edgetpu_model(int8_model, tmp_path / "m_edgetpu.tflite")
    manifest = Manifest(path=None, name="m", models={"cpu": int8_model, "edgetpu": tpu})
    return ModelSet(int8_model, "cpu", manifest)


def test_edgetpu_variant_when_a_coral_is_present(models, monkeypatch):
    monkeypatch.setattr(edgetpu, "enumerate_devices", lambda: [USB_CORAL])
    monkeypatch.setattr(edgetpu, "library_loadable", lambda library: None)   # no libedgetpu here
    variants = raw.variants(["cpu", "edgetpu"], [1], models, explicit=True, device="edgetpu:usb")
    assert [v.label for v in variants] == ["int8 cpu/xnnpack x1", "int8 edgetpu:usb"]

    delegates = []

    def load_delegate(library, options):
        delegates.append((library, options))
        return "delegate"

    runtime = Runtime("fake-runtime", "1.0", _FakeInterpreter, load_delegate, None)
    _FakeInterpreter.made.clear()
    result, _ = raw.measure([(variants[1], lambda: raw.open_variant(variants[1], models, runtime))],
                            lambda backend: None, warmup=1, runs=3, runtime="fake-runtime 1.0")[0]
    assert delegates == [("libedgetpu.so.1", {"device": "usb"})]
    assert _FakeInterpreter.made[0]["delegates"] == ["delegate"]
    assert _FakeInterpreter.made[0]["model_path"].endswith("m_edgetpu.tflite")
    assert result.backend == "edgetpu:usb" and result.model == "m_edgetpu.tflite" and result.latency.count == 3


def test_edgetpu_skipped_by_default_and_an_error_when_named(models, monkeypatch):
    monkeypatch.setattr(edgetpu, "enumerate_devices", lambda: [])
    assert [v.kind for v in raw.variants(["cpu", "edgetpu"], [1], models, explicit=False)] == ["cpu"]
    with pytest.raises(DelegateError, match="backend 'edgetpu' was requested but is unavailable: no Edge TPU found"):
        raw.variants(["cpu", "edgetpu"], [1], models, explicit=True)
