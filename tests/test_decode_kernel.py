"""The compiled decode kernel (monitor/_decode.pyx) against its reference.

``monitor._decode.decode_layer`` must fill exactly the columns that
``monitor.decode._decode_layer`` fills: same keys, dtypes and values, for every input,
including damaged packets, whose columns hold whatever the reference read beyond them.
Compared column by column on every capture under tests/data/ (the outer layer and each
tunnel layer that ``decode_all`` decodes); on hypothesis' random buffers with random packet
boundaries and link types (unknown ones and NFLOG included); on hand-built packets of every
link type and header stack the decoder knows (VLAN/QinQ stacks, PPPoE, MPLS, IPv4 options
and fragments, IPv6 extension header chains, TCP/UDP/SCTP/ICMP, tunnels), whole and cut at
every length; and on mutations of the captures' packets.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor import decode
from monitor.capture.batch import Batch, LinkType
from monitor.capture.files import CaptureReader
from monitor.errors import CaptureError

try:
    from monitor import _decode
except ImportError:
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("monitor._decode is not built (pip install -e ., or cythonize -i -3 "
                "monitor/_decode.pyx)",
                allow_module_level=True)

DATA = Path(__file__).parent / "data"
COLUMNS = tuple(decode._empty(0))


def examples(n: int) -> settings:
    return settings(max_examples=n, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


Draw = Callable[[st.SearchStrategy[Any]], Any]
Packet = tuple[bytes, int]  # captured bytes, link type


# --- comparing the two ----------------------------------------------------------------


def make_batch(buffer: bytes, bounds: Sequence[tuple[int, int, int]]) -> Batch:
    """A batch over ``buffer`` of packets (start, end, link type)."""
    off = np.array([b[0] for b in bounds], dtype=np.int64)
    end = np.array([b[1] for b in bounds], dtype=np.int64)
    lt = np.array([b[2] for b in bounds], dtype=np.int32)
    return Batch(buffer, off, end - off, end - off, np.zeros_like(off), lt)


def pack(packets: Sequence[Packet], gaps: Sequence[bytes] = ()) -> Batch:
    """``packets`` one after another in one buffer (each after its gap, if any)."""
    buf = bytearray()
    bounds = []
    for i, (data, lt) in enumerate(packets):
        buf += gaps[i] if i < len(gaps) else b""
        bounds.append((len(buf), len(buf) + len(data), lt))
        buf += data
    return make_batch(bytes(buf), bounds)


def kernel(batch: Batch, off: np.ndarray, end: np.ndarray,
           lt: np.ndarray) -> dict[str, np.ndarray] | None:
    def nflog(o: int, e: int) -> tuple[int, int]:
        return decode._nflog_l3(batch.buffer, o, e)
    return _decode.decode_layer(batch.buffer, off, end, lt, nflog)


def assert_same(ref: decode.Columns, got: dict[str, np.ndarray] | None, what: str) -> None:
    assert got is not None, what
    assert tuple(got) == COLUMNS, what
    for name in COLUMNS:
        want, have = getattr(ref, name), got[name]
        assert have.dtype == want.dtype, f"{what}: {name} is {have.dtype}, not {want.dtype}"
        if not np.array_equal(have, want):
            rows = np.flatnonzero(have != want)[:5]
            raise AssertionError(f"{what}: column {name} differs at rows {rows.tolist()}: "
                                 f"kernel {have[rows].tolist()}, reference "
                                 f"{want[rows].tolist()}")


def assert_same_tunnels(ref: tuple[np.ndarray, ...], got: tuple[np.ndarray, ...],
                        what: str) -> None:
    """The tunnel kernel's packets (index, inner offset, end, link type) are the
    reference's, with the same dtypes."""
    for name, want, have in zip(("index", "offset", "end", "link type"), ref, got,
                                strict=True):
        assert have.dtype == want.dtype, f"{what}: {name} is {have.dtype}, not {want.dtype}"
        assert np.array_equal(have, want), f"{what}: {name} kernel {have[:5].tolist()}, " \
                                           f"reference {want[:5].tolist()}"


def reference(batch: Batch) -> decode.Columns:
    """The outer layer as the reference decodes it (``decode.decode`` may use the kernel)."""
    off = batch.offsets.astype(np.int64, copy=False)
    return decode._decode_layer(batch, decode._Bytes(batch.buffer),
                                np.arange(len(batch), dtype=np.int64), off,
                                off + batch.caplens, batch.linktypes, 0)


