"""Log priorities for journald: the sd-daemon ``<N>`` prefix on every line written to the journal.

Under systemd, stderr is a stream to journald (``$JOURNAL_STREAM`` names its device and inode).
journald reads a leading ``<N>`` (syslog priority, sd-daemon(3); ``SyslogLevelPrefix=`` is on by
default) as the line's priority, so that ``journalctl -p warning`` filters and errors show red.
Without the prefix every line is logged at the unit's default, info. The journal stamps each
entry itself, so the prefixed format leaves out the time.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

# logging level -> syslog priority (sd-daemon.h SD_ERR, SD_WARNING, ...)
PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
DEBUG = 7


def priority(levelno: int) -> int:
    return next((p for level, p in PRIORITIES if levelno >= level), DEBUG)


class JournalFormatter(logging.Formatter):
    """``<N>name: message``, with the prefix on each line of a multi-line record (a traceback)."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def stream_is_journal(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """Whether ``stream`` is the journal stream systemd connected ($JOURNAL_STREAM=dev:inode)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, _, inode = value.partition(":")
    if not (dev.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(inode))


def use_journal_priorities(logger: logging.Logger | None = None, environ: dict[str, str] | None = None) -> int:
    """Give the handlers of ``logger`` (default: root) that write to the journal the prefixed
    format; returns how many were changed."""
    changed = 0
    for handler in (logger or logging.getLogger()).handlers:
        stream = getattr(handler, "stream", None)
        if stream is not None and stream in (sys.stderr, sys.stdout) and stream_is_journal(stream, environ):
            handler.setFormatter(JournalFormatter())
            changed += 1
    return changed
