"""Mutators for fuzzing the capture readers, the pipeline and the protocol parsers, shared by
tests/test_fuzz_captures.py (Hypothesis, bounded for CI) and bench/fuzz (long seeded runs).

Capture mutators take the bytes of a real capture and return damaged bytes: bit flips,
truncation, hostile values in length fields, records reordered, duplicated or dropped,
bytes inserted or deleted, captures spliced together, foreign link types, hostile
timestamps and interface options, damaged payloads and IP/TCP/UDP header fields and IP
fragmentation inside intact records, gzip (and damaged gzip). Each is a primitive with
explicit parameters, which the Hypothesis tests draw, and a random form ``(rng, data) ->
bytes`` in :data:`CAPTURE_MUTATORS`, which bench/fuzz loops over. The layout helpers walk
classic pcap records and pcapng blocks on their own, without monitor.capture, so the tests
do not trust the reader they test.

:func:`replay_capture` runs a capture through the real reader and pipeline (the single
process path of ``avmon replay``) and checks the invariants every input must keep: only
:class:`~monitor.errors.CaptureError` escapes, and only for a file that is not a capture;
damage becomes one warning line naming the file and the offset; every EVE line is JSON.
A broken invariant raises :class:`Violation`. :data:`PARSER_TARGETS` calls the parsers of
monitor/parsers/ the way the dissectors do: only ParseError subclasses may escape.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import random
import re
import signal
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from geo import GeoDatabases
from monitor.capture.batch import LinkType
from monitor.capture.files import CaptureReader
from monitor.capture.pcap import MAX_RECORD_BYTES, CaptureDamaged, capture_format, read_batches
from monitor.config import Config, load_config
from monitor.decode import decode_all
from monitor.errors import CaptureError, ParseError
from monitor.eve import EveWriter
from monitor.parsers import dns as dnsp
from monitor.parsers import http as httpp
from monitor.parsers import quic as quicp
from monitor.parsers import tls as tlsp
from monitor.pipeline import Pipeline
from signatures import SignatureSet, load_signature_set
from tests.helpers import internet_checksum
from tests.test_quic import crypto, varint

ROOT: Final = Path(__file__).resolve().parent.parent
DATA: Final = ROOT / "tests" / "data"
CORPUS: Final = DATA / "corpus"
DEMO_CAPTURE: Final = ROOT / "monitor" / "data" / "demo.pcap"
DEMO_CONFIG: Final = ROOT / "monitor" / "data" / "demo.toml"

U32_MAX: Final = 0xFFFF_FFFF
PCAP_HEADER_LEN: Final = 24
RECORD_HEADER_LEN: Final = 16
BLOCK_SHB: Final = 0x0A0D0D0A
BLOCK_IDB: Final = 1
PACKET_BLOCKS: Final = frozenset({2, 3, 6})  # obsolete PB, SPB, EPB
_SHB_MAGIC: Final = b"\x0a\x0d\x0d\x0a"
_BOM: Final = 0x1A2B3C4D


class Violation(Exception):
    """An input broke an invariant of the reader or pipeline (not a Python error)."""


# ---------------------------------------------------------------------------- layout


@dataclass(frozen=True, slots=True)
class Record:
    """One classic pcap record (header and data) or one pcapng block."""

    index: int
    start: int
    end: int
    #: pcapng block type; 0 for a classic pcap record.
    kind: int
    #: struct byte-order prefix of the record's fields.
    endian: str

    @property
    def is_packet(self) -> bool:
        return self.kind == 0 or self.kind in PACKET_BLOCKS


@dataclass(frozen=True, slots=True)
class Layout:
    #: "pcap" or "pcapng".
    format: str
    #: Byte order of the file header (pcap) or the first section (pcapng).
    endian: str
    #: Records (pcap) or blocks (pcapng) in file order, up to the first that is cut short
    #: or has an impossible length.
    records: tuple[Record, ...]
    #: Where the walk stopped: the file's length for an intact capture.
    end: int

    @property
    def packets(self) -> tuple[Record, ...]:
        return tuple(r for r in self.records if r.is_packet)


def layout(data: bytes) -> Layout | None:
    """Walk the records of a classic pcap or the blocks of a pcapng stream; ``None`` for
    anything else. Stops at the first record that does not fit in ``data``."""
    fmt = capture_format(data[:4])
    if fmt == "pcap":
        return _pcap_layout(data)
    if fmt == "pcapng":
        return _pcapng_layout(data)
    return None


def _pcap_layout(data: bytes) -> Layout:
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    records: list[Record] = []
    pos = PCAP_HEADER_LEN
    while pos + RECORD_HEADER_LEN <= len(data):
        (caplen,) = struct.unpack_from(endian + "I", data, pos + 8)
        end = pos + RECORD_HEADER_LEN + caplen
        if caplen > MAX_RECORD_BYTES or end > len(data):
            break
        records.append(Record(len(records), pos, end, 0, endian))
        pos = end
    return Layout("pcap", endian, tuple(records), min(pos, len(data)))


def _pcapng_endian(data: bytes, pos: int) -> str | None:
    bom = data[pos + 8 : pos + 12]
    if bom == _BOM.to_bytes(4, "little"):
        return "<"
    if bom == _BOM.to_bytes(4, "big"):
        return ">"
    return None


def _pcapng_layout(data: bytes) -> Layout:
    first = _pcapng_endian(data, 0) or "<"
    endian = first
    records: list[Record] = []
    pos = 0
    while pos + 12 <= len(data):
        if data[pos : pos + 4] == _SHB_MAGIC:
            found = _pcapng_endian(data, pos)
            if found is None:
                break
            endian = found
        btype, blen = struct.unpack_from(endian + "II", data, pos)
        if blen < 12 or blen % 4 or pos + blen > len(data):
            break
        records.append(Record(len(records), pos, pos + blen, btype, endian))
        pos += blen
    return Layout("pcapng", first, tuple(records), pos)


@dataclass(frozen=True, slots=True)
class Field:
    """A 32-bit header field of a capture."""

    #: e.g. "pcap.incl_len", "pcapng.block_len".
    name: str
    offset: int
    endian: str
    value: int
    #: The record or block it belongs to (``None`` for the pcap file header).
    record: Record | None

    @property
    def is_length(self) -> bool:
        return self.name in LENGTH_FIELDS


#: Fields that frame the stream, size a packet or decide whether a section is read (the
#: others hold times and interface ids).
LENGTH_FIELDS: Final = frozenset({
    "pcap.snaplen", "pcap.incl_len", "pcap.orig_len", "pcapng.block_len",
    "pcapng.block_trailer", "pcapng.shb_major", "pcapng.idb_snaplen", "pcapng.epb_caplen",
    "pcapng.epb_origlen", "pcapng.spb_origlen",
})
_PCAP_RECORD_FIELDS: Final = (("pcap.ts_sec", 0), ("pcap.ts_frac", 4), ("pcap.incl_len", 8),
                              ("pcap.orig_len", 12))
_EPB_FIELDS: Final = (("pcapng.epb_interface", 8), ("pcapng.epb_ts_high", 12),
                      ("pcapng.epb_ts_low", 16), ("pcapng.epb_caplen", 20),
                      ("pcapng.epb_origlen", 24))


def fields(data: bytes, max_records: int = 8) -> list[Field]:
    """The 32-bit header fields of the file header and the first ``max_records`` records
    (pcapng: blocks, including SHB and IDB), in file order."""
    lay = layout(data)
    if lay is None:
        return []
    out: list[Field] = []

    def add(name: str, offset: int, endian: str, record: Record | None) -> None:
        if offset + 4 <= len(data):
            (value,) = struct.unpack_from(endian + "I", data, offset)
            out.append(Field(name, offset, endian, value, record))

    if lay.format == "pcap":
        add("pcap.snaplen", 16, lay.endian, None)
        for rec in lay.records[:max_records]:
            for name, at in _PCAP_RECORD_FIELDS:
                add(name, rec.start + at, rec.endian, rec)
        return out
    for rec in lay.records[:max_records]:
        add("pcapng.block_len", rec.start + 4, rec.endian, rec)
        if rec.kind == BLOCK_SHB:
            # major and minor version as one word: the high half is the major in
            # little-endian files, the low half in big-endian ones
            add("pcapng.shb_major", rec.start + 12, rec.endian, rec)
        elif rec.kind == BLOCK_IDB:
            add("pcapng.idb_snaplen", rec.start + 12, rec.endian, rec)
        elif rec.kind in (2, 6) and rec.end - rec.start >= 32:
            for name, at in _EPB_FIELDS:
                add(name, rec.start + at, rec.endian, rec)
        elif rec.kind == 3:
            add("pcapng.spb_origlen", rec.start + 8, rec.endian, rec)
        add("pcapng.block_trailer", rec.end - 4, rec.endian, rec)
    return out


def length_fields(data: bytes, max_records: int = 8) -> list[Field]:
    return [f for f in fields(data, max_records) if f.is_length]


def header_offsets(data: bytes, max_records: int = 8) -> list[int]:
    """Byte offsets of the file header and of the headers (and pcapng trailers) of the
    first ``max_records`` records: where a bit flip changes the framing."""
    lay = layout(data)
    if lay is None:
        return list(range(min(len(data), PCAP_HEADER_LEN)))
    if lay.format == "pcap":
        spots = list(range(PCAP_HEADER_LEN))
        for rec in lay.records[:max_records]:
            spots += range(rec.start, rec.start + RECORD_HEADER_LEN)
        return [s for s in spots if s < len(data)]
    spots = []
    for rec in lay.records[:max_records]:
        head = 28 if rec.kind in (2, 6) else 12 if rec.kind == 3 else 16
        spots += range(rec.start, min(rec.start + head, rec.end))
        spots += range(rec.end - 4, rec.end)
    return sorted(set(s for s in spots if s < len(data)))


def hostile_values(f: Field, data_len: int) -> list[int]:
    """Values a damaged or malicious header could hold in place of ``f``'s value."""
    v = f.value
    left = data_len - (f.record.start if f.record is not None else 0)
    values = {0, 1, 2, 3, 4, 8, 11, 12, 13, 14, 15, 16, 17, 20, 27, 28, 31, 32, 33, 36,
              0x7FFF, 0xFFFF, 0x10000, 1 << 24, MAX_RECORD_BYTES - 1, MAX_RECORD_BYTES,
              MAX_RECORD_BYTES + 1, 0x7FFF_FFFF, 0x8000_0000, U32_MAX - 3, U32_MAX - 1,
              U32_MAX, v - 4, v - 1, v + 1, v + 2, v + 3, v + 4, v * 2, v * 16, left - 1,
              left, left + 1, left + 4, v ^ 0x8000_0000, _bswap32(v)}
    if f.name == "pcap.orig_len" and v:
        values.add(v - 1)  # orig_len < incl_len
    return sorted(x for x in values if 0 <= x <= U32_MAX and x != v)


