"""Classic pcap and pcapng decoding: one binary stream in, :class:`Batch` objects out.

This module owns the two capture file formats: classic pcap (either byte order, micro- or
nanosecond timestamps) and pcapng (sections in either byte order; interfaces with their
link type, snap length, ``if_tsresol`` and ``if_tsoffset``; Enhanced, Simple and the
obsolete Packet Blocks; every other block is skipped by its length). It reads the stream
in chunks, walks the record headers of each chunk in one tight loop that only collects
record positions, and decodes the header fields of all records at once with numpy (the
compiled kernel does both in one pass). A regular pcap file's chunk is read and walked a
1 MiB piece at a time, while each piece is in the CPU's cache. A record cut by the chunk
end is read again from its start with the next chunk (a regular file) or completed from
the next chunk in a small buffer of its own (a stream that cannot go back), so chunks
are never copied. Opening files, gzip and the order of several files are
:mod:`monitor.capture.files`' business.

Damage part-way through a stream (a truncated record, an impossible length, a block whose
two length fields disagree) ends the stream: every packet before it is yielded, then
:class:`CaptureDamaged` is raised with the offset and the problem.
"""

from __future__ import annotations

import io
import math
import zlib
from array import array
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from struct import Struct
from typing import Final, Literal, Protocol, TypeGuard

import msgspec
import numpy as np
import numpy.typing as npt

from monitor.capture.batch import Batch
from monitor.errors import CaptureError
from monitor.kernels import native

__all__ = [
    "DEFAULT_BATCH_PACKETS",
    "DEFAULT_CHUNK_BYTES",
    "MAX_RECORD_BYTES",
    "MAX_TSOFFSET_S",
    "CaptureDamaged",
    "NotACapture",
    "Readable",
    "capture_format",
    "describe_head",
    "read_batches",
]

#: The bytes a stream is read into: a chunk as read (a stream), or a buffer of its own
#: (a regular file's chunk, read in pieces).
Buffer = bytes | memoryview
#: What :func:`_walk_pcap` gives: record starts, captured lengths, original lengths and
#: times in ns, and where the walk stopped.
Walked = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64],
               npt.NDArray[np.int64], int]
#: A walk of a buffer's records from a position (:func:`_walk_pcap` of one format).
Walker = Callable[[Buffer, int], Walked]

#: Largest packet record or pcapng block accepted. libpcap and Wireshark refuse records
#: over 256 KiB for most link types (16 MiB-128 MiB for a few, e.g. D-Bus and USB); a
#: length beyond 256 MiB can only be a corrupt header, and carrying it over between
#: chunks would otherwise let one bad length make us buffer gigabytes.
MAX_RECORD_BYTES: Final = 256 << 20
#: Largest ``if_tsoffset`` magnitude accepted, 2^32 s (136 years): any real offset is far
#: smaller, and the bound keeps offset plus a 32-bit-seconds timestamp inside int64 ns.
MAX_TSOFFSET_S: Final = 1 << 32
#: Default amount read from the stream at a time (memory per reader is about this much
#: plus one carried-over record).
DEFAULT_CHUNK_BYTES: Final = 8 << 20
#: A regular file's chunk is read in pieces of this size, each walked while it is in the
#: CPU's cache (the L2 cache of the 2-core machines the benchmark runs on is 1 MiB).
_PIECE_BYTES: Final = 1 << 20
#: Default upper bound on packets per batch; also bounds the numpy scratch space used to
#: decode record headers (a few hundred bytes per packet of the batch).
DEFAULT_BATCH_PACKETS: Final = 65536

PCAP_MAGIC_USEC: Final = 0xA1B2C3D4
PCAP_MAGIC_NSEC: Final = 0xA1B23C4D
#: Kuznetzov's "modified pcap" (24-byte record headers); rare and ambiguous with other
#: vendors' variants, so it is named in the error instead of being guessed at.
PCAP_MAGIC_MODIFIED: Final = 0xA1B2CD34
PCAPNG_BYTE_ORDER_MAGIC: Final = 0x1A2B3C4D

BLOCK_SHB: Final = 0x0A0D0D0A
BLOCK_IDB: Final = 0x00000001
BLOCK_PB: Final = 0x00000002  # obsolete Packet Block
BLOCK_SPB: Final = 0x00000003
BLOCK_EPB: Final = 0x00000006

OPT_ENDOFOPT: Final = 0
OPT_IF_TSRESOL: Final = 9
OPT_IF_TSOFFSET: Final = 14

