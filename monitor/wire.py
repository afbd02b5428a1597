"""Bounds-checked reading of wire formats.

Every protocol parser reads through :class:`Reader`: each pull checks the bounds first
and raises :class:`~monitor.errors.Truncated`, never ``IndexError`` or ``struct.error``;
length-prefixed structures are read inside :meth:`Reader.block`, which restricts reads to
the declared length and requires that it is consumed exactly.
"""

from __future__ import annotations

from types import TracebackType

from monitor.errors import BadValue, TrailingData, Truncated

__all__ = ["Reader"]


class Reader:
    """A cursor over a bytes-like object with big-endian pulls."""

    __slots__ = ("_view", "_pos", "_end")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
        self._pos = 0
        self._end = len(self._view)

    @property
    def pos(self) -> int:
        """Offset of the next byte to read, from the start of the data."""
        return self._pos

    def remaining(self) -> int:
        """Bytes left before the current end (the end of the innermost block)."""
        return self._end - self._pos

    def eof(self) -> bool:
        return self._pos >= self._end

    def _need(self, n: int) -> int:
        pos = self._pos
        if n < 0 or pos + n > self._end:
            raise Truncated(f"need {n} bytes at offset {pos}, have {self._end - pos}", offset=pos)
        self._pos = pos + n
        return pos

    def u8(self) -> int:
        pos = self._need(1)
        return self._view[pos]

    def u16(self) -> int:
        pos = self._need(2)
        v = self._view
        return (v[pos] << 8) | v[pos + 1]

    def u24(self) -> int:
        pos = self._need(3)
        v = self._view
        return (v[pos] << 16) | (v[pos + 1] << 8) | v[pos + 2]

    def u32(self) -> int:
        pos = self._need(4)
        return int.from_bytes(self._view[pos : pos + 4], "big")

    def take(self, n: int) -> memoryview:
        """The next ``n`` bytes as a view (valid as long as the underlying data)."""
        pos = self._need(n)
        return self._view[pos : pos + n]

    def take_bytes(self, n: int) -> bytes:
        return bytes(self.take(n))

    def skip(self, n: int) -> None:
        self._need(n)

    def rest(self) -> memoryview:
        """Everything up to the current end."""
        return self.take(self._end - self._pos)

    def varint(self) -> int:
        """A QUIC variable-length integer (RFC 9000 §16)."""
        first = self.u8()
        size = 1 << (first >> 6)
        value = first & 0x3F
        if size > 1:
            for b in self.take(size - 1):
                value = (value << 8) | b
        return value

    def _length(self, length_size: int) -> int:
        if length_size == 1:
            return self.u8()
        if length_size == 2:
            return self.u16()
        if length_size == 3:
            return self.u24()
        if length_size == 4:
            return self.u32()
        if length_size == 0:
            return self.varint()
        raise ValueError(f"unsupported length size {length_size}")

    def block(self, length_size: int) -> _Restricted:
        """Read a big-endian length of ``length_size`` bytes (0: QUIC varint), restrict
        reads to that many bytes and require they are consumed exactly (a context
        manager: ``with r.block(2) as n:``; ``n`` is the block length)."""
        return self.restrict(self._length(length_size))

    def restrict(self, n: int) -> _Restricted:
        """Restrict reads to the next ``n`` bytes and require they are consumed exactly
        (a context manager yielding ``n``)."""
        if n < 0 or self._pos + n > self._end:
            raise Truncated(f"block of {n} bytes at offset {self._pos} overruns its container",
                            offset=self._pos)
        restricted = _Restricted(self, n, self._end)
        self._end = self._pos + n
        return restricted

    def expect(self, condition: bool, what: str) -> None:
        """Raise BadValue(what) unless ``condition`` holds (never use assert on input)."""
        if not condition:
            raise BadValue(what, offset=self._pos)


class _Restricted:
    """The context of :meth:`Reader.restrict` (a plain class: parsers open thousands of
    blocks per second, and a generator-based context manager costs several times more)."""

    __slots__ = ("_reader", "_n", "_saved_end")

    def __init__(self, reader: Reader, n: int, saved_end: int) -> None:
        self._reader = reader
        self._n = n
        self._saved_end = saved_end

    def __enter__(self) -> int:
        return self._n

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # Checked only when the body succeeded: an error inside it must propagate as
        # itself, not be masked by a "not consumed" error.
        if exc_type is not None:
            return
        r = self._reader
        if r._pos != r._end:
            raise TrailingData(f"{r._end - r._pos} bytes left unread in block", offset=r._pos)
        r._end = self._saved_end
