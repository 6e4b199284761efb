"""``edge``: the device-side command line. Thin: parse, build the config, call.

Errors the user can act on (:class:`~edge.errors.EdgeError`) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import traceback
from typing import Callable

from edge import __version__, config as configuration
from edge.cli_flags import RUN_FLAGS, SHARED_FLAGS, add_model_flags
from edge.errors import EdgeError

log = logging.getLogger("edge")


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="TOML configuration file (flags override it)")
    add_model_flags(p)
    g = p.add_argument_group("source")
    g.add_argument("--source", "-s", help="sample | video file | image folder | camera index or /dev/videoN | "
                                          "rtsp:// or http:// URL | picamera2 (default: sample)")
    g.add_argument("--as-fast-as-possible", action="store_const", const=False, dest="realtime",
                   help="read video files as fast as the model consumes them, every frame")
    g.add_argument("--loop", action="store_const", const=True, help="restart files at their end")
    g.add_argument("--width", type=int, help="requested camera width")
    g.add_argument("--height", type=int, help="requested camera height")
    g.add_argument("--fps", type=float, help="requested camera frame rate")
    g = p.add_argument_group("detection")
    g.add_argument("--score-threshold", type=float, help="minimum score (default 0.5)")
    g.add_argument("--max-detections", type=int, help="at most this many detections per frame")
    g.add_argument("--iou-threshold", type=float, help="NMS IoU for decoders that run NMS (default: the "
                                                       "manifest's, else the layout's)")
    g.add_argument("--classes", help="comma-separated labels to keep, e.g. person,car")
    g = p.add_argument_group("output")
    g.add_argument("--jsonl", help="detection events file (default detections.jsonl; '' for none)")
    g.add_argument("--live", help="live status line: auto | on | off")
    g.add_argument("--max-frames", type=int, help="stop after this many frames")
    g = p.add_argument_group("telemetry")
    g.add_argument("--prometheus", type=int, metavar="PORT", help="serve Prometheus /metrics on 127.0.0.1:PORT")
    g.add_argument("--mqtt", metavar="HOST[:PORT]", help="publish events and stats to this MQTT broker")
    g.add_argument("--mqtt-prefix", metavar="PREFIX", help="MQTT topic prefix (default edge)")
    g.add_argument("--web", type=int, metavar="PORT", help="serve the live view on 127.0.0.1:PORT")
    g.add_argument("--web-auth", metavar="FILE", help="credentials the live view and /metrics require: a token, "
                                                      "or user:password, in a file of mode 0600")
    g.add_argument("--insecure-listen", action="store_const", const=True, dest="insecure_listen",
                   help="allow the live view and /metrics to bind beyond loopback without --web-auth")
    g.add_argument("--power", help="power reading: auto | pmic | hwmon | static | none")
    p.add_argument("--service", action="store_true",
                   help="run as a systemd service: sd_notify READY/WATCHDOG/STATUS, SIGHUP reloads, "
                        "the source is reopened when it ends or fails (see [service])")


def config_from_args(args: argparse.Namespace) -> configuration.Config:
    overrides: dict[str, dict] = {}
    for dest, (section, key) in RUN_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    for dest, targets in SHARED_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            for section, key in targets:
                overrides.setdefault(section, {})[key] = value
    return configuration.load(getattr(args, "config", None), overrides)


def cmd_run(args: argparse.Namespace) -> int:
    from edge.app import assemble

    if getattr(args, "service", False):
        from edge.service.daemon import Daemon
        return Daemon(lambda: config_from_args(args)).run()

    config = config_from_args(args)
    assembly = assemble(config)
    pipeline = assembly.pipeline
    log.info("%s, model %s, %s; detectors %s",
             ", ".join(f"camera {c.name} ({c.source.name})" if config.cameras else f"source {c.source.name}"
                       for c in pipeline.cameras),
             assembly.loaded.model.path.name, assembly.loaded.reason, assembly.stats.backend)
    if config.output.jsonl:
        from edge.service.daemon import note_appending
        if not note_appending(config.output.jsonl):
            log.info("writing detection events to %s", config.output.jsonl)

    def _stop(signum, _frame):
        log.info("%s received: finishing frames in flight", signal.Signals(signum).name)
        pipeline.stop()

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = pipeline.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    snap = assembly.stats.snapshot()
    inv = snap.latency["invoke"]
    seen = ", ".join(f"{label} ×{n}" for label, n in sorted(snap.detections.items())) or "nothing"
    log.info("%d frames in %.1f s (%.1f fps), %d dropped; invoke p50 %.1f ms p95 %.1f ms; detected %s",
             summary.frames, summary.seconds, summary.frames / summary.seconds if summary.seconds else 0.0,
             summary.dropped, inv[50] * 1e3, inv[95] * 1e3, seen)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from edge.runtime import edgetpu, loader
    from edge.runtime.interpreter import describe_runtimes, probe_runtimes
    from edge.runtime.model import read_model
    from edge.runtime.tflite_metadata import read_metadata
    from edge.vision.decode import describe_layout

    print(f"edge {__version__}, Python {sys.version.split()[0]}")
    cfg = config_from_args(args).model
    print("TFLite runtimes (tried in this order):" if cfg.runtime == "auto" else
          f"TFLite runtimes (--runtime {cfg.runtime}):")
    print("\n".join(describe_runtimes(probe_runtimes(), cfg.runtime)))
    devices = edgetpu.enumerate_devices()
    print("Edge TPU devices: " + (", ".join(map(str, devices)) if devices else "none found"))
    models = loader.resolve(cfg)
    manifest = models.manifest
    print(f"manifest: {manifest.path or '(none: inferred from the model)'}")
    for role, path in manifest.models.items():
        print(f"  {role}: {path}")
    info = read_model(models.requested)
    print("\n".join(info.summary()))
    meta = read_metadata(info)
    if meta is not None:
        print(f"  TFLite Metadata: {meta.summary()}")
    print(f"  input convention: {models.convention.describe()}")
    print(f"  labels: {models.labels.describe()}")
    print(f"  output layout: {describe_layout(info, manifest, cfg.layout)}")
    cpu_model = models.path_for("cpu")
    if cpu_model is not None:      # opened as edge run would, so a model the runtime refuses is one line
        from edge.runtime.backend import TFLiteBackend
        from edge.runtime.interpreter import load_runtime

        try:
            runtime = load_runtime(cfg.runtime)
        except EdgeError as exc:     # the runtime listing above already says why; edge info goes on
            print(f"  XNNPACK on the CPU ({cpu_model.name}): not measured, no runtime loads ({exc.message})")
            return 0
        backend = TFLiteBackend(read_model(cpu_model), runtime, threads=1)
        share = backend.xnnpack.describe() if backend.xnnpack is not None else "not measurable with this runtime"
        backend.close()
        print(f"  XNNPACK on the CPU ({cpu_model.name}): {share}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edge.doctor import Env, report, run_checks

    if not Path(args.root).is_dir():
        raise configuration.ConfigError(f"--root {args.root!r} is not a directory",
                                        "give / or the root of a mounted system")
    return report(run_checks(Env(root=Path(args.root), user=args.user or "")), sys.stdout)


def cmd_config(args: argparse.Namespace) -> int:
    for key, default, help_text in configuration.describe():
        print(f"{key} = {default!r}\n    {help_text}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(add_help=False)
    top.add_argument("--verbose", "-v", action="count", default=0, help="more logging (-vv: debug)")
    # The subcommands take -v too, counted apart: argparse fills a subcommand's namespace from its own
    # defaults, which reset the count made before the subcommand (`edge -v run` gave 0). main() adds both.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", "-v", action="count", default=0, dest="verbose_sub",
                        help="more logging (-vv: debug)")
    parser = argparse.ArgumentParser(prog="edge", parents=[top],
                                     description="Edge TPU / CPU object detection on the device. "
                                                 "`edge` alone is `edge run`.")
    parser.add_argument("--version", action="version", version=f"edge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", parents=[common], help="run live detection (the default command)")
    _add_run_flags(run)
    run.set_defaults(func=cmd_run)
    info = sub.add_parser("info", parents=[common], help="runtimes, Edge TPUs, and what a model is")
    info.add_argument("--config", "-c", help="TOML configuration file")
    add_model_flags(info)
    info.set_defaults(func=cmd_info)
    cfg = sub.add_parser("config", parents=[common], help="every configuration key, its default and meaning")
    cfg.set_defaults(func=cmd_config)
    doctor = sub.add_parser("doctor", parents=[common], help="check this machine's set-up (runtime, Edge TPU, "
                                                             "udev, groups, camera, power); exit 1 if blocked")
    doctor.add_argument("--root", default="/", help="filesystem root to inspect (e.g. a mounted SD card)")
    doctor.add_argument("--user", help="whose groups and file access to check: that it can read the "
                                       "configuration and model files and run the unit's command (default: "
                                       "the unit's User=, edge-detect)")
    doctor.set_defaults(func=cmd_doctor)
    from edge.bench.cli import add_bench_flags, cmd_bench
    bench = sub.add_parser("bench", parents=[common], help="benchmark: raw invoke statistics per backend, the "
                                                           "pipeline, the serial loop, a simulated accelerator")
    add_model_flags(bench)
    add_bench_flags(bench)
    bench.set_defaults(func=cmd_bench)
    parser.commands = tuple(sub.choices)
    return parser


def _setup_logging(verbosity: int) -> None:
    level = logging.DEBUG if verbosity > 1 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    if verbosity == 0:
        logging.getLogger("edge.runtime").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = set(parser.commands)
    if not any(a in commands or a in ("-h", "--help", "--version") for a in argv):
        argv.insert(0, "run")  # `edge` alone runs detection on the embedded default
    args = parser.parse_args(argv)
    args.verbose += getattr(args, "verbose_sub", 0)
    _setup_logging(args.verbose)
    func: Callable[[argparse.Namespace], int] = args.func
    return guarded("edge", func, args, args.verbose)


def one_line(text: str, limit: int = 500) -> str:
    """``text`` as a single line of at most ``limit`` characters (newlines would tear the error line)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _error_line(text: str) -> None:
    """The one error line on stderr; under systemd with the journal's ``<3>`` (err) priority prefix,
    so ``journalctl -p err`` shows why the service would not start."""
    from edge.service.journal import stream_is_journal

    prefix = "<3>" if stream_is_journal(sys.stderr) else ""
    print(prefix + text, file=sys.stderr)


def guarded(prog: str, func: Callable[[argparse.Namespace], int], args: argparse.Namespace, verbose: int) -> int:
    """Run ``func(args)``: an error the user can act on prints one line and its exit code (2); any
    other exception is a bug or an input nothing checked yet, and still prints one line naming it,
    with ``-v`` for the traceback, and exits 2. Ctrl-C exits 130; SystemExit passes."""
    try:
        return func(args)
    except EdgeError as exc:
        _error_line(f"{prog}: error: {one_line(str(exc))}")
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:    # the top-level guard: everything not caught above, reported in one line
        if verbose:
            traceback.print_exception(exc, file=sys.stderr)
        hint = "the traceback is above" if verbose else "run with -v for the traceback"
        _error_line(f"{prog}: error: unexpected {type(exc).__name__}: {one_line(str(exc)) or '(no message)'} "
                    f"({hint}; please report it)")
        return 2


if __name__ == "__main__":
    sys.exit(main())