def _bswap32(v: int) -> int:
    return int.from_bytes(v.to_bytes(4, "little"), "big")


# ---------------------------------------------------------------------- primitives


def set_u32(data: bytes, f: Field, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(f.endian + "I", out, f.offset, value & U32_MAX)
    return bytes(out)


def flip_bits(data: bytes, bits: Sequence[int]) -> bytes:
    """Flip bit ``b % 8`` of byte ``b // 8`` for each ``b`` (modulo the data's length)."""
    if not data:
        return data
    out = bytearray(data)
    for b in bits:
        out[(b // 8) % len(out)] ^= 1 << (b % 8)
    return bytes(out)


def truncate(data: bytes, length: int) -> bytes:
    return data[:max(length, 0)]


def splice(data: bytes, at: int, delete: int, insert: bytes) -> bytes:
    """Delete ``delete`` bytes at ``at`` and insert ``insert`` there (framing shifts)."""
    at = min(max(at, 0), len(data))
    return data[:at] + insert + data[at + delete :]


def reorder(data: bytes, order: Sequence[int]) -> bytes:
    """Re-emit a capture with its records (pcap) or blocks after the first SHB (pcapng) in
    ``order``: indices into them, so records may repeat, be dropped or be swapped. Bytes
    after the last intact record are dropped."""
    lay = layout(data)
    if lay is None or not lay.records:
        return data
    if lay.format == "pcap":
        head, movable = data[:PCAP_HEADER_LEN], lay.records
    else:
        head, movable = data[: lay.records[0].end], lay.records[1:]
    if not movable:
        return data
    parts = [head]
    for i in order:
        rec = movable[i % len(movable)]
        parts.append(data[rec.start : rec.end])
    return b"".join(parts)


def movable_records(data: bytes) -> int:
    """How many records :func:`reorder` indexes."""
    lay = layout(data)
    if lay is None or not lay.records:
        return 0
    return len(lay.records) - (lay.format == "pcapng")


def set_linktype(data: bytes, linktype: int) -> bytes:
    """Rewrite the link type of the pcap file header or of every pcapng IDB."""
    lay = layout(data)
    if lay is None:
        return data
    out = bytearray(data)
    if lay.format == "pcap":
        if len(out) >= PCAP_HEADER_LEN:
            struct.pack_into(lay.endian + "I", out, 20, linktype & U32_MAX)
    else:
        for rec in lay.records:
            if rec.kind == BLOCK_IDB and rec.end - rec.start >= 20:
                struct.pack_into(rec.endian + "H", out, rec.start + 8, linktype & 0xFFFF)
    return bytes(out)


def with_interface_options(data: bytes, tsresol: int | None, tsoffset: int | None) -> bytes:
    """Rebuild every pcapng IDB with only the given ``if_tsresol`` (one byte) and
    ``if_tsoffset`` (signed 64-bit seconds) options."""
    lay = layout(data)
    if lay is None or lay.format != "pcapng":
        return data
    parts: list[bytes] = []
    pos = 0
    for rec in lay.records:
        if rec.kind != BLOCK_IDB or rec.end - rec.start < 20:
            continue
        e = rec.endian
        opts = b""
        if tsresol is not None:
            opts += struct.pack(e + "HH", 9, 1) + bytes([tsresol & 0xFF]) + b"\0\0\0"
        if tsoffset is not None:
            opts += struct.pack(e + "HHq", 14, 8, tsoffset)
        if opts:
            opts += struct.pack(e + "HH", 0, 0)
        body = data[rec.start + 8 : rec.start + 16] + opts
        blen = 12 + len(body)
        parts += [data[pos : rec.start], struct.pack(e + "II", BLOCK_IDB, blen), body,
                  struct.pack(e + "I", blen)]
        pos = rec.end
    parts.append(data[pos:])
    return b"".join(parts)


def reencode_pcap(data: bytes, *, endian: str, nanoseconds: bool) -> bytes:
    """A classic pcap re-emitted in another byte order and/or with nanosecond timestamps
    (the same packets: a valid capture when ``data`` is one)."""
    lay = layout(data)
    if lay is None or lay.format != "pcap":
        return data
    src = lay.endian
    magic, vmaj, vmin, zone, sigfigs, snap, net = struct.unpack_from(src + "IHHiIII", data, 0)
    nsec_in = magic == 0xA1B23C4D
    out = [struct.pack(endian + "IHHiIII", 0xA1B23C4D if nanoseconds else 0xA1B2C3D4, vmaj,
                       vmin, zone, sigfigs, snap, net)]
    for rec in lay.records:
        sec, frac, incl, orig = struct.unpack_from(src + "IIII", data, rec.start)
        if nanoseconds and not nsec_in:
            frac *= 1000
        elif nsec_in and not nanoseconds:
            frac //= 1000
        out.append(struct.pack(endian + "IIII", sec, frac & U32_MAX, incl, orig))
        out.append(data[rec.start + RECORD_HEADER_LEN : rec.end])
    return b"".join(out)


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip (no timestamp)."""
    return gzip.compress(data, compresslevel=6, mtime=0)


def gunzip_prefix(data: bytes) -> bytes:
    """As much of a (possibly damaged, possibly multi-member) gzip stream as decodes."""
    out: list[bytes] = []
    rest = data
    while rest[:2] == b"\x1f\x8b":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out.append(d.decompress(rest))
        except zlib.error:
            break
        if not d.eof:
            break
        rest = d.unused_data
    return b"".join(out)


# ------------------------------------------------------------- packets inside a capture


@functools.lru_cache(maxsize=8)  # keyed by whole captures: keep few
def payload_spans(data: bytes) -> tuple[tuple[int, int, str | None], ...]:
    """``(file offset, length, kind)`` of every decoded L4 payload of a capture (kind:
    "dns", "dns_tcp", "tls", "quic", "http" by port, else ``None``), up to any damage.
    Offsets are file offsets: a capture under one read chunk is one buffer."""
    spans: list[tuple[int, int, str | None]] = []
    batches = read_batches(io.BytesIO(data), origin="seed")
    try:
        for batch in batches:
            if len(batch.buffer) != len(data):
                break  # not the whole file in one buffer: offsets are not file offsets
            for cols in decode_all(batch):
                has = np.flatnonzero((cols.reason == 0) & (cols.paylen > 0))
                for i in has.tolist():
                    kind = _kind(int(cols.proto[i]), int(cols.sport[i]), int(cols.dport[i]))
                    spans.append((int(cols.payoff[i]), int(cols.paylen[i]), kind))
    except (CaptureError, CaptureDamaged):
        pass  # not a capture, or damaged: the spans before the damage
    finally:
        batches.close()
    return tuple(spans)


def _kind(proto: int, sport: int, dport: int) -> str | None:
    if 53 in (sport, dport):
        return "dns" if proto == 17 else "dns_tcp"
    if dport == 443:
        return "quic" if proto == 17 else "tls"
    if proto == 6 and dport in (80, 8080, 3128):
        return "http"
    return None


def ethernet_frames(data: bytes) -> list[tuple[int, int, bytes]] | None:
    """``(ts_sec, ts_frac, frame)`` of each record of an Ethernet classic pcap, else None."""
    lay = layout(data)
    if lay is None or lay.format != "pcap" or len(data) < PCAP_HEADER_LEN:
        return None
    if struct.unpack_from(lay.endian + "I", data, 20)[0] & 0x03FF_FFFF != LinkType.ETHERNET:
        return None
    out = []
    for rec in lay.records:
        sec, frac = struct.unpack_from(rec.endian + "II", data, rec.start)
        out.append((sec, frac, data[rec.start + RECORD_HEADER_LEN : rec.end]))
    return out


def rebuild_pcap(data: bytes, frames: Sequence[tuple[int, int, bytes]]) -> bytes:
    """``data``'s file header followed by ``frames`` as records (incl_len = orig_len)."""
    lay = layout(data)
    endian = lay.endian if lay is not None else "<"
    parts = [data[:PCAP_HEADER_LEN]]
    for sec, frac, frame in frames:
        parts.append(struct.pack(endian + "IIII", sec, frac, len(frame), len(frame)) + frame)
    return b"".join(parts)


def fragment_frame(frame: bytes, cuts: Sequence[int], ident: int = 0x4242) -> list[bytes]:
    """An Ethernet IPv4 or IPv6 frame split into IP fragments at ``cuts`` (offsets into
    the IP payload, rounded down to multiples of 8); the frame itself if it cannot be."""
    ethertype = frame[12:14]
    if ethertype == b"\x08\x00" and len(frame) >= 34:
        ihl = (frame[14] & 0x0F) * 4
        total = int.from_bytes(frame[16:18], "big")
        head = bytearray(frame[14 : 14 + ihl])
        body = frame[14 + ihl : 14 + total]
    elif ethertype == b"\x86\xdd" and len(frame) >= 54:
        head = bytearray(frame[14:54])
        body = frame[54 : 54 + int.from_bytes(frame[18:20], "big")]
    else:
        return [frame]
    points = sorted({c - c % 8 for c in cuts if 8 <= c - c % 8 < len(body)})
    if not points or len(head) < 20:
        return [frame]
    out = []
    for lo, hi in zip([0, *points], [*points, len(body)], strict=True):
        more = hi < len(body)
        piece = body[lo:hi]
        if ethertype == b"\x08\x00":
            h = bytearray(head)
            struct.pack_into(">H", h, 2, len(h) + len(piece))
            struct.pack_into(">H", h, 6, (0x2000 if more else 0) | lo // 8)
            struct.pack_into(">H", h, 10, 0)
            struct.pack_into(">H", h, 10, internet_checksum(bytes(h)))
            out.append(frame[:14] + bytes(h) + piece)
        else:
            h = bytearray(head)
            nh = h[6]
            h[6] = 44
            struct.pack_into(">H", h, 4, 8 + len(piece))
            frag = struct.pack(">BBHI", nh, 0, lo | int(more), ident)
            out.append(frame[:14] + bytes(h) + frag + piece)
    return out


#: Values to put in IP and transport header fields: (offset from the IP header, width,
#: values) for IPv4 and IPv6; transport fields are relative to the transport header.
_IPV4_FIELDS: Final = ((0, 1, (0x45, 0x46, 0x4F, 0x40, 0x44, 0x65, 0x00)),
                       (2, 2, (0, 19, 20, 21, 28, 0x7FFF, 0xFFFF)),
                       (6, 2, (0x2000, 0x0001, 0x2001, 0x1FFF, 0x3FFF, 0x4000, 0x8000)),
                       (9, 1, (0, 1, 4, 6, 17, 41, 47, 50, 51, 58, 132, 255)))
_IPV6_FIELDS: Final = ((0, 1, (0x60, 0x40, 0x00, 0xFF)),
                       (4, 2, (0, 1, 7, 8, 0x7FFF, 0xFFFF)),
                       (6, 1, (0, 4, 6, 17, 41, 43, 44, 47, 50, 51, 58, 59, 60, 135, 255)))
_TCP_FIELDS: Final = ((0, 2, (0, 53, 80, 443, 3128, 3544, 4754, 4789)),
                      (2, 2, (0, 53, 80, 443, 3128, 3544, 4754, 4789)),
                      (12, 1, (0x00, 0x10, 0x40, 0x50, 0x60, 0xF0, 0xFF)),
                      (13, 1, (0x00, 0x01, 0x02, 0x04, 0x11, 0x12, 0x14, 0x18, 0xFF)))
_UDP_FIELDS: Final = ((0, 2, (0, 53, 443, 3544, 4754, 4789)),
                      (2, 2, (0, 53, 443, 3544, 4754, 4789)),
                      (4, 2, (0, 1, 7, 8, 9, 0x7FFF, 0xFFFF)))


def ip_field_sites(frame: bytes) -> list[tuple[int, int, tuple[int, ...]]]:
    """``(offset in frame, width, values)`` of the IP and transport fields of an Ethernet
    IPv4/IPv6 frame (none for anything else)."""
    ethertype = frame[12:14]
    sites: list[tuple[int, int, tuple[int, ...]]] = []
    if ethertype == b"\x08\x00" and len(frame) >= 34:
        sites += [(14 + o, w, v) for o, w, v in _IPV4_FIELDS]
        l4, proto = 14 + (frame[14] & 0x0F) * 4, frame[23]
    elif ethertype == b"\x86\xdd" and len(frame) >= 54:
        sites += [(14 + o, w, v) for o, w, v in _IPV6_FIELDS]
        l4, proto = 54, frame[20]
    else:
        return sites
    table = _TCP_FIELDS if proto == 6 else _UDP_FIELDS if proto == 17 else ()
    sites += [(l4 + o, w, v) for o, w, v in table]
    return [(o, w, v) for o, w, v in sites if o + w <= len(frame)]


# ------------------------------------------------------------- random capture mutators

#: Link types to try: every one the decoder knows, some it does not, and junk.
LINKTYPES: Final = (*(int(x) for x in LinkType), 2, 9, 105, 127, 147, 192, 220, 0x3FF_FFFF,
                    0x1000_0001, U32_MAX)

RandomMutator = Callable[[random.Random, bytes], bytes]


def _rand_bitflip_headers(rng: random.Random, data: bytes) -> bytes:
    spots = header_offsets(data, max_records=rng.choice((2, 8, 64))) or [0]
    bits = [rng.choice(spots) * 8 + rng.randrange(8) for _ in range(rng.randint(1, 4))]
    return flip_bits(data, bits)


def _rand_bitflip_anywhere(rng: random.Random, data: bytes) -> bytes:
    n = rng.choice((1, 1, 2, 4, 16, 64))
    return flip_bits(data, [rng.randrange(max(len(data), 1) * 8) for _ in range(n)])


def _rand_truncate(rng: random.Random, data: bytes) -> bytes:
    fs = length_fields(data, max_records=rng.choice((2, 8, 32)))
    if fs and rng.random() < 0.6:
        f = rng.choice(fs)
        return truncate(data, f.offset + rng.randint(-1, 5))
    return truncate(data, rng.randrange(len(data) + 1))


def _rand_hostile_length(rng: random.Random, data: bytes) -> bytes:
    fs = fields(data, max_records=rng.choice((2, 8, 32)))
    if not fs:
        return data
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        f = rng.choice([f for f in fs if f.is_length] or fs)
        data = set_u32(data, f, rng.choice(hostile_values(f, len(data))))
    return data


def _rand_hostile_field(rng: random.Random, data: bytes) -> bytes:
    fs = [f for f in fields(data, max_records=64) if not f.is_length]
    if not fs:
        return data
    f = rng.choice(fs)
    return set_u32(data, f, rng.choice((0, 1, 999_999, 1_000_000, 1_000_000_000, 0x7FFF_FFFF,
                                        0x8000_0000, U32_MAX, f.value - 1, f.value + 1)))


def _random_order(rng: random.Random, n: int) -> list[int]:
    order = list(range(n))
    how = rng.randrange(4)
    if how == 0:
        rng.shuffle(order)
    elif how == 1:  # duplicates
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(order))
            order.insert(i, order[rng.randrange(len(order))])
    elif how == 2:  # drops
        order = [i for i in order if rng.random() > 0.2]
    else:  # swap neighbours
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(max(len(order) - 1, 1))
            order[i : i + 2] = order[i : i + 2][::-1]
    return order


def _rand_reorder(rng: random.Random, data: bytes) -> bytes:
    n = movable_records(data)
    return reorder(data, _random_order(rng, n)) if n else data


def _rand_splice(rng: random.Random, data: bytes) -> bytes:
    at = rng.randrange(len(data) + 1)
    how = rng.randrange(3)
    if how == 0:
        return splice(data, at, rng.randint(1, 64), b"")
    if how == 1:
        return splice(data, at, 0, rng.randbytes(rng.randint(1, 64)))
    other = rng.choice(seed_captures())[1]  # a second capture appended or inserted
    return splice(data, rng.choice((len(data), at)), 0, other[: rng.randint(0, len(other))])


def _rand_linktype(rng: random.Random, data: bytes) -> bytes:
    return set_linktype(data, rng.choice(LINKTYPES))


def _rand_interface_options(rng: random.Random, data: bytes) -> bytes:
    resol = rng.choice((None, 0, 1, 3, 6, 9, 12, 18, 19, 20, 127, 0x80, 0x80 | 10, 0x80 | 30,
                        0x80 | 63, 0x80 | 64, 0xFF))
    offset = rng.choice((None, 0, 1, -1, 1 << 31, -(1 << 31), 1 << 32, -(1 << 32),
                         (1 << 32) + 1, (1 << 63) - 1, -(1 << 63)))
    return with_interface_options(data, resol, offset)


def _rand_gzip(rng: random.Random, data: bytes) -> bytes:
    if rng.random() < 0.5:
        data = _rand_capture_mutation(rng, data, exclude=("gzip",))
    gz = gzip_bytes(data)
    how = rng.randrange(4)
    if how == 0:
        return gz
    if how == 1:
        return truncate(gz, rng.randrange(len(gz)))
    if how == 2:
        return flip_bits(gz, [rng.randrange(len(gz) * 8) for _ in range(rng.randint(1, 3))])
    return gz + rng.choice((gz, b"\x1f\x8b", rng.randbytes(16)))  # second member / junk


def _rand_stacked(rng: random.Random, data: bytes) -> bytes:
    for _ in range(rng.randint(2, 4)):
        if len(data) < 4:
            break
        data = _rand_capture_mutation(rng, data, exclude=("stacked", "gzip"))
    return data


def _rand_payload(rng: random.Random, data: bytes) -> bytes:
    """Damage the L4 payloads of a few packets in place (framing and headers intact), so
    that the dissectors get mutated units inside real flows; or put a unit of another
    kind (a DNS message, a ClientHello, ...) in their place."""
    spans = payload_spans(data)
    if not spans:
        return data
    named = [s for s in spans if s[2] is not None]
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 5))):
        start, length, _ = rng.choice(named if named and rng.random() < 0.8 else spans)
        if rng.random() < 0.2:
            seeds = parser_seeds()
            pool = rng.choice((seeds.dns, seeds.tls, seeds.quic, seeds.http, seeds.dns_tcp))
            unit = rng.choice(pool) if pool else b""
        else:
            unit = mutate_bytes(rng, bytes(out[start : start + length]))
        unit = (unit + rng.randbytes(max(0, length - len(unit))))[:length]
        out[start : start + length] = unit
    return bytes(out)