_NS_PER_S: Final = 1_000_000_000
_PCAP_HEADER_LEN: Final = 24
_PCAP_RECORD_HEADER_LEN: Final = 16
_BLOCK_MIN_LEN: Final = 12  # type, total length, trailing total length
_SHB_MIN_LEN: Final = 28
_IDB_MIN_LEN: Final = 20
_PACKET_BLOCK_FIXED_LEN: Final = 32  # EPB and obsolete PB, without data and options
_SPB_FIXED_LEN: Final = 16
_SPB_HEAD_LEN: Final = 12  # type, total length, original length
#: Bytes of an EPB/PB/SPB decoded per packet: type, length, and five 32-bit fields.
_PACKET_BLOCK_HEAD_LEN: Final = 28

_HEAD16 = np.arange(_PCAP_RECORD_HEADER_LEN, dtype=np.int64)
_HEAD28 = np.arange(_PACKET_BLOCK_HEAD_LEN, dtype=np.int64)
_HEAD4 = np.arange(4, dtype=np.int64)
_U64_LIMIT: Final = 1 << 64

Endian = Literal["<", ">"]
CaptureFormat = Literal["pcap", "pcapng"]


class Readable(Protocol):
    """What :func:`read_batches` needs from a stream (a file, a GzipFile, a BytesIO)."""

    def read(self, size: int = -1, /) -> bytes: ...


class NotACapture(CaptureError):
    """The stream does not start with a pcap or pcapng magic number."""

    def __init__(self, origin: str, head: bytes) -> None:
        self.head = head
        super().__init__(f"{origin}: {describe_head(head)}")


class CaptureDamaged(Exception):
    """The stream is damaged at ``offset`` (within the stream as read); nothing after it
    was decoded. Raised only after every packet before the damage was yielded."""

    def __init__(self, offset: int, problem: str) -> None:
        super().__init__(f"damaged capture at offset {offset}: {problem}")
        #: Offset of the damaged record or block within the stream.
        self.offset = offset
        #: One-line description of what is wrong.
        self.problem = problem


def capture_format(head: bytes) -> CaptureFormat | None:
    """Which format the first four bytes of a stream announce, or ``None``."""
    if len(head) < 4:
        return None
    if head[:4] == b"\x0a\x0d\x0d\x0a":
        return "pcapng"
    magic_le = int.from_bytes(head[:4], "little")
    magic_be = int.from_bytes(head[:4], "big")
    if PCAP_MAGIC_USEC in (magic_le, magic_be) or PCAP_MAGIC_NSEC in (magic_le, magic_be):
        return "pcap"
    return None


