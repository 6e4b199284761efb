"""Flags shared by `edge` sub-commands and where each lands in the configuration.

Its own module so that edge.cli and edge.bench.cli both import it and not each other.
"""

from __future__ import annotations

import argparse

# flag dest -> (section, key); flags left unset do not override the config file
RUN_FLAGS = {
    "model": ("model", "path"), "manifest": ("model", "manifest"), "labels": ("model", "labels"),
    "device": ("model", "device"), "threads": ("model", "threads"), "runtime": ("model", "runtime"),
    "allow_float": ("model", "allow_float"), "layout": ("model", "layout"),
    "input_mean": ("model", "input_mean"), "input_std": ("model", "input_std"), "colour": ("model", "colour"),
    "resize": ("model", "resize"),
    "source": ("source", "uri"), "realtime": ("source", "realtime"), "loop": ("source", "loop"),
    "width": ("source", "width"), "height": ("source", "height"), "fps": ("source", "fps"),
    "score_threshold": ("detect", "score_threshold"), "max_detections": ("detect", "max_detections"),
    "iou_threshold": ("detect", "iou_threshold"),
    "classes": ("detect", "classes"),
    "jsonl": ("output", "jsonl"), "live": ("output", "live"), "max_frames": ("output", "max_frames"),
    "prometheus": ("prometheus", "port"), "mqtt": ("mqtt", "host"), "mqtt_prefix": ("mqtt", "prefix"),
    "web": ("web", "port"), "power": ("power", "source"),
}
# flags that set the same key in several sections (both servers)
SHARED_FLAGS = {"web_auth": (("web", "auth_file"), ("prometheus", "auth_file")),
                "insecure_listen": (("web", "insecure_listen"), ("prometheus", "insecure_listen"))}


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """The model flags of `edge run`, `edge info` and `edge bench`, as one argument group."""
    g = p.add_argument_group("model")
    g.add_argument("--model", "-m", help="a .tflite file or a model directory (default: the embedded "
                                         "SSDLite person detector)")
    g.add_argument("--manifest", help="manifest JSON for the model (default: found next to it)")
    g.add_argument("--labels", help="labels file (overrides the manifest)")
    g.add_argument("--device", "-d", help="auto | cpu | edgetpu[:usb|:pci][:N] (default auto)")
    g.add_argument("--threads", type=int, help="CPU threads for the interpreter (default: one per core)")
    g.add_argument("--runtime", help="auto | ai-edge-litert | tflite-runtime | tensorflow")
    g.add_argument("--allow-float", action="store_const", const=True, dest="allow_float",
                   help="run a float model on the CPU without the warning that int8 would be faster")
    g.add_argument("--layout", help="output layout: auto | ssd_postprocess | yolov8 | yolov11 | yolov5 | "
                                    "ssd_anchors | classification (default auto)")
    g.add_argument("--input-mean", metavar="M", help="input normalisation real = (pixel - M) / S: one number or "
                                                     "R,G,B (default: manifest, model metadata, raw uint8 pixels)")
    g.add_argument("--input-std", metavar="S", help="input normalisation std (with --input-mean)")
    g.add_argument("--colour", help="channel order the model takes: RGB | BGR (default: manifest, metadata, RGB)")
    g.add_argument("--resize", help="stretch | letterbox | crop (default: manifest, letterbox for Ultralytics "
                                    "detectors, crop for their classifiers, stretch)")