def _rand_ip_fields(rng: random.Random, data: bytes) -> bytes:
    """Hostile values in IP, TCP and UDP header fields (lengths, fragment offset and flags,
    protocol, data offset, ports) of a few packets of an Ethernet pcap."""
    frames = ethernet_frames(data)
    if not frames:
        return _rand_bitflip_anywhere(rng, data)
    for _ in range(rng.choice((1, 1, 2, 4))):
        i = rng.randrange(len(frames))
        sec, frac, frame = frames[i]
        sites = ip_field_sites(frame)
        if not sites:
            continue
        offset, width, values = rng.choice(sites)
        buf = bytearray(frame)
        buf[offset : offset + width] = rng.choice(values).to_bytes(width, "big")
        frames[i] = (sec, frac, bytes(buf))
    return rebuild_pcap(data, frames)


def _rand_fragment(rng: random.Random, data: bytes) -> bytes:
    """Split a few packets of an Ethernet pcap into IP fragments, then maybe shuffle,
    duplicate, drop or overlap the fragments (reassembly, ports of later fragments)."""
    frames = ethernet_frames(data)
    if not frames:
        return _rand_bitflip_anywhere(rng, data)
    out: list[tuple[int, int, bytes]] = []
    chosen = set(rng.sample(range(len(frames)), min(len(frames), rng.choice((1, 2, 8)))))
    for i, (sec, frac, frame) in enumerate(frames):
        if i not in chosen:
            out.append((sec, frac, frame))
            continue
        cuts = [rng.randrange(8, max(len(frame), 9)) for _ in range(rng.randint(1, 5))]
        pieces = fragment_frame(frame, cuts, ident=rng.randrange(1 << 16))
        if len(pieces) > 1:
            how = rng.randrange(5)
            if how == 0:
                rng.shuffle(pieces)
            elif how == 1:
                pieces.insert(rng.randrange(len(pieces)), rng.choice(pieces))
            elif how == 2:
                del pieces[rng.randrange(len(pieces))]
            elif how == 3:  # overlapping copy with other bytes
                j = rng.randrange(len(pieces))
                pieces.insert(j, mutate_bytes(rng, pieces[j]))
        out += [(sec, frac, p) for p in pieces]
    return rebuild_pcap(data, out)