def describe_head(head: bytes) -> str:
    """Why a stream starting with ``head`` is not something we read (one phrase)."""
    if len(head) < 4:
        return f"not a pcap or pcapng capture (only {len(head)} bytes long)"
    if PCAP_MAGIC_MODIFIED in (int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")):
        return "modified (Kuznetzov) pcap format is not supported; convert it with editcap"
    return f"not a pcap or pcapng capture (starts with 0x{head[:4].hex()})"


def read_batches(
    stream: Readable,
    *,
    origin: str = "",
    first_frame: int = 1,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    batch_packets: int = DEFAULT_BATCH_PACKETS,
) -> Generator[Batch, None, None]:
    """Yield the packets of a pcap or pcapng stream as batches.

    Batches never span two chunks: each batch's ``buffer`` is the chunk its packets are
    in, and holds at most ``batch_packets`` packets. Frames are numbered from
    ``first_frame``. Packets of an SPB (which has no timestamp) get the timestamp of the
    packet before them in the stream (0 for the first), so packet time never jumps back.

    Raises :class:`NotACapture` before yielding anything if the stream is neither format,
    and :class:`CaptureDamaged` after the last good packet if the stream is damaged
    (including a read error of the stream, such as a truncated gzip member).
    """
    if chunk_bytes < 1 or batch_packets < 1:
        raise ValueError("chunk_bytes and batch_packets must be positive")
    inp = _Input(stream, chunk_bytes)
    inp.fill(0, 4)
    head = bytes(inp.buf[:4])
    fmt = capture_format(head)
    if fmt is None:
        if inp.error is not None:
            raise CaptureDamaged(0, inp.error)
        raise NotACapture(origin, head)
    out = _Output(origin=origin, frame=first_frame, batch_packets=batch_packets)
    if fmt == "pcap":
        yield from _read_pcap(inp, out)
    else:
        yield from _read_pcapng(inp, out)


class _Output(msgspec.Struct):
    """Per-stream output state: frame numbering and batch size."""

    origin: str
    frame: int
    batch_packets: int
    #: Timestamp of the last packet emitted (given to timestamp-less SPB packets).
    last_ts: int = 0

    def make(
        self,
        buf: Buffer,
        offsets: npt.NDArray[np.int64],
        caplens: npt.NDArray[np.int64],
        wirelens: npt.NDArray[np.int64],
        ts_ns: npt.NDArray[np.int64],
        linktypes: npt.NDArray[np.int32],
    ) -> Batch:
        batch = Batch(
            buffer=buf,
            offsets=offsets,
            caplens=caplens,
            wirelens=wirelens,
            ts_ns=ts_ns,
            linktypes=linktypes,
            first_frame=self.frame,
            origin=self.origin,
        )
        self.frame += len(offsets)
        if len(ts_ns):
            self.last_ts = int(ts_ns[-1])
        return batch


class _Input:
    """The current piece of a stream, refilled on demand with the unread tail kept.

    A record cut by the end of a chunk is not completed by joining the whole next chunk
    onto it (a copy of every chunk). In a regular file, the next chunk is read from the
    record's start: the record's bytes are read twice, and batches stay whole chunks. In
    a stream that cannot go back (gzip, a pipe), the record's missing bytes are copied
    from the next chunk into a small buffer holding just that record (a batch of its
    own), and the next chunk becomes the buffer right after, as read.
    """

    __slots__ = (
        "live",
        "_read",
        "_file",
        "_origin",
        "_walked",
        "_chunk",
        "_at_end",
        "_next",
        "_next_pos",
        "_next_base",
        "buf",
        "base",
        "error",
    )

    def __init__(self, stream: Readable, chunk_bytes: int) -> None:
        # read1() returns what one underlying read produced; for a GzipFile that means a
        # read error (truncated member, bad CRC) loses at most one small piece, whereas
        # read(n) discards everything decompressed during the failing call.
        self._read = stream.read1 if isinstance(stream, io.BufferedIOBase) else stream.read
        #: Set for a regular file: it is read in pieces, and again from where a cut
        #: record starts.
        self._file = stream if _is_regular_file(stream) else None
        #: The stream's position when reading began (its offset 0).
        self._origin = self._file.tell() if self._file is not None else 0
        self._walked: Walked | None = None
        self._chunk = chunk_bytes
        self._at_end = False
        #: A chunk already read whose bytes from ``_next_pos`` on are still to come.
        self._next: bytes | None = None
        self._next_pos = 0
        #: Stream offset of ``_next[0]``.
        self._next_base = 0
        #: The bytes currently held; record positions are indices into it.
        self.buf: Buffer = b""
        #: Stream offset of ``buf[0]``.
        self.base = 0
        #: Why reading stopped early, if it did (read error text).
        self.error: str | None = None
        #: A pipe or socket: read what has arrived rather than whole chunks.
        self.live = _is_live(stream)

    @property
    def eof(self) -> bool:
        """No bytes follow ``buf``."""
        return self._at_end and self._next is None

    def fill(self, pos: int, need: int, walk: Walker | None = None) -> int:
        """Drop ``buf[:pos]`` and, unless ``need`` bytes already follow it, get more bytes
        until they do (or the stream ends). Returns the new position of the kept bytes.

        A read is at least one chunk, so that refills stay rare. A regular file's chunk
        is read a piece at a time; with ``walk``, each piece's records are walked as soon
        as it is read, while its bytes are still in the CPU's cache (a walk of the whole
        chunk afterwards goes out to memory for every record header), and
        :meth:`take_walked` gives the walk of the new ``buf`` from its start.
        """
        keep = self.buf[pos:] if pos else self.buf
        base = self.base + pos
        if len(keep) >= need:
            self.buf, self.base = keep, base
            return 0
        if self._file is not None:
            if not self._at_end:
                if keep:
                    self._file.seek(self._origin + base)
                keep = self._read_file_chunk(self._file, max(self._chunk, need), walk)
            self.buf, self.base = keep, base
            return 0
        if not isinstance(keep, bytes):  # a stream's chunks are bytes (not a file's)
            keep = bytes(keep)
        following = self._next
        if following is not None:
            start = self._next_pos
            if not keep:
                self.buf, self.base, self._next = following, self._next_base, None
                return start
            take = need - len(keep)
            if take <= len(following) - start:
                self.buf, self.base = keep + following[start : start + take], base
                self._next_pos = start + take
                return 0
            keep += following[start:]
            self._next = None
        data = self._read_chunk(max(self._chunk, need - len(keep)), need - len(keep))
        take = need - len(keep)
        if keep and len(data) > take:
            self.buf, self.base = keep + data[:take], base
            self._next, self._next_pos, self._next_base = data, take, base + len(keep)
        else:
            self.buf, self.base = keep + data if keep else data, base
        return 0

    def take_walked(self) -> Walked | None:
        """The walk of ``buf`` from 0 that the last :meth:`fill` made, once; else None."""
        walked, self._walked = self._walked, None
        return walked

    def _read_file_chunk(self, file: io.FileIO, want: int, walk: Walker | None) -> Buffer:
        """Up to ``want`` bytes of ``file`` from its position, read into a buffer of their
        own in pieces of :data:`_PIECE_BYTES`, each walked with ``walk`` after it is
        read."""
        chunk = np.empty(want, dtype=np.uint8).data  # not zeroed: every byte kept is read
        filled = at = 0
        parts: list[Walked] = []
        while filled < want:
            try:
                got = file.readinto(chunk[filled:min(want, filled + _PIECE_BYTES)])
            except OSError as exc:
                self._at_end = True
                self.error = f"cannot read further ({exc})"
                break
            if not got:
                self._at_end = True
                break
            filled += got
            if walk is not None:
                part = walk(chunk[:filled], at)
                parts.append(part)
                at = part[4]
        if len(parts) == 1:
            self._walked = parts[0]
        elif parts:
            starts, caplens, wirelens, ts_ns = (np.concatenate([part[k] for part in parts])
                                                for k in range(4))
            self._walked = (starts, caplens, wirelens, ts_ns, at)
        return chunk[:filled]

    def _read_chunk(self, want: int, minimum: int) -> bytes:
        """Read up to ``want`` bytes; on a live stream (a pipe) stop as soon as at least
        ``minimum`` have come, so packets are handed on as they arrive."""
        parts = []
        got = 0
        while got < want and not self._at_end and not (self.live and got >= minimum):
            try:
                data = self._read(want - got)
            except (OSError, EOFError, zlib.error) as exc:
                self._at_end = True
                self.error = f"cannot read further ({exc})"
                break
            if not data:
                self._at_end = True
                break
            parts.append(data)
            got += len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)


