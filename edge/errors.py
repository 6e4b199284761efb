"""Errors users can act on.

Every error the CLI reports is an :class:`EdgeError`: one line naming the bad value, what was
expected and, where there is one, the remedy. The CLI prints it without a traceback and exits 2.
"""

from __future__ import annotations


class EdgeError(Exception):
    """A failure caused by input or environment, with a message meant for the user."""

    exit_code = 2

    def __init__(self, message: str, remedy: str | None = None):
        self.message = message
        self.remedy = remedy
        super().__init__(f"{message} ({remedy})" if remedy else message)


class ConfigError(EdgeError):
    """A configuration value, flag or file is invalid."""


class ModelError(EdgeError):
    """A model file is missing, corrupt, or not what the chosen decoder/device needs."""


class SourceError(EdgeError):
    """A frame source cannot be opened or stopped delivering frames."""


class DelegateError(EdgeError):
    """An accelerator delegate (Edge TPU) cannot be found or loaded."""


class RuntimeChainError(EdgeError):
    """No TFLite runtime could be imported."""
