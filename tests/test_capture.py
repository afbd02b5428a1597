"""Tests for the capture file readers (monitor.capture: pcap, pcapng, gzip, directories).

Captures are built at test time (a small pcap/pcapng writer below, scapy's PcapWriter,
editcap conversions) and compared with what was written and with tshark, which is also
the oracle for every capture in tests/data/corpus/.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.capture import Batch, CaptureReader, LinkType
from monitor.capture import pcap as pcapmod
from monitor.errors import CaptureError

CORPUS = Path(__file__).parent / "data" / "corpus"
CORPUS_FILES = (
    sorted(p for p in CORPUS.iterdir() if p.suffix in (".pcap", ".pcapng"))
    if CORPUS.is_dir()
    else []
)

NS = 1_000_000_000
T0 = 1_700_000_000 * NS + 123_456_789  # a timestamp with every nanosecond digit set


# ----------------------------------------------------------------------------- helpers


def need_tool(name: str) -> str:
    """Path of a Wireshark tool; skip without it, unless CI=true (then fail)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is required when CI=true")
        pytest.skip(f"{name} not installed")
    return path


@dataclass(frozen=True)
class Row:
    frame: int
    ts_ns: int
    caplen: int
    wirelen: int
    linktype: int
    data: bytes
    origin: str


def rows_of(batches: Iterable[Batch]) -> list[Row]:
    rows = []
    for b in batches:
        n = len(b)
        for col in (b.offsets, b.caplens, b.wirelens, b.ts_ns):
            assert col.dtype == np.int64 and col.shape == (n,)
        assert b.linktypes.dtype == np.int32 and b.linktypes.shape == (n,)
        for i in range(n):
            rows.append(
                Row(
                    b.first_frame + i,
                    int(b.ts_ns[i]),
                    int(b.caplens[i]),
                    int(b.wirelens[i]),
                    int(b.linktypes[i]),
                    b.packet(i),
                    b.origin,
                )
            )
    return rows


def read(paths: Sequence[Path], **kw: int) -> tuple[list[Row], CaptureReader, list[str]]:
    """All packets of ``paths`` (kw: batch_packets, chunk_bytes), the reader, warnings."""
    warnings: list[str] = []
    reader = CaptureReader(paths, warn=warnings.append, **kw)
    return rows_of(reader), reader, warnings


def payload(i: int, size: int | None = None) -> bytes:
    size = 14 + (i * 37) % 90 if size is None else size
    return bytes((i + k) & 0xFF for k in range(size))


# --- classic pcap writer


def pcap_bytes(
    packets: Sequence[tuple[int, bytes, int]],
    *,
    endian: str = "<",
    nano: bool = False,
    linktype: int = 1,
    snaplen: int = 65535,
) -> bytes:
    """A classic pcap of (ts_ns, data, wirelen) records."""
    magic = pcapmod.PCAP_MAGIC_NSEC if nano else pcapmod.PCAP_MAGIC_USEC
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for ts, data, wirelen in packets:
        frac = ts % NS if nano else ts % NS // 1000
        out.append(struct.pack(endian + "IIII", ts // NS, frac, len(data), wirelen))
        out.append(data)
    return b"".join(out)


def simple_packets(n: int, start: int = T0, step: int = 1_000_000) -> list[tuple[int, bytes, int]]:
    return [(start + i * step, payload(i), len(payload(i)) + i % 3) for i in range(n)]


# --- pcapng writer


def ng_block(e: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack(e + "II", btype, length) + body + struct.pack(e + "I", length)


def ng_option(e: str, code: int, value: bytes) -> bytes:
    return struct.pack(e + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def ng_shb(e: str, *, major: int = 1, options: bytes = b"") -> bytes:
    return ng_block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, major, 0, -1) + options)


def ng_idb(
    e: str,
    linktype: int,
    *,
    snaplen: int = 0,
    tsresol: int | None = None,
    tsoffset: int | None = None,
) -> bytes:
    opts = ng_option(e, 2, b"eth-test")  # if_name, to be skipped
    if tsresol is not None:
        opts += ng_option(e, 9, bytes([tsresol]))
    if tsoffset is not None:
        opts += ng_option(e, 14, struct.pack(e + "q", tsoffset))
    opts += ng_option(e, 0, b"")
    return ng_block(e, 1, struct.pack(e + "HHI", linktype, 0, snaplen) + opts)


def ng_epb(e: str, iface: int, ticks: int, data: bytes, wirelen: int | None = None) -> bytes:
    wl = len(data) if wirelen is None else wirelen
    head = struct.pack(e + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), wl)
    comment = ng_option(e, 1, b"a comment") + ng_option(e, 0, b"")
    return ng_block(e, 6, head + data + b"\0" * (-len(data) % 4) + comment)


def ng_pb(e: str, iface: int, ticks: int, data: bytes, wirelen: int | None = None) -> bytes:
    wl = len(data) if wirelen is None else wirelen
    head = struct.pack(e + "HHIIII", iface, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), wl)
    return ng_block(e, 2, head + data)


