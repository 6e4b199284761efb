"""TFLite Model Metadata: the ``TFLITE_METADATA`` buffer Model Maker, TF Hub and MediaPipe Tasks write.

The buffer is a flatbuffer of the schema ``metadata_schema.fbs`` (file identifier ``M001``), read
here with :mod:`edge.runtime.flatbuffer` by its field numbers, never by guessing. What ``edge``
takes from it, for the first subgraph:

* the image input's ``NormalizationOptions`` (mean, std per channel), ``ImageProperties`` colour
  space and the value range ``Stats`` (min, max);
* the associated files of type ``TENSOR_AXIS_LABELS`` (labels, one per line), from the output
  tensors' metadata, the subgraph's and the model's, with the file's bytes zipped behind the model.

Field numbers below are the schema's declaration order; a union takes two numbers (its type tag,
then its value).
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.errors import ModelError
from edge.runtime import flatbuffer
from edge.runtime.model import ModelInfo

BUFFER_NAME = "TFLITE_METADATA"
IDENTIFIER = b"M001"

# ModelMetadata
_MODEL_NAME, _MODEL_DESCRIPTION, _MODEL_VERSION, _SUBGRAPHS, _MODEL_AUTHOR, _MODEL_LICENSE, _MODEL_FILES = range(7)
# SubGraphMetadata
_INPUTS, _OUTPUTS, _SUBGRAPH_FILES = 2, 3, 4
# TensorMetadata
_TENSOR_NAME, _CONTENT, _PROCESS_UNITS, _STATS, _TENSOR_FILES = 0, 3, 4, 5, 6
# Content: content_properties (union: type 0, value 1)
_PROPERTIES_TYPE, _PROPERTIES = 0, 1
_IMAGE_PROPERTIES = 2                       # ContentProperties tag of ImageProperties
_COLOR_SPACES = {0: "UNKNOWN", 1: "RGB", 2: "GRAYSCALE"}
# ProcessUnit: options (union: type 0, value 1)
_OPTIONS_TYPE, _OPTIONS = 0, 1
_NORMALIZATION = 1                          # ProcessUnitOptions tag of NormalizationOptions
# AssociatedFile
_FILE_NAME, _FILE_TYPE = 0, 2
_TENSOR_AXIS_LABELS = 2


@dataclass(frozen=True)
class ImageInput:
    """What the metadata says about the first input: all optional."""

    tensor_name: str = ""
    color_space: str = "UNKNOWN"                     # RGB | GRAYSCALE | UNKNOWN
    mean: tuple[float, ...] = ()                     # NormalizationOptions: real = (value - mean) / std
    std: tuple[float, ...] = ()
    stats_min: tuple[float, ...] = ()
    stats_max: tuple[float, ...] = ()

    @property
    def normalization(self) -> bool:
        return bool(self.mean and self.std)


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    description: str
    version: str
    author: str
    license: str
    image_input: ImageInput
    label_files: tuple[str, ...]                     # TENSOR_AXIS_LABELS files, outputs first

    def summary(self) -> str:
        parts = [self.name or "(unnamed)"]
        if self.version:
            parts.append(f"version {self.version}")
        if self.author:
            parts.append(f"by {self.author}")
        return ", ".join(parts)


def _label_files(*tables: flatbuffer.Table | None, field: int) -> list[str]:
    names = []
    for table in tables:
        if table is None:
            continue
        for entry in table.tables(field):
            if int(entry.scalar(_FILE_TYPE, "b")) == _TENSOR_AXIS_LABELS and entry.string(_FILE_NAME):
                names.append(entry.string(_FILE_NAME))
    return names


def _image_input(tensor: flatbuffer.Table | None) -> ImageInput:
    if tensor is None:
        return ImageInput()
    color = "UNKNOWN"
    content = tensor.table(_CONTENT)
    if content is not None and int(content.scalar(_PROPERTIES_TYPE, "B")) == _IMAGE_PROPERTIES:
        properties = content.table(_PROPERTIES)
        if properties is not None:
            color = _COLOR_SPACES.get(int(properties.scalar(0, "b")), "UNKNOWN")
    mean: tuple = ()
    std: tuple = ()
    for unit in tensor.tables(_PROCESS_UNITS):
        if int(unit.scalar(_OPTIONS_TYPE, "B")) == _NORMALIZATION and unit.table(_OPTIONS) is not None:
            options = unit.table(_OPTIONS)
            mean, std = options.scalars(0, "f"), options.scalars(1, "f")
    stats = tensor.table(_STATS)
    stats_max = stats.scalars(0, "f") if stats is not None else ()
    stats_min = stats.scalars(1, "f") if stats is not None else ()
    return ImageInput(tensor.string(_TENSOR_NAME) or "", color, tuple(mean), tuple(std), tuple(stats_min),
                      tuple(stats_max))


def parse(data: bytes, source: str = "TFLITE_METADATA") -> ModelMetadata:
    """Parse a metadata buffer; :class:`ModelError` when it is not one."""
    try:
        root = flatbuffer.root(data, identifier=IDENTIFIER)
        subgraphs = root.tables(_SUBGRAPHS)
        subgraph = subgraphs[0] if subgraphs else None
        inputs = subgraph.tables(_INPUTS) if subgraph is not None else []
        outputs = subgraph.tables(_OUTPUTS) if subgraph is not None else []
        labels = _label_files(*outputs, field=_TENSOR_FILES)
        labels += _label_files(subgraph, field=_SUBGRAPH_FILES) + _label_files(root, field=_MODEL_FILES)
        return ModelMetadata(
            name=root.string(_MODEL_NAME) or "", description=root.string(_MODEL_DESCRIPTION) or "",
            version=root.string(_MODEL_VERSION) or "", author=root.string(_MODEL_AUTHOR) or "",
            license=root.string(_MODEL_LICENSE) or "", image_input=_image_input(inputs[0] if inputs else None),
            label_files=tuple(dict.fromkeys(labels)))
    except (flatbuffer.FlatBufferError, IndexError) as exc:
        raise ModelError(f"{source} is not a valid TFLite Model Metadata buffer ({exc})",
                         "re-export the model, or give a manifest / the input flags") from None


def read_metadata(model: ModelInfo) -> ModelMetadata | None:
    """The model's TFLite Model Metadata, or None when it has none."""
    data = model.metadata_bytes(BUFFER_NAME)
    if data is None:
        return None
    return parse(data, f"{model.path.name}: {BUFFER_NAME}")
