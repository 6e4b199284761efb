"""The naive loop users copy from tutorials: read a frame, resize, invoke, decode, draw — one thread.

It runs on the same backend, source, preprocessing and decoding code as the pipeline, so the
ratio pipeline FPS / serial FPS measures only what the pipeline adds: overlapping capture,
preprocessing and post-processing with inference. Its ceiling is the serial period over the
slowest stage (usually invoke): no overlap can make a frame cheaper than its slowest stage.
"""

from __future__ import annotations

import time

import cv2

from edge.bench.passes import PassResult, steady_fps, summarize_stages
from edge.capture.base import Source
from edge.pipeline import Postprocess
from edge.runtime.backend import Backend
from edge.vision.decode.base import Detection
from edge.vision.preprocess import Preprocessor

STAGES = ("read", "preprocess", "invoke", "postprocess", "draw", "total")
_GREEN = (0, 255, 0)


def draw(image, detections) -> None:
    """Boxes and labels onto the frame, as tutorial loops do before showing it."""
    for d in detections:
        if not isinstance(d, Detection):  # a classifier's results have no box
            continue
        x0, y0, x1, y1 = (int(v) for v in d.box)
        cv2.rectangle(image, (x0, y0), (x1, y1), _GREEN, 2)
        cv2.putText(image, f"{d.label} {d.score:.2f}", (x0, max(0, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.5, _GREEN, 1, cv2.LINE_AA)


def serial_pass(source: Source, backend: Backend, preprocessor: Preprocessor, postprocess: Postprocess, *,
                max_frames: int = 0, simulated: bool = False) -> PassResult:
    """Run the serial loop over the open ``source`` until it ends or ``max_frames``; closes the source."""
    samples: dict[str, list[float]] = {s: [] for s in STAGES}
    finished: list[float] = []
    clock = time.monotonic_ns
    started = time.monotonic()
    frames = 0
    try:
        while not (max_frames and frames >= max_frames):
            t0 = clock()
            frame = source.read()
            if frame is None:
                break
            t1 = clock()
            view = backend.input_view()
            transform = preprocessor(frame, view)
            del view
            t2 = clock()
            backend.invoke()
            t3 = clock()
            detections = postprocess(backend.outputs(), transform)
            t4 = clock()
            draw(frame.image, detections)
            t5 = clock()
            for stage, a, b in (("read", t0, t1), ("preprocess", t1, t2), ("invoke", t2, t3),
                                ("postprocess", t3, t4), ("draw", t4, t5), ("total", t0, t5)):
                samples[stage].append((b - a) / 1e9)
            finished.append(t5 / 1e9)
            frames += 1
    finally:
        source.close()
    return PassResult("serial", backend.name, simulated, frames, time.monotonic() - started, steady_fps(finished),
                      frames, 0, summarize_stages(samples), samples)