def check_batch(batch: Batch, what: str = "batch") -> tuple[int, int]:
    """Compare the outer layer and every tunnel layer, as ``decode_all`` decodes them:
    (outer rows, tunnel-layer rows) compared."""
    rd = decode._Bytes(batch.buffer)
    off = batch.offsets.astype(np.int64, copy=False)
    end = off + batch.caplens
    layer = reference(batch)
    assert_same(layer, kernel(batch, off, end, batch.linktypes), what)
    inner_rows = 0
    for depth in range(1, decode.MAX_TUNNEL_DEPTH + 1):
        idx, ioff, iend, ilt = decode._tunnels(rd, layer)
        assert_same_tunnels((idx, ioff, iend, ilt), _decode.tunnels(
            batch.buffer, *(np.ascontiguousarray(getattr(layer, c)) for c in (
                "index", "reason", "frag", "proto", "sport", "dport", "payoff", "paylen"))),
            f"{what}, tunnels at depth {depth}")
        if idx.shape[0] == 0:
            break
        inner = decode._decode_layer(batch, rd, idx, ioff, iend, ilt, depth)
        assert_same(inner, kernel(batch, ioff, iend, ilt), f"{what}, tunnel depth {depth}")
        inner_rows += idx.shape[0]
        keep = inner.reason == 0
        if not keep.any():
            break
        layer = inner.take(keep)
    return len(batch), inner_rows


# --- the captures ---------------------------------------------------------------------


@cache
def captures(batch_packets: int = 0) -> tuple[tuple[str, tuple[Batch, ...]], ...]:
    """Every capture under tests/data/ that the reader reads: (name, its batches)."""
    found = []
    kw = {"batch_packets": batch_packets} if batch_packets else {}
    for path in sorted(DATA.rglob("*")):
        if not path.is_file():
            continue
        try:
            # A batch's buffer is only valid until the next one is read: keep copies.
            batches = tuple(msgspec.structs.replace(b, buffer=bytes(b.buffer))
                            for b in CaptureReader([path], warn=lambda _m: None, **kw))
        except CaptureError:
            continue
        found.append((str(path.relative_to(DATA)), batches))
    return tuple(found)


@cache
def corpus_packets() -> tuple[Packet, ...]:
    return tuple((b.packet(i), int(b.linktypes[i]))
                 for _name, batches in captures() for b in batches for i in range(len(b)))


def test_every_capture() -> None:
    """Every packet of every capture, and the tunnel layers inside them."""
    outer = inner = 0
    seen: set[int] = set()
    names = []
    for name, batches in captures():
        names.append(name)
        for k, batch in enumerate(batches):
            o, i = check_batch(batch, f"{name} batch {k}")
            outer += o
            inner += i
            seen.update(int(t) for t in batch.linktypes)
    assert len(names) >= 25, names
    assert outer >= 2000 and inner >= 40, (outer, inner)  # Teredo and GRE-in-UDP
    assert {LinkType.ETHERNET, LinkType.LINUX_SLL, LinkType.LINUX_SLL2, LinkType.RAW,
            LinkType.NFLOG} <= seen


