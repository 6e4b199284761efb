#!/usr/bin/env python3
"""Pipelined segments on SIMULATED Edge TPUs vs one: see edge/bench/segments.py. Prints the ratio."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.bench.segments import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