#: Random capture mutators by name: ``(rng, seed capture) -> mutant``.
CAPTURE_MUTATORS: Final[dict[str, RandomMutator]] = {
    "bitflip_headers": _rand_bitflip_headers,
    "bitflip_anywhere": _rand_bitflip_anywhere,
    "truncate": _rand_truncate,
    "hostile_length": _rand_hostile_length,
    "hostile_field": _rand_hostile_field,
    "reorder": _rand_reorder,
    "splice": _rand_splice,
    "linktype": _rand_linktype,
    "interface_options": _rand_interface_options,
    "payload": _rand_payload,
    "ip_fields": _rand_ip_fields,
    "fragment": _rand_fragment,
    "gzip": _rand_gzip,
    "stacked": _rand_stacked,
}


def _rand_capture_mutation(rng: random.Random, data: bytes, exclude: Sequence[str]) -> bytes:
    names = [n for n in CAPTURE_MUTATORS if n not in exclude]
    return CAPTURE_MUTATORS[rng.choice(names)](rng, data)


def random_variant(rng: random.Random, data: bytes) -> bytes:
    """The seed as is, or re-encoded as a big-endian and/or nanosecond pcap (pcap only)."""
    if rng.random() < 0.7:
        return data
    return reencode_pcap(data, endian=rng.choice("<>"), nanoseconds=rng.random() < 0.5)


