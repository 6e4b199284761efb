#!/usr/bin/env python3
"""The on-device benchmark: the same code as ``edge bench`` (see ``edge bench --help``).

    scripts/benchmark.py --rounds 10 --json bench.json --markdown bench.md --plot bench.png
"""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def _checkout_models() -> None:
    """Installed, ``models/`` is the package ``edge.models`` (pyproject's package-dir); in a checkout
    that is not installed nothing maps it, so map it the same way here."""
    if importlib.util.find_spec("edge.models") is not None:
        return
    spec = importlib.util.spec_from_file_location("edge.models", ROOT / "models" / "__init__.py",
                                                  submodule_search_locations=[str(ROOT / "models")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["edge.models"] = module
    spec.loader.exec_module(module)


_checkout_models()

from edge.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
