"""Tests for monitor.flow.reassembly.StreamPrefix."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.flow.reassembly import MAX_OUT_OF_ORDER_PIECES, SEQ_MODULUS, StreamPrefix

PAYLOAD = bytes(range(256)) * 4


def segments(data: bytes, size: int, start: int = 0) -> list[tuple[int, bytes]]:
    """(stream offset, bytes) pieces of ``data`` of ``size`` bytes."""
    return [(start + i, data[i : i + size]) for i in range(0, len(data), size)]


def feed(prefix: StreamPrefix, isn: int, pieces: list[tuple[int, bytes]]) -> None:
    for offset, chunk in pieces:
        prefix.add((isn + 1 + offset) % SEQ_MODULUS, chunk)


def test_in_order() -> None:
    prefix = StreamPrefix(limit=300)
    prefix.set_isn(1000)
    assert prefix.started and not prefix.complete and prefix.contiguous() == b""
    for offset, chunk in segments(PAYLOAD[:250], 100):
        prefix.add(1001 + offset, chunk)
        assert prefix.contiguous() == PAYLOAD[: offset + len(chunk)]
        assert not prefix.gap
    assert not prefix.complete and prefix.available == 250
    prefix.add(1251, PAYLOAD[250:400])
    assert prefix.complete
    assert prefix.contiguous() == PAYLOAD[:300]
    assert prefix.dropped_bytes == 100 and prefix.dropped_segments == 0


def test_reversed_order() -> None:
    prefix = StreamPrefix(limit=len(PAYLOAD))
    prefix.set_isn(5)
    pieces = segments(PAYLOAD, 64)
    for offset, chunk in reversed(pieces[1:]):
        prefix.add(6 + offset, chunk)
        assert prefix.contiguous() == b""
        assert prefix.gap
    assert prefix.buffered == len(PAYLOAD) - 64
    prefix.add(6, pieces[0][1])
    assert prefix.contiguous() == PAYLOAD
    assert prefix.complete and not prefix.gap
    assert prefix.dropped_bytes == 0


def test_retransmission_is_ignored() -> None:
    prefix = StreamPrefix(limit=100)
    prefix.set_isn(0)
    prefix.add(1, b"hello ")
    prefix.add(1, b"hello ")
    prefix.add(7, b"world")
    prefix.add(1, b"hello world")
    assert prefix.contiguous() == b"hello world"
    assert prefix.dropped_bytes == 0


def test_overlap_first_copy_wins() -> None:
    prefix = StreamPrefix(limit=100)
    prefix.set_isn(99)
    prefix.add(100, b"AAAA")
    prefix.add(102, b"BBBBBB")  # overlaps the in-order prefix
    assert prefix.contiguous() == b"AAAABBBB"
    prefix.add(112, b"XXXX")  # out of order, then an overlapping earlier segment
    prefix.add(110, b"YYYYYYYYYY")
    prefix.add(108, b"ZZ")
    assert prefix.contiguous() == b"AAAABBBBZZYYXXXXYYYY"


def test_overlap_spanning_several_pending_pieces() -> None:
    prefix = StreamPrefix(limit=100)
    prefix.set_isn(0)
    prefix.add(1 + 10, b"aa")
    prefix.add(1 + 20, b"bb")
    prefix.add(1 + 30, b"cc")
    prefix.add(1 + 5, b"-" * 40)  # fills only the holes between the pieces
    prefix.add(1, b"=====")
    expected = bytearray(b"=====" + b"-" * 40)
    expected[10:12], expected[20:22], expected[30:32] = b"aa", b"bb", b"cc"
    assert prefix.contiguous() == bytes(expected)
    assert not prefix.gap


def test_sequence_wrap_around() -> None:
    prefix = StreamPrefix(limit=len(PAYLOAD))
    isn = SEQ_MODULUS - 300
    prefix.set_isn(isn)
    pieces = segments(PAYLOAD, 100)
    feed(prefix, isn, pieces[::-1])
    assert prefix.contiguous() == PAYLOAD
    # a retransmission from just before the wrap changes nothing
    prefix.add(isn + 1, b"\xff" * 50)
    assert prefix.contiguous() == PAYLOAD


def test_syn_at_the_last_sequence_number() -> None:
    prefix = StreamPrefix(limit=10)
    prefix.set_isn(SEQ_MODULUS - 1)  # data starts at sequence number 0
    prefix.add(0, b"0123456789")
    assert prefix.contiguous() == b"0123456789"


def test_limit_bounds_storage_and_counts_drops() -> None:
    prefix = StreamPrefix(limit=50)
    prefix.set_isn(0)
    prefix.add(1 + 40, b"x" * 20)  # 10 bytes kept, 10 past the limit
    prefix.add(1 + 60, b"y" * 30)  # entirely past the limit
    prefix.add(1 + 100, b"z" * 5)
    assert prefix.buffered == 10
    assert prefix.dropped_bytes == 10 + 30 + 5
    assert prefix.dropped_segments == 2
    prefix.add(1, b"a" * 45)  # overlaps the held piece: first copy wins
    assert prefix.contiguous() == b"a" * 40 + b"x" * 10
    assert prefix.complete and prefix.buffered == 50
    prefix.add(1 + 50, b"more")
    assert prefix.dropped_segments == 3 and len(prefix.contiguous()) == 50


def test_out_of_order_piece_cap() -> None:
    limit = 4 * MAX_OUT_OF_ORDER_PIECES + 100
    prefix = StreamPrefix(limit=limit)
    prefix.set_isn(0)
    for i in range(MAX_OUT_OF_ORDER_PIECES + 10):
        prefix.add(1 + 2 + 2 * i, b"#")  # scattered one-byte segments behind a hole
    assert prefix.gap
    assert prefix.buffered == MAX_OUT_OF_ORDER_PIECES
    assert prefix.dropped_segments == 10 and prefix.dropped_bytes == 10
    # one segment covering everything still fills the holes around the kept pieces
    prefix.add(1, b"." * limit)
    data = prefix.contiguous()
    assert prefix.complete and len(data) == limit
    assert data.count(b"#") == MAX_OUT_OF_ORDER_PIECES


def test_touching_pieces_are_merged() -> None:
    prefix = StreamPrefix(limit=10_000)
    prefix.set_isn(0)
    for i in range(MAX_OUT_OF_ORDER_PIECES * 4):
        prefix.add(1 + 10 + i, b"t")  # contiguous among themselves, behind a hole
    assert prefix.dropped_segments == 0
    prefix.add(1, b"h" * 10)
    assert prefix.contiguous() == b"h" * 10 + b"t" * (MAX_OUT_OF_ORDER_PIECES * 4)


def test_mid_stream_pickup() -> None:
    prefix = StreamPrefix(limit=100)
    assert not prefix.started
    prefix.add(5000, b"middle")
    assert prefix.started
    assert prefix.contiguous() == b"middle"
    prefix.add(4990, b"0123456789")  # before the guessed start: ignored, not a drop
    assert prefix.contiguous() == b"middle"
    assert prefix.dropped_bytes == 0
    prefix.add(5006, b"-end")
    assert prefix.contiguous() == b"middle-end"


def test_late_syn_rebases_mid_stream_data() -> None:
    prefix = StreamPrefix(limit=100)
    prefix.add(110, b"world")  # arrives before the SYN and the first segment
    prefix.set_isn(99)
    assert prefix.contiguous() == b"" and prefix.gap
    prefix.add(100, b"hello, ")
    prefix.add(107, b"the")
    assert prefix.contiguous() == b"hello, theworld"


def test_late_syn_drops_what_no_longer_fits() -> None:
    prefix = StreamPrefix(limit=10)
    prefix.add(1000, b"abcdefghij")
    prefix.set_isn(994)  # the data now starts at offset 5
    assert prefix.buffered == 5
    assert prefix.dropped_bytes == 5


def test_empty_payload_and_bad_limit() -> None:
    prefix = StreamPrefix(limit=4)
    prefix.add(7, b"")
    assert not prefix.started
    with pytest.raises(ValueError):
        StreamPrefix(limit=0)


def test_memoryview_payload_is_copied() -> None:
    buffer = bytearray(b"reused!!")
    prefix = StreamPrefix(limit=8)
    prefix.set_isn(0)
    prefix.add(5, memoryview(buffer)[4:])  # held out of order
    prefix.add(1, memoryview(buffer)[:4])
    buffer[:] = b"XXXXXXXX"
    assert prefix.contiguous() == b"reused!!"


@st.composite
def delivery(draw: st.DrawFn) -> tuple[int, int, bytes, list[tuple[int, bytes]]]:
    """(isn, limit, stream, segments): the stream cut into pieces (with overlapping
    re-cuts), shuffled, with duplicates."""
    stream = draw(st.binary(min_size=1, max_size=400))
    limit = draw(st.integers(1, 500))
    isn = draw(st.one_of(st.integers(0, SEQ_MODULUS - 1),
                         st.integers(SEQ_MODULUS - 600, SEQ_MODULUS - 1)))
    cuts = sorted(set(draw(st.lists(st.integers(1, len(stream)), max_size=12))))
    bounds = [0, *cuts, len(stream)]
    pieces = [(a, stream[a:b]) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    extra = draw(st.lists(st.tuples(st.integers(0, len(stream) - 1), st.integers(1, 60)),
                          max_size=6))
    pieces += [(a, stream[a : a + n]) for a, n in extra]
    pieces += draw(st.lists(st.sampled_from(pieces), max_size=6))  # duplicates
    return isn, limit, stream, draw(st.permutations(pieces))


@settings(max_examples=300, deadline=None)
@given(delivery())
def test_any_order_gives_the_prefix(case: tuple[int, int, bytes, list[tuple[int, bytes]]]) -> None:
    isn, limit, stream, pieces = case
    prefix = StreamPrefix(limit)
    prefix.set_isn(isn)
    feed(prefix, isn, pieces)
    assert prefix.contiguous() == stream[:limit]
    assert not prefix.gap
    assert prefix.complete is (len(stream) >= limit)
    assert prefix.buffered <= limit
    assert prefix.dropped_bytes == sum(
        max(0, off + len(chunk) - max(off, limit)) for off, chunk in pieces)
    assert prefix.dropped_segments == sum(off >= limit for off, _ in pieces)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, SEQ_MODULUS - 1), st.binary(max_size=80)),
                max_size=30),
       st.integers(1, 300))
def test_arbitrary_segments_stay_bounded(segs: list[tuple[int, bytes]], limit: int) -> None:
    prefix = StreamPrefix(limit)
    for seq, payload in segs:
        prefix.add(seq, payload)
        assert prefix.buffered <= limit
        assert len(prefix.contiguous()) <= limit
    assert prefix.complete is (prefix.available == limit)