@functools.cache
def seed_captures() -> tuple[tuple[str, bytes], ...]:
    """The bundled public corpus captures and the demo capture: (name, bytes)."""
    paths = sorted(p for p in CORPUS.iterdir() if capture_format(p.read_bytes()[:4]))
    return tuple((p.name, p.read_bytes()) for p in [*paths, DEMO_CAPTURE])


def suffix_for(data: bytes) -> str:
    """A file name suffix that says what the bytes are (the reader goes by content)."""
    if data[:2] == b"\x1f\x8b":
        return ".pcap.gz"
    return ".pcapng" if data[:4] == _SHB_MAGIC else ".pcap"


# ------------------------------------------------------------------ replay and checks


@dataclass(frozen=True, slots=True)
class Setup:
    """What a replay needs besides the capture, loaded once."""

    config: Config
    signatures: SignatureSet
    geo: GeoDatabases


@functools.cache
def setup() -> Setup:
    """The demo configuration (segments, flagged jurisdictions, upload threshold, so that
    the policy and alert code runs too), its signatures and geo databases."""
    config = load_config(str(DEMO_CONFIG))
    g = config.geo
    geo = GeoDatabases(country_db=g.country_db, registration_db=g.registration_db,
                       asn_db=g.asn_db, registry=g.registry)
    return Setup(config, load_signature_set(config.signatures), geo)


