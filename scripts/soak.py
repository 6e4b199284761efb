#!/usr/bin/env python3
"""Soak: `edge run` for a long time with every exporter on and polled; report its memory growth.

Starts a mosquitto on a free loopback port, then `edge run --loop` on the sample clip in real time
with Prometheus, MQTT (QoS 1), the live view and JSONL (with stats lines and rotation) on. A poller
scrapes /metrics and /stats every second and reads the MJPEG stream. VmRSS and CPU time of the
`edge` process are sampled from /proc every 10 s. The report gives RSS at each minute and the RSS
growth after the warm-up (`--settle`, default minute 2), with a least-squares slope.

    .venv/bin/python scripts/soak.py --minutes 30 --json soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_sample(pid: int) -> tuple[int, float]:
    """(VmRSS in bytes, user+system CPU seconds) of ``pid`` from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


def poll(url: str, stop: threading.Event, period: float, counts: dict, key: str) -> None:
    while not stop.wait(period):
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                r.read()
            counts[key] = counts.get(key, 0) + 1
        except OSError as exc:
            counts[key + "_errors"] = counts.get(key + "_errors", 0) + 1
            counts[key + "_last_error"] = str(exc)


def watch_stream(url: str, stop: threading.Event, counts: dict) -> None:
    """Read the MJPEG stream as a viewer would, reconnecting when it ends."""
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                while not stop.is_set():
                    if not r.read(65536):
                        break
                    counts["stream_chunks"] = counts.get("stream_chunks", 0) + 1
        except OSError:
            counts["stream_errors"] = counts.get("stream_errors", 0) + 1
            stop.wait(1.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--settle", type=float, default=2.0, help="minutes of warm-up before growth is measured")
    ap.add_argument("--json", help="write the samples and the result here")
    args = ap.parse_args()
    mosquitto = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
    if mosquitto is None:
        print("soak: error: mosquitto is not installed (apt install mosquitto)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="edge-soak-"))
    mqtt_port, prom_port, web_port = free_port(), free_port(), free_port()
    (work / "mosquitto.conf").write_text(f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\n")
    broker = subprocess.Popen([mosquitto, "-c", str(work / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    (work / "edge.toml").write_text(
        f'[source]\nloop = true\n[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\nqos = 1\n'
        f'[output]\njsonl = "{work / "events.jsonl"}"\njsonl_max_bytes = 1000000\njsonl_stats = 5.0\nlive = "off"\n'
        f'[prometheus]\nport = {prom_port}\n[web]\nport = {web_port}\n')
    edge = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(work / "edge.toml")],
                            cwd=work, stdout=subprocess.DEVNULL, stderr=open(work / "edge.log", "w"))
    stop = threading.Event()
    counts: dict = {}
    time.sleep(5)
    threads = [threading.Thread(target=poll, args=(f"http://127.0.0.1:{prom_port}/metrics", stop, 1.0, counts,
                                                   "scrapes"), daemon=True),
               threading.Thread(target=poll, args=(f"http://127.0.0.1:{web_port}/stats", stop, 1.0, counts,
                                                   "stats"), daemon=True),
               threading.Thread(target=watch_stream, args=(f"http://127.0.0.1:{web_port}/stream.mjpg", stop, counts),
                                daemon=True)]
    for t in threads:
        t.start()
    samples = []
    start = time.monotonic()
    try:
        while time.monotonic() - start < args.minutes * 60:
            if edge.poll() is not None:
                print(f"soak: error: edge exited with {edge.returncode}; see {work / 'edge.log'}", file=sys.stderr)
                return 1
            rss, cpu = proc_sample(edge.pid)
            samples.append((time.monotonic() - start, rss, cpu))
            if len(samples) % 6 == 1:
                print(f"{samples[-1][0] / 60:5.1f} min  RSS {rss / 1e6:7.2f} MB  CPU {cpu:7.1f} s  {counts}",
                      flush=True)
            time.sleep(10)
    finally:
        stop.set()
        edge.terminate()
        edge.wait(30)
        broker.terminate()
        broker.wait(10)
    t = np.array([s[0] for s in samples]) / 60
    rss = np.array([s[1] for s in samples]) / 1e6
    late = t >= args.settle
    growth = float(rss[late][-1] - rss[late][0]) if late.sum() > 1 else float("nan")
    slope = float(np.polyfit(t[late], rss[late], 1)[0]) if late.sum() > 2 else float("nan")
    result = {"minutes": args.minutes, "settle_minutes": args.settle, "rss_start_mb": float(rss[0]),
              "rss_at_settle_mb": float(rss[late][0]) if late.any() else None, "rss_end_mb": float(rss[-1]),
              "growth_after_settle_mb": growth, "slope_mb_per_min": slope, "exit": edge.returncode,
              "polls": counts, "samples": samples}
    print(f"RSS {rss[0]:.2f} MB at start, {result['rss_at_settle_mb']:.2f} MB at minute {args.settle:g}, "
          f"{rss[-1]:.2f} MB at the end: growth after minute {args.settle:g} = {growth:+.2f} MB "
          f"(slope {slope:+.3f} MB/min); edge exit {edge.returncode}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
