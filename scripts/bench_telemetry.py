#!/usr/bin/env python3
"""Overhead of telemetry: the pipeline with every exporter on vs. all off, side by side in one run.

Each round runs every setting once on the same model and clip read as fast as possible (every
frame), in an order that rotates from round to round, so that settings run side by side in the
same machine state and none always runs first.

- off: no JSONL, no live line, no exporter, no system monitor.
- exporters: the system monitor, Prometheus /metrics scraped, MQTT to a real mosquitto (started
  here when the `mosquitto` binary exists, else the exporter keeps retrying a closed port), JSONL
  events with stats lines, the live line (to /dev/null). With the shipped defaults (`--intervals
  defaults`, the default): system samples every 2 s, MQTT and JSONL stats every 10 s, a scrape at
  the start of the round and every 15 s (a common Prometheus scrape_interval). With `--intervals
  stress`: samples every 0.5 s, stats lines and scrapes every second.
- exporters+web: the same plus the live view with one MJPEG viewer connected (frames drawn and
  JPEG-encoded at 10 fps in this process).

Reported per setting, over the steady part of each round (from the 30th published frame, a tenth
of the round for short ones, to the last): frames per second and CPU milliseconds per frame of
this process (time.process_time, all threads), their medians, and the median over rounds of each
round's ratio to the "off" run of the same round with its interquartile range.

On a shared machine FPS varies from round to round by more than telemetry costs, so the CPU is
also split by thread (Linux: /proc/self/task/*/schedstat):

- inference: the main thread and XNNPACK's workers;
- capture: the capture thread and the video decoder's threads;
- post-process: decoding, then every per-frame sink inline (JSONL, MQTT publish, the live view's
  hand-off);
- telemetry: the system monitor, paho's network thread, stats timers, the Prometheus and web
  servers and their request threads;
- bench clients: this script's scraper and viewer, which stand in for a Prometheus server and a
  browser that would run elsewhere.

Telemetry's own cost per frame is its threads plus what the post-process thread spends beyond the
"off" run of the same round.

    .venv/bin/python scripts/bench_telemetry.py [--intervals defaults|stress] [--frames N] [--rounds N]
                                                [--realtime] [--json out.json]
    .venv/bin/python scripts/bench_telemetry.py --pool run1.json run2.json …   # earlier runs together
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge import config as configuration  # noqa: E402
from edge.app import assemble  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


GROUPS = ("inference", "capture", "post-process", "telemetry", "bench clients")


def thread_group(name: str) -> str:
    """Which part of the process a thread (Python name, else the kernel's comm) belongs to."""
    if name == "MainThread" or not name or name == "python":        # XNNPACK workers are unnamed native threads
        return "inference"
    if name.startswith(("capture:", "av:")):       # the capture thread and FFmpeg's decoder threads
        return "capture"
    if name == "postprocess":
        return "post-process"
    if name.startswith("bench-"):
        return "bench clients"
    return "telemetry"


def thread_cpu() -> dict[int, tuple[str, float]]:
    """{native thread id: (name, CPU seconds)} for the live threads of this process (empty off Linux)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in map(int, tids):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
            with open(f"/proc/self/task/{tid}/comm") as f:
                comm = f.read().strip()
        except (OSError, ValueError, IndexError):   # the thread ended meanwhile
            continue
        out[tid] = (names.get(tid, comm), ns / 1e9)
    return out


def cpu_by_group(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                 process_cpu: float) -> dict[str, float]:
    """CPU seconds per group between two :func:`thread_cpu` readings. Threads that ended in between
    (short-lived request threads) are the process's CPU that no live thread accounts for; they are
    counted as telemetry, the only part that starts such threads."""
    groups = dict.fromkeys(GROUPS, 0.0)
    for tid, (name, cpu) in after.items():
        start = before.get(tid)
        groups[thread_group(name)] += cpu - (start[1] if start and start[0] == name else 0.0)
    groups["telemetry"] += max(0.0, process_cpu - sum(groups.values()))
    return groups


def start_mosquitto(tmp: Path) -> tuple[subprocess.Popen | None, int]:
    port = free_port()
    exe = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if exe is None:
        print("mosquitto not found: MQTT exporter runs against a closed port", file=sys.stderr)
        return None, port
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("mosquitto did not start")


class Clients:
    """A Prometheus scraper and an MJPEG viewer, as a real deployment would have."""

    def __init__(self, metrics_port: int, web_port: int, scrape_every: float):
        self.stop = threading.Event()
        self.scrape_every = scrape_every
        self.threads = [threading.Thread(target=self._scrape, args=(metrics_port,), name="bench-scraper",
                                         daemon=True)]
        if web_port:
            self.threads.append(threading.Thread(target=self._view, args=(web_port,), name="bench-viewer",
                                                 daemon=True))
        for t in self.threads:
            t.start()

    def _scrape(self, port: int) -> None:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
            except OSError:
                pass      # the server is not up yet or already closed: the next scrape retries
            if self.stop.wait(self.scrape_every):
                return

    def _view(self, port: int) -> None:
        while not self.stop.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/stream.mjpg", timeout=2) as stream:
                    while not self.stop.is_set() and stream.read(65536):
                        pass
            except OSError:
                self.stop.wait(0.2)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5)


SETTINGS = ("off", "exporters", "exporters+web")


INTERVALS = {  # seconds: system sampling, MQTT stats, JSONL stats lines, Prometheus scrapes
    "defaults": {"sample": None, "mqtt_stats": None, "jsonl_stats": 10.0, "scrape": 15.0},
    "stress": {"sample": 0.5, "mqtt_stats": 1.0, "jsonl_stats": 1.0, "scrape": 1.0},
}


def run_once(frames: int, setting: str, tmp: Path, mqtt_port: int, realtime: bool = False,
             intervals: str = "defaults") -> dict:
    every = INTERVALS[intervals]
    tables = {"source": {"realtime": realtime, "loop": True}, "output": {"max_frames": frames, "jsonl": "",
                                                                         "live": "off"}}
    clients = None
    telemetry = setting != "off"
    metrics_port, web_port = free_port(), 0
    if telemetry:
        tables["output"] |= {"jsonl": str(tmp / "events.jsonl"), "jsonl_stats": every["jsonl_stats"], "live": "on"}
        tables |= {"prometheus": {"port": metrics_port}, "mqtt": {"host": f"127.0.0.1:{mqtt_port}"}}
        if every["sample"] is not None:     # None: the shipped default
            tables["telemetry"] = {"interval": every["sample"]}
        if every["mqtt_stats"] is not None:
            tables["mqtt"]["stats_interval"] = every["mqtt_stats"]
    if setting == "exporters+web":
        web_port = free_port()
        tables["web"] = {"port": web_port}
    config = configuration.merge(configuration.Config(), tables)
    saved = sys.stderr
    if telemetry:
        sys.stderr = open("/dev/null", "w")     # the live line draws there
    try:
        assembly = assemble(config)
        if telemetry:
            clients = Clients(metrics_port, web_port, every["scrape"])
        time.sleep(0.5)      # the viewer connects; the same pause in every setting (a paced source counts it)
        warm = min(30, frames // 10)      # frames left out of the figures: decoder and caches warming up
        marks = {0: reading()}
        published = itertools.count(1)

        def mark(_result) -> None:      # at the first counted and the last frame, while the threads are alive
            n = next(published)
            if n in (warm, frames):
                marks[n] = reading()
        assembly.pipeline.on_published.append(mark)
        summary = assembly.pipeline.run()
    finally:
        if clients:
            clients.close()
        if telemetry:
            sys.stderr.close()
            sys.stderr = saved
    if frames not in marks:
        raise SystemExit(f"the {setting} round ended after {summary.frames} of {frames} frames")
    (threads0, cpu0, wall0), (threads1, cpu1, wall1) = marks[warm], marks[frames]
    counted = frames - warm
    groups = cpu_by_group(threads0, threads1, cpu1 - cpu0)
    return {"setting": setting, "frames": summary.frames, "counted": counted, "dropped": summary.dropped,
            "fps": counted / (wall1 - wall0), "cpu_ms_per_frame": (cpu1 - cpu0) / counted * 1e3,
            "cpu_ms_per_frame_by_thread": {g: v / counted * 1e3 for g, v in groups.items()}}


def reading() -> tuple[dict[int, tuple[str, float]], float, float]:
    """(CPU per thread, CPU of the process, wall clock) now."""
    return thread_cpu(), time.process_time(), time.perf_counter()


def spread(values: list[float]) -> tuple[float, float, float]:
    """(median, lower quartile, upper quartile); the quartiles are the median for fewer than 2 values."""
    mid = statistics.median(values)
    if len(values) < 2:
        return mid, mid, mid
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return mid, q1, q3


def median_ci(values: list[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap confidence interval of the median (percentile method, fixed seed)."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def summarize(rounds: list[dict]) -> dict:
    """Medians per setting and, per round, each setting against the "off" run of the same round."""
    off = {r["round"]: r for r in rounds if r["setting"] == "off"}
    result: dict = {"median": {}, "ratio_to_off": {}, "telemetry_cpu_ms_per_frame": {}}
    for setting in SETTINGS:
        mine = [r for r in rounds if r["setting"] == setting]
        result["median"][setting] = {
            "fps": statistics.median(r["fps"] for r in mine),
            "cpu_ms_per_frame": statistics.median(r["cpu_ms_per_frame"] for r in mine),
            "cpu_ms_per_frame_by_thread": {g: statistics.median(r["cpu_ms_per_frame_by_thread"][g] for r in mine)
                                           for g in GROUPS}}
        if setting == "off":
            continue
        fps = [r["fps"] / off[r["round"]]["fps"] for r in mine]
        # telemetry's own CPU: its threads, plus what the post-process thread spends beyond the off run
        own = [r["cpu_ms_per_frame_by_thread"]["telemetry"] + r["cpu_ms_per_frame_by_thread"]["post-process"]
               - off[r["round"]]["cpu_ms_per_frame_by_thread"]["post-process"] for r in mine]
        share = [o / off[r["round"]]["cpu_ms_per_frame"] for o, r in zip(own, mine)]
        result["ratio_to_off"][setting] = {
            "fps": spread(fps), "fps_median_ci95": median_ci(fps), "fps_at_least_0.97": sum(f >= 0.97 for f in fps),
            "cpu_per_frame": spread([r["cpu_ms_per_frame"] / off[r["round"]]["cpu_ms_per_frame"] for r in mine])}
        result["telemetry_cpu_ms_per_frame"][setting] = {"ms": spread(own), "share_of_off_cpu": spread(share)}
    return result


def report(result: dict, rounds: int) -> None:
    med, ratio, own = result["median"], result["ratio_to_off"], result["telemetry_cpu_ms_per_frame"]
    print(f"\n{'setting':>13}  {'fps':>6}  {'CPU ms/frame':>12}  {'fps ratio [IQR]':>21}  {'rounds >=0.97':>13}  "
          f"{'CPU/frame ratio':>15}")
    for s in SETTINGS:
        line = f"{s:>13}  {med[s]['fps']:6.1f}  {med[s]['cpu_ms_per_frame']:12.2f}"
        if s in ratio:
            f, c = ratio[s]["fps"], ratio[s]["cpu_per_frame"]
            line += (f"  {f[0]:7.3f} [{f[1]:.3f}-{f[2]:.3f}]  {ratio[s]['fps_at_least_0.97']:>6d} of {rounds:<4d}"
                     f"  {c[0]:15.3f}")
        print(line)
    for s, r in ratio.items():
        lo, hi = r["fps_median_ci95"]
        print(f"{s}: the median fps ratio is {r['fps'][0]:.3f}, 95 % confidence interval {lo:.3f}-{hi:.3f} "
              f"(bootstrap over the {rounds} rounds)")
    print(f"\nCPU ms per frame by thread (medians){'':8}" + "".join(f"{g:>15}" for g in GROUPS))
    for s in SETTINGS:
        print(f"{s:>44}" + "".join(f"{med[s]['cpu_ms_per_frame_by_thread'][g]:15.3f}" for g in GROUPS))
    print()
    for s, o in own.items():
        print(f"telemetry's own CPU with {s}: {o['ms'][0]:.3f} ms/frame [{o['ms'][1]:.3f}-{o['ms'][2]:.3f}], "
              f"{o['share_of_off_cpu'][0]:.1%} of the off run's CPU per frame")


def pooled_rounds(paths: list[str]) -> list[dict]:
    """The rounds of several ``--json`` files, renumbered so that each stays paired with its own "off" run."""
    rounds = []
    for i, path in enumerate(paths):
        try:
            saved = json.loads(Path(path).read_text())["rounds"]
            rounds += [r | {"round": (i, r["round"])} for r in saved if r["cpu_ms_per_frame_by_thread"]]
        except (OSError, ValueError) as exc:
            raise SystemExit(f"--pool: cannot read {path}: {exc}") from None
        except (KeyError, TypeError):
            raise SystemExit(f"--pool: {path} is not a --json file of this script (no per-round pairing and "
                             "per-thread CPU; files of older versions lack them)") from None
    return rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intervals", choices=tuple(INTERVALS), default="defaults",
                        help="periodic work: the shipped defaults, or stress (every 0.5-1 s)")
    parser.add_argument("--frames", type=int, default=1500, help="frames per round (default 1500: ~10 s, so "
                                                                 "that rounds include the periodic work)")
    parser.add_argument("--rounds", type=int, default=9,
                        help="rounds (default 9; a multiple of 3 puts every setting first equally often)")
    parser.add_argument("--realtime", action="store_true",
                        help="read the clip at its own frame rate (25 fps), like a camera, instead of as fast "
                             "as possible: FPS then shows whether telemetry costs frames at that rate")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--pool", nargs="+", metavar="JSON",
                        help="measure nothing: report the rounds of earlier --json files together")
    args = parser.parse_args()
    if args.pool:
        rounds = pooled_rounds(args.pool)
        report(summarize(rounds), len({r["round"] for r in rounds}))
        return 0
    for flag, value in (("--frames", args.frames), ("--rounds", args.rounds)):
        if value < 1:
            parser.error(f"{flag} must be at least 1, got {value}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker, mqtt_port = start_mosquitto(tmp)
        try:
            run_once(30, "off", tmp, mqtt_port)      # warm-up: caches, XNNPACK packing
            rounds = []
            for i in range(args.rounds):
                for setting in SETTINGS[i % 3:] + SETTINGS[:i % 3]:     # rotate: no setting always first
                    r = run_once(args.frames, setting, tmp, mqtt_port, args.realtime, args.intervals)
                    rounds.append(r | {"round": i})
                    print(f"round {i + 1} {setting:>13}: {r['fps']:6.1f} fps, {r['dropped']:3d} dropped, "
                          f"{r['cpu_ms_per_frame']:6.2f} ms CPU/frame", flush=True)
        finally:
            if broker is not None:
                broker.terminate()
                broker.wait(timeout=10)
    result = {"frames_per_round": args.frames, "realtime": args.realtime, "intervals": args.intervals,
              "rounds": rounds} | summarize(rounds)
    report(result, args.rounds)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