def _is_regular_file(stream: Readable) -> TypeGuard[io.FileIO]:
    """An unbuffered regular file (not gzip, a pipe or a device): it can be read again
    from an earlier offset."""
    if not isinstance(stream, io.FileIO):
        return False
    import os
    import stat

    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode) and stream.seekable()
    except (OSError, ValueError):
        return False


def _is_live(stream: Readable) -> bool:
    import os
    import stat

    fileno = getattr(stream, "fileno", None)
    if fileno is None or isinstance(stream, io.BytesIO):
        return False
    try:
        mode = os.fstat(fileno()).st_mode
    except (OSError, ValueError, io.UnsupportedOperation):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _end_damage(inp: _Input, pos: int, truncated: str) -> CaptureDamaged | None:
    """At the end of the stream: the damage to report for the bytes left at ``pos`` (a
    record cut short, described by ``truncated``) or for a read error, if any."""
    if pos < len(inp.buf):
        problem = truncated if inp.error is None else f"{truncated}; {inp.error}"
        return CaptureDamaged(inp.base + pos, problem)
    if inp.error is not None:
        return CaptureDamaged(inp.base + pos, inp.error)
    return None


def _slices(n: int, size: int) -> Iterator[tuple[int, int]]:
    for lo in range(0, n, size):
        yield lo, min(n, lo + size)


# --------------------------------------------------------------------------- classic pcap




def _walk_pcap(buf: Buffer, pos: int, endian: Endian, frac_ns: int) -> Walked:
    """The complete records from ``pos`` on: their starts and header fields, and where the
    walk stopped. The compiled kernel (one pass) when it was built, else
    :func:`_walk_pcap_py` and :func:`_pcap_headers_py`."""
    if native is not None:
        walked: Walked = native.walk_pcap(buf, pos, endian == ">", MAX_RECORD_BYTES, frac_ns)
        return walked
    found, pos = _walk_pcap_py(buf, pos, Struct(endian + "8xI"))
    starts = np.frombuffer(found, dtype=np.int64)
    return (starts, *_pcap_headers_py(buf, starts, endian, frac_ns), pos)


def _pcap_headers_py(buf: Buffer, starts: npt.NDArray[np.int64], endian: Endian, frac_ns: int
                     ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64],
                                npt.NDArray[np.int64]]:
    """Captured length, original length and time in ns of the records at ``starts``."""
    u8 = np.frombuffer(buf, dtype=np.uint8)
    words = u8[starts[:, None] + _HEAD16].view(np.dtype(endian + "u4")).astype(np.int64)
    return words[:, 2], words[:, 3], words[:, 0] * _NS_PER_S + words[:, 1] * frac_ns


