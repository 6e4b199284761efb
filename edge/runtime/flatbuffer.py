"""A minimal, read-only FlatBuffers reader: enough to walk a .tflite file without any runtime.

Reading the model directly (rather than through an Interpreter) lets ``edge`` inspect models that
no interpreter here can load, such as ``_edgetpu`` models on a machine without libedgetpu, and
works the same under every runtime of the chain. Layout reference: flatbuffers.dev/internals.
"""

from __future__ import annotations

import struct


class FlatBufferError(ValueError):
    """The bytes are not a well-formed flatbuffer (truncated or corrupt)."""


class Table:
    """A flatbuffer table at ``pos`` in ``buf``; fields are addressed by their schema index."""

    __slots__ = ("buf", "pos", "_vtable", "_vtable_size")

    def __init__(self, buf: bytes | memoryview, pos: int):
        self.buf = buf
        self.pos = pos
        self._vtable = pos - _unpack("<i", buf, pos)
        self._vtable_size = _unpack("<H", buf, self._vtable)

    def _field(self, index: int) -> int:
        """Absolute offset of field ``index``, or 0 when absent."""
        entry = 4 + 2 * index
        if entry >= self._vtable_size:
            return 0
        rel = _unpack("<H", self.buf, self._vtable + entry)
        return self.pos + rel if rel else 0

    def scalar(self, index: int, fmt: str, default: int | float = 0) -> int | float:
        at = self._field(index)
        return _unpack("<" + fmt, self.buf, at) if at else default

    def detached(self) -> Table:
        """A copy of just this table's vtable and inline fields: its scalars stay readable, while
        holding it no longer keeps the whole buffer (e.g. a model file) alive. Fields that point
        elsewhere (strings, tables, vectors) are not readable from the copy."""
        vtable = bytes(self.buf[self._vtable:self._vtable + self._vtable_size])
        size = max(_unpack("<H", self.buf, self._vtable + 2), 4)   # inline size, its soffset included
        _check(self.buf, self.pos, size)
        inline = bytearray(self.buf[self.pos:self.pos + size])
        struct.pack_into("<i", inline, 0, len(vtable))             # the vtable now sits just before
        return Table(vtable + bytes(inline), len(vtable))

    def _indirect(self, at: int) -> int:
        return at + _unpack("<I", self.buf, at)

    def string(self, index: int) -> str | None:
        at = self._field(index)
        if not at:
            return None
        start = self._indirect(at)
        length = _unpack("<I", self.buf, start)
        _check(self.buf, start + 4, length)
        return bytes(self.buf[start + 4:start + 4 + length]).decode("utf-8", "replace")

    def table(self, index: int) -> Table | None:
        at = self._field(index)
        return Table(self.buf, self._indirect(at)) if at else None

    def _vector(self, index: int) -> tuple[int, int]:
        at = self._field(index)
        if not at:
            return 0, 0
        start = self._indirect(at)
        return start + 4, _unpack("<I", self.buf, start)

    def tables(self, index: int) -> list[Table]:
        start, n = self._vector(index)
        _check(self.buf, start, 4 * n)
        return [Table(self.buf, start + 4 * i + _unpack("<I", self.buf, start + 4 * i)) for i in range(n)]

    def scalars(self, index: int, fmt: str) -> tuple:
        start, n = self._vector(index)
        if not n:
            return ()
        size = struct.calcsize(fmt)
        _check(self.buf, start, size * n)
        return struct.unpack_from(f"<{n}{fmt}", self.buf, start)

    def vector_span(self, index: int, element_size: int = 1) -> tuple[int, int]:
        """(offset of the first element, number of elements) of vector field ``index``; (0, 0) if absent.

        Lets a caller read a large vector (e.g. a weight buffer) later, without copying it now.
        """
        start, n = self._vector(index)
        _check(self.buf, start, element_size * n)
        return start, n


def _check(buf: bytes | memoryview, start: int, size: int) -> None:
    if start < 0 or start + size > len(buf):
        raise FlatBufferError(f"offset {start}+{size} outside the {len(buf)}-byte buffer")


def _unpack(fmt: str, buf: bytes | memoryview, at: int):
    try:
        return struct.unpack_from(fmt, buf, at)[0]
    except struct.error as exc:
        raise FlatBufferError(f"cannot read {fmt} at offset {at}: {exc}") from None


def root(buf: bytes | memoryview, identifier: bytes | None = None) -> Table:
    """The root table; checks the 4-byte file identifier when one is given."""
    if len(buf) < 8:
        raise FlatBufferError(f"{len(buf)} bytes is too short for a flatbuffer")
    if identifier is not None and bytes(buf[4:8]) != identifier:
        raise FlatBufferError(f"file identifier {bytes(buf[4:8])!r}, expected {identifier!r}")
    return Table(buf, _unpack("<I", buf, 0))