def test_every_tunnel_kind() -> None:
    """Each tunnel the decoder opens, well-formed and with the fields that close it: the
    tunnel kernel finds the reference's inner packets (some of every kind)."""
    from scapy.layers.inet import GRE, IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    from scapy.layers.vxlan import VXLAN
    from scapy.packet import Raw

    inner4 = IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=53) / Raw(b"q")
    inner6 = IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=64) / UDP(sport=1, dport=53) \
        / Raw(b"q")
    outer = Ether() / IP(src="192.0.2.1", dst="192.0.2.2")
    auth = b"\x00\x01\x02\x01" + bytes(2 + 1 + 8 + 1)
    origin = b"\x00\x00" + bytes(6)
    kinds = {
        "ipip": outer / inner4,
        "6in4": outer / inner6,
        "gre-ip": outer / GRE(proto=0x0800) / inner4,
        "gre-teb": outer / GRE(proto=0x6558) / Ether() / inner4,
        "gre-key-seq-csum": outer / GRE(proto=0x86DD, chksum_present=1, key_present=1,
                                        seqnum_present=1) / inner6,
        "gre-version-1": outer / GRE(proto=0x0800, version=1) / inner4,
        "gre-short": outer / GRE(proto=0x0800) / Raw(b"\x45"),
        "gre-in-udp": outer / UDP(sport=9, dport=4754) / GRE(proto=0x0800) / inner4,
        "gre-in-udp-source-port": outer / UDP(sport=4754, dport=9) / GRE(proto=0x86DD)
        / inner6,
        "vxlan": outer / UDP(sport=9, dport=4789) / VXLAN(vni=7) / Ether() / inner4,
        "vxlan-no-i-flag": outer / UDP(sport=9, dport=4789) / VXLAN(flags=0) / Ether()
        / inner4,
        "vxlan-short": outer / UDP(sport=9, dport=4789) / Raw(bytes(21)),
        "teredo": outer / UDP(sport=9, dport=3544) / inner6,
        "teredo-auth": outer / UDP(sport=3544, dport=9) / Raw(auth) / inner6,
        "teredo-origin": outer / UDP(sport=9, dport=3544) / Raw(origin) / inner6,
        "teredo-auth-origin": outer / UDP(sport=9, dport=3544) / Raw(auth + origin) / inner6,
        "ipv6-on-any-port": outer / UDP(sport=9, dport=7000) / inner6,
        "teredo-not-ipv6": outer / UDP(sport=9, dport=3544) / inner4,
    }
    # not tunnels: a GRE version other than 0, a VXLAN header without its I flag or too
    # short for an inner Ethernet header, IPv4 on the Teredo port
    closed = {"gre-version-1", "vxlan-no-i-flag", "vxlan-short", "teredo-not-ipv6"}
    opened = 0
    for name, pkt in kinds.items():
        _, rows = check_batch(pack([(bytes(pkt), LinkType.ETHERNET)]), name)
        assert (rows > 0) == (name not in closed), name
        opened += rows
    batch = pack([(bytes(p), LinkType.ETHERNET) for p in kinds.values()])
    assert check_batch(batch, "every kind in one batch")[1] == opened


def test_every_capture_in_small_batches() -> None:
    """Other neighbours: reads beyond a packet's end land in another packet or the edge."""
    for name, batches in captures(3):
        for k, batch in enumerate(batches):
            check_batch(batch, f"{name} batch {k} (3 packets a batch)")


# --- the kernel's own contract --------------------------------------------------------


def test_empty_and_edge_buffers() -> None:
    for buf in (b"", b"\x45", b"\x60" * 3):
        check_batch(make_batch(buf, []), "no packets")
        check_batch(make_batch(buf, [(0, len(buf), lt) for lt in map(int, LinkType)]),
                    f"buffer {buf!r}")


def test_nflog_without_callable_and_bad_lengths() -> None:
    batch = pack([(b"\x45" + bytes(19), LinkType.RAW), (bytes(8), LinkType.NFLOG)])
    off = batch.offsets
    end = off + batch.caplens
    assert _decode.decode_layer(batch.buffer, off, end, batch.linktypes, None) is None
    got = _decode.decode_layer(batch.buffer, off[:1], end[:1], batch.linktypes[:1], None)
    assert got is not None and got["ipver"].tolist() == [4]
    with pytest.raises(ValueError):
        _decode.decode_layer(batch.buffer, off, end[:1], batch.linktypes, None)


def test_read_only_inputs() -> None:
    batch = pack([(b"\x45" + bytes(39), LinkType.RAW)] * 3)
    arrays = [batch.offsets.copy(), (batch.offsets + batch.caplens), batch.linktypes.copy()]
    for a in arrays:
        a.flags.writeable = False
    got = _decode.decode_layer(memoryview(batch.buffer), *arrays, None)
    assert got is not None and got["reason"].tolist() == [0, 0, 0]


# --- the reference's particular rules, one case each -----------------------------------

TCP_HEADER = struct.pack(">HHIIBBHHH", 1234, 80, 0x01020304, 0, 0x50, 0x12, 1024, 0, 0)
NEXT_PACKET = bytes(range(1, 61))  # what reads beyond a packet's end find


def v4(proto: int, body: bytes, *, ihl: int = 5, tot: int | None = None,
       flags_frag: int = 0) -> bytes:
    tot = 4 * ihl + len(body) if tot is None else tot
    return struct.pack(">BBHHHBBH4s4s", 0x40 | ihl, 0, tot, 7, flags_frag, 64, proto, 0,
                       bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])) \
        + bytes(4 * ihl - 20) + body


