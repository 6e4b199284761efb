"""Assemble a pipeline from a :class:`~edge.config.Config`: model, source, decoder and sinks.

Shared by ``edge run``, ``edge bench`` and the service, so that all of them run the same code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from edge.capture import Source, make_source
from edge.config import Config
from edge.errors import ModelError
from edge.pipeline import Pipeline, Sink
from edge.runtime import edgetpu, loader
from edge.runtime.manifest import Manifest
from edge.telemetry.jsonl import JsonlSink
from edge.telemetry.live import LiveLine
from edge.telemetry.stats import PipelineStats
from edge.vision.decode import FinishParams, make_decoder, make_postprocess
from edge.vision.labels import load_labels
from edge.vision.preprocess import Preprocessor

log = logging.getLogger(__name__)


@dataclass
class Assembly:
    config: Config
    loaded: loader.Loaded
    pipeline: Pipeline
    stats: PipelineStats
    sinks: list[Sink] = field(default_factory=list)


def finish_params(config: Config, manifest: Manifest) -> FinishParams:
    labels = load_labels(manifest.labels) if manifest.labels else {}
    keep = None
    if config.detect.classes:
        by_name = {name: i for i, name in labels.items()}
        unknown = [c for c in config.detect.classes if c not in by_name]
        if unknown:
            raise ModelError(f"class {unknown[0]!r} is not in the labels of {manifest.name}",
                             f"known labels: {', '.join(list(by_name)[:20])}")
        keep = frozenset(by_name[c] for c in config.detect.classes)
    return FinishParams(score_threshold=config.detect.score_threshold,
                        max_detections=config.detect.max_detections, labels=labels, keep=keep)


def make_sinks(config: Config, stats: PipelineStats, source_name: str) -> list[Sink]:
    """The sinks ``[output]`` asks for."""
    sinks: list[Sink] = []
    if config.output.jsonl:
        sinks.append(JsonlSink(config.output.jsonl, source_name))
    if config.output.live != "off":
        live = LiveLine(stats)
        if config.output.live == "on" or live.tty:
            sinks.append(live)
    return sinks


def assemble(config: Config, extra_sinks: list[Sink] | None = None,
             stats: PipelineStats | None = None,
             wrap_source: Callable[[Source], Source] | None = None) -> Assembly:
    """Open the source, load the model and build the pipeline (not started).

    Cheap checks (device string, manifest, labels, the source itself) come before the model loads.
    """
    edgetpu.parse_device(config.model.device)
    models = loader.resolve(config.model)
    params = finish_params(config, models.manifest)
    source = make_source(config.source)
    if wrap_source is not None:  # e.g. the service's ReconnectingSource
        source = wrap_source(source)
    source.open()
    try:
        loaded = loader.load(config.model, models)
        model = loaded.model
        decoder = make_decoder(model, loaded.manifest, layout=config.model.layout, detect=config.detect,
                               num_classes=max(params.labels) + 1 if params.labels else 0)
        preprocessor = Preprocessor(loaded.manifest.input, model.inputs[0], loaded.backend.input_shape)
    except BaseException:
        source.close()
        raise
    stats = stats or PipelineStats()
    sinks = make_sinks(config, stats, source.name) + list(extra_sinks or [])
    pipeline = Pipeline(source, loaded.backend, preprocessor, make_postprocess(decoder, params), sinks,
                        stats, max_frames=config.output.max_frames)
    return Assembly(config, loaded, pipeline, stats, sinks)
