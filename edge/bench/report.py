"""The benchmark report as a terminal table, JSON, Markdown, and a PNG plot (matplotlib, optional).

Every formatter reads the same report dict (:func:`edge.bench.runner.run`); the simulated
accelerator is labelled SIMULATED wherever it appears.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from edge.errors import ConfigError

_STAGES = ("read", "frame_age", "preprocess", "invoke", "postprocess", "draw", "publish", "total", "end_to_end")


def _f(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list], markdown: bool) -> list[str]:
    cells = [[_f(c) for c in row] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return lines + ["| " + " | ".join(row) + " |" for row in cells]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in cells]


def raw_rows(report: dict) -> tuple[list[str], list[list]]:
    header = ["backend", "init ms", "first ms", "mean", "std", "min", "p5", "p50", "p95", "p99", "max", "inf/s",
              "+RSS MiB"]
    rows = []
    for r in report.get("raw", []):
        lat = r["latency_ms"]
        rows.append([r["label"], r["init_ms"], r["first_inference_ms"], lat["mean"], lat["std"], lat["min"],
                     lat["p5"], lat["p50"], lat["p95"], lat["p99"], lat["max"], r["throughput_per_s"],
                     r.get("added_rss_mb")])
    if any("energy" in r for r in report.get("raw", [])):
        header += ["W", "mJ/inf"]
        for row, r in zip(rows, report["raw"]):
            e = r.get("energy", {})
            row += [e.get("average_watts"), e.get("mj_per_inference")]
    return header, rows


def pass_rows(report: dict) -> tuple[list[str], list[list]]:
    """The last round's passes: FPS, dropped frames, per-stage p50/p95 in ms."""
    header = ["pass", "frames", "fps", "dropped", "stage p50/p95 ms"]
    rows = []
    if not report.get("rounds"):
        return header, rows
    per_round = len(report.get("settings", {}).get("pipeline_threads") or [1])
    for last in report["rounds"][-per_round:]:
        raw = last["raw_invoke_ms"]
        rows.append([f"raw invoke ({last['pipeline']['backend']})", raw["count"], last["raw_throughput_per_s"], None,
                     f"invoke {raw['p50']:.2f}/{raw['p95']:.2f}"])
        for key in ("pipeline", "serial", "sim_pipeline", "sim_serial"):
            p = last.get(key)
            if not p:
                continue
            stages = p["stages_ms"]
            text = ", ".join(f"{s} {stages[s]['p50']:.2f}/{stages[s]['p95']:.2f}" for s in _STAGES if s in stages)
            rows.append([f"{p['mode']} ({p['backend']})", p["frames"], p["fps"], p["dropped"], text])
            if "energy" in p:
                energy = p["energy"]
                rows[-1][-1] += f"; {energy['average_watts']:.2f} W, {energy['mj_per_inference']:.1f} mJ/frame"
    return header, rows


def ratio_rows(report: dict) -> tuple[list[str], list[list]]:
    header = ["ratio", "median", "min", "max", "rounds"]
    rows = [[k, v["median"], v["min"], v["max"], len(v["rounds"])] for k, v in report.get("ratios", {}).items()]
    for key in ("int8_over_float", "int8_over_float_p50"):
        for threads, value in (report.get(key) or {}).items():
            rows.append([f"{key} ({threads} thr)", value, None, None, 1])
    return header, rows


def goal_rows(report: dict) -> tuple[list[str], list[list]]:
    return ["goal", "measured", "target", "met"], [[g["goal"], g["value"], g["target"], g["met"]]
                                                   for g in report.get("goals", [])]