def v6(chain: Sequence[int], body: bytes, *, frag_word: int = 0, ah_len: int = 1) -> bytes:
    """IPv6 whose headers are ``chain`` (extension header types, then the protocol)."""
    ext = bytearray()
    for here, after in zip(chain, chain[1:], strict=False):
        if here == 44:
            ext += struct.pack(">BBHI", after, 0, frag_word, 0xA1B2C3D4)
        elif here == 51:
            ext += bytes([after, ah_len]) + bytes((ah_len + 2) * 4 - 2)
        else:
            ext += bytes([after, 0]) + bytes(6)
    return struct.pack(">IHBB16s16s", 6 << 28, len(ext) + len(body), chain[0], 64,
                       bytes(range(16)), bytes(range(16, 32))) + bytes(ext) + body


def eth(l3: bytes, ethertype: int, tags: Sequence[tuple[int, int]] = ()) -> bytes:
    """Ethernet with 802.1Q-style ``tags`` (TPID, TCI), outermost first."""
    types = [t for t, _ in tags] + [ethertype]
    head = b"".join(struct.pack(">HH", tci, types[k + 1]) for k, (_, tci) in enumerate(tags))
    macs = bytes([0x45, 0x11, 0x60, 0x02, 0x03, 0x04]) + bytes(range(0xA0, 0xA6))
    return macs + struct.pack(">H", types[0]) + head + l3


def mpls(labels: int, bottom: int | None) -> bytes:
    return b"".join(struct.pack(">I", (100 << 12) | (int(k == bottom) << 8) | 64)
                    for k in range(labels))


TCP4 = v4(6, TCP_HEADER + b"data")
CASES: list[tuple[str, bytes, int, int]] = [  # name, packet, link type, reference's reason
    ("9 extension headers: depth", v6([0] * 9 + [6], TCP_HEADER), LinkType.RAW, 6),
    ("8 extension headers then a fragment header: not depth",
     v6([0] * 8 + [44, 6], TCP_HEADER), LinkType.RAW, 0),
    ("8 extension headers then AH: not depth", v6([0] * 8 + [51, 6], TCP_HEADER),
     LinkType.RAW, 0),
    ("8 extension headers then TCP", v6([60] * 8 + [6], TCP_HEADER), LinkType.RAW, 0),
    ("later fragment, then an extension header: the walk stops",
     v6([44, 60, 6], TCP_HEADER, frag_word=8 << 3), LinkType.RAW, 0),
    ("first fragment, then an extension header", v6([44, 60, 6], TCP_HEADER, frag_word=1),
     LinkType.RAW, 0),
    ("AH length in 4-octet units", v6([51, 17], b"\0\x35\0\x35\0\x08\0\0", ah_len=1),
     LinkType.RAW, 0),
    ("extension header beyond the payload length: bad", v6([0, 6], b"")[:40] + bytes(4),
     LinkType.RAW, 4),
    ("IPv4 total length 0 (TSO): the captured length", v4(6, TCP_HEADER, tot=0),
     LinkType.RAW, 0),
    ("IPv4 total length below the header's: the header's", v4(6, TCP_HEADER, tot=10),
     LinkType.RAW, 3),
    ("IPv4 options", v4(17, b"\0\x35\0\x35\0\x08\0\0", ihl=15), LinkType.RAW, 0),
    ("IPv4 later fragment", v4(6, b"abcd", flags_frag=0x2000 | 100), LinkType.RAW, 0),
    ("TCP cut inside its header: seq read beyond the end", TCP4[:28], LinkType.RAW, 3),
    ("TCP data offset below 5", v4(6, TCP_HEADER[:12] + b"\x40" + TCP_HEADER[13:]),
     LinkType.RAW, 3),
    ("ICMP cut after the type", v4(1, b"\x08"), LinkType.RAW, 0),
    ("SCTP", v4(132, bytes(12) + b"chunk"), LinkType.RAW, 0),
    ("VLAN id 0, then 5: the first id not 0",
     eth(TCP4, 0x0800, [(0x8100, 0), (0x88A8, 5)]), LinkType.ETHERNET, 0),
    ("8 VLAN tags", eth(TCP4, 0x0800, [(0x9100, 7)] * 8), LinkType.ETHERNET, 0),
    ("9 VLAN tags: depth", eth(TCP4, 0x0800, [(0x8100, 7)] * 9), LinkType.ETHERNET, 5),
    ("PPPoE carrying IPv6", eth(b"\x11\0\0\1\0\0\0\x57" + v6([17], bytes(8)), 0x8864),
     LinkType.ETHERNET, 0),
    ("MPLS, bottom of stack at the 8th label", eth(mpls(8, 7) + TCP4, 0x8847),
     LinkType.ETHERNET, 0),
    ("MPLS, 9 labels: depth", eth(mpls(9, 8) + TCP4, 0x8848), LinkType.ETHERNET, 7),
    ("NULL, little-endian family", b"\x02\0\0\0" + TCP4, LinkType.NULL, 0),
    ("NULL, big-endian family", b"\0\0\0\x1e" + v6([6], TCP_HEADER), LinkType.NULL, 0),
    ("LOOP, little-endian family: not IP", b"\x02\0\0\0" + TCP4, LinkType.LOOP, 1),
    ("SLL2", b"\x08\0" + bytes(18) + TCP4, LinkType.LINUX_SLL2, 0),
    ("NFLOG", b"\x02\0\0\0" + struct.pack("<HH", 4 + len(TCP4), 9) + TCP4, LinkType.NFLOG,
     0),
    ("unknown link type", TCP4, 147, 2),
]


