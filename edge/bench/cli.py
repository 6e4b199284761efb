"""``edge bench`` flags and command (also run by scripts/benchmark.py). Parsing imports nothing heavy."""

from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger("edge.bench")

def add_bench_flags(p: argparse.ArgumentParser) -> None:
    """Flags of ``edge bench`` besides the model flags (which edge.cli adds)."""
    p.add_argument("--config", "-c", help="TOML configuration file (flags override it)")
    p.add_argument("--source", "-s", help="source for the pipeline, serial and cold-start modes (default: sample)")
    g = p.add_argument_group("benchmark")
    g.add_argument("--modes", default="raw,pipeline,serial,simulated,coldstart",
                   help="comma-separated: raw, pipeline, serial, simulated, coldstart, scaling (several cameras "
                        "over SIMULATED accelerators through the scheduler; not in the default) (default: all but "
                        "scaling)")
    g.add_argument("--backends", default="",
                   help="raw mode: comma-separated cpu, cpu-builtin, float, edgetpu, simulated (default: every "
                        "one available; one named here that is unavailable is an error)")
    g.add_argument("--pipeline-threads", default="",
                   help="pipeline/serial thread counts, e.g. 1,2 (default: --threads, else one per core)")
    g.add_argument("--raw-threads", default="", help="raw mode thread counts, e.g. 1,2 or 1-4 (default: 1..cores)")
    g.add_argument("--warmup", type=int, default=10, help="warm-up invokes, not recorded (default 10)")
    g.add_argument("--runs", type=int, default=100, help="recorded invokes per backend (default 100)")
    g.add_argument("--min-seconds", type=float, default=0.0,
                   help="record invokes for at least this long as well (default 0)")
    g.add_argument("--rounds", type=int, default=3,
                   help="rounds of raw reference + pipeline + serial passes; ratios are medians (default 3)")
    g.add_argument("--frames", type=int, default=0, help="frames per pass (default: the whole source)")
    g.add_argument("--simulate-ms", type=float, default=7.2,
                   help="SIMULATED accelerator time per inference in ms (default 7.2: Coral USB, SSD MobileNet v2)")
    g.add_argument("--coldstart-frames", type=int, default=100, help="frames the cold-start run processes")
    g.add_argument("--power", default="", help="none | auto | pmic | hwmon | static (with --watts); default: "
                                               "[power] source of the configuration (auto)")
    g.add_argument("--watts", type=float, help="a static power figure for --power static (default: "
                                               "[power] static_watts)")
    g = p.add_argument_group("output")
    g.add_argument("--json", help="write the report as JSON")
    g.add_argument("--markdown", help="write the report as Markdown")
    g.add_argument("--plot", help="write a PNG of the latency distributions (needs the `plot` extra)")


def _list(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def cmd_bench(args: argparse.Namespace) -> int:
    from edge import config as configuration
    from edge.bench import report as reports
    from edge.bench.raw import parse_threads
    from edge.bench.runner import Options, run
    from edge.cli_flags import RUN_FLAGS

    # The model flags are edge run's (edge.cli adds them); the cold-start process gets them back.
    model_flags = {dest: where for dest, where in RUN_FLAGS.items() if where[0] == "model"}
    overrides: dict[str, dict] = {}
    model_args: list[str] = []
    for dest, (section, key) in {**model_flags, "source": ("source", "uri")}.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        overrides.setdefault(section, {})[key] = value
        if section == "model":
            flag = "--" + dest.replace("_", "-")
            model_args += [flag] if value is True else [flag, str(value)]
    config = configuration.load(args.config, overrides)
    if args.config:
        model_args = ["--config", args.config, *model_args]
    opts = Options(config=config, modes=_list(args.modes), backends=_list(args.backends),
                   threads=parse_threads(args.raw_threads) if args.raw_threads else [],
                   pipeline_threads=parse_threads(args.pipeline_threads) if args.pipeline_threads else [],
                   warmup=args.warmup,
                   runs=args.runs, min_seconds=args.min_seconds, rounds=args.rounds, frames=args.frames,
                   simulate_ms=args.simulate_ms, coldstart_frames=args.coldstart_frames, power=args.power,
                   watts=args.watts, model_args=model_args)
    reports.check_outputs(args.json, args.markdown, plot=args.plot)
    report, samples = run(opts)
    print(reports.format_terminal(report))
    if args.json:
        reports.write_json(report, args.json)
        log.info("wrote %s", args.json)
    if args.markdown:
        reports.write_markdown(report, args.markdown)
        log.info("wrote %s", args.markdown)
    if args.plot:
        reports.write_plot(report, samples, args.plot)
        log.info("wrote %s", args.plot)
    sys.stdout.flush()
    return 0
