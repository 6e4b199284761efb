"""Bounded reads of files a user, a manifest or a bundle names: never a hang, never unbounded memory.

Every file is checked with ``fstat`` on the opened descriptor before a byte is read: it must be a
regular file (``/dev/zero``, a FIFO, a directory are refused, so nothing blocks or streams forever)
no larger than the limit of its kind. The read itself stops one byte past the limit, so a file that
grows between the stat and the read is refused too. Errors name the file and the limit, never its
contents.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from edge.errors import EdgeError

KB = 1 << 10
MB = 1 << 20
GB = 1 << 30

# Limits per kind of file (bytes). A real manifest with inline anchors is a few hundred kB, Coral's
# largest labels file 21 kB, a config a few kB; TFLite flatbuffers cannot exceed 2 GB.
MANIFEST_MAX = 10 * MB
LABELS_MAX = 1 * MB
CONFIG_MAX = 1 * MB
MODEL_MAX = 2 * GB


def _mib(n: int) -> str:
    return f"{n / MB:g} MiB" if n < GB else f"{n / GB:g} GiB"


def check_regular(path: Path, limit: int, what: str, error: type[EdgeError]) -> int:
    """Size of ``path`` after checking (by ``stat``) that it is a regular file of at most ``limit``
    bytes; ``error`` otherwise. A missing file raises FileNotFoundError for the caller to word."""
    st = os.stat(path)
    _check_stat(path, st, limit, what, error)
    return st.st_size


def _check_stat(path: Path, st: os.stat_result, limit: int, what: str, error: type[EdgeError]) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{what} {str(path)!r} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {str(path)!r} is not a regular file (a device, FIFO or socket)",
                    "give the path of a file")
    if st.st_size > limit:
        raise error(f"{what} {str(path)!r} has {st.st_size} bytes, more than the {_mib(limit)} allowed",
                    f"a {what} is never that large: check the path")


def read_bytes(path: str | Path, limit: int, what: str, error: type[EdgeError]) -> bytes:
    """The bytes of ``path``, at most ``limit``. FileNotFoundError passes through (callers word it);
    any other failure is ``error`` naming ``what``, the path and the reason."""
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO with no writer must not block; it is then refused by fstat.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise error(f"cannot read {what} {str(path)!r}: {exc.strerror}") from None
    try:
        _check_stat(path, os.fstat(fd), limit, what, error)
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(limit + 1 - size, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise error(f"cannot read {what} {str(path)!r}: {exc.strerror}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise error(f"{what} {str(path)!r} has more than the {_mib(limit)} allowed")
    return data


def read_text(path: str | Path, limit: int, what: str, error: type[EdgeError]) -> str:
    """``read_bytes`` decoded as UTF-8; a decoding error names the byte offset, not the text."""
    data = read_bytes(path, limit, what, error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {str(path)!r} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None


def show(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: error messages name a bad value without echoing
    a file's contents at length."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 5] + "…" + text[-4:]