def _sections(report: dict, markdown: bool) -> list[str]:
    lines = []
    title = (f"edge {report['edge']} bench — {report['model']} on {report['runtime']}, "
             f"{report['host']['machine']} {report['host']['cpus']} CPUs, source {report['source']}, "
             f"{report['created']}")
    lines += [("# " if markdown else "") + title, ""]
    if report.get("host", {}).get("load_average"):
        lines += [f"Load average at the start: {', '.join(f'{x:.2f}' for x in report['host']['load_average'])}", ""]
    for name, rows_of in (("Raw invoke latency (ms); +RSS: memory the variant added when loaded", raw_rows), ("Passes (last round)", pass_rows),
                          ("Ratios (measured side by side within each round)", ratio_rows), ("Goals", goal_rows)):
        header, rows = rows_of(report)
        if rows:
            lines += [("## " if markdown else "") + name, ""] + _table(header, rows, markdown) + [""]
    if report.get("scaling"):
        from edge.bench.scaling import format_scaling
        lines += [("## " if markdown else "") + "Scaling (SIMULATED accelerators)", ""] + \
            format_scaling(report["scaling"]).splitlines()[1:] + [""]
    cold = report.get("coldstart")
    if cold:
        lines += [("## " if markdown else "") + "Cold start", "",
                  f"spawn → first detection {cold['first_detection_s']:.2f} s (in frame "
                  f"{cold.get('first_detection_frame', '?')}, the frames before it included); "
                  f"daemon RSS {cold['rss_mb']:.0f} MiB "
                  f"(peak {cold['peak_rss_mb']:.0f} MiB) over {cold['frames']} frames", ""]
    power = report.get("power") or {}
    if power.get("note"):
        lines += [f"Power: {power['note']}", ""]
    elif power.get("source"):
        lines += [f"Power source: {power['source']}", ""]
    if (any(r.get("simulated") for r in report.get("raw", []))
            or any("sim_pipeline" in r for r in report.get("rounds", []))):
        lines += ["SIMULATED rows use a backend that sleeps the given time per inference (GIL released) and "
                  "replays one real output; they are not measurements of an accelerator.", ""]
    return lines


def format_terminal(report: dict) -> str:
    return "\n".join(_sections(report, markdown=False))


def format_markdown(report: dict) -> str:
    return "\n".join(_sections(report, markdown=True))


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(report: dict, path: str | Path) -> None:
    _write(path, json.dumps(_json_safe(report), indent=2) + "\n")


def write_markdown(report: dict, path: str | Path) -> None:
    _write(path, format_markdown(report))


def _write(path: str | Path, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {str(path)!r}: {exc.strerror}") from None


def check_outputs(*paths: str | None, plot: str | None = None) -> None:
    """Fail before a long run, not after it: output folders must exist, --plot needs matplotlib."""
    for path in (*paths, plot):
        if path and not Path(path).resolve().parent.is_dir():
            raise ConfigError(f"cannot write {path!r}: its folder does not exist")
    if plot:
        _pyplot()


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib", "pip install 'edge-detect[plot]'") from None
    return plt


def write_plot(report: dict, samples: dict, path: str | Path) -> None:
    """Box plots of latency per raw backend and per stage of the last round's passes (PNG)."""
    plt = _pyplot()
    panels = [(name, data) for name, data in (("raw invoke latency", samples.get("raw", {})),
                                              ("pipeline stages", _flatten(samples.get("pipeline", {}))),
                                              ("serial loop stages", _flatten(samples.get("serial", {}))))
              if data]
    if not panels:
        raise ConfigError("nothing to plot", "run the raw, pipeline or serial mode with --plot")
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 3.2 * len(panels)), squeeze=False)
    for ax, (name, data) in zip(axes[:, 0], panels):
        labels = list(data)
        ax.boxplot([[v * 1e3 for v in data[k]] for k in labels], orientation="horizontal", showfliers=True,
                   flierprops={"markersize": 2})
        ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("ms (log)")
        ax.set_title(name, fontsize=9)
    fig.suptitle(f"{report['model']} — {report['runtime']}, {report['host']['cpus']} CPUs", fontsize=10)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise ConfigError(f"cannot write {str(path)!r}: {exc.strerror}") from None
    finally:
        plt.close(fig)


def _flatten(passes: dict) -> dict[str, list[float]]:
    out = {}
    for pass_name, stages in passes.items():
        for stage in _STAGES:
            values = [v for v in stages.get(stage, []) if v > 0]
            if values:
                out[f"{pass_name}: {stage}"] = values
    return out