def _walk_pcap_py(buf: Buffer, pos: int, caplen_at: Struct) -> tuple[array[int], int]:
    """Positions of the complete records from ``pos`` on, and where the walk stopped.

    The loop only follows caplen from header to header; the fields are decoded later, for
    all records at once. It stops at the first record that is incomplete or whose caplen
    exceeds :data:`MAX_RECORD_BYTES`.
    """
    starts: array[int] = array("q")
    append = starts.append
    unpack = caplen_at.unpack_from
    end = len(buf)
    last = end - _PCAP_RECORD_HEADER_LEN
    cap_max = MAX_RECORD_BYTES
    while pos <= last:
        (caplen,) = unpack(buf, pos)
        if caplen > cap_max:
            break
        append(pos)
        pos += 16 + caplen
    if pos > end:
        pos = starts.pop()
    return starts, pos


def _read_pcap(inp: _Input, out: _Output) -> Iterator[Batch]:
    inp.fill(0, _PCAP_HEADER_LEN)
    buf = inp.buf
    if len(buf) < _PCAP_HEADER_LEN:
        truncated = f"truncated file header ({len(buf)} of {_PCAP_HEADER_LEN} bytes)"
        raise _end_damage(inp, 0, truncated) or CaptureDamaged(0, truncated)
    magic_le = int.from_bytes(buf[:4], "little")
    endian: Endian = "<" if magic_le in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC) else ">"
    frac_ns = 1 if PCAP_MAGIC_NSEC in (magic_le, int.from_bytes(buf[:4], "big")) else 1000
    # thiszone and sigfigs are ignored, as libpcap and Wireshark do (always 0 in practice).
    network = Struct(endian + "I").unpack_from(buf, 20)[0]
    # The upper bits of the link-type field carry FCS information (pcap spec, LinkType);
    # Wireshark masks them the same way.
    linktype = network & 0x03FF_FFFF
    caplen_at = Struct(endian + "8xI")

    def walk(buf: Buffer, pos: int) -> Walked:
        return _walk_pcap(buf, pos, endian, frac_ns)

    pos = _PCAP_HEADER_LEN
    while True:
        buf = inp.buf
        starts, caplens, wirelens, ts_ns, pos = inp.take_walked() or walk(buf, pos)
        for lo, hi in _slices(len(starts), out.batch_packets):
            yield out.make(
                buf,
                starts[lo:hi] + _PCAP_RECORD_HEADER_LEN,
                caplens[lo:hi],
                wirelens[lo:hi],
                ts_ns[lo:hi],
                np.full(hi - lo, linktype, dtype=np.int32),
            )
        left = len(buf) - pos
        need = _PCAP_RECORD_HEADER_LEN
        truncated = f"truncated record header: only {left} of 16 bytes left in the file"
        if left >= _PCAP_RECORD_HEADER_LEN:
            caplen = caplen_at.unpack_from(buf, pos)[0]
            if caplen > MAX_RECORD_BYTES:
                raise CaptureDamaged(
                    inp.base + pos,
                    f"corrupt record header: captured length {caplen} exceeds the "
                    f"{MAX_RECORD_BYTES}-byte limit",
                )
            need += caplen
            truncated = f"truncated record: {need} bytes declared, only {left} left in the file"
        if inp.eof:
            damage = _end_damage(inp, pos, truncated)
            if damage is not None:
                raise damage
            return
        pos = inp.fill(pos, need, walk)


# --------------------------------------------------------------------------------- pcapng


class _Interfaces(msgspec.Struct):
    """Every interface of a pcapng stream so far, numbered across sections in file order
    (a section's interface ``i`` is ``first_interface + i``)."""

    linktypes: list[int] = msgspec.field(default_factory=list)
    snaplens: list[int] = msgspec.field(default_factory=list)
    #: Timestamp units per second (``if_tsresol``).
    units: list[int] = msgspec.field(default_factory=list)
    #: ``if_tsoffset`` in seconds.
    offsets: list[int] = msgspec.field(default_factory=list)
    linktype_column: npt.NDArray[np.int32] = msgspec.field(
        default_factory=lambda: np.zeros(0, dtype=np.int32)
    )

    def add(self, linktype: int, snaplen: int, units: int, offset_s: int) -> None:
        self.linktypes.append(linktype)
        self.snaplens.append(snaplen)
        self.units.append(units)
        self.offsets.append(offset_s)
        self.linktype_column = np.array(self.linktypes, dtype=np.int32)


