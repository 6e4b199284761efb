"""Lazy TensorFlow import with an actionable error when it is missing."""

from __future__ import annotations

import os
from types import ModuleType

from edge.errors import EdgeError


def tensorflow() -> ModuleType:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise EdgeError(f"edge-host needs TensorFlow ({exc})",
                        "pip install 'edge-detect[host]' on an x86-64 or arm64 workstation") from None
    return tf