@dataclass(slots=True)
class Outcome:
    """What replaying one input did."""

    #: Packets the reader yielded (and the pipeline counted).
    packets: int = 0
    #: EVE records written (each checked to be a JSON object).
    records: list[dict[str, Any]] = field(default_factory=list)
    #: Warnings, as the CLI would print them after "avmon: warning: ".
    warnings: list[str] = field(default_factory=list)
    #: (offset, problem) for each damage the reader reported.
    damaged: list[tuple[int, str]] = field(default_factory=list)
    #: The CaptureError message, when the input is not a capture at all.
    not_a_capture: str | None = None


class Hang(Exception):
    """An input took longer than the time limit."""


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`Hang` in the main thread after ``seconds`` (SIGALRM)."""
    if not seconds:
        yield
        return

    def expired(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"no result after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _reject_constant(text: str) -> Any:
    raise Violation(f"EVE line holds {text}, which is not JSON")


def check_eve(path: Path) -> list[dict[str, Any]]:
    """Every line of the EVE file is one JSON object with a timestamp and an event type,
    and the file ends with a newline."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raise Violation("EVE file does not end with a newline (torn record)")
    records: list[dict[str, Any]] = []
    for n, line in enumerate(raw.splitlines(), 1):
        try:
            rec = json.loads(line, parse_constant=_reject_constant)
        except ValueError as exc:
            raise Violation(f"EVE line {n} is not JSON ({exc}): {line[:200]!r}") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("event_type"), str) \
                or not isinstance(rec.get("timestamp"), str):
            raise Violation(f"EVE line {n} is not a record: {line[:200]!r}")
        records.append(rec)
    return records


_DAMAGE = re.compile(r"damaged capture at offset (\d+): (.+); stopped reading this file")


def check_warnings(path: Path, warnings: Sequence[str], damaged: Sequence[tuple[int, str]],
                   stream_len: int | None) -> None:
    """Each warning is one line naming the file; each damage report has its warning with
    the offset, and the offset lies inside the stream (``stream_len``: the decompressed
    length when known)."""
    prefix = f"{path}: "
    damage_warnings = []
    for w in warnings:
        if "\n" in w or "\r" in w:
            raise Violation(f"warning is not one line: {w!r}")
        if not w.startswith(prefix):
            raise Violation(f"warning does not start with the file name: {w!r}")
        m = _DAMAGE.fullmatch(w[len(prefix):])
        if m is not None:
            damage_warnings.append((int(m.group(1)), m.group(2)))
        elif "empty file" not in w:
            raise Violation(f"unexpected warning: {w!r}")
    if damage_warnings != list(damaged):
        raise Violation(f"warnings {damage_warnings} do not match damage {list(damaged)}")
    for offset, _problem in damaged:
        if offset < 0 or (stream_len is not None and offset > stream_len):
            raise Violation(f"damage offset {offset} outside the {stream_len}-byte stream")


def _catch_internal_errors(pipe: Pipeline) -> list[Exception]:
    """Keep the exceptions avmon isolates (``Dissector._internal_error``: a bug that meets
    a packet stops inspecting that flow; ``Pipeline._batch_failed``: a bug elsewhere skips
    the rest of the batch; both are only counted), so that the fuzzer sees them; avmon
    still handles them as usual."""
    caught: list[Exception] = []
    flow_hook = pipe.dissector._internal_error
    batch_hook = pipe._batch_failed

    def per_flow(flow: Any, frame: int, exc: Exception) -> None:
        caught.append(exc)
        flow_hook(flow, frame, exc)

    def per_batch(batch: Any, exc: Exception) -> None:
        caught.append(exc)
        batch_hook(batch, exc)

    setattr(pipe.dissector, "_internal_error", per_flow)  # noqa: B010 - per instance
    setattr(pipe, "_batch_failed", per_batch)  # noqa: B010 - per instance
    return caught


def capture_error_allowed(data: bytes) -> bool:
    """Whether CaptureError is a correct answer for ``data``: it does not start with a
    capture magic (after gzip decompression, when the decompressed head is known)."""
    if data[:2] == b"\x1f\x8b":
        head = gunzip_prefix(data)[:4]
        return len(head) < 4 or capture_format(head) is None
    return capture_format(data[:4]) is None


def replay_capture(path: Path, workdir: Path, *, timeout: float | None = None,
                   data: bytes | None = None) -> Outcome:
    """Replay ``path`` through the real reader and pipeline, as ``avmon replay`` does in
    one process (demo configuration, signatures and geo databases), and check the
    invariants. Raises :class:`Violation` for a broken invariant and lets any other
    exception escape (a bug: the caller reports it)."""
    data = path.read_bytes() if data is None else data
    ctx = setup()
    out = Outcome()
    eve_path = workdir / "eve.json"
    eve_path.unlink(missing_ok=True)
    with time_limit(timeout):
        try:
            reader = CaptureReader([path], warn=out.warnings.append)
        except CaptureError as exc:
            if not capture_error_allowed(data):
                raise Violation(f"CaptureError for a file with a capture magic: {exc}") \
                    from exc
            if str(path) not in str(exc) or "\n" in str(exc):
                raise Violation(f"CaptureError message does not name the file: {exc}") \
                    from exc
            out.not_a_capture = str(exc)
            check_warnings(path, out.warnings, [], None)
            return out
        eve = EveWriter(str(eve_path))
        try:
            pipe = Pipeline(ctx.config, eve=eve, signatures=ctx.signatures, geo=ctx.geo)
            internal = _catch_internal_errors(pipe)
            for batch in reader:
                pipe.process(batch)
            pipe.finish()
        finally:
            eve.close()
    if internal:
        # The bug the dissector isolated (and only counted): the finding, with its traceback.
        raise internal[0]
    out.packets = reader.packets_read
    if pipe.stats.packets != reader.packets_read:
        raise Violation(f"pipeline counted {pipe.stats.packets} packets, the reader "
                        f"yielded {reader.packets_read}")
    out.damaged = [(offset, problem) for _p, offset, problem in reader.damaged]
    stream_len = len(gunzip_prefix(data)) if data[:2] == b"\x1f\x8b" else len(data)
    # A damaged gzip stream may decompress further in the reader than in gunzip_prefix.
    check_warnings(path, out.warnings, out.damaged,
                   None if data[:2] == b"\x1f\x8b" else stream_len)
    out.records = check_eve(eve_path)
    if len(out.records) != eve.records:
        raise Violation(f"{eve.records} records written, {len(out.records)} lines in the file")
    return out


def expected_after_cut(data: bytes, cut: int) -> tuple[int, int | None]:
    """For an intact capture ``data`` cut to ``cut`` bytes: the packets the reader must
    yield and the offset of the damage it must report (``None``: none, the cut falls on a
    record boundary). Only for ``cut >= 4`` (shorter is not a capture)."""
    lay = layout(data)
    if lay is None or lay.end != len(data):
        raise ValueError("expected_after_cut needs an intact capture")
    packets = sum(1 for r in lay.packets if r.end <= cut)
    if lay.format == "pcap" and cut < PCAP_HEADER_LEN:
        return 0, 0
    if cut == PCAP_HEADER_LEN and lay.format == "pcap":
        return 0, None
    if cut in {r.end for r in lay.records}:
        return packets, None
    if cut == len(data):
        return packets, None
    first_cut = next(r for r in lay.records if r.end > cut)
    return packets, first_cut.start


