"""Imports follow the layering: results sit below the pipeline, and the two CLIs do not import each other."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported(path: Path) -> set[str]:
    """Every module an ``import`` or ``from … import`` in ``path`` names, at any depth (lazy ones too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_sinks_telemetry_and_web_never_import_the_pipeline():
    below = [ROOT / "edge/results.py", *(ROOT / "edge/telemetry").rglob("*.py"), *(ROOT / "edge/web").rglob("*.py")]
    offenders = {str(p.relative_to(ROOT)) for p in below if {"edge.pipeline", "edge.app"} & imported(p)}
    assert offenders == set()


def test_bench_cli_does_not_import_the_edge_cli():
    assert "edge.cli" not in imported(ROOT / "edge/bench/cli.py")
    assert "edge.cli" not in imported(ROOT / "edge/cli_flags.py")