@pytest.mark.parametrize(("packet", "lt", "reason"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_rule(packet: bytes, lt: int, reason: int) -> None:
    for batch in (pack([(packet, lt), (NEXT_PACKET, lt)]), pack([(packet, lt)])):
        assert int(reference(batch).reason[0]) == reason  # the case is what it says
        check_batch(batch)
    for n in range(len(packet) + 1):
        check_batch(pack([(packet[:n], lt), (NEXT_PACKET, lt)]), f"cut at {n}")


# --- random bytes ---------------------------------------------------------------------

#: Bytes that make random data take the decoder's branches: ethertypes, version nibbles,
#: protocol numbers, extension header types, address families.
INTERESTING = [0x00, 0x01, 0x02, 0x04, 0x06, 0x08, 0x0A, 0x11, 0x18, 0x1C, 0x1E, 0x21, 0x29,
               0x2B, 0x2C, 0x2F, 0x33, 0x3A, 0x3C, 0x40, 0x45, 0x46, 0x4F, 0x57, 0x60, 0x64,
               0x65, 0x81, 0x84, 0x86, 0x87, 0x88, 0x91, 0xA8, 0xDD, 0xFF]
LINKTYPES = [*map(int, LinkType), -1, 2, 7, 105, 147, 999, 2**31 - 1]

buffers = st.lists(st.sampled_from(INTERESTING) | st.integers(0, 255), max_size=400).map(bytes)


@st.composite
def random_batches(draw: Draw) -> Batch:
    buf = draw(buffers)
    bounds = []
    for _ in range(draw(st.integers(0, 12))):
        start = draw(st.integers(0, len(buf)))
        bounds.append((start, draw(st.integers(start, len(buf))), draw(st.sampled_from(LINKTYPES))))
    return make_batch(buf, bounds)


@examples(300)
@given(random_batches())
def test_random_batches(batch: Batch) -> None:
    check_batch(batch)


@examples(150)
@given(buffers, st.lists(st.tuples(st.integers(-60, 460), st.integers(-30, 300),
                                   st.sampled_from([t for t in LINKTYPES
                                                    if t != LinkType.NFLOG])), max_size=10))
def test_offsets_beyond_the_buffer(buf: bytes, rows: list[tuple[int, int, int]]) -> None:
    """Starts and ends outside the buffer (and ends before starts): every read clips."""
    check_batch(make_batch(buf, [(o, o + n, t) for o, n, t in rows]))


def test_packets_crossing_the_buffer_edges() -> None:
    """Every link type at every start from 40 bytes before the buffer to its end. Reads
    before the buffer read its first byte (here 0x00), not another: so an Ethernet header
    starting 13 bytes before b"\\x00\\x08..." has the type 0x0000, not IPv4, and a NULL
    header starting 2 bytes before b"\\x00\\x02..." the family 2 (IPv4)."""
    lts = [t for t in LINKTYPES if t != LinkType.NFLOG]
    for buf in (eth(TCP4, 0x0800, [(0x8100, 5)]), b"\0\x08" + TCP4, b"\0\x02" + TCP4):
        check_batch(make_batch(buf, [(start, start + 60, lt)
                                     for start in range(-40, len(buf) + 1) for lt in lts]))


# --- hand-built packets ---------------------------------------------------------------

V6_EXT_TYPES = [0, 43, 60, 135, 139, 140, 253, 254, 44, 51]
PROTOS = [6, 6, 6, 17, 17, 17, 132, 1, 58, 47, 4, 41, 50, 59, 0, 43, 44, 51]


def tagged(draw: Draw, values: Sequence[int], bits: int = 16) -> int:
    """One of ``values`` mostly, any value of ``bits`` bits sometimes."""
    if draw(st.integers(0, 7)) == 0:
        return int(draw(st.integers(0, (1 << bits) - 1)))
    return int(draw(st.sampled_from(values)))


def l4_header(draw: Draw, proto: int, depth: int) -> bytes:
    if proto == 6:
        doff = tagged(draw, [5, 5, 6, 8, 15], 4)
        head = struct.pack(">HHIIBBHHH", draw(st.integers(0, 65535)),
                           draw(st.integers(0, 65535)), draw(st.integers(0, 2**32 - 1)), 0,
                           doff << 4, draw(st.integers(0, 255)), 1024, 0, 0)
        return head + draw(st.binary(min_size=max(doff * 4 - 20, 0),
                                     max_size=max(doff * 4 - 20, 0)))
    if proto in (17, 132):
        ports = [53, 443, 3544, 4754, 4789]
        sport, dport = tagged(draw, ports), tagged(draw, ports)
        body = inner_payload(draw, dport, depth)
        if proto == 132:
            return struct.pack(">HHII", sport, dport, 0, 0) + body
        return struct.pack(">HHHH", sport, dport, 8 + len(body), 0) + body
    if proto in (1, 58):
        return bytes([draw(st.integers(0, 255)), draw(st.integers(0, 255))]) + bytes(6)
    if proto == 47:  # GRE: flags (C, K, S), version, payload type, then an inner packet
        flags = draw(st.sampled_from([0, 0x2000, 0x1000, 0xB000, 1]))
        ptype = draw(st.sampled_from([0x0800, 0x86DD, 0x6558, 0x8847]))
        opts = bytes(4 * bin(flags & 0xB000).count("1"))
        inner = ethernet_frame(draw, depth + 1) if ptype == 0x6558 else ip_packet(draw, depth + 1)
        return struct.pack(">HH", flags, ptype) + opts + inner
    if proto in (4, 41):
        return ip_packet(draw, depth + 1)
    return b""


def inner_payload(draw: Draw, dport: int, depth: int) -> bytes:
    """A UDP payload: a tunnel (GRE, VXLAN, Teredo) when the port says so, or bytes."""
    if depth < 2 and draw(st.booleans()):
        if dport == 4789:
            return bytes([draw(st.sampled_from([0x08, 0]))]) + bytes(7) \
                + ethernet_frame(draw, depth + 1)
        if dport == 4754:
            return struct.pack(">HH", 0, draw(st.sampled_from([0x0800, 0x86DD]))) \
                + ip_packet(draw, depth + 1)
        if dport == 3544 or draw(st.booleans()):  # Teredo, or IPv6 on any port
            prefix = draw(st.sampled_from([b"", b"\0\0" + bytes(6),
                                           b"\0\x01\x02\x01" + bytes(3 + 8 + 1)]))
            return prefix + ipv6_packet(draw, depth + 1)
    return draw(st.binary(max_size=24))


def ip_packet(draw: Draw, depth: int = 0) -> bytes:
    return ipv4_packet(draw, depth) if draw(st.booleans()) else ipv6_packet(draw, depth)


def ipv4_packet(draw: Draw, depth: int = 0) -> bytes:
    proto = tagged(draw, PROTOS if depth < 2 else [6, 17, 1], 8)
    ihl = tagged(draw, [5, 5, 5, 6, 15], 4)
    version = tagged(draw, [4], 4)
    flags_frag = draw(st.sampled_from([0, 0x4000, 0x2000, 0x2000 | 185, 185, 0x1FFF]))
    body = l4_header(draw, proto, depth) + draw(st.binary(max_size=16))
    options = draw(st.binary(min_size=max(ihl - 5, 0) * 4, max_size=max(ihl - 5, 0) * 4))
    real = 20 + len(options) + len(body)
    # 0: trust the captured length; below the header length: the header length.
    tot = tagged(draw, [real, real, real, 0, real - 1, real + 7, 1, 19, ihl * 4])
    head = struct.pack(">BBHHHBBH4s4s", (version << 4) | ihl, 0, tot & 0xFFFF,
                       draw(st.integers(0, 65535)), flags_frag, 64, proto, 0,
                       bytes([10, 0, 0, draw(st.integers(0, 255))]), bytes([192, 0, 2, 1]))
    return head + options + body


def ipv6_packet(draw: Draw, depth: int = 0) -> bytes:
    # Up to 12: the walk stops after 8 (MAX_IPV6_EXT), flagging depth for some types.
    exts = [tagged(draw, V6_EXT_TYPES, 8) for _ in range(draw(st.integers(0, 12)))]
    proto = tagged(draw, PROTOS if depth < 2 else [6, 17, 58], 8)
    chain = [*exts, proto]
    body = bytearray()
    for nh_here, nh_next in zip(chain, chain[1:], strict=False):
        if nh_here == 44:  # fragment header: offset (13 bits), M flag, identification
            offset_m = draw(st.sampled_from([0, 1, 8 | 1, 8, 0xFFF8]))
            body += struct.pack(">BBHI", nh_next, 0, offset_m, draw(st.integers(0, 2**32 - 1)))
        elif nh_here == 51:  # AH: length in 4-octet units minus 2
            n = draw(st.integers(0, 3))
            body += bytes([nh_next, n]) + bytes((n + 2) * 4 - 2)
        else:  # length in 8-octet units minus 1
            n = draw(st.integers(0, 2))
            body += bytes([nh_next, n]) + bytes((n + 1) * 8 - 2)
    body += l4_header(draw, proto, depth) + draw(st.binary(max_size=16))
    plen = tagged(draw, [len(body), len(body), len(body), 0, len(body) - 3, len(body) + 9])
    version = tagged(draw, [6], 4)
    return struct.pack(">IHBB16s16s", version << 28, plen & 0xFFFF, chain[0], 64,
                       b"\x20\x01\x0d\xb8" + bytes(11) + b"\x01",
                       b"\xfe\x80" + bytes(13) + bytes([draw(st.integers(0, 255))])) \
        + bytes(body)


def l3_with_type(draw: Draw, depth: int) -> tuple[int, bytes]:
    """An ethertype and what follows it: IP, MPLS labels before IP, or other bytes."""
    kind = draw(st.sampled_from(["ip", "ip", "ip", "mpls", "other"]))
    if kind == "ip":
        data = ip_packet(draw, depth)
        return (0x0800 if data[0] >> 4 == 4 else 0x86DD), data
    if kind == "mpls":
        labels = draw(st.integers(0, 10))
        bos = draw(st.integers(0, labels))  # == labels: no bottom of stack
        stack = b"".join(struct.pack(">I", (16 << 12) | (int(k == bos) << 8) | 64)
                         for k in range(labels))
        return draw(st.sampled_from([0x8847, 0x8848])), stack + ip_packet(draw, depth)
    return tagged(draw, [0x0806, 0x88CC, 0x8864, 0x8100]), draw(st.binary(max_size=40))


def ethernet_frame(draw: Draw, depth: int = 0) -> bytes:
    ethertype, l3 = l3_with_type(draw, depth)
    tags = b""
    tpids = draw(st.lists(st.sampled_from([0x8100, 0x88A8, 0x9100]), max_size=10))
    for inner_type in [*tpids[1:], ethertype]:
        vid = draw(st.sampled_from([0, 1, 100, 0xFFF]) | st.integers(0, 65535))
        tags += struct.pack(">HH", vid, inner_type)
    first = tpids[0] if tpids else ethertype
    if draw(st.integers(0, 5)) == 0:  # PPPoE session after the tags
        ppp = tagged(draw, [{0x0800: 0x0021, 0x86DD: 0x0057}.get(ethertype, 0xC021)])
        if tpids:
            tags = tags[:-2] + struct.pack(">H", 0x8864)
        else:
            first = 0x8864
        tags += struct.pack(">BBHHH", 0x11, 0, 1, len(l3) + 2, ppp)
    return b"\x02" * 6 + b"\x04" * 6 + struct.pack(">H", first) + tags + l3


@st.composite
def packets(draw: Draw) -> Packet:
    kind = draw(st.sampled_from(["eth", "eth", "eth", "sll", "sll2", "raw", "null", "loop",
                                 "nflog"]))
    if kind == "eth":
        return ethernet_frame(draw), LinkType.ETHERNET
    if kind == "sll":
        et, l3 = l3_with_type(draw, 0)
        return struct.pack(">HHH8sH", 0, 1, 6, bytes(8), et) + l3, LinkType.LINUX_SLL
    if kind == "sll2":
        et, l3 = l3_with_type(draw, 0)
        return struct.pack(">HHIHBB8s", et, 0, 1, 1, 0, 6, bytes(8)) + l3, LinkType.LINUX_SLL2
    if kind == "raw":
        lt = draw(st.sampled_from([LinkType.RAW, LinkType.RAW_DLT12, LinkType.RAW_DLT14,
                                   LinkType.IPV4, LinkType.IPV6]))
        return ip_packet(draw), lt
    if kind in ("null", "loop"):
        l3 = ip_packet(draw)
        family = tagged(draw, [2] if l3[0] >> 4 == 4 else [10, 24, 28, 30], 32)
        order = "<" if kind == "null" and draw(st.booleans()) else ">"
        return struct.pack(order + "I", family) + l3, \
            LinkType.NULL if kind == "null" else LinkType.LOOP
    l3 = ip_packet(draw)
    family = tagged(draw, [2] if l3[0] >> 4 == 4 else [10], 8)
    tlvs = b""
    for _ in range(draw(st.integers(0, 3))):
        value = draw(st.binary(max_size=9))
        tlv_len = draw(st.sampled_from([4 + len(value), 4 + len(value), 2, 0]))
        tlvs += struct.pack("<HH", tlv_len, draw(st.sampled_from([1, 3, 10, 0x8009])))
        tlvs += value + bytes(-len(value) % 4)
    payload = struct.pack("<HH", 4 + len(l3), draw(st.sampled_from([9, 9, 0x8009, 11]))) + l3
    return bytes([family, 0, 0, 0]) + tlvs + payload, LinkType.NFLOG


@examples(200)
@given(st.lists(packets(), min_size=1, max_size=6),
       st.lists(st.binary(max_size=6), max_size=6))
def test_built_packets(pkts: list[Packet], gaps: list[bytes]) -> None:
    check_batch(pack(pkts, gaps))


@examples(120)
@given(packets())
def test_built_packet_cut_at_every_length(pkt: Packet) -> None:
    """The packet cut at each length: one after another, so the reads beyond each cut
    see the next cut's bytes (and the last one's, the buffer's edge)."""
    data, lt = pkt
    check_batch(pack([(data[:n], lt) for n in range(len(data) + 1)]))


@examples(100)
@given(packets(), st.lists(st.integers(0, 400), min_size=1, max_size=6))
def test_built_packet_cut_at_buffer_end(pkt: Packet, cuts: list[int]) -> None:
    """Each cut alone in its buffer: reads beyond it clip to the buffer's last byte."""
    data, lt = pkt
    for n in cuts:
        check_batch(make_batch(data[:n], [(0, min(n, len(data)), lt)]), f"cut at {n}")


@cache
def corpus_representatives() -> tuple[Packet, ...]:
    """One captured packet of each kind (link type, IP version, protocol, fragment,
    VLAN, reason) in the corpus."""
    kinds: dict[tuple[int, ...], Packet] = {}
    for pkt in corpus_packets():
        c = reference(pack([pkt]))
        key = (pkt[1], int(c.ipver[0]), int(c.proto[0]), int(c.frag[0]), int(c.vlan[0] != 0),
               int(c.reason[0]))
        kinds.setdefault(key, pkt)
    return tuple(kinds.values())


def test_captured_packets_cut_at_every_length_at_buffer_end() -> None:
    reps = corpus_representatives()
    assert len(reps) >= 10
    for data, lt in reps:
        for n in range(min(len(data), 100) + 1):
            check_batch(make_batch(data[:n], [(0, n, lt)]), f"link type {lt}, cut at {n}")


# --- mutated captured packets ---------------------------------------------------------


@st.composite
def mutated(draw: Draw) -> Packet:
    data, lt = draw(st.sampled_from(corpus_packets()))
    buf = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        if not buf:
            break
        where = draw(st.integers(0, min(len(buf), 120) - 1))  # in the headers
        if draw(st.booleans()):
            buf[where] ^= 1 << draw(st.integers(0, 7))
        else:
            buf[where] = draw(st.sampled_from(INTERESTING))
    if draw(st.booleans()):
        del buf[draw(st.integers(0, len(buf))):]
    if draw(st.integers(0, 9)) == 0:
        lt = draw(st.sampled_from(LINKTYPES))
    return bytes(buf), lt


@examples(200)
@given(st.lists(mutated(), min_size=1, max_size=8))
def test_mutated_captured_packets(pkts: list[Packet]) -> None:
    check_batch(pack(pkts))
