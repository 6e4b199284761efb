"""Device strings and enumeration, against a recorded sysfs/devfs layout (tests/data/sysfs-coral).

The tree reproduces the files the kernel exposes for a USB Coral after firmware load (18d1:9302,
on a USB 3 port), one before firmware load (1a6e:089a, on USB 2), an unrelated USB device, and a
PCIe module's /dev/apex_0. No Edge TPU is attached to this machine.
"""

import pytest

from edge.errors import ConfigError
from edge.runtime.edgetpu import DeviceSpec, enumerate_devices, parse_device


@pytest.mark.parametrize("text, option", [
    ("edgetpu", ""), ("edgetpu:usb", "usb"), ("edgetpu:usb:1", "usb:1"), ("edgetpu:pci", "pci"),
    ("edgetpu:pci:0", "pci:0"), ("edgetpu:2", ":2"), ("EdgeTPU:USB", "usb"),
])
def test_device_strings_map_to_libedgetpu_options(text, option):
    spec = parse_device(text)
    assert spec.backend == "edgetpu"
    assert spec.delegate_option == option


def test_auto_and_cpu():
    assert parse_device("auto") == DeviceSpec("auto")
    assert parse_device("cpu") == DeviceSpec("cpu")


@pytest.mark.parametrize("text", ["gpu", "edgetpu:usb:pci", "edgetpu:x", "cpu:1", "edgetpu:usb:1:2", ""])
def test_bad_device_strings(text):
    with pytest.raises(ConfigError, match="valid forms"):
        parse_device(text)


def test_enumerates_usb_and_pci_from_recorded_tree(data_dir):
    root = data_dir / "sysfs-coral"
    devices = enumerate_devices(root / "sys", root / "dev")
    kinds = [(d.kind, d.detail) for d in devices]
    assert ("usb", "usb, 5000 Mbit/s") in kinds
    assert ("usb", "usb (firmware not loaded yet), 480 Mbit/s") in kinds
    assert [d.path.endswith("apex_0") for d in devices if d.kind == "pci"] == [True]
    assert len(devices) == 3


def test_no_devices_on_an_empty_tree(tmp_path):
    assert enumerate_devices(tmp_path / "sys", tmp_path / "dev") == []


def test_a_compiled_model_given_without_a_manifest_is_taken_as_an_edge_tpu_model(int8_model, tmp_path,
                                                                                 monkeypatch):
    """A bare ``*_edgetpu.tflite`` (a stand-in: no compiler here, see fake_edgetpu_model) is an
    Edge TPU model, not a CPU one; with no Edge TPU and no CPU twin the load says so."""
    from edge.config import ModelConfig
    from edge.errors import ModelError
    from edge.runtime import edgetpu, loader
    from tests.helpers import fake_edgetpu_model

    compiled = fake_edgetpu_model(int8_model, tmp_path / "person_edgetpu.tflite")
    models = loader.resolve(ModelConfig(path=str(compiled)))
    assert models.requested_role == "edgetpu" and models.path_for("cpu") is None
    assert loader.resolve(ModelConfig(path=str(int8_model))).requested_role == "cpu"
    monkeypatch.setattr(edgetpu, "enumerate_devices", lambda *a, **k: [])
    with pytest.raises(ModelError, match="compiled for the Edge TPU"):
        loader.load(ModelConfig(path=str(compiled)))
