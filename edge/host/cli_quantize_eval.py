"""``edge-host quantize``, ``qat`` and ``evaluate``: argument parsing only; the work is in
:mod:`edge.host.quantize`, :mod:`edge.host.qat` and :mod:`edge.host.evaluate`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge.errors import ConfigError
from edge.runtime.manifest import COLOURS, RESIZE_MODES, InputSpec


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 224x224") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be positive")
    return w, h


def _triple(text: str) -> tuple[float, float, float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or three comma-separated numbers") from None
    if len(values) not in (1, 3):
        raise argparse.ArgumentTypeError(f"{text!r}: give one number or three (R,G,B)")
    return tuple(values * 3 if len(values) == 1 else values)


def positive_int(text: str) -> int:
    """argparse type: a positive integer (shared with :mod:`edge.host.cli_compile_deploy`)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


def _spec(args: argparse.Namespace) -> InputSpec | None:
    """The input spec the flags give; None when no flag is given (the source's own, else the default)."""
    if args.mean is None and args.std is None and args.colour is None and args.resize is None:
        return None
    std = args.std or (127.5,) * 3
    if 0.0 in std:
        raise ConfigError(f"--std {','.join(map(str, std))} contains 0")
    return InputSpec(colour=args.colour or "RGB", mean=args.mean or (127.5,) * 3, std=std,
                     resize=args.resize or "stretch")


def _add_input_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mean", type=_triple,
                   help="input normalisation real = (pixel - mean) / std (default 127.5: [-1, 1])")
    p.add_argument("--std", type=_triple, help="(default 127.5)")
    p.add_argument("--colour", choices=COLOURS, help="channel order the model takes (default RGB)")
    p.add_argument("--resize", choices=RESIZE_MODES, help="(default stretch)")


def cmd_quantize(args: argparse.Namespace) -> int:
    from edge.host import manifests, quantize as q
    source = q.detect_source(Path(args.model), tuple(args.input_tensors or ()), tuple(args.output_tensors or ()),
                             args.input_size)
    options = q.QuantizeOptions(
        name=args.name or Path(args.model).stem, modes=q.parse_modes(args.mode),
        calibration=Path(args.calibration) if args.calibration else None, samples=args.samples,
        stride=args.stride, io=args.io, per_tensor=args.per_tensor, spec=_spec(args),
        labels=manifests.read_labels(args.labels) if args.labels else None, layout=args.layout,
        anchor_options=Path(args.anchor_options) if args.anchor_options else None,
        latency_runs=args.latency_runs, latency_threads=args.latency_threads, fuse=not args.no_fuse)
    results = q.quantize(source, Path(args.out), options)
    for r in results:
        print(f"{r.mode}: {r.path} ({r.size / 1024:.0f} KB, {r.latency_ms:.2f} ms)")
    if len(results) > 1:
        print(f"comparison: {Path(args.out) / 'comparison.md'}")
        print(q.comparison_table(results, options.latency_threads), end="")
    return 0