@dataclass(slots=True)
class _Section:
    endian: Endian
    #: Global number of the section's first interface.
    first_interface: int
    count: int = 0
    block_head: Struct = field(init=False)
    word: Struct = field(init=False)

    def __post_init__(self) -> None:
        self.block_head = Struct(self.endian + "II")
        self.word = Struct(self.endian + "I")


def _walk_pcapng(buf: Buffer, pos: int, block_head: Struct, word: Struct) -> tuple[array[int], int]:
    """Positions of the complete packet blocks (EPB, SPB, PB) from ``pos`` on, skipping
    other blocks, and where the walk stopped.

    Stops at an SHB or IDB (they change how later blocks are read), an incomplete block,
    a block length that is under 12 or not a multiple of 4, or a skipped block whose
    trailing length disagrees. The lengths of packet blocks are checked later, all at
    once (so an EPB only costs the loop a length test).
    """
    starts: array[int] = array("q")
    append = starts.append
    head = block_head.unpack_from
    tail = word.unpack_from
    end = len(buf)
    last = end - _BLOCK_MIN_LEN
    while pos <= last:
        btype, blen = head(buf, pos)
        nxt = pos + blen
        if btype == 6 and blen >= 32:  # EPB
            if nxt > end:
                break
            append(pos)
            pos = nxt
            continue
        if nxt > end or blen < 12 or blen & 3:
            break
        if btype == 3 or btype == 2 or btype == 6:  # SPB, PB, EPB too short (flagged later)
            append(pos)
        elif btype == 1 or btype == 0x0A0D0D0A or tail(buf, nxt - 4)[0] != blen:
            break
        pos = nxt
    return starts, pos


def _read_pcapng(inp: _Input, out: _Output) -> Iterator[Batch]:
    interfaces = _Interfaces()
    section: _Section | None = None
    pos = 0
    while True:
        buf = inp.buf
        if section is not None:
            starts, pos = _walk_pcapng(buf, pos, section.block_head, section.word)
            if starts:
                yield from _packet_blocks(buf, inp.base, starts, section, interfaces, out)
        left = len(buf) - pos
        if left < _BLOCK_MIN_LEN:
            if inp.eof:
                damage = _end_damage(
                    inp, pos, f"truncated block: only {left} bytes left in the file"
                )
                if damage is not None:
                    raise damage
                return
            pos = inp.fill(pos, _BLOCK_MIN_LEN)
            continue
        at = inp.base + pos
        if buf[pos : pos + 4] == b"\x0a\x0d\x0d\x0a":
            bom = buf[pos + 8 : pos + 12]
            if bom == PCAPNG_BYTE_ORDER_MAGIC.to_bytes(4, "little"):
                endian: Endian = "<"
            elif bom == PCAPNG_BYTE_ORDER_MAGIC.to_bytes(4, "big"):
                endian = ">"
            else:
                raise CaptureDamaged(at, f"bad byte-order magic 0x{bom.hex()} in section header")
            btype = BLOCK_SHB
            blen = Struct(endian + "I").unpack_from(buf, pos + 4)[0]
        elif section is None:
            raise CaptureDamaged(at, "no section header block")  # unreachable after sniffing
        else:
            btype, blen = section.block_head.unpack_from(buf, pos)
            endian = section.endian
        if blen < _BLOCK_MIN_LEN or blen & 3 or blen > MAX_RECORD_BYTES:
            raise CaptureDamaged(at, f"bad block length {blen} (block type 0x{btype:08x})")
        if left < blen:
            if inp.eof:
                raise _end_damage(
                    inp,
                    pos,
                    f"truncated block: {blen} bytes declared (block type 0x{btype:08x}), "
                    f"only {left} left in the file",
                ) or CaptureDamaged(at, "truncated block")
            pos = inp.fill(pos, blen)
            continue
        trailer = Struct(endian + "I").unpack_from(buf, pos + blen - 4)[0]
        if trailer != blen:
            raise CaptureDamaged(
                at,
                f"block total length mismatch: {blen} at the start, {trailer} at the end "
                f"(block type 0x{btype:08x})",
            )
        if btype == BLOCK_SHB:
            section = _section_header(buf, pos, blen, at, endian, len(interfaces.linktypes))
        elif section is not None and btype == BLOCK_IDB:
            _interface_description(buf, pos, blen, at, section, interfaces)
        elif btype in (BLOCK_EPB, BLOCK_SPB, BLOCK_PB):
            continue  # complete and well-formed: the walker takes it on the next round
        pos += blen


