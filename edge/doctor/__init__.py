"""``edge doctor``: is this machine set up to run ``edge``? One line per finding, with a remedy.

The exit status is 1 when a finding blocks running (``fail``), else 0. Warnings (a slow USB 2
link, throttling since boot, a missing group) are printed but do not block.
"""

from __future__ import annotations

from typing import Iterable, TextIO

from edge.doctor.checks import CHECKS, FAIL, Env, Finding

MARKS = {"ok": "[ OK ]", "info": "[INFO]", "warn": "[WARN]", "fail": "[FAIL]"}


def run_checks(env: Env | None = None) -> list[Finding]:
    env = env or Env()
    findings: list[Finding] = []
    for check in CHECKS:
        findings += check(env)
    return findings


def report(findings: Iterable[Finding], out: TextIO) -> int:
    """Print the findings; the exit status: 1 if any blocks running, else 0."""
    findings = list(findings)
    for f in findings:
        print(f"{MARKS[f.status]} {f.check}: {f.detail}", file=out)
        if f.remedy and f.status != "ok":
            print(f"       → {f.remedy}", file=out)
    blocking = [f for f in findings if f.status == FAIL]
    print(f"{len(blocking)} problem(s) block running" if blocking else "nothing blocks running", file=out)
    return 1 if blocking else 0


__all__ = ["Env", "Finding", "run_checks", "report"]