def cmd_qat(args: argparse.Namespace) -> int:
    from edge.host import qat
    options = qat.QatOptions(
        data=str(args.data), out=str(args.out), name=args.name, model=str(args.model) if args.model else None,
        base=args.base, size=args.input_size or (32, 32), epochs=args.epochs, float_epochs=args.float_epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate, validation_split=args.validation_split,
        io=args.io, mean=list(args.mean or (127.5,) * 3), std=list(args.std or (127.5,) * 3),
        colour=args.colour or "RGB", seed=args.seed,
        ptq=not args.no_ptq)
    report = qat.run(options)
    print(json.dumps(report["accuracy"], indent=2))
    print(f"int8 model: {Path(args.out) / report['models']['qat_int8']}")
    print(f"report: {Path(args.out) / 'qat_report.md'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from edge.host import evaluate as ev
    options = ev.EvaluateOptions(
        frames=Path(args.frames) if args.frames else None, samples=args.samples, stride=args.stride,
        annotations=Path(args.annotations) if args.annotations else None, score_threshold=args.score_threshold,
        iou=args.iou, latency_runs=args.latency_runs,
        debug_source=Path(args.source) if args.source else None, debug_samples=args.debug_samples)
    report = ev.evaluate(Path(args.float_model), [Path(m) for m in args.models], Path(args.out), options)
    print(ev.markdown(report), end="")
    print(f"report: {Path(args.out) / 'report.md'}, {Path(args.out) / 'report.json'}, "
          f"{Path(args.out) / 'accuracy_vs_size.png'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the three sub-commands to ``edge-host``'s parser."""
    from edge.host.quantize import IO_TYPES, LAYOUTS, MODES

    p = sub.add_parser("quantize", help="post-training quantization in every TFLite mode, with manifest")
    p.add_argument("model", help=".keras/.h5, SavedModel directory, frozen graph .pb, or float .tflite")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--name", help="file name stem (default: the model's)")
    p.add_argument("--mode", default="int8", help=f"{', '.join(MODES)}, a comma list, or all (default int8)")
    p.add_argument("--io", choices=IO_TYPES, help="int8 mode I/O type (default uint8; int8 for a .tflite source)")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weights (default per-channel)")
    p.add_argument("--calibration", help="video, image folder (flat or one subfolder per class) or .npy")
    p.add_argument("--samples", type=positive_int, default=100, help="calibration samples (default 100)")
    p.add_argument("--stride", type=positive_int, default=1, help="take every N-th frame (default 1)")
    p.add_argument("--labels", help="labels file, one per class")
    p.add_argument("--layout", choices=LAYOUTS, default="auto", help="output layout for the manifest")
    p.add_argument("--input-size", type=_size, help="WxH, where the model leaves it open")
    p.add_argument("--input-tensors", type=lambda s: s.split(","), help="frozen graph: input tensor names")
    p.add_argument("--output-tensors", type=lambda s: s.split(","), help="frozen graph: output tensor names")
    p.add_argument("--anchor-options", metavar="FILE.json",
                   help="float .tflite with --layout ssd_anchors: MediaPipe SsdAnchorsCalculatorOptions as JSON, "
                        "or a manifest whose output gives anchor_options or anchors")
    p.add_argument("--latency-runs", type=positive_int, default=20)
    p.add_argument("--latency-threads", type=positive_int, default=1,
                   help="XNNPACK threads for the side-by-side latency (default 1)")
    p.add_argument("--no-fuse", action="store_true",
                   help="float .tflite: do not fuse standalone activations before quantizing (for comparison)")
    _add_input_flags(p)
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("qat", help="quantization-aware training on a labelled folder → Edge TPU-ready int8")
    p.add_argument("--data", required=True, help="folder with one subfolder of images per class")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--name", default="qat", help="file name stem (default qat)")
    p.add_argument("--model", help="a tf_keras (Keras 2) .h5/.keras classifier to fine-tune")
    p.add_argument("--base", choices=("small-cnn", "mobilenetv2"), default="small-cnn",
                   help="architecture trained from scratch when no --model is given")
    p.add_argument("--input-size", type=_size, help="WxH (default: the model's, else 32x32)")
    p.add_argument("--epochs", type=positive_int, default=3, help="QAT fine-tuning epochs (default 3)")
    p.add_argument("--float-epochs", type=int, default=10, help="float training epochs before QAT (default 10)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--validation-split", type=float, default=0.25, help="held-out share (default 0.25)")
    p.add_argument("--io", choices=("uint8", "int8"), default="uint8")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ptq", action="store_true", help="skip the post-training int8 comparison")
    _add_input_flags(p)
    p.set_defaults(func=cmd_qat)

    p = sub.add_parser("evaluate", help="float vs quantized: accuracy, agreement, size, latency, per-layer error")
    p.add_argument("float_model", help="the float .tflite (with its manifest)")
    p.add_argument("models", nargs="+", help="quantized .tflite files to compare with it")
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--frames", help="video, image folder (flat or one subfolder per class) or .npy "
                                    "(default: the embedded sample clip)")
    p.add_argument("--annotations", help="COCO JSON or a folder of YOLO .txt files for the frames")
    p.add_argument("--samples", type=positive_int, default=50, help="frames (default 50)")
    p.add_argument("--stride", type=positive_int, default=1)
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--iou", type=float, default=0.5, help="IoU for a detection match (default 0.5)")
    p.add_argument("--latency-runs", type=positive_int, default=20)
    p.add_argument("--source", help="the model the int8 file was converted from, for per-layer error "
                                    "(QuantizationDebugger); same kinds as quantize")
    p.add_argument("--debug-samples", type=positive_int, default=8, help="frames for the per-layer error")
    p.set_defaults(func=cmd_evaluate)