def _section_header(
    buf: Buffer, pos: int, blen: int, at: int, endian: Endian, first_interface: int
) -> _Section:
    if blen < _SHB_MIN_LEN:
        raise CaptureDamaged(at, f"section header block too short ({blen} bytes)")
    major, minor = Struct(endian + "HH").unpack_from(buf, pos + 12)
    if major != 1:
        raise CaptureDamaged(at, f"unsupported pcapng version {major}.{minor}")
    return _Section(endian=endian, first_interface=first_interface)


def _interface_description(
    buf: Buffer, pos: int, blen: int, at: int, section: _Section, interfaces: _Interfaces
) -> None:
    if blen < _IDB_MIN_LEN:
        raise CaptureDamaged(at, f"interface description block too short ({blen} bytes)")
    e = section.endian
    linktype, _reserved, snaplen = Struct(e + "HHI").unpack_from(buf, pos + 8)
    units = 1_000_000  # default if_tsresol: microseconds
    offset_s = 0
    opt = pos + 16
    end = pos + blen - 4
    option_head = Struct(e + "HH")
    while opt + 4 <= end:
        code, length = option_head.unpack_from(buf, opt)
        if code == OPT_ENDOFOPT:
            break
        value = opt + 4
        if value + length > end:
            raise CaptureDamaged(at, f"interface option {code} overruns its block")
        if code == OPT_IF_TSRESOL and length >= 1:
            resol = buf[value]
            # MSB clear: 10^-n seconds; MSB set: 2^-n seconds (pcapng if_tsresol).
            units = 1 << (resol & 0x7F) if resol & 0x80 else 10**resol
            if units >= _U64_LIMIT:
                raise CaptureDamaged(at, f"unsupported if_tsresol 0x{resol:02x}")
        elif code == OPT_IF_TSOFFSET and length >= 8:
            offset_s = Struct(e + "q").unpack_from(buf, value)[0]
            if abs(offset_s) > MAX_TSOFFSET_S:
                raise CaptureDamaged(at, f"if_tsoffset {offset_s} s is out of range")
        opt = value + length + (-length & 3)
    interfaces.add(linktype, snaplen, units, offset_s)
    section.count += 1


def _packet_blocks(
    buf: Buffer,
    base: int,
    starts: array[int],
    section: _Section,
    interfaces: _Interfaces,
    out: _Output,
) -> Iterator[Batch]:
    """Decode and check the packet blocks at ``starts`` (one section, fixed interfaces)."""
    u8 = np.frombuffer(buf, dtype=np.uint8)
    words_t = np.dtype(section.endian + "u4")
    all_starts = np.frombuffer(starts, dtype=np.int64)
    for lo, hi in _slices(len(all_starts), out.batch_packets):
        at = all_starts[lo:hi]
        idx = at[:, None] + _HEAD28
        if int(at[-1]) + _PACKET_BLOCK_HEAD_LEN > len(buf):
            # An SPB can be 16 bytes long, so the 28-byte view may run past the buffer's
            # end; those columns are never used for SPBs.
            np.minimum(idx, len(buf) - 1, out=idx)
        head = u8[idx]
        words = head.view(words_t).astype(np.int64)
        btype, blen, word2 = words[:, 0], words[:, 1], words[:, 2]
        caplen, wirelen = words[:, 5], words[:, 6]
        # The walker only let through blocks that end inside the buffer.
        trailer = u8[(at + blen - 4)[:, None] + _HEAD4].view(words_t)[:, 0].astype(np.int64)
        spb = btype == BLOCK_SPB
        pb = btype == BLOCK_PB
        only_epb = not (spb.any() or pb.any())
        if only_epb:
            iface = word2
            short = blen < _PACKET_BLOCK_FIXED_LEN
        else:
            iface = word2.copy()
            if pb.any():
                iface[pb] = head[pb, 8:10].copy().view(np.dtype(section.endian + "u2"))[:, 0]
            iface[spb] = 0
            short = np.where(spb, blen < _SPB_FIXED_LEN, blen < _PACKET_BLOCK_FIXED_LEN)
        bad = (
            ((blen & 3) != 0)
            | (trailer != blen)
            | short
            | ((caplen > blen - _PACKET_BLOCK_FIXED_LEN) & ~spb)
            | (iface >= section.count)
        )
        good = len(at)
        damage = None
        if bad.any():
            good = int(np.flatnonzero(bad)[0])
            damage = CaptureDamaged(
                base + int(at[good]),
                _packet_block_problem(
                    int(btype[good]),
                    int(blen[good]),
                    int(trailer[good]),
                    int(caplen[good]),
                    int(iface[good]),
                    section.count,
                ),
            )
            at, words, blen, word2 = at[:good], words[:good], blen[:good], word2[:good]
            caplen, wirelen, spb, iface = caplen[:good], wirelen[:good], spb[:good], iface[:good]
        if good:
            gif = iface + section.first_interface if section.first_interface else iface
            ticks = (words[:, 3].astype(np.uint64) << np.uint64(32)) | words[:, 4].astype(np.uint64)
            ts = _timestamps(ticks, gif, interfaces)
            offsets = at + _PACKET_BLOCK_HEAD_LEN
            if not only_epb and spb.any():
                snap = interfaces.snaplens[section.first_interface] or MAX_RECORD_BYTES
                offsets[spb] = at[spb] + _SPB_HEAD_LEN
                wirelen = np.where(spb, word2, wirelen)
                caplen = np.where(
                    spb, np.minimum(np.minimum(word2, blen - _SPB_FIXED_LEN), snap), caplen
                )
                ts = _fill_missing(ts, ~spb, out.last_ts)
            yield out.make(buf, offsets, caplen, wirelen, ts, interfaces.linktype_column[gif])
        if damage is not None:
            raise damage


