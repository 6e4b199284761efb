#!/usr/bin/env python3
"""The on-device benchmark: the same code as ``edge bench`` (see ``edge bench --help``).

    scripts/benchmark.py --rounds 10 --json bench.json --markdown bench.md --plot bench.png
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from edge.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