# ----------------------------------------------------------------- parser-level fuzz


@dataclass(frozen=True, slots=True)
class ParserSeeds:
    """Real protocol units to mutate, per parser."""

    dns: tuple[bytes, ...]
    dns_tcp: tuple[bytes, ...]
    tls: tuple[bytes, ...]
    quic: tuple[bytes, ...]
    http: tuple[bytes, ...]
    #: Bare TLS handshake messages (type 1, uint24 length, body), to seal into QUIC.
    hellos: tuple[bytes, ...]


MAX_SEEDS_PER_KIND: Final = 64


@functools.cache
def parser_seeds() -> ParserSeeds:
    """Fixture files of tests/data/{dns,tls,quic,http} and the first payloads of each kind
    in the seed captures (UDP/TCP 53, TCP 443 client segments, UDP 443, TCP 80/8080/3128)."""
    kinds: dict[str, list[bytes]] = {k: [] for k in ("dns", "dns_tcp", "tls", "quic", "http")}
    for p in sorted((DATA / "dns").glob("*.bin")):
        kinds["dns_tcp" if "tcp" in p.name else "dns"].append(p.read_bytes())
    kinds["tls"] += [p.read_bytes() for p in sorted((DATA / "tls").glob("*.bin"))]
    kinds["http"] += [p.read_bytes() for p in sorted((DATA / "http").glob("*.bin"))]
    kinds["quic"] += [p.read_bytes() for p in sorted((DATA / "quic").glob("*.bin"))]
    for p in sorted((DATA / "quic").glob("*initial.hex")):
        kinds["quic"].append(bytes.fromhex("".join(p.read_text().split())))
    for _name, data in seed_captures():
        _payloads(data, kinds)
    hellos = []
    for stream in kinds["tls"]:
        try:
            joined = tlsp.maybe_read_client_hello_bytes(stream)
        except ParseError:
            continue
        if joined is not None:
            hellos.append(joined[0])
    return ParserSeeds(**{k: tuple(dict.fromkeys(v))[: MAX_SEEDS_PER_KIND * 4]
                          for k, v in kinds.items()}, hellos=tuple(dict.fromkeys(hellos)))


def _payloads(data: bytes, kinds: dict[str, list[bytes]]) -> None:
    for start, length, kind in payload_spans(data):
        if kind is not None and len(kinds[kind]) < MAX_SEEDS_PER_KIND * 4:
            kinds[kind].append(data[start : start + length])


