"""Input-convention and label resolution (edge.runtime.conventions), one test per rule, on real models:
Coral's classifiers (TFLite Metadata), MediaPipe's palm detector (metadata-less: preset), the
project's person detector copied alone (uint8, no metadata) and its float twin (float, no metadata)."""

from __future__ import annotations

import logging
import shutil

import pytest

from edge.config import ModelConfig
from edge.errors import ModelError
from edge.runtime import loader
from edge.runtime.conventions import raw_pixels
from edge.runtime.model import read_model
from edge.vision.labels import align_to_classes
from tests.conformance.conftest import coral_dir, mediapipe_model


def _resolve(path, **cfg) -> loader.ModelSet:
    return loader.resolve(ModelConfig(path=str(path), **cfg))


@pytest.fixture()
def alone(tmp_path, int8_model):
    """The project's int8 person detector without its manifest and labels (as a user might copy it)."""
    return shutil.copy(int8_model, tmp_path / "person.tflite")


def test_manifest_comes_first(model_dir):
    models = _resolve(model_dir)
    assert models.convention.rule == "manifest"
    assert models.manifest.input.mean == pytest.approx((127.5,) * 3)
    assert models.labels.rule == "manifest" and models.labels.load() == {0: "person"}


def test_flags_when_there_is_no_manifest(alone):
    models = _resolve(alone, input_mean=(0.0,), input_std=(255.0,), colour="BGR", resize="letterbox")
    spec = models.manifest.input
    assert models.convention.rule == "flags"
    assert (spec.mean, spec.std, spec.colour, spec.resize) == ((0.0,) * 3, (255.0,) * 3, "BGR", "letterbox")


def test_flags_do_not_override_a_manifest_and_say_so(model_dir, caplog):
    with caplog.at_level(logging.WARNING):
        models = _resolve(model_dir, input_mean=(0.0,), input_std=(1.0,))
    assert models.convention.rule == "manifest"
    assert "--input-mean/--input-std ignored" in caplog.text


def test_half_the_flags_is_an_error(alone):
    with pytest.raises(ModelError, match="--input-std is missing"):
        _resolve(alone, input_mean=(127.5,))


def test_tflite_metadata_of_a_uint8_model_means_raw_pixels():
    models = _resolve(coral_dir() / "mobilenet_v1_0.5_160_quant.tflite")
    assert models.convention.rule == "tflite-metadata"
    tensor = read_model(models.requested).inputs[0]
    assert (models.manifest.input.mean, models.manifest.input.std) == raw_pixels(tensor)
    assert models.labels.rule == "tflite-metadata" and models.labels.source == "imagenet_labels.txt"
    labels = models.labels.load()
    assert len(labels) == 1001 and labels[0] == "background" and labels[286] == "Egyptian cat"


def test_tflite_metadata_of_a_float_model():
    models = _resolve(mediapipe_model("modules/face_detection/face_detection_short_range.tflite"))
    assert models.convention.rule == "tflite-metadata"
    assert models.manifest.input.mean == (127.5,) * 3 and models.manifest.input.std == (127.5,) * 3


def test_metadata_less_mediapipe_model_takes_its_preset():
    models = _resolve(mediapipe_model("modules/palm_detection/palm_detection_lite.tflite"))
    assert models.convention.rule == "preset"
    assert models.manifest.input.mean == (0.0,) * 3 and models.manifest.input.std == (255.0,) * 3
    assert models.labels.load() == {0: "palm"}


def test_uint8_without_metadata_is_raw_pixels(alone):
    models = _resolve(alone)
    assert models.convention.rule == "uint8-raw"
    spec = models.manifest.input
    tensor = read_model(alone).inputs[0]
    scale, zero_point = tensor.quantization.scalar()
    assert spec.mean == (zero_point,) * 3 and spec.std[0] == pytest.approx(1 / scale)
    assert models.labels.rule == "none"


def test_float_without_metadata_is_an_error_naming_the_flags(tmp_path, float_model):
    bare = shutil.copy(float_model, tmp_path / "person_float.tflite")
    with pytest.raises(ModelError) as info:
        _resolve(bare)
    assert "cannot tell how person_float.tflite wants its float32 input normalised" in str(info.value)
    assert "--input-mean/--input-std" in str(info.value)


@pytest.mark.parametrize("name", ["labels.txt", "person_labels.txt", "coco_labels.txt"])
def test_labels_beside_the_model(alone, name):
    (alone.parent / name).write_text("person\n")
    models = _resolve(alone)
    assert models.labels.rule == "beside-model" and models.labels.load() == {0: "person"}


def test_labels_flag_wins(alone, tmp_path):
    (tmp_path / "labels.txt").write_text("pedestrian\n")
    other = tmp_path / "mine.txt"
    other.write_text("walker\n")
    assert _resolve(alone, labels=str(other)).labels.load() == {0: "walker"}


def test_coral_pairs_both_ways(tmp_path):
    for name in ("mobilenet_v1_0.25_128_quant.tflite", "mobilenet_v1_0.25_128_quant_edgetpu.tflite"):
        shutil.copy(coral_dir() / name, tmp_path / name)
    cpu, tpu = tmp_path / "mobilenet_v1_0.25_128_quant.tflite", tmp_path / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
    from_tpu = _resolve(tpu)
    assert from_tpu.requested_role == "edgetpu" and from_tpu.path_for("cpu") == cpu
    from_cpu = _resolve(cpu)
    assert from_cpu.requested_role == "cpu" and from_cpu.path_for("edgetpu") == tpu


def test_a_twin_that_is_not_what_its_name_says_is_not_paired(tmp_path, caplog):
    shutil.copy(coral_dir() / "mobilenet_v1_0.25_128_quant.tflite", tmp_path / "m.tflite")
    shutil.copy(coral_dir() / "mobilenet_v1_0.25_128_quant.tflite", tmp_path / "m_edgetpu.tflite")
    with caplog.at_level(logging.WARNING):
        models = _resolve(tmp_path / "m.tflite")
    assert models.path_for("edgetpu") is None
    assert "not compiled for the Edge TPU; not paired" in caplog.text


def test_background_first_labels_align_to_a_1000_class_output():
    labels = {0: "background", **{i: f"class {i}" for i in range(1, 1001)}}
    aligned = align_to_classes(labels, 1000)
    assert aligned[0] == "class 1" and len(aligned) == 1000
    assert align_to_classes(labels, 1001) is labels          # 1001 outputs: background is class 0
    assert align_to_classes({0: "cat", 1: "dog", 2: "fox"}, 2) == {0: "cat", 1: "dog", 2: "fox"}


def test_describe_names_rule_and_source():
    models = _resolve(coral_dir() / "mobilenet_v1_0.5_160_quant.tflite")
    text = models.convention.describe()
    assert text.startswith("tflite-metadata (TFLITE_METADATA of mobilenet_v1_0.5_160_quant.tflite)")
    assert "real = (pixel - 128) / 128, RGB, stretch" in text