def _packet_block_problem(
    btype: int, blen: int, trailer: int, caplen: int, iface: int, count: int
) -> str:
    name = {BLOCK_EPB: "enhanced packet block", BLOCK_SPB: "simple packet block"}.get(
        btype, "packet block"
    )
    if blen & 3:
        return f"bad block length {blen} (block type 0x{btype:08x})"
    if trailer != blen:
        return f"block total length mismatch: {blen} at the start, {trailer} at the end ({name})"
    if btype == BLOCK_SPB and blen < _SPB_FIXED_LEN:
        return f"{name} too short ({blen} bytes)"
    if btype != BLOCK_SPB and blen < _PACKET_BLOCK_FIXED_LEN:
        return f"{name} too short ({blen} bytes)"
    if btype != BLOCK_SPB and caplen > blen - _PACKET_BLOCK_FIXED_LEN:
        return f"{name} captured length {caplen} exceeds its block length {blen}"
    return f"{name} refers to interface {iface}, but its section describes {count}"


def _timestamps(
    ticks: npt.NDArray[np.uint64], gif: npt.NDArray[np.int64], interfaces: _Interfaces
) -> npt.NDArray[np.int64]:
    first = int(gif[0])
    if bool((gif == first).all()):
        return _ticks_to_ns(ticks, interfaces.units[first], interfaces.offsets[first])
    ts = np.empty(len(ticks), dtype=np.int64)
    for g in np.unique(gif).tolist():
        sel = gif == g
        ts[sel] = _ticks_to_ns(ticks[sel], interfaces.units[g], interfaces.offsets[g])
    return ts


def _ticks_to_ns(ticks: npt.NDArray[np.uint64], units: int, offset_s: int) -> npt.NDArray[np.int64]:
    """``ticks / units`` seconds plus ``offset_s``, in integer nanoseconds (rounded down
    like Wireshark), exactly: whole seconds and the remainder are scaled separately, and
    the remainder is multiplied before dividing only while that cannot overflow 64 bits."""
    g = math.gcd(units, _NS_PER_S)
    mul, div = _NS_PER_S // g, units // g
    if div == 1:
        ns = ticks * np.uint64(mul)
    else:
        secs = ticks // np.uint64(units)
        rem = ticks % np.uint64(units)
        if units * mul < _U64_LIMIT:
            frac = rem * np.uint64(mul) // np.uint64(div)
        else:  # exotic resolutions (finer than 2^-43 s): Python integers
            frac = np.array([r * mul // div for r in rem.tolist()], dtype=np.uint64)
        ns = secs * np.uint64(_NS_PER_S) + frac
    result = ns.astype(np.int64)
    if offset_s:
        result += offset_s * _NS_PER_S
    return result


def _fill_missing(
    ts: npt.NDArray[np.int64], known: npt.NDArray[np.bool_], before: int
) -> npt.NDArray[np.int64]:
    """``ts`` where ``known``, else the latest known value before it (``before`` if none)."""
    idx = np.where(known, np.arange(len(ts)), -1)
    np.maximum.accumulate(idx, out=idx)
    return np.where(idx >= 0, ts[np.maximum(idx, 0)], before)
