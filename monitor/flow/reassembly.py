"""Reassembly of the first bytes of one direction of a TCP stream.

avmon only needs the start of a stream (a ClientHello, an HTTP request head), so
:class:`StreamPrefix` keeps the first ``limit`` bytes in sequence order and nothing else.
It is pure: the flow table feeds it segments and reads back the in-order prefix. It
accepts retransmissions, out-of-order segments, overlaps (first copy wins: bytes already
received are never overwritten, as most host stacks do) and 32-bit sequence-number
wrap-around. Memory is bounded: it never holds more than ``limit`` payload bytes nor more
than :data:`MAX_OUT_OF_ORDER_PIECES` out-of-order pieces; what it drops is counted.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_OUT_OF_ORDER_PIECES", "SEQ_MODULUS", "StreamPrefix"]

#: TCP sequence numbers are 32-bit and wrap (RFC 9293 §3.4).
SEQ_MODULUS: Final = 2**32
_HALF: Final = 2**31

#: Separate out-of-order pieces held behind a hole. Touching pieces are merged, so real
#: reordering needs a handful; the cap stops a sender that scatters one-byte segments
#: from costing an object per byte.
MAX_OUT_OF_ORDER_PIECES: Final = 64


class StreamPrefix:
    """The first ``limit`` bytes of one direction of a TCP stream, in sequence order.

    Call :meth:`set_isn` with the SYN's sequence number when the handshake was seen (data
    starts at ``isn + 1``); otherwise the first data segment's sequence number is taken as
    the start (mid-stream pickup; earlier bytes that arrive later are then ignored).
    """

    __slots__ = (
        "_limit",
        "_base",
        "_data",
        "_pending",
        "dropped_bytes",
        "dropped_segments",
    )

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        self._limit = limit
        #: Sequence number of stream offset 0; None until a SYN or data is seen.
        self._base: int | None = None
        #: The in-order prefix.
        self._data = bytearray()
        #: Out-of-order pieces beyond a hole: sorted, disjoint, non-touching
        #: [offset, bytes] pairs, all after the end of ``_data`` and before ``limit``.
        self._pending: list[tuple[int, bytes]] = []
        #: Payload bytes discarded because they lay at or past ``limit`` or would have
        #: exceeded :data:`MAX_OUT_OF_ORDER_PIECES`.
        self.dropped_bytes = 0
        #: Segments of which no byte was kept for those reasons.
        self.dropped_segments = 0

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def started(self) -> bool:
        """True once the stream's start offset is known (SYN or first data seen)."""
        return self._base is not None

    @property
    def complete(self) -> bool:
        """True when the in-order prefix has reached ``limit`` bytes."""
        return len(self._data) >= self._limit

    @property
    def gap(self) -> bool:
        """True when bytes are held beyond a hole (a segment is missing)."""
        return bool(self._pending)

    @property
    def available(self) -> int:
        """Length of the in-order prefix."""
        return len(self._data)

    @property
    def buffered(self) -> int:
        """Payload bytes held: the in-order prefix plus out-of-order pieces (<= limit)."""
        return len(self._data) + sum(len(chunk) for _, chunk in self._pending)

    def contiguous(self) -> bytes:
        """The in-order prefix received so far (at most ``limit`` bytes)."""
        return bytes(self._data)

    def set_isn(self, seq: int) -> None:
        """Record the SYN's sequence number: stream data starts at ``seq + 1``.

        If data was already taken with a guessed start, it is re-placed relative to the
        new start (bytes now before offset 0 are ignored, bytes past ``limit`` counted as
        dropped).
        """
        new_base = (seq + 1) % SEQ_MODULUS
        old_base = self._base
        self._base = new_base
        if old_base is None or old_base == new_base:
            return
        pieces: list[tuple[int, bytes]] = []
        if self._data:
            pieces.append((0, bytes(self._data)))
        pieces.extend(self._pending)
        self._data = bytearray()
        self._pending = []
        for offset, chunk in pieces:
            self._place(self._relative((old_base + offset) % SEQ_MODULUS), chunk)

    def add(self, seq: int, payload: bytes | bytearray | memoryview) -> None:
        """Add a segment's payload that starts at sequence number ``seq``.

        Only the bytes that fall in ``[0, limit)`` and were not received before are
        kept; the payload is copied (capture buffers are reused).
        """
        if not payload:
            return
        if self._base is None:
            self._base = seq % SEQ_MODULUS
        self._place(self._relative(seq), payload)

    def _relative(self, seq: int) -> int:
        """Stream offset of ``seq`` given the base, in (-2^31, 2^31] (RFC 9293 §3.4)."""
        base = self._base if self._base is not None else 0
        rel = (seq - base) % SEQ_MODULUS
        return rel - SEQ_MODULUS if rel >= _HALF else rel

    def _place(self, start: int, payload: bytes | bytearray | memoryview) -> None:
        length = len(payload)
        end = start + length
        if end <= 0:
            return  # entirely before the stream start: an old retransmission
        past = max(0, end - max(start, self._limit))
        if past:
            self.dropped_bytes += past
            if start >= self._limit:
                self.dropped_segments += 1
                return
            end = self._limit
        view = memoryview(payload).cast("B")
        # Skip what lies before offset 0 or inside the in-order prefix (first wins).
        lo = max(start, len(self._data))
        if lo >= end:
            return
        if lo == len(self._data) and not self._pending:
            self._data += view[lo - start : end - start]  # the common in-order case
        elif self._merge_pending(lo, end, view, start):
            self._advance()

    def _merge_pending(self, lo: int, hi: int, view: memoryview, start: int) -> bool:
        """Insert the parts of [lo, hi) that no pending piece covers; True if any kept."""
        fresh: list[tuple[int, bytes]] = []
        cursor = lo
        for p_off, p_bytes in self._pending:
            p_end = p_off + len(p_bytes)
            if p_end <= cursor:
                continue
            if p_off >= hi:
                break
            if p_off > cursor:
                fresh.append((cursor, bytes(view[cursor - start : p_off - start])))
            cursor = max(cursor, p_end)
            if cursor >= hi:
                break
        if cursor < hi:
            fresh.append((cursor, bytes(view[cursor - start : hi - start])))
        if not fresh:
            return False
        merged = sorted(self._pending + fresh)
        coalesced: list[tuple[int, bytes]] = []
        for off, chunk in merged:
            if coalesced and coalesced[-1][0] + len(coalesced[-1][1]) == off:
                prev_off, prev = coalesced[-1]
                coalesced[-1] = (prev_off, prev + chunk)
            else:
                coalesced.append((off, chunk))
        ahead = [p for p in coalesced if p[0] > len(self._data)]
        if len(ahead) > MAX_OUT_OF_ORDER_PIECES:
            # Keep the state as it was: the new bytes would need too many pieces.
            self.dropped_bytes += sum(len(c) for _, c in fresh)
            self.dropped_segments += 1
            return False
        self._pending = coalesced
        return True

    def _advance(self) -> None:
        """Move pending pieces that now touch the in-order prefix into it."""
        while self._pending and self._pending[0][0] <= len(self._data):
            off, chunk = self._pending.pop(0)
            skip = len(self._data) - off
            if skip < len(chunk):
                self._data += chunk[skip:]
