"""Float vs quantized on the same frames: accuracy, agreement, size, latency, per-layer error.

Every model runs through the device's own path: its manifest's pre-processing
(:class:`~edge.vision.preprocess.Preprocessor`) and the layout's decoder
(:func:`edge.vision.decode.make_decoder`), on ai-edge-litert (XNNPACK).

- Detectors: mAP@0.5 and mAP@0.5:0.95 (COCO-style, 101-point interpolation) where annotations
  exist (COCO JSON, or YOLO .txt files next to / in a folder for the images); otherwise agreement
  with the float model: the share of float detections (score >= threshold) that the quantized
  model also finds (same class, IoU >= ``iou``), the share of its detections the float model
  finds, and the mean IoU / score difference of the matched pairs.
- Classifiers: top-1 accuracy on a folder with one subfolder per class, and top-1 agreement
  with the float model on any frames.
- Per-layer error of an int8 model (``tf.lite.experimental.QuantizationDebugger``) when the
  source model is given: the ten layers with the largest RMSE relative to their scale.

Writes ``report.json``, ``report.md`` and ``accuracy_vs_size.png``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from edge.capture.base import Frame
from edge.errors import ConfigError, EdgeError, ModelError
from edge.host import calibration
from edge.host.tf import tensorflow
from edge.resources import sample_clip
from edge.runtime.manifest import Manifest, find_manifest, load_manifest
from edge.runtime.model import ModelInfo, read_model
from edge.vision.decode import DecodeParams, FinishParams, finish, make_decoder
from edge.vision.labels import load_labels
from edge.vision.preprocess import Preprocessor

log = logging.getLogger(__name__)

IOU_THRESHOLDS = np.round(np.arange(0.5, 0.96, 0.05), 2)


@dataclass(frozen=True)
class EvaluateOptions:
    frames: Path | None = None          # None: the embedded sample clip
    samples: int = 50
    stride: int = 1
    annotations: Path | None = None
    score_threshold: float = 0.5
    iou: float = 0.5
    latency_runs: int = 20
    debug_source: Path | None = None
    debug_samples: int = 8


# ---------------------------------------------------------------------------------------------
# running a model the way the device does

class Runner:
    """One model with its manifest: frame → detections (frame pixels) or top classes."""

    def __init__(self, path: Path, fallback: Manifest | None = None):
        from ai_edge_litert.interpreter import Interpreter
        if not path.is_file():
            raise ConfigError(f"model {str(path)!r} does not exist")
        self.path = path
        self.info: ModelInfo = read_model(path)
        found = find_manifest(path)
        if found is None and fallback is None:
            raise ModelError(f"{path.name} has no manifest (<name>.json or manifest.json naming it)",
                             "evaluate needs its input normalisation; write one with edge-host quantize")
        self.manifest = load_manifest(found) if found else fallback
        self.interpreter = Interpreter(model_path=str(path), num_threads=2)
        self.interpreter.allocate_tensors()
        tensor = self.info.inputs[0]
        self.input = np.zeros(tensor.shape, tensor.dtype)
        self.pre = Preprocessor(self.manifest.input, tensor, tuple(tensor.shape))
        self.decoder = make_decoder(self.info, self.manifest, DecodeParams())
        self.task = getattr(self.decoder, "task", "detection")
        labels = load_labels(self.manifest.labels) if self.manifest.labels else {}
        self.finish = FinishParams(score_threshold=0.0, max_detections=0, labels=labels, keep=None)

    def __call__(self, frame: Frame):
        """Detections: (boxes [N,4] xyxy frame pixels, scores [N], classes [N]); classes: top ids."""
        transform = self.pre(frame, self.input)
        self.interpreter.set_tensor(self.info.inputs[0].index, self.input)
        self.interpreter.invoke()
        outputs = tuple(self.interpreter.get_tensor(t.index) for t in self.info.outputs)
        raw = self.decoder(outputs)
        if self.task == "classification":
            return raw.class_ids
        dets = finish(raw, transform, self.finish)
        return (np.array([d.box for d in dets], np.float32).reshape(-1, 4),
                np.array([d.score for d in dets], np.float32), np.array([d.class_id for d in dets], np.int64))


# ---------------------------------------------------------------------------------------------
# frames and ground truth

def _frames_path(options: EvaluateOptions) -> Path:
    return options.frames or sample_clip()


def _frames(options: EvaluateOptions) -> Iterator[tuple[Frame, str | None, int | None]]:
    """(frame, file name or None, class index from a class-per-subfolder folder or None)."""
    path = _frames_path(options)
    if not path.exists():
        raise ConfigError(f"frames {str(path)!r} do not exist", "give a video, an image folder or a .npy array")
    if path.suffix == ".npy":
        raise ConfigError(f"frames {str(path)!r}: evaluate needs pictures (video or images), not model inputs",
                          "a .npy array is already normalised for one model")
    import cv2
    from edge.capture.images import list_images
    if path.is_dir():
        files = [(f, None) for f in list_images(path)] or calibration.labelled_images(path)
        if not files:
            raise ConfigError(f"folder {str(path)!r} holds no images")
        for i, (f, cls) in enumerate(files[::options.stride][:options.samples]):
            image = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if image is None:
                raise ConfigError(f"cannot decode image {str(f)!r}")
            yield Frame(image=image, index=i, timestamp=0.0, captured_ns=0), f.name, cls
        return
    for frame in calibration.frames(path, stride=options.stride, limit=options.samples):
        yield frame, None, None


def load_annotations(path: Path, labels: dict[int, str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """File name → (boxes [N,4] xyxy pixels, class ids [N]) from COCO JSON or YOLO .txt files.

    COCO category names map to the model's labels by name; YOLO class indices are the model's.
    YOLO boxes are normalised; :func:`evaluate` scales them when the frame is known.
    """
    if path.is_dir():
        return {f.stem: _read_yolo(f) for f in sorted(path.glob("*.txt"))}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read annotations {str(path)!r}: {exc}",
                          "give a COCO JSON file or a folder of YOLO .txt files") from None
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        raise ConfigError(f"annotations {str(path)!r} are not COCO JSON (images, annotations, categories)")
    by_name = {name: cid for cid, name in labels.items()}
    category = {}
    for c in data["categories"]:
        if c["name"] in by_name:
            category[c["id"]] = by_name[c["name"]]
        else:
            log.info("COCO category %r is not among the model's labels: ignored", c["name"])
    names = {im["id"]: im["file_name"] for im in data["images"]}
    boxes: dict[str, list] = {Path(n).name: [] for n in names.values()}
    for a in data["annotations"]:
        if a["category_id"] in category and not a.get("iscrowd", 0):
            x, y, w, h = a["bbox"]
            boxes[Path(names[a["image_id"]]).name].append((x, y, x + w, y + h, category[a["category_id"]]))
    return {name: (np.array([b[:4] for b in v], np.float32).reshape(-1, 4), np.array([b[4] for b in v], np.int64))
            for name, v in boxes.items()}


def _read_yolo(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            raise ConfigError(f"{path.name} line {n}: {line!r} is not 'class cx cy w h' (normalised)")
        rows.append([float(v) for v in parts])
    a = np.array(rows, np.float32).reshape(-1, 5)
    cx, cy, w, h = a[:, 1], a[:, 2], a[:, 3], a[:, 4]
    # Normalised; evaluate() scales them to the frame.
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1), a[:, 0].astype(np.int64)


# ---------------------------------------------------------------------------------------------
# metrics (pure)

def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] IoU of xyxy boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match(ref_boxes, ref_classes, boxes, scores, classes, iou: float) -> list[tuple[int, int, float]]:
    """Greedy matching, highest score first: (ref index, index, IoU) pairs of the same class."""
    ious = iou_matrix(ref_boxes, boxes)
    taken: set[int] = set()
    pairs = []
    for j in np.argsort(-scores, kind="stable"):
        candidates = [(ious[i, j], i) for i in range(len(ref_boxes))
                      if i not in taken and ref_classes[i] == classes[j] and ious[i, j] >= iou]
        if candidates:
            best, i = max(candidates)
            taken.add(i)
            pairs.append((i, int(j), float(best)))
    return pairs


def average_precision(tp: np.ndarray, scores: np.ndarray, n_gt: int) -> float:
    """COCO-style AP (101-point interpolated precision) from per-detection TP flags."""
    if n_gt == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    tp = tp[order].astype(np.float64)
    fp = 1 - tp
    recall = np.cumsum(tp) / n_gt
    precision = np.cumsum(tp) / np.maximum(np.cumsum(tp) + np.cumsum(fp), 1e-12)
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    points = np.linspace(0, 1, 101)
    idx = np.searchsorted(recall, points, side="left")
    return float(np.mean([precision[i] if i < len(precision) else 0.0 for i in idx]))


def mean_average_precision(gts: list, dets: list, thresholds=IOU_THRESHOLDS) -> dict[float, float]:
    """mAP per IoU threshold over classes; ``gts``/``dets`` per frame: (boxes, classes[, scores])."""
    classes = sorted({int(c) for _, cs in gts for c in cs})
    result = {}
    for t in thresholds:
        aps = []
        for c in classes:
            tps, scores, n_gt = [], [], 0
            for (gb, gc), (db, ds, dc) in zip(gts, dets):
                g, d = gc == c, dc == c
                n_gt += int(g.sum())
                pairs = match(gb[g], gc[g], db[d], ds[d], dc[d], float(t))
                flags = np.zeros(int(d.sum()))
                flags[[j for _, j, _ in pairs]] = 1
                tps.append(flags)
                scores.append(ds[d])
            aps.append(average_precision(np.concatenate(tps), np.concatenate(scores), n_gt))
        result[float(t)] = float(np.nanmean(aps)) if aps else float("nan")
    return result


# ---------------------------------------------------------------------------------------------
# per-layer error

def layer_errors(source: Path, float_runner: Runner, options: EvaluateOptions, top: int = 10) -> list[dict]:
    """The ``top`` layers with the largest RMSE / scale in int8 (QuantizationDebugger)."""
    from edge.host import quantize as q
    tf = tensorflow()
    src_model = q.detect_source(source)
    if src_model.kind == "tflite":
        raise ConfigError("per-layer error needs the TensorFlow source model, not a .tflite",
                          "pass --source as a .keras/.h5, SavedModel or frozen graph")
    spec = float_runner.manifest.input
    tensor = float_runner.info.inputs[0]
    size = (int(tensor.shape[2]), int(tensor.shape[1]))
    path = _frames_path(options)

    def dataset():
        for x in calibration.float_inputs(path, spec, size, stride=options.stride, limit=options.debug_samples):
            yield [x]

    with tempfile.TemporaryDirectory(prefix="edge-debug-") as tmp:
        src = q._TfSource(src_model, Path(tmp), None)
        converter = src.converter()
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = dataset
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=dataset)
        debugger.run()
        buffer = io.StringIO()
        debugger.layer_statistics_dump(buffer)
    rows = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    out = []
    for r in rows:
        scale = float(r.get("scale") or "nan")
        mse = float(r.get("mean_squared_error") or "nan")
        out.append({"op": r.get("op_name"), "tensor": r.get("tensor_name"), "scale": scale,
                    "zero_point": int(float(r.get("zero_point") or 0)),
                    "mean_error": float(r.get("mean_error") or "nan"),
                    "max_abs_error": float(r.get("max_abs_error") or "nan"), "rmse": math.sqrt(mse),
                    "rmse_per_scale": math.sqrt(mse) / scale if scale else float("nan")})
    out.sort(key=lambda r: -r["rmse_per_scale"] if not math.isnan(r["rmse_per_scale"]) else math.inf)
    return out[:top]


# ---------------------------------------------------------------------------------------------
# the report

def evaluate(float_model: Path, models: list[Path], out_dir: Path, options: EvaluateOptions) -> dict:
    from edge.host.quantize import latency_ms
    if options.samples <= 0 or options.stride <= 0:
        raise ConfigError(f"samples {options.samples} / stride {options.stride} must be positive")
    if not 0 < options.iou <= 1 or not 0 <= options.score_threshold <= 1:
        raise ConfigError(f"--iou {options.iou} / --score-threshold {options.score_threshold} must be in [0, 1]")
    reference = Runner(float_model)
    runners = [reference] + [Runner(m, fallback=reference.manifest) for m in models]
    tasks = {r.task for r in runners}
    if len(tasks) != 1:
        raise ModelError(f"the models do not all do the same task ({', '.join(sorted(tasks))})")
    task = reference.task
    labels = reference.finish.labels
    gt_boxes = load_annotations(options.annotations, labels) if options.annotations else None
    if options.annotations and task != "detection":
        raise ConfigError("--annotations are for detectors; classifiers take their classes from the subfolders")
    outputs: list[list] = [[] for _ in runners]
    truth: list = []
    names: list = []
    gts: list | None = None if gt_boxes is None else []     # per frame: (boxes in frame pixels, classes)
    yolo = gt_boxes is not None and options.annotations.is_dir()     # YOLO boxes are normalised
    from tqdm import tqdm
    for frame, name, cls in tqdm(_frames(options), total=options.samples, desc="evaluating", unit="frame",
                                 leave=False):
        if gt_boxes is not None:
            if name is None:
                raise ConfigError("--annotations need --frames to be an image folder (they are matched by file name)")
            key = name if name in gt_boxes else Path(name).stem
            if key not in gt_boxes:
                raise ConfigError(f"no annotation for frame {name!r} in {str(options.annotations)!r}")
            boxes, classes = gt_boxes[key]
            if yolo:
                w, h = frame.size
                boxes = boxes * np.array([w, h, w, h], np.float32)
            gts.append((boxes, classes))
        for r, store in zip(runners, outputs):
            store.append(r(frame))
        names.append(name)
        truth.append(cls)
    if not names:
        raise ConfigError("no frames to evaluate on")
    truth = _class_ids(truth, options.frames, labels)
    report: dict = {"task": task, "frames": len(names),
                    "frames_source": str(options.frames or "sample clip"), "score_threshold": options.score_threshold,
                    "iou": options.iou, "models": []}
    for r, store in zip(runners, outputs):
        entry = {"model": r.path.name, "role": "float" if r is reference else "quantized",
                 "size_bytes": r.path.stat().st_size, "latency_ms": latency_ms(r.path, options.latency_runs),
                 "precision": r.info.precision}
        if task == "classification":
            entry.update(_classification(store, outputs[0], truth))
        else:
            entry.update(_detection(store, outputs[0], options, gts))
        report["models"].append(entry)
    if options.debug_source:
        try:
            report["worst_layers"] = layer_errors(options.debug_source, reference, options)
        except (EdgeError, ValueError, RuntimeError) as exc:
            log.warning("per-layer error not computed: %s", exc)
            report["worst_layers_error"] = str(exc).splitlines()[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out_dir / "report.md").write_text(markdown(report), encoding="utf-8")
    plot(report, out_dir / "accuracy_vs_size.png")
    return report


def _class_ids(truth: list, folder: Path | None, labels: dict[int, str]) -> list:
    """Subfolder positions → the model's class ids: by label name when every subfolder is a label,
    else by position (subfolders in name order are classes 0, 1, ...)."""
    if folder is None or not folder.is_dir() or any(t is None for t in truth) or not labels:
        return truth
    subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir())
    by_name = {name: cid for cid, name in labels.items()}
    if all(name in by_name for name in subfolders):
        return [by_name[subfolders[t]] for t in truth]
    log.info("class subfolders of %s are not all labels of the model: classes by position", folder)
    return truth


def _classification(store: list, ref: list, truth: list) -> dict:
    top1 = [int(ids[0]) if len(ids) else -1 for ids in store]
    ref1 = [int(ids[0]) if len(ids) else -1 for ids in ref]
    out = {"agreement_top1": float(np.mean([a == b for a, b in zip(top1, ref1)]))}
    if all(t is not None for t in truth):
        out["top1"] = float(np.mean([a == t for a, t in zip(top1, truth)]))
    return out


def _detection(store: list, ref: list, options: EvaluateOptions, gts: list | None) -> dict:
    thr = options.score_threshold
    kept = n_ref = n_det = 0
    ious, dscore = [], []
    for (rb, rs, rc), (b, s, c) in zip(ref, store):
        rk, k = rs >= thr, s >= thr
        pairs = match(rb[rk], rc[rk], b[k], s[k], c[k], options.iou)
        n_ref += int(rk.sum())
        n_det += int(k.sum())
        kept += len(pairs)
        ious += [iou for _, _, iou in pairs]
        dscore += [abs(float(rs[rk][i]) - float(s[k][j])) for i, j, _ in pairs]
    out = {"detections": n_det, "float_detections": n_ref, "matched": kept,
           "kept_of_float": kept / n_ref if n_ref else float("nan"),
           "matched_of_own": kept / n_det if n_det else float("nan"),
           "mean_iou": float(np.mean(ious)) if ious else float("nan"),
           "mean_score_diff": float(np.mean(dscore)) if dscore else float("nan")}
    if gts is not None:
        m = mean_average_precision(gts, store)
        out["mAP50"] = m[0.5]
        out["mAP50_95"] = float(np.mean(list(m.values())))
    return out


def _accuracy_key(report: dict) -> tuple[str, str]:
    model = report["models"][0]
    if "top1" in model:
        return "top1", "top-1 accuracy"
    if "mAP50" in model:
        return "mAP50", "mAP@0.5"
    if report["task"] == "classification":
        return "agreement_top1", "top-1 agreement with float"
    return "kept_of_float", "float detections kept"


def markdown(report: dict) -> str:
    lines = [f"# Float vs quantized ({report['task']}, {report['frames']} frames of {report['frames_source']})", ""]
    if report["task"] == "classification":
        cols = [("top1", "top-1"), ("agreement_top1", "top-1 agreement")]
    else:
        cols = [("mAP50", "mAP@0.5"), ("mAP50_95", "mAP@0.5:0.95"), ("detections", "detections"),
                ("matched", "matched"), ("kept_of_float", "float dets kept"), ("matched_of_own", "own dets matched"),
                ("mean_iou", "mean IoU"), ("mean_score_diff", "mean |Δscore|")]
    cols = [(k, t) for k, t in cols if any(k in m for m in report["models"])]
    lines.append("| model | size (KB) | latency (ms) | " + " | ".join(t for _, t in cols) + " |")
    lines.append("|---|---:|---:|" + "---:|" * len(cols))
    for m in report["models"]:
        cells = [_fmt(m.get(k)) for k, _ in cols]
        lines.append(f"| {m['model']} | {m['size_bytes'] / 1024:.0f} | {m['latency_ms']:.2f} | " + " | ".join(cells) + " |")
    if report["task"] == "detection":
        lines += ["", f"Detections: score >= {report['score_threshold']}; a match is the same class with IoU >= "
                      f"{report['iou']} (greedy, highest score first)."]
    if report.get("worst_layers"):
        lines += ["", "## Worst layers (int8, RMSE / scale)", "", "| op | tensor | scale | RMSE | RMSE/scale | max |err| |",
                  "|---|---|---:|---:|---:|---:|"]
        for r in report["worst_layers"]:
            tensor = (r["tensor"] or "").split(";")[0]     # fused ops list every fused name
            lines.append(f"| {r['op']} | {tensor} | {r['scale']:.4g} | {r['rmse']:.4g} | "
                         f"{r['rmse_per_scale']:.3f} | {r['max_abs_error']:.4g} |")
    elif report.get("worst_layers_error"):
        lines += ["", f"Per-layer error not computed: {report['worst_layers_error']}"]
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    key, title = _accuracy_key(report)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for m in report["models"]:
        x, y = m["size_bytes"] / 1024, m.get(key, float("nan"))
        ax.scatter([x], [y], s=40, label=f"{m['model']} ({m['precision']})")
    ax.set_xlabel("size (KB)")
    ax.set_ylabel(title)
    ax.set_title(f"{title} vs size")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")   # points of similar size overlap: names go in the legend
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