def ng_spb(e: str, data: bytes, wirelen: int | None = None) -> bytes:
    return ng_block(e, 3, struct.pack(e + "I", len(data) if wirelen is None else wirelen) + data)


def ng_others(e: str) -> bytes:
    """Blocks a reader must skip: NRB, ISB, DSB, custom, and an unknown type."""
    nrb = ng_block(e, 4, struct.pack(e + "HH", 1, 8) + bytes([10, 0, 0, 1]) + b"a.b\0" + b"\0" * 4)
    isb = ng_block(e, 5, struct.pack(e + "III", 0, 0, 0) + ng_option(e, 0, b""))
    dsb = ng_block(e, 10, struct.pack(e + "II", 0x544C534B, 5) + b"xxxxx")
    custom = ng_block(e, 0x00000BAD, struct.pack(e + "I", 32473) + b"custom data")
    unknown = ng_block(e, 0x12345, b"future block")
    return nrb + isb + dsb + custom + unknown


def ticks_to_ns(ticks: int, tsresol: int | None, tsoffset: int | None) -> int:
    """The pcapng specification's timestamp, in integer nanoseconds rounded down."""
    r = 6 if tsresol is None else tsresol
    units: int = 2 ** (r & 0x7F) if r & 0x80 else 10 ** (r & 0x7F)
    return ticks * NS // units + (tsoffset or 0) * NS


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- tshark as the oracle


