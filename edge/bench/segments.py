"""Benchmark: a model pipelined over K SIMULATED Edge TPUs against the same model on one.

No Edge TPU is needed, and none is measured: every segment is a :class:`SimulatedSegment` that sleeps
its share of the model's time (Coral's published 7.2 ms for SSD MobileNet v2 on the USB Accelerator,
split evenly: 3.6 ms per segment for K=2) and returns outputs of the real segment's shapes. What is
measured is this machine's pipelining: threads, queues, copies and the GIL around those sleeps.

* unsegmented: one thread, one SIMULATED TPU taking the whole model time per frame (the chain run with
  the whole time on segment 0 and 0 ms on the others, so the host work per frame is the same);
* pipelined: :class:`PipelinedRunner` with one thread per segment, a producer pushing and a collector
  popping (as the multi-camera scheduler does).

Run: ``python scripts/bench_segments.py`` (or :func:`main` from ``edge bench``).
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.runtime.segments import PipelinedRunner, SegmentChain, run_sequential, simulated_stages
from edge.runtime.simulated import CORAL_USB_SSD_MOBILENET_V2_MS

DEFAULT_SEGMENTS = [Path(__file__).resolve().parents[3] / "shared" / "models" / "coral" /
                    f"ssd_mobilenet_v2_coco_quant_postprocess_segment_{i}_of_2_edgetpu.tflite" for i in range(2)]


@dataclass(frozen=True)
class SegmentsBench:
    k: int
    model_ms: float
    frames: int
    unsegmented_fps: float
    pipelined_fps: float
    stage_busy_ms: tuple[float, ...]     # mean time per invoke in each stage (sleep + host work)

    @property
    def ratio(self) -> float:
        return self.pipelined_fps / self.unsegmented_fps

    def lines(self) -> list[str]:
        return [f"SIMULATED Edge TPUs: {self.model_ms:g} ms model, {self.k} segments of "
                f"{self.model_ms / self.k:g} ms, {self.frames} frames",
                f"  unsegmented (1 TPU)      {self.unsegmented_fps:8.1f} frames/s",
                f"  pipelined ({self.k} TPUs)      {self.pipelined_fps:8.1f} frames/s   "
                f"(stage time per invoke: {', '.join(f'{b:.2f} ms' for b in self.stage_busy_ms)})",
                f"  ratio                    {self.ratio:8.2f}x"]


def _frames(chain: SegmentChain, n: int) -> list[np.ndarray]:
    tensor = chain.inputs[0]
    rng = np.random.default_rng(15)
    return [rng.integers(0, 256, tensor.shape, dtype=np.uint8).astype(tensor.dtype) for _ in range(min(n, 16))]


def measure_unsegmented(chain: SegmentChain, model_ms: float, frames: int) -> float:
    stages = simulated_stages(chain, [model_ms / 1e3] + [0.0] * (chain.k - 1))
    inputs = _frames(chain, frames)
    run_sequential(chain, stages, inputs[0])               # warm-up
    started = time.perf_counter()
    for i in range(frames):
        run_sequential(chain, stages, inputs[i % len(inputs)])
    return frames / (time.perf_counter() - started)


def measure_pipelined(chain: SegmentChain, model_ms: float, frames: int,
                      queue_size: int = 2) -> tuple[float, tuple[float, ...]]:
    runner = PipelinedRunner(simulated_stages(chain, model_ms / 1e3 / chain.k), chain, queue_size=queue_size)
    inputs = _frames(chain, frames)
    runner.push(inputs[0], -1)                             # warm-up
    runner.pop()

    def produce() -> None:
        for i in range(frames):
            runner.push(inputs[i % len(inputs)], i)
        runner.finish()

    started = time.perf_counter()
    producer = threading.Thread(target=produce, name="bench-producer")
    producer.start()
    n = 0
    while (item := runner.pop()) is not None:
        if item[0] != n:
            raise AssertionError(f"result {item[0]} came out at position {n}")
        n += 1
    elapsed = time.perf_counter() - started
    producer.join()
    busy = tuple(b / r * 1e3 for b, r in zip(runner.busy_s, runner.runs))
    runner.close()
    return n / elapsed, busy


def run(paths: list[Path] | None = None, model_ms: float = CORAL_USB_SSD_MOBILENET_V2_MS, frames: int = 300,
        rounds: int = 3) -> SegmentsBench:
    """Median of ``rounds`` alternating unsegmented/pipelined passes of ``frames`` frames each."""
    chain = SegmentChain.from_files(paths or DEFAULT_SEGMENTS)
    unsegmented, pipelined, busy = [], [], []
    for _ in range(rounds):
        unsegmented.append(measure_unsegmented(chain, model_ms, frames))
        fps, stage_ms = measure_pipelined(chain, model_ms, frames)
        pipelined.append(fps)
        busy.append(stage_ms)
    median = len(pipelined) // 2
    order = sorted(range(len(pipelined)), key=pipelined.__getitem__)
    return SegmentsBench(chain.k, model_ms, frames, float(np.median(unsegmented)), float(np.median(pipelined)),
                         busy[order[median]])


def main(argv: list[str] | None = None) -> int:
    """``edge bench`` hook / script entry: prints the report; exit 1 when the ratio is below --min-ratio."""
    p = argparse.ArgumentParser(prog="bench_segments", description=__doc__.split("\n\n")[0])
    p.add_argument("segments", nargs="*", type=Path,
                   help="segment files (default: Coral's 2-segment SSD MobileNet v2 in ../shared/models/coral)")
    p.add_argument("--model-ms", type=float, default=CORAL_USB_SSD_MOBILENET_V2_MS,
                   help="SIMULATED time of the whole model on one Edge TPU, split evenly (default 7.2)")
    p.add_argument("--frames", type=int, default=300, help="frames per pass (default 300)")
    p.add_argument("--rounds", type=int, default=3, help="passes of each kind; medians reported (default 3)")
    p.add_argument("--min-ratio", type=float, default=1.8, help="exit 1 below this speed-up (default 1.8)")
    args = p.parse_args(argv)
    result = run(args.segments or None, args.model_ms, args.frames, args.rounds)
    print("\n".join(result.lines()))
    if result.ratio < args.min_ratio:
        print(f"FAIL: pipelined/unsegmented = {result.ratio:.2f}, below --min-ratio {args.min_ratio:g}")
        return 1
    return 0