def mutate_bytes(rng: random.Random, data: bytes, max_len: int = 4096) -> bytes:
    """Generic byte-level mutation: flips, random bytes, interesting values, cuts,
    inserts, duplicated slices."""
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 6))):
        how = rng.randrange(7)
        n = len(out)
        if how == 0 and n:
            out[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif how == 1 and n:
            out[rng.randrange(n)] = rng.randrange(256)
        elif how == 2 and n >= 2:
            at = rng.randrange(n - 1)
            out[at : at + 2] = rng.choice((b"\x00\x00", b"\xff\xff", b"\x7f\xff", b"\x80\x00",
                                           b"\x00\x01", b"\x40\x00", b"\xc0\x0c"))
        elif how == 3 and n:
            del out[rng.randrange(n):]
        elif how == 4:
            at = rng.randrange(n + 1)
            out[at:at] = rng.randbytes(rng.randint(1, 32))
        elif how == 5 and n:
            at = rng.randrange(n)
            end = min(n, at + rng.randint(1, 64))
            out[at:at] = out[at:end] * rng.randint(1, 4)
        elif how == 6 and n:
            at = rng.randrange(n)
            del out[at : at + rng.randint(1, 32)]
    return bytes(out[:max_len])


def seal_initial(version: int, dcid: bytes, scid: bytes, payload: bytes, pn: int = 0,
                 token: bytes = b"") -> bytes:
    """A client Initial packet carrying ``payload`` (frames), protected with the keys the
    DCID gives (RFC 9001 §5): what a well-formed QUIC client would send, so that
    mutated frames and ClientHellos reach the parsers behind the decryption."""
    keys = quicp.initial_keys(version, dcid)
    pn_len = 4
    type_bits = 1 if version == quicp.QUIC_V2 else 0
    first = 0xC0 | (type_bits << 4) | (pn_len - 1)
    payload = payload + b"\x00" * max(0, 4 - len(payload))  # room for the HP sample
    length = pn_len + len(payload) + 16
    header = (bytes([first]) + version.to_bytes(4, "big") + bytes([len(dcid)]) + dcid
              + bytes([len(scid)]) + scid + varint(len(token)) + token + varint(length))
    pn_bytes = pn.to_bytes(pn_len, "big")
    nonce = (int.from_bytes(keys.iv, "big") ^ pn).to_bytes(len(keys.iv), "big")
    sealed = AESGCM(keys.key).encrypt(nonce, payload, header + pn_bytes)
    sample = sealed[4 - pn_len : 4 - pn_len + 16]
    enc = Cipher(algorithms.AES(keys.hp), modes.ECB()).encryptor()
    mask = enc.update(sample) + enc.finalize()
    masked_first = bytes([first ^ (mask[0] & 0x0F)])
    masked_pn = bytes(a ^ b for a, b in zip(pn_bytes, mask[1 : 1 + pn_len], strict=True))
    return masked_first + header[1:] + masked_pn + sealed


def sealed_initials(rng: random.Random, hello: bytes) -> list[bytes]:
    """Client Initial datagrams carrying ``hello`` (mutated or not) in CRYPTO frames, split
    and ordered at random, with random extra frames; the keys are right, so the mutation
    reaches the frame, CRYPTO reassembly and ClientHello parsers."""
    version = rng.choice((quicp.QUIC_V1, quicp.QUIC_V2, quicp.QUIC_DRAFT_29))
    dcid = rng.randbytes(rng.choice((0, 1, 8, 8, 20)))
    scid = rng.randbytes(rng.choice((0, 8)))
    cuts = sorted(rng.sample(range(1, len(hello)), min(len(hello) - 1, rng.randint(0, 5)))) \
        if len(hello) > 1 else []
    pieces = [(a, hello[a:b]) for a, b in zip([0, *cuts], [*cuts, len(hello)], strict=True)]
    if rng.random() < 0.5:
        rng.shuffle(pieces)
    if rng.random() < 0.3 and pieces:
        pieces.append(rng.choice(pieces))  # retransmitted piece
    frames = [crypto(offset, piece) for offset, piece in pieces]
    extra = (b"\x01", b"\x00" * rng.randint(1, 40), b"\x02\x00\x00\x00\x00",
             b"\x1c\x00\x00\x00", rng.randbytes(rng.randint(1, 16)))
    for _ in range(rng.choice((0, 0, 1, 3))):
        frames.insert(rng.randrange(len(frames) + 1), rng.choice(extra))
    if rng.random() < 0.3 and frames:
        i = rng.randrange(len(frames))
        frames[i] = mutate_bytes(rng, frames[i])
    datagrams: list[bytes] = []
    pn = 0
    per_packet = rng.choice((1, 2, len(frames) or 1))
    for lo in range(0, max(len(frames), 1), per_packet):
        payload = b"".join(frames[lo : lo + per_packet]) or b"\x01"
        pad = b"\x00" * max(0, 1162 - len(payload)) if rng.random() < 0.7 else b""
        datagrams.append(seal_initial(version, dcid, scid, payload + pad, pn))
        pn += 1
    return datagrams


def _fingerprints(ch: tlsp.ClientHello) -> None:
    tlsp.ja3(ch)
    tlsp.ja3_hash(ch)
    for transport in ("t", "q"):
        tlsp.ja4(ch, transport)
        tlsp.ja4_r(ch, transport)


def call_dns(data: bytes) -> None:
    """UDP DNS payload, as the dissector takes it: parse, addresses, EVE objects."""
    for strict in (False, True):
        try:
            msg = dnsp.parse_dns_message(data, strict=strict)
        except ParseError:
            continue
        dnsp.answer_addresses(msg)
        for version in (2, 3):
            dnsp.eve_dns_records(msg, version=version)


def call_dns_tcp(data: bytes) -> None:
    """DNS-over-TCP stream: framing (must never raise), then each message."""
    messages, consumed = dnsp.maybe_read_tcp_messages(data)
    if not 0 <= consumed <= len(data):
        raise Violation(f"maybe_read_tcp_messages consumed {consumed} of {len(data)} bytes")
    for m in messages:
        call_dns(m)


def call_tls(data: bytes) -> None:
    """Client TCP stream prefix: record joining, ClientHello, fingerprints; and every
    prefix gives an answer that does not change as bytes are appended."""
    try:
        joined = tlsp.maybe_read_client_hello_bytes(data)
    except ParseError:
        joined = None
    if joined is not None:
        message, consumed = joined
        if not 0 < consumed <= len(data):
            raise Violation(f"ClientHello consumed {consumed} of {len(data)} bytes")
        if tlsp.maybe_read_client_hello_bytes(data[:consumed]) != joined:
            raise Violation("the bytes up to the hello's end give another answer")
        try:
            ch = tlsp.parse_client_hello(message)
        except ParseError:
            pass
        else:
            _fingerprints(ch)
    try:
        ch2 = tlsp.maybe_read_client_hello(data)
    except ParseError:
        return
    if ch2 is not None:
        _fingerprints(ch2)
    try:
        tlsp.parse_client_hello(data)
    except ParseError:
        pass


def call_quic(datagrams: Sequence[bytes]) -> None:
    """Client UDP payloads to port 443: header walk, one-shot decryption, the assembler
    over the whole sequence, Google QUIC, fingerprints of what comes out."""
    for d in datagrams:
        for fn in (quicp.split_datagram, quicp.parse_initial_datagram,
                   quicp.parse_gquic_client_hello, quicp.parse_frames):
            try:
                fn(d)
            except ParseError:
                pass
    asm = quicp.QuicInitialAssembler()
    for d in datagrams:
        try:
            hello = asm.feed(d)
        except ParseError:
            continue
        if hello is not None:
            _fingerprints(hello.client_hello)


def call_http(data: bytes) -> None:
    """Client TCP stream prefix of plain HTTP: the request head; once a head is found, the
    bytes up to its end give the same head and one byte fewer gives ``None``."""
    try:
        head = httpp.maybe_read_request_head(data)
    except ParseError:
        return
    if head is None:
        return
    if not 0 < head.head_length <= len(data):
        raise Violation(f"head_length {head.head_length} for {len(data)} bytes")
    if httpp.maybe_read_request_head(data[: head.head_length]) != head:
        raise Violation("the head alone does not give the same result")
    if httpp.maybe_read_request_head(data[: head.head_length - 1]) is not None:
        raise Violation("a head without its last byte is already complete")


ParserTarget = Callable[[random.Random], tuple[bytes, Callable[[], None]]]


def _pick(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    if not seeds or rng.random() < 0.15:
        return rng.randbytes(rng.choice((0, 1, 5, 12, 40, 300, 1500)))
    return mutate_bytes(rng, rng.choice(seeds))


def _single_unit(units: Callable[[ParserSeeds], tuple[bytes, ...]],
                 call: Callable[[bytes], None]) -> ParserTarget:
    """A target that feeds one (mutated) unit of ``units`` to ``call``."""
    def target(rng: random.Random) -> tuple[bytes, Callable[[], None]]:
        data = _pick(rng, units(parser_seeds()))
        return data, lambda: call(data)
    return target


def _target_quic(rng: random.Random) -> tuple[bytes, Callable[[], None]]:
    datagrams = [_pick(rng, parser_seeds().quic) for _ in range(rng.choice((1, 1, 2, 3)))]
    return _join(datagrams), lambda: call_quic(datagrams)


def _target_quic_sealed(rng: random.Random) -> tuple[bytes, Callable[[], None]]:
    seeds = parser_seeds().hellos
    hello = rng.choice(seeds) if seeds else b"\x01\x00\x00\x00"
    if rng.random() < 0.8:
        hello = mutate_bytes(rng, hello, max_len=70_000)
    datagrams = sealed_initials(rng, hello)
    return _join(datagrams), lambda: call_quic(datagrams)


def _join(datagrams: Sequence[bytes]) -> bytes:
    """Datagrams as one file: each with a 2-byte big-endian length (see split_joined)."""
    return b"".join(len(d).to_bytes(2, "big") + d for d in datagrams)


def split_joined(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos + 2 <= len(data):
        n = int.from_bytes(data[pos : pos + 2], "big")
        out.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return out


#: Random parser inputs by name: ``rng -> (input bytes to save, call)``. The call may
#: raise only ParseError subclasses, which it catches itself; anything else is a bug.
PARSER_TARGETS: Final[dict[str, ParserTarget]] = {
    "parser_dns": _single_unit(lambda s: s.dns, call_dns),
    "parser_dns_tcp": _single_unit(lambda s: s.dns_tcp, call_dns_tcp),
    "parser_tls": _single_unit(lambda s: s.tls, call_tls),
    "parser_quic": _target_quic,
    "parser_quic_sealed": _target_quic_sealed,
    "parser_http": _single_unit(lambda s: s.http, call_http),
}

#: How to re-run a saved parser input: name -> call on the saved bytes.
PARSER_REPLAY: Final[dict[str, Callable[[bytes], None]]] = {
    "parser_dns": call_dns,
    "parser_dns_tcp": call_dns_tcp,
    "parser_tls": call_tls,
    "parser_quic": lambda b: call_quic(split_joined(b)),
    "parser_quic_sealed": lambda b: call_quic(split_joined(b)),
    "parser_http": call_http,
}