def link_types(path: Path) -> dict[tuple[int, int], int]:
    """Link type of each interface, keyed by (section number, interface id) as tshark
    numbers them (from 1 and from 0 within each section).

    For pcapng, tshark dissects the file format itself (the MIME Files Format reader) and
    lists the blocks and each IDB's link type. A classic pcap has one link type in its
    file header (bits 0-25 of the field, like Wireshark's LT_LINKTYPE), read here directly
    to spare a second tshark start-up per file.
    """
    head = path.read_bytes()[:24]
    if head[:4] != b"\x0a\x0d\x0d\x0a":
        endian = "<" if head[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        return {(1, 0): struct.unpack_from(endian + "I", head, 20)[0] & 0x03FFFFFF}
    mime = subprocess.run(
        [
            need_tool("tshark"),
            "-n",
            "-r",
            str(path),
            "-X",
            "read_format:MIME Files Format",
            "-T",
            "fields",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=,",
            "-e",
            "pcapng.block.type",
            "-e",
            "pcapng.interface_description.link_type",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    block_types, idb_link_types = mime.strip().split("\t")
    pending = iter(int(x) for x in idb_link_types.split(","))
    result: dict[tuple[int, int], int] = {}
    section, iface = 0, 0
    for block_type in block_types.split(","):
        if int(block_type, 16) == 0x0A0D0D0A:
            section, iface = section + 1, 0
        elif int(block_type, 16) == 1:
            result[(section, iface)] = next(pending)
            iface += 1
    return result


def tshark_view(path: Path) -> list[tuple[int | None, int, int, int]]:
    """(ts_ns or None, caplen, wirelen, linktype) for each packet, according to tshark."""
    tshark = need_tool("tshark")
    fields = subprocess.run(
        [
            tshark,
            "-n",
            "-r",
            str(path),
            "-T",
            "fields",
            "-e",
            "frame.encap_type",
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.cap_len",
            "-e",
            "frame.len",
            "-e",
            "frame.section_number",
            "-e",
            "frame.interface_id",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    linktypes = link_types(path)
    rows = []
    for line in fields.splitlines():
        encap, epoch, caplen, wirelen, section, iface = line.split("\t")
        if not encap:
            continue  # a pcapng custom block, which tshark shows as a frame
        ts = None
        if epoch:
            secs, _, frac = epoch.partition(".")
            ts = int(secs) * NS + int(frac.ljust(9, "0"))
        linktype = linktypes[(int(section or 1), int(iface or 0))]
        rows.append((ts, int(caplen), int(wirelen), linktype))
    return rows


def assert_matches_tshark(path: Path, rows: list[Row] | None = None) -> None:
    if rows is None:
        rows, _, warnings = read([path])
        assert warnings == []
    expected = tshark_view(path)
    assert len(rows) == len(expected)
    for row, (ts, caplen, wirelen, linktype) in zip(rows, expected, strict=True):
        assert (row.caplen, row.wirelen, row.linktype) == (caplen, wirelen, linktype), row.frame
        # tshark shows no time for a Simple Packet Block; ours is the previous packet's.
        if ts is not None:
            assert row.ts_ns == ts, row.frame


# ---------------------------------------------------------------- the peer corpus


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_corpus_matches_tshark(path: Path) -> None:
    rows, reader, warnings = read([path])
    assert warnings == [] and reader.damaged == []
    manifest = {m["file"]: m for m in json.loads((CORPUS / "MANIFEST.json").read_text())}
    assert len(rows) == manifest[path.name]["packets"]
    assert_matches_tshark(path, rows)


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_corpus_bytes_match_scapy(path: Path) -> None:
    from scapy.utils import RawPcapReader  # switches to its pcapng reader by magic

    with RawPcapReader(str(path)) as r:
        expected = [data for data, _meta in r]
    rows, _, _ = read([path])
    assert [row.data for row in rows] == expected


def test_corpus_has_files() -> None:
    assert len(CORPUS_FILES) >= 20


# ------------------------------------------------------------------------ classic pcap


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path: Path, endian: str, nano: bool) -> None:
    packets = simple_packets(20, step=1_234_567)
    path = write(tmp_path / "x.pcap", pcap_bytes(packets, endian=endian, nano=nano, linktype=113))
    rows, reader, warnings = read([path])
    assert warnings == [] and reader.damaged == []
    assert [r.frame for r in rows] == list(range(1, 21))
    for row, (ts, data, wirelen) in zip(rows, packets, strict=True):
        assert row.ts_ns == (ts if nano else ts // 1000 * 1000)
        assert (row.data, row.caplen, row.wirelen) == (data, len(data), wirelen)
        assert row.linktype == LinkType.LINUX_SLL
        assert row.origin == str(path)
    assert_matches_tshark(path, rows)


@pytest.mark.parametrize("endianness", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_written_by_scapy(tmp_path: Path, endianness: str, nano: bool) -> None:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw
    from scapy.utils import EDecimal, PcapWriter

    path = tmp_path / "scapy.pcap"
    expected = []
    with PcapWriter(str(path), endianness=endianness, nano=nano, sync=True) as w:
        for i in range(5):
            pkt = Ether() / IP(dst="127.0.0.1") / UDP(dport=53) / Raw(b"q" * i)
            # scapy rounds to the file's resolution; give it values that need no rounding.
            ns = T0 + i * 1_000_001 if nano else T0 // 1000 * 1000 + i * 1_000_000
            pkt.time = EDecimal(ns) / NS
            w.write(pkt)
            expected.append((ns, bytes(pkt)))
    rows, _, warnings = read([path])
    assert warnings == []
    assert [(r.ts_ns, r.data, r.linktype) for r in rows] == [(t, d, 1) for t, d in expected]


def test_unknown_link_type_passes_through(tmp_path: Path) -> None:
    path = write(tmp_path / "u.pcap", pcap_bytes(simple_packets(3), linktype=147))
    rows, _, _ = read([path])
    assert {r.linktype for r in rows} == {147}


def test_fcs_bits_of_link_type_field_are_masked(tmp_path: Path) -> None:
    # pcap LinkType field: bits 26-31 carry FCS information, not the link type.
    path = write(tmp_path / "f.pcap", pcap_bytes(simple_packets(2), linktype=1 | 0x14000000))
    rows, _, _ = read([path])
    assert {r.linktype for r in rows} == {1}


def test_pcap_without_packets_yields_nothing(tmp_path: Path) -> None:
    path = write(tmp_path / "h.pcap", pcap_bytes([]))
    rows, reader, warnings = read([path])
    assert rows == [] and warnings == [] and reader.files == [path]


# ---------------------------------------------------------------------------- pcapng


def multi_interface_ng(e: str = "<") -> tuple[bytes, list[tuple[int, int, int, bytes]]]:
    """An SHB with three interfaces (different link types and resolutions) and EPBs
    interleaved between them; returns the bytes and (ts_ns, linktype, wirelen, data)."""
    ifaces = [
        (1, None, None),  # Ethernet, default microseconds
        (101, 9, None),  # raw IP, nanoseconds
        (113, 0x80 | 20, -3600),  # Linux SLL, 2^-20 s, one hour offset
    ]
    out = [ng_shb(e)] + [ng_idb(e, lt, tsresol=r, tsoffset=o) for lt, r, o in ifaces]
    expected = []
    for i in range(12):
        k = i % 3
        lt, resol, offset = ifaces[k]
        ticks = [
            1_700_000_000_123_456 + i,
            1_700_000_000_123_456_789 + i,
            (1_700_000_000 << 20) + 1234 + i,
        ][k]
        data = payload(i)
        out.append(ng_epb(e, k, ticks, data, len(data) + 4))
        expected.append((ticks_to_ns(ticks, resol, offset), lt, len(data) + 4, data))
    return b"".join(out), expected


@pytest.mark.parametrize("e", ["<", ">"])
def test_pcapng_interfaces_with_different_link_types_and_resolutions(
    tmp_path: Path, e: str
) -> None:
    data, expected = multi_interface_ng(e)
    path = write(tmp_path / "multi.pcapng", data)
    rows, reader, warnings = read([path])
    assert warnings == [] and reader.damaged == []
    assert [(r.ts_ns, r.linktype, r.wirelen, r.data) for r in rows] == expected
    assert_matches_tshark(path, rows)


def test_pcapng_packet_block_kinds_and_skipped_blocks(tmp_path: Path) -> None:
    e = "<"
    d = [payload(i, 30) for i in range(4)]
    blob = b"".join(
        [
            ng_shb(e, options=ng_option(e, 4, b"test writer") + ng_option(e, 0, b"")),
            ng_others(e),
            ng_idb(e, 1, snaplen=20),
            ng_epb(e, 0, 1_700_000_000_000_001, d[0]),
            ng_others(e),
            ng_spb(e, d[1][:20], wirelen=30),  # cut by the snaplen
            ng_pb(e, 0, 1_700_000_000_000_002, d[2][:20], wirelen=30),
            ng_spb(e, d[3][:7]),
        ]
    )
    path = write(tmp_path / "kinds.pcapng", blob)
    rows, _, warnings = read([path])
    assert warnings == []
    t1, t2 = 1_700_000_000_000_001_000, 1_700_000_000_000_002_000
    assert (
        [(r.ts_ns, r.caplen, r.wirelen, r.data) for r in rows]
        == [
            (t1, 30, 30, d[0]),
            (t1, 20, 30, d[1][:20]),  # an SPB has no timestamp: the previous packet's
            (t2, 20, 30, d[2][:20]),
            (t2, 7, 7, d[3][:7]),
        ]
    )
    assert_matches_tshark(path, rows)


def test_spb_caplen_is_limited_by_block_space(tmp_path: Path) -> None:
    e = "<"
    # Original length 100, no snaplen, but only 8 bytes of packet data in the block.
    blob = ng_shb(e) + ng_idb(e, 1) + ng_spb(e, b"12345678", wirelen=100)
    rows, _, warnings = read([write(tmp_path / "s.pcapng", blob)])
    assert warnings == []
    assert [(r.caplen, r.wirelen, r.data, r.ts_ns) for r in rows] == [(8, 100, b"12345678", 0)]


def test_pcapng_two_sections_of_different_byte_order(tmp_path: Path) -> None:
    first, exp1 = multi_interface_ng("<")
    second = b"".join(
        [
            ng_shb(">"),
            ng_idb(">", 228, tsresol=3),  # IPv4, milliseconds
            ng_others(">"),
            ng_epb(">", 0, 1_700_000_000_999, payload(50)),
        ]
    )
    path = write(tmp_path / "two.pcapng", first + second)
    rows, _, warnings = read([path])
    assert warnings == []
    assert [(r.ts_ns, r.linktype, r.data) for r in rows] == [
        (t, lt, d) for t, lt, _w, d in exp1
    ] + [(1_700_000_000_999_000_000, 228, payload(50))]
    assert_matches_tshark(path, rows)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    resol=st.one_of(st.integers(0, 19), st.integers(0x80, 0x80 + 63)),
    ticks=st.integers(0, 2**64 - 1),
    offset=st.integers(-(2**31), 2**31),
    e=st.sampled_from(["<", ">"]),
)
def test_pcapng_timestamps_are_exact(
    tmp_path: Path, resol: int, ticks: int, offset: int, e: str
) -> None:
    expected = ticks_to_ns(ticks, resol, offset)
    blob = ng_shb(e) + ng_idb(e, 1, tsresol=resol, tsoffset=offset) + ng_epb(e, 0, ticks, b"x")
    rows, _, warnings = read([write(tmp_path / "t.pcapng", blob)])
    assert warnings == []
    assert rows[0].ts_ns == (expected + 2**63) % 2**64 - 2**63  # int64 column (wraps)


def test_pcapng_sub_nanosecond_resolutions(tmp_path: Path) -> None:
    e = "<"
    # 64 bits of picoseconds or 2^-40 s span months, so an offset gives the epoch.
    pow2 = ng_shb(e) + ng_idb(e, 1, tsresol=0x80 | 40, tsoffset=1_700_000_000)
    pow2 += ng_epb(e, 0, (5 << 40) + 987_654_321, b"pow2")
    pico = ng_shb(e) + ng_idb(e, 1, tsresol=12, tsoffset=1_700_000_000)
    pico += ng_epb(e, 0, 3 * 10**12 + 123_456_789_012, b"pico")
    pow2_path = write(tmp_path / "pow2.pcapng", pow2)
    rows, _, _ = read([pow2_path, write(tmp_path / "pico.pcapng", pico)])
    # 987_654_321 / 2^40 s = 898_266.6... ns, rounded down
    assert [r.ts_ns for r in rows] == [1_700_000_003_123_456_789, 1_700_000_005 * NS + 898_266]
    assert_matches_tshark(pow2_path, rows[1:])
    # Not compared with tshark 4.0 for picoseconds: it multiplies the sub-second ticks by
    # 10^9 in 64 bits, which overflows (it shows .012776324 for .123456789012).


# ------------------------------------------------------------ conversions by editcap


@pytest.mark.parametrize("fmt", ["pcapng", "nsecpcap", "pcap"])
def test_editcap_conversions_read_alike(tmp_path: Path, fmt: str) -> None:
    editcap = need_tool("editcap")
    packets = simple_packets(25, step=999_999_937)
    src = write(tmp_path / "src.pcap", pcap_bytes(packets, nano=True))
    dst = tmp_path / f"dst.{fmt}"
    subprocess.run([editcap, "-F", fmt, str(src), str(dst)], check=True, capture_output=True)
    a, _, _ = read([src])
    b, _, warnings = read([dst])
    assert warnings == []
    resolution = 1000 if fmt == "pcap" else 1
    assert [(r.ts_ns // resolution, r.caplen, r.wirelen, r.linktype, r.data) for r in b] == [
        (r.ts_ns // resolution, r.caplen, r.wirelen, r.linktype, r.data) for r in a
    ]
    assert_matches_tshark(dst, b)


# --------------------------------------------------------------------------- chunking


def chunk_cases(tmp_path: Path) -> list[Path]:
    big = [(T0 + i, payload(i, 3000 if i % 5 == 0 else None), 3000) for i in range(40)]
    ng, _ = multi_interface_ng(">")
    ng += ng_shb("<") + ng_idb("<", 1, snaplen=16) + ng_others("<")
    ng += b"".join(ng_spb("<", payload(i, 16), 40) + ng_pb("<", 0, i, payload(i)) for i in range(9))
    return [
        write(tmp_path / "big.pcap", pcap_bytes(big, endian=">")),
        write(tmp_path / "mixed.pcapng", ng),
    ]


@pytest.mark.parametrize("chunk_bytes", [1, 7, 100, 1000, 4096])
@pytest.mark.parametrize("batch_packets", [1, 3, 65536])
def test_chunk_boundaries_do_not_change_results(
    tmp_path: Path, chunk_bytes: int, batch_packets: int
) -> None:
    for path in chunk_cases(tmp_path):
        reference, _, _ = read([path])
        rows, reader, warnings = read([path], chunk_bytes=chunk_bytes, batch_packets=batch_packets)
        assert warnings == []
        assert rows == reference
        batches = list(CaptureReader([path], chunk_bytes=chunk_bytes, batch_packets=batch_packets))
        assert all(1 <= len(b) <= batch_packets for b in batches)
        assert reader.bytes_read == reader.total_bytes == path.stat().st_size


@pytest.mark.parametrize("piece", [1, 7, 100, 1000])
def test_pieces_walked_as_read_give_the_walk_of_the_whole_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece: int
) -> None:
    """A file's chunk is read and walked a piece at a time: records cut by a piece's end,
    a corrupt header and a truncated end come out as a walk of the whole chunk gives."""
    data = pcap_bytes(simple_packets(120))
    corrupt = bytearray(data)
    at = 24 + sum(16 + len(p[1]) for p in simple_packets(100))
    struct.pack_into("<I", corrupt, at + 8, 0xFFFFFFF0)
    paths = [write(tmp_path / "whole.pcap", data),
             write(tmp_path / "corrupt.pcap", bytes(corrupt)),
             write(tmp_path / "cut.pcap", data[:-9])]
    expected = {path: read([path], chunk_bytes=4096) for path in paths}
    monkeypatch.setattr(pcapmod, "_PIECE_BYTES", piece)
    for path in paths:
        for chunk in (4096, 8 << 20):
            rows, reader, warnings = read([path], chunk_bytes=chunk)
            assert rows == expected[path][0]
            assert warnings == expected[path][2] and reader.damaged == expected[path][1].damaged


def test_record_larger_than_chunk(tmp_path: Path) -> None:
    data = payload(1, 200_000)
    path = write(tmp_path / "jumbo.pcap", pcap_bytes([(T0, data, len(data)), (T0 + 1, b"ab", 2)]))
    rows, _, warnings = read([path], chunk_bytes=100)
    assert warnings == []
    assert [r.data for r in rows] == [data, b"ab"]


def test_batch_buffer_is_the_chunk(tmp_path: Path) -> None:
    """A batch's buffer is the chunk its packets were read into: a file's chunk is a buffer
    of its own (read in pieces), a stream's (gzip) the bytes read."""
    data = pcap_bytes(simple_packets(200))
    path = write(tmp_path / "c.pcap", data)
    packed = write(tmp_path / "c.pcap.gz", gzip.compress(data))
    for source, kind in ((path, memoryview), (packed, bytes)):
        batches, firsts = [], []
        for b in CaptureReader([source], chunk_bytes=1000):
            batches.append(b)
            firsts.append(b.packet(0))
        assert len(batches) > 5
        assert [b.packet(0) for b in batches] == firsts  # no buffer is read into again
        for b in batches:
            assert isinstance(b.buffer, kind) and len(b.buffer) < 1000 + 200
            assert int((b.offsets + b.caplens).max()) <= len(b.buffer)


def test_record_cut_by_a_chunk_end_is_read_again_with_the_next_chunk(tmp_path: Path) -> None:
    """A regular file is read again from the start of a record the chunk's end cut: no
    batch holds that record alone (each batch costs the pipeline a pass). A stream that
    cannot go back (gzip) gets the record whole as before, in a batch of its own."""
    data = pcap_bytes(simple_packets(300))
    path = write(tmp_path / "c.pcap", data)
    reference, _, _ = read([path])
    batches = list(CaptureReader([path], chunk_bytes=1000))
    assert all(len(b) > 1 for b in batches[:-1])
    assert len(batches) <= len(data) // (1000 - 120) + 1  # about one per chunk
    assert rows_of(CaptureReader([path], chunk_bytes=1000)) == reference
    packed = write(tmp_path / "c.pcap.gz", gzip.compress(data))
    rows, reader, warnings = read([packed], chunk_bytes=1000)
    assert warnings == [] and [r.data for r in rows] == [r.data for r in reference]
    assert any(len(b) == 1 for b in CaptureReader([packed], chunk_bytes=1000))


# ------------------------------------------------------------- gzip and directories


def test_gzip_detected_by_magic_and_streamed(tmp_path: Path) -> None:
    plain = pcap_bytes(simple_packets(300))
    named = write(tmp_path / "a.pcap.gz", gzip.compress(plain))
    unnamed = write(tmp_path / "b.bin", gzip.compress(pcap_bytes(simple_packets(3, start=T0 * 2))))
    reference, _, _ = read([write(tmp_path / "ref.pcap", plain)])
    rows, reader, warnings = read([unnamed, named], chunk_bytes=512)
    assert warnings == []
    assert reader.files == [named, unnamed]
    assert [r.data for r in rows[:300]] == [r.data for r in reference]
    assert reader.total_bytes == named.stat().st_size + unnamed.stat().st_size
    assert reader.bytes_read == reader.total_bytes
    assert reader.packets_read == 303


def test_bytes_read_grows_with_the_compressed_position(tmp_path: Path) -> None:
    plain = pcap_bytes([(T0 + i, os.urandom(1200), 1200) for i in range(3000)])
    path = write(tmp_path / "big.pcap.gz", gzip.compress(plain))
    reader = CaptureReader([path], chunk_bytes=64 << 10)
    seen = []
    for _batch in reader:
        seen.append(reader.bytes_read)
    assert seen == sorted(seen) and len(set(seen)) > 3
    assert 0 < seen[0] < path.stat().st_size
    assert reader.bytes_read == path.stat().st_size


def test_directory_of_rotated_files_in_time_order(tmp_path: Path) -> None:
    d = tmp_path / "rotated"
    d.mkdir()
    hour = 3600 * NS
    # Names sort in the opposite order to the captures' times.
    write(d / "c.pcap", pcap_bytes(simple_packets(3, start=T0)))
    write(d / "b.pcap.gz", gzip.compress(pcap_bytes(simple_packets(4, start=T0 + hour))))
    ng, _ = multi_interface_ng()
    write(d / "a.pcapng", ng)  # first packet at 1_700_000_000.123456 s, just before T0
    write(d / "trace", pcap_bytes(simple_packets(2, start=T0 - hour)))  # no suffix: magic
    write(d / "README.txt", b"not a capture")
    write(d / ".hidden.pcap", b"ignored")
    (d / "sub").mkdir()
    write(d / "sub" / "x.pcap", pcap_bytes(simple_packets(1)))  # not recursed into
    rows, reader, warnings = read([d])
    assert warnings == []
    assert reader.files == [d / "trace", d / "a.pcapng", d / "c.pcap", d / "b.pcap.gz"]
    assert [r.frame for r in rows] == list(range(1, 2 + 12 + 3 + 4 + 1))
    names = [Path(r.origin).name for r in rows]
    assert names == ["trace"] * 2 + ["a.pcapng"] * 12 + ["c.pcap"] * 3 + ["b.pcap.gz"] * 4


def test_files_given_out_of_order_are_read_in_time_order(tmp_path: Path) -> None:
    late = write(tmp_path / "1.pcap", pcap_bytes(simple_packets(2, start=T0 + NS)))
    early = write(tmp_path / "2.pcap", pcap_bytes(simple_packets(2, start=T0)))
    same = write(tmp_path / "0.pcap", pcap_bytes(simple_packets(1, start=T0)))
    rows, reader, _ = read([late, early, same, early])
    assert reader.files == [same, early, late]  # ties by name; duplicates read once
    assert [r.frame for r in rows] == [1, 2, 3, 4, 5]
    assert [r.ts_ns for r in rows] == sorted(r.ts_ns for r in rows)


def test_directory_without_captures(tmp_path: Path) -> None:
    d = tmp_path / "empty"
    d.mkdir()
    write(d / "notes.txt", b"hello")
    with pytest.raises(CaptureError, match="directory holds no pcap or pcapng captures"):
        CaptureReader([d])


def test_directory_warns_about_unreadable_capture_names(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    write(d / "ok.pcap", pcap_bytes(simple_packets(1)))
    write(d / "bad.pcap", b"garbage!")
    write(d / "bad.txt", b"garbage!")
    rows, reader, warnings = read([d])
    assert reader.files == [d / "ok.pcap"] and len(rows) == 1
    assert warnings == [
        f"{d / 'bad.pcap'}: not a pcap or pcapng capture (starts with 0x67617262); skipped"
    ]


# ------------------------------------------------------------------- errors, damage


def test_garbage_file_is_a_capture_error(tmp_path: Path) -> None:
    path = write(tmp_path / "x.txt", b"hello world")
    with pytest.raises(CaptureError) as exc:
        CaptureReader([path])
    assert str(exc.value) == f"{path}: not a pcap or pcapng capture (starts with 0x68656c6c)"


def test_short_garbage_and_modified_pcap(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="only 2 bytes long"):
        CaptureReader([write(tmp_path / "s", b"ab")])
    modified = write(tmp_path / "m.pcap", struct.pack("<I", 0xA1B2CD34) + b"\0" * 20)
    with pytest.raises(CaptureError, match="Kuznetzov"):
        CaptureReader([modified])


def test_gzip_of_garbage_is_a_capture_error(tmp_path: Path) -> None:
    path = write(tmp_path / "x.pcap.gz", gzip.compress(b"hello world"))
    with pytest.raises(CaptureError, match=r"x\.pcap\.gz: gzip-compressed, .*0x68656c6c"):
        CaptureReader([path])


def test_missing_path_is_a_capture_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="nope.pcap: no such file or directory"):
        CaptureReader([tmp_path / "nope.pcap"])
    with pytest.raises(CaptureError):
        CaptureReader([])


def test_empty_file_is_skipped_with_a_warning(tmp_path: Path) -> None:
    empty = write(tmp_path / "empty.pcap", b"")
    empty_gz = write(tmp_path / "empty.pcap.gz", gzip.compress(b""))
    good = write(tmp_path / "good.pcap", pcap_bytes(simple_packets(2)))
    rows, reader, warnings = read([empty, good, empty_gz])
    assert len(rows) == 2 and reader.files == [good]
    assert warnings == [
        f"{empty}: empty file; skipped",
        f"{empty_gz}: empty file (after gzip decompression); skipped",
    ]


def damage_warning(path: Path, offset: int) -> str:
    return f"{path}: damaged capture at offset {offset}: "


@pytest.mark.parametrize("cut", [1, 8, 16, 20])
def test_truncated_pcap_keeps_earlier_packets(tmp_path: Path, cut: int) -> None:
    packets = simple_packets(10)
    data = pcap_bytes(packets)
    last_record = len(data) - 16 - len(packets[-1][1])
    damaged = write(tmp_path / "cut.pcap", data[: last_record + cut])
    after = write(tmp_path / "next.pcap", pcap_bytes(simple_packets(2, start=T0 + NS)))
    for chunk in (64, 8 << 20):
        rows, reader, warnings = read([damaged, after], chunk_bytes=chunk)
        assert [r.data for r in rows] == [p[1] for p in packets[:9]] + [
            p[1] for p in simple_packets(2)
        ]
        assert [r.frame for r in rows] == list(range(1, 12))
        assert len(warnings) == 1
        assert warnings[0].startswith(damage_warning(damaged, last_record))
        assert "truncated record" in warnings[0]
        assert warnings[0].endswith("; stopped reading this file")
        assert reader.damaged == [(damaged, last_record, reader.damaged[0][2])]
        assert reader.bytes_read == reader.total_bytes


def test_truncated_pcap_file_header(tmp_path: Path) -> None:
    path = write(tmp_path / "h.pcap", pcap_bytes([])[:10])
    rows, reader, warnings = read([path])
    assert rows == [] and len(reader.damaged) == 1
    assert warnings == [
        f"{path}: damaged capture at offset 0: truncated file header (10 of 24 bytes); "
        "stopped reading this file"
    ]


def test_corrupt_caplen_stops_without_reading_on(tmp_path: Path) -> None:
    data = bytearray(pcap_bytes(simple_packets(5)))
    third = 24 + sum(16 + len(p[1]) for p in simple_packets(2))
    struct.pack_into("<I", data, third + 8, 0xFFFFFFF0)
    path = write(tmp_path / "corrupt.pcap", bytes(data))
    rows, _, warnings = read([path])
    assert len(rows) == 2
    assert warnings[0].startswith(damage_warning(path, third) + "corrupt record header")


def test_record_cap_is_enforced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pcapmod, "MAX_RECORD_BYTES", 1000)
    packets = [(T0, b"a" * 999, 999), (T0 + 1, b"b" * 1001, 1001)]
    path = write(tmp_path / "cap.pcap", pcap_bytes(packets))
    rows, _, warnings = read([path])
    assert [r.data for r in rows] == [b"a" * 999]
    assert warnings[0].startswith(damage_warning(path, 24 + 16 + 999))
    assert "exceeds the 1000-byte limit" in warnings[0]


def pcapng_damage_cases() -> list[tuple[str, bytes, int, str]]:
    e = "<"
    head = ng_shb(e) + ng_idb(e, 1)
    good = ng_epb(e, 0, 1, b"good")
    at = len(head) + len(good)
    epb = ng_epb(e, 0, 2, b"bad!")
    mismatch = epb[:-4] + struct.pack("<I", len(epb) + 4)
    overlong = bytearray(epb)
    struct.pack_into("<I", overlong, 20, 200)  # caplen beyond the block
    wrong_iface = ng_epb(e, 3, 2, b"bad!")
    odd_length = bytearray(epb)
    struct.pack_into("<I", odd_length, 4, len(epb) - 2)
    skipped_mismatch = ng_others(e)[:-4] + b"\xff\xff\xff\xff"
    bad_bom = bytearray(ng_shb(e))
    bad_bom[8:12] = b"ABCD"
    return [
        ("truncated", epb[:-3], at, "truncated block"),
        ("mismatch", mismatch, at, "block total length mismatch"),
        ("caplen", bytes(overlong), at, "captured length 200 exceeds its block length"),
        ("iface", wrong_iface, at, "refers to interface 3, but its section describes 1"),
        ("odd", bytes(odd_length), at, f"bad block length {len(epb) - 2}"),
        ("skipped", skipped_mismatch, at + len(ng_others(e)) - 24, "block total length mismatch"),
        ("bom", bytes(bad_bom), at, "bad byte-order magic 0x41424344"),
        ("version", ng_shb(e, major=2), at, "unsupported pcapng version 2.0"),
        ("tiny", b"\x06\0\0\0\x0c", at, "truncated block: only 5 bytes left"),
        ("huge", struct.pack("<II", 6, 0x7FFFFFF0) + bytes(40), at, "bad block length 2147483632"),
    ]


@pytest.mark.parametrize("case", pcapng_damage_cases(), ids=lambda c: c[0])
def test_damaged_pcapng(tmp_path: Path, case: tuple[str, bytes, int, str]) -> None:
    _name, tail, offset, problem = case
    e = "<"
    data = ng_shb(e) + ng_idb(e, 1) + ng_epb(e, 0, 1, b"good") + tail
    path = write(tmp_path / "d.pcapng", data)
    for chunk in (16, 8 << 20):
        rows, reader, warnings = read([path], chunk_bytes=chunk)
        assert [r.data for r in rows] == [b"good"]
        assert len(warnings) == 1, warnings
        assert warnings[0].startswith(damage_warning(path, offset)), warnings[0]
        assert problem in warnings[0]
        assert reader.damaged[0][:2] == (path, offset)


def test_truncated_gzip_keeps_what_was_decompressed(tmp_path: Path) -> None:
    plain = pcap_bytes([(T0 + i, os.urandom(500), 500) for i in range(400)])
    packed = gzip.compress(plain)
    path = write(tmp_path / "cut.pcap.gz", packed[: len(packed) * 3 // 4])
    rows, reader, warnings = read([path])
    assert 200 < len(rows) < 400
    assert len(warnings) == 1 and "decompressed" in warnings[0]
    assert warnings[0].startswith(f"{path}: damaged capture at offset ")


def test_iterating_again_starts_over(tmp_path: Path) -> None:
    path = write(tmp_path / "a.pcap", pcap_bytes(simple_packets(4)))
    reader = CaptureReader([path], warn=lambda _m: None)
    first, second = rows_of(reader), rows_of(reader)
    assert first == second and reader.packets_read == 4


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    which=st.sampled_from(["pcap", "pcapng"]),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 10_000),
    chunk=st.sampled_from([13, 256, 8 << 20]),
)
def test_mutated_captures_never_crash(
    tmp_path: Path, which: str, edits: list[tuple[int, int]], cut: int, chunk: int
) -> None:
    if which == "pcap":
        data = bytearray(pcap_bytes(simple_packets(30), endian=">"))
    else:
        data = bytearray(multi_interface_ng()[0] + ng_spb("<", b"abc") + ng_others("<"))
    for pos, value in edits:
        data[pos % len(data)] = value
    path = write(tmp_path / "m.cap", bytes(data[: max(4, len(data) - cut % len(data))]))
    try:
        reader = CaptureReader([path], chunk_bytes=chunk, warn=lambda _m: None)
    except CaptureError:
        return
    for b in reader:
        assert len(b) >= 1
        assert int((b.offsets + b.caplens).max()) <= len(b.buffer)
        assert int(b.offsets.min()) >= 0 and int(b.caplens.min()) >= 0
    assert reader.packets_read <= len(data) // 12
