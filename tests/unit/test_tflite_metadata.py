"""edge's TFLite Model Metadata reader against real metadata, and against an independent reader/writer.

The independent side is the Python code the FlatBuffers compiler generated from
``metadata_schema.fbs``, as shipped in the mediapipe 0.10.21 wheel (installed as data by
scripts/test.sh). It is loaded from its file, so the mediapipe package itself is never imported.
"""

from __future__ import annotations

import flatbuffers
import pytest

from edge.errors import ModelError
from edge.runtime.model import read_model
from edge.runtime.tflite_metadata import parse, read_metadata
from tests.conformance.conftest import coral_dir, mediapipe_model, metadata_schema


@pytest.fixture(scope="module")
def schema():
    return metadata_schema()


def _reference(schema, data: bytes) -> dict:
    meta = schema.ModelMetadataT.InitFromPackedBuf(data, 0)
    tensor = meta.subgraphMetadata[0].inputTensorMetadata[0]
    norm = next((u.options for u in tensor.processUnits or []
                 if u.optionsType == schema.ProcessUnitOptions.NormalizationOptions), None)
    colour = None
    if tensor.content and tensor.content.contentPropertiesType == schema.ContentProperties.ImageProperties:
        colour = tensor.content.contentProperties.colorSpace
    files = []
    for t in meta.subgraphMetadata[0].outputTensorMetadata or []:
        files += [f.name.decode() for f in t.associatedFiles or []
                  if f.type == schema.AssociatedFileType.TENSOR_AXIS_LABELS]
    return {"mean": tuple(norm.mean) if norm else (), "std": tuple(norm.std) if norm else (),
            "colour": {0: "UNKNOWN", 1: "RGB", 2: "GRAYSCALE"}.get(colour, "UNKNOWN"), "labels": files}


REAL_MODELS = [
    ("coral", "mobilenet_v1_0.5_160_quant.tflite", (127.5,), (127.5,), ("imagenet_labels.txt",)),
    ("coral", "mobilenet_v1_0.25_128_quant_edgetpu.tflite", (127.5,), (127.5,), ("imagenet_labels.txt",)),
    ("mediapipe", "modules/face_detection/face_detection_short_range.tflite", (127.5,), (127.5,), ()),
    ("mediapipe", "modules/palm_detection/palm_detection_full.tflite", (0.0,), (255.0,), ("labels.txt",)),
]


@pytest.mark.parametrize("where,name,mean,std,labels", REAL_MODELS, ids=[m[1] for m in REAL_MODELS])
def test_real_metadata_read_as_the_generated_reader_reads_it(schema, where, name, mean, std, labels):
    path = coral_dir() / name if where == "coral" else mediapipe_model(name)
    model = read_model(path)
    meta = read_metadata(model)
    ref = _reference(schema, model.metadata_bytes("TFLITE_METADATA"))
    image = meta.image_input
    assert (image.mean, image.std, image.color_space) == (ref["mean"], ref["std"], ref["colour"])
    assert (image.mean, image.std, image.color_space) == (mean, std, "RGB")
    assert meta.label_files[:len(ref["labels"])] == tuple(ref["labels"])
    assert meta.label_files == labels
    for label_file in labels:
        assert label_file in model.associated_files


def test_model_without_metadata(int8_model):
    assert read_metadata(read_model(int8_model)) is None


def _written(schema, *, mean, std, colour, label_file="labels.txt") -> bytes:
    """A metadata buffer written by the generated object API (the way metadata writers build it)."""
    norm = schema.NormalizationOptionsT()
    norm.mean, norm.std = list(mean), list(std)
    unit = schema.ProcessUnitT()
    unit.optionsType, unit.options = schema.ProcessUnitOptions.NormalizationOptions, norm
    image = schema.ImagePropertiesT()
    image.colorSpace = colour
    content = schema.ContentT()
    content.contentPropertiesType, content.contentProperties = schema.ContentProperties.ImageProperties, image
    tensor_in = schema.TensorMetadataT()
    tensor_in.name, tensor_in.content, tensor_in.processUnits = "image", content, [unit]
    labels = schema.AssociatedFileT()
    labels.name, labels.type = label_file, schema.AssociatedFileType.TENSOR_AXIS_LABELS
    description = schema.AssociatedFileT()
    description.name, description.type = "notes.txt", schema.AssociatedFileType.DESCRIPTIONS
    tensor_out = schema.TensorMetadataT()
    tensor_out.name, tensor_out.associatedFiles = "probability", [description, labels]
    subgraph = schema.SubGraphMetadataT()
    subgraph.inputTensorMetadata, subgraph.outputTensorMetadata = [tensor_in], [tensor_out]
    meta = schema.ModelMetadataT()
    meta.name, meta.version, meta.subgraphMetadata = "written", "v2", [subgraph]
    builder = flatbuffers.Builder(0)
    builder.Finish(meta.Pack(builder), file_identifier=b"M001")
    return bytes(builder.Output())


def test_per_channel_normalisation_and_label_type_from_a_written_buffer(schema):
    data = _written(schema, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375),
                    colour=schema.ColorSpaceType.RGB, label_file="classes.txt")
    meta = parse(data)
    assert meta.image_input.mean == pytest.approx((123.675, 116.28, 103.53))
    assert meta.image_input.std == pytest.approx((58.395, 57.12, 57.375))
    assert meta.label_files == ("classes.txt",)       # the DESCRIPTIONS file is not a label file
    assert (meta.name, meta.version) == ("written", "v2")


def test_grayscale_is_reported(schema):
    meta = parse(_written(schema, mean=(0,), std=(1,), colour=schema.ColorSpaceType.GRAYSCALE))
    assert meta.image_input.color_space == "GRAYSCALE"


@pytest.mark.parametrize("data", [b"", b"\x08\x00\x00\x00M002\x00\x00\x00\x00", b"\x04\x00\x00\x00M001" + b"\xff" * 8])
def test_corrupt_buffer_is_a_model_error(data):
    with pytest.raises(ModelError, match="not a valid TFLite Model Metadata"):
        parse(data, "x.tflite: TFLITE_METADATA")


@pytest.mark.parametrize("mean,std", [((float("nan"),), (127.5,)), ((0.0,), (1e-300,)), ((0.0, 1.0), (1.0,))])
def test_unusable_normalisation_in_the_metadata_is_an_error_naming_the_flags(schema, mean, std):
    from edge.runtime.conventions import _from_metadata
    from edge.runtime.model import TensorInfo

    meta = parse(_written(schema, mean=mean, std=std, colour=schema.ColorSpaceType.RGB))
    with pytest.raises(ModelError, match="--input-mean/--input-std"):
        _from_metadata(meta, TensorInfo(0, "image", (1, 8, 8, 3), "FLOAT32", None), "m.tflite: TFLITE_METADATA")
