#!/usr/bin/env python3
"""Overhead of telemetry: the pipeline with every exporter on vs. all off, side by side in one run.

Rounds alternate the settings (off, exporters, exporters+web, off, …) on the same model and clip
read as fast as possible (every frame), so all settings see the same machine state.

- off: no JSONL, no live line, no exporter, no system monitor.
- exporters: the system monitor, Prometheus /metrics scraped, MQTT to a real mosquitto (started
  here when the `mosquitto` binary exists, else the exporter keeps retrying a closed port), JSONL
  events with stats lines, the live line (to /dev/null). With the shipped defaults (`--intervals
  defaults`, the default): system samples every 2 s, MQTT and JSONL stats every 10 s, a scrape at
  the start of the round and every 15 s (a common Prometheus scrape_interval). With `--intervals
  stress`: samples every 0.5 s, stats lines and scrapes every second.
- exporters+web: the same plus the live view with one MJPEG viewer connected (frames drawn and
  JPEG-encoded at 10 fps in this process).

Reported per setting: frames per second and CPU milliseconds per frame of this process
(time.process_time, all threads), their medians, and the median over rounds of each round's ratio
to the "off" run of the same round (neighbours in time share the machine's load; on a shared
machine FPS varies far more than CPU time per frame, which is the steadier figure).

    .venv/bin/python scripts/bench_telemetry.py [--intervals defaults|stress] [--frames N] [--rounds N]
                                                [--realtime] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
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
        self.threads = [threading.Thread(target=self._scrape, args=(metrics_port,), daemon=True)]
        if web_port:
            self.threads.append(threading.Thread(target=self._view, args=(web_port,), daemon=True))
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
        cpu0, wall0 = time.process_time(), time.perf_counter()
        summary = assembly.pipeline.run()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        if clients:
            clients.close()
        if telemetry:
            sys.stderr.close()
            sys.stderr = saved
    return {"setting": setting, "frames": summary.frames, "dropped": summary.dropped, "fps": summary.frames / wall,
            "cpu_ms_per_frame": cpu / summary.frames * 1e3}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intervals", choices=tuple(INTERVALS), default="defaults",
                        help="periodic work: the shipped defaults, or stress (every 0.5-1 s)")
    parser.add_argument("--frames", type=int, default=1500, help="frames per round (default 1500: ~10 s, so "
                                                                 "that rounds include the periodic work)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per setting (default 5)")
    parser.add_argument("--realtime", action="store_true",
                        help="read the clip at its own frame rate (25 fps), like a camera, instead of as fast "
                             "as possible: FPS then shows whether telemetry costs frames at that rate")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker, mqtt_port = start_mosquitto(tmp)
        try:
            run_once(30, "off", tmp, mqtt_port)      # warm-up: caches, XNNPACK packing
            rounds = []
            for i in range(args.rounds):
                for setting in SETTINGS:
                    r = run_once(args.frames, setting, tmp, mqtt_port, args.realtime, args.intervals)
                    rounds.append(r)
                    print(f"round {i + 1} {setting:>13}: {r['fps']:6.1f} fps, {r['dropped']:3d} dropped, "
                          f"{r['cpu_ms_per_frame']:6.2f} ms CPU/frame", flush=True)
        finally:
            if broker is not None:
                broker.terminate()
                broker.wait(timeout=10)
    med = {s: {k: statistics.median(r[k] for r in rounds if r["setting"] == s)
               for k in ("fps", "cpu_ms_per_frame")} for s in SETTINGS}
    offs = [r for r in rounds if r["setting"] == "off"]

    def paired(setting: str, key: str) -> float:
        mine = [r for r in rounds if r["setting"] == setting]
        return statistics.median(a[key] / b[key] for a, b in zip(mine, offs))
    result = {"frames_per_round": args.frames, "realtime": args.realtime, "intervals": args.intervals, "rounds": rounds, "median": med,
              "ratio_to_off": {s: {"fps": paired(s, "fps"), "cpu_per_frame": paired(s, "cpu_ms_per_frame")}
                               for s in SETTINGS[1:]}}
    print(f"\n{'setting':>13}  {'fps':>6}  {'CPU ms/frame':>12}  {'fps ratio':>9}  {'CPU/frame ratio':>15}")
    for s in SETTINGS:
        ratio = result["ratio_to_off"].get(s, {"fps": 1.0, "cpu_per_frame": 1.0})
        print(f"{s:>13}  {med[s]['fps']:6.1f}  {med[s]['cpu_ms_per_frame']:12.2f}  {ratio['fps']:9.3f}  "
              f"{ratio['cpu_per_frame']:15.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
