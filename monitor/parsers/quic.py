"""QUIC Initial packets: the client's ClientHello out of its first datagrams.

A QUIC client opens a connection with Initial packets whose protection keys anyone can
derive from the Destination Connection ID of the client's first Initial (RFC 9001 §5.2).
This module parses the long header (RFC 9000 §17.2, RFC 8999 invariants), removes header
protection (RFC 9001 §5.4), decrypts the payload with AEAD_AES_128_GCM, parses the frames
an Initial may carry, and joins CRYPTO frames by offset, across packets and datagrams,
until the TLS ClientHello is complete. QUIC version 1 (RFC 9000), version 2 (RFC 9369)
and draft-29 are supported.

:class:`QuicInitialAssembler` is the per-flow entry point (fed client-to-server UDP
payloads); :func:`parse_initial_datagram` is the stateless one-datagram view. Google QUIC
(``Q0xx`` versions with the legacy public header) sends its hello unencrypted; see
:func:`parse_gquic_client_hello`.

Everything here is pure: no I/O, clock or logging. Only
:class:`~monitor.errors.ParseError` subclasses escape on malformed input; cryptography's
``InvalidTag`` becomes :class:`DecryptError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from functools import lru_cache
from typing import TYPE_CHECKING, ClassVar, Final, Literal, TypeAlias

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from monitor.errors import BadValue, LimitExceeded, ParseError, Truncated
from monitor.kernels import native
from monitor.wire import Reader

if TYPE_CHECKING:
    from monitor.parsers.tls import ClientHello

__all__ = [
    "MAX_ACK_RANGES",
    "MAX_CID_LEN",
    "MAX_COALESCED_PACKETS",
    "MAX_CRYPTO_BYTES",
    "MAX_CRYPTO_RANGES",
    "MAX_FRAMES_PER_PACKET",
    "MAX_GQUIC_TAGS",
    "MAX_KEY_CACHE",
    "MAX_RESTARTS",
    "QUIC_DRAFT_29",
    "QUIC_V1",
    "QUIC_V2",
    "SUPPORTED_VERSIONS",
    "VERSION_NEGOTIATION",
    "AckFrame",
    "ConnectionCloseFrame",
    "CryptoFrame",
    "DecryptError",
    "Frame",
    "FrameType",
    "GQuicClientHello",
    "InitialKeys",
    "InitialPacket",
    "LongHeader",
    "PacketType",
    "PaddingFrame",
    "PingFrame",
    "QuicClientHello",
    "QuicInitialAssembler",
    "UnsupportedVersion",
    "initial_keys",
    "may_be_gquic",
    "parse_frames",
    "parse_gquic_client_hello",
    "parse_initial_datagram",
    "split_datagram",
]

# --------------------------------------------------------------------------- constants

QUIC_V1: Final = 0x00000001  # RFC 9000
QUIC_V2: Final = 0x6B3343CF  # RFC 9369 §3.1
QUIC_DRAFT_29: Final = 0xFF00001D  # draft-ietf-quic-transport-29 (deployed by Chrome 2020-21)
VERSION_NEGOTIATION: Final = 0x00000000  # RFC 9000 §17.2.1

#: RFC 9000 §17.2: in QUIC version 1 (and v2, draft-29) a connection ID is at most 20
#: bytes; the RFC 8999 invariants allow 255 for other versions, which we do not parse.
MAX_CID_LEN: Final = 20

#: Bytes of CRYPTO stream kept per client flow. A ClientHello is 250-600 bytes, 1.2-2 kB
#: with post-quantum key shares, and TLS itself caps the hello at 2^14 bytes; 64 KiB
#: bounds the reassembly buffer with a wide margin over anything a real client sends.
MAX_CRYPTO_BYTES: Final = 64 * 1024

#: Disjoint pieces of CRYPTO data held while waiting for a gap to fill. Chrome splits
#: its hello into a handful of out-of-order CRYPTO frames ("chaos protection"); 512
#: pieces still allow a hello delivered in ~4-byte fragments, and bound the merge work.
MAX_CRYPTO_RANGES: Final = 512

#: Derived Initial key sets kept in the module's LRU cache (one per version and DCID;
#: an assembler holds its own keys, so the cache only saves work on repeated DCIDs).
MAX_KEY_CACHE: Final = 1024

#: Long-header packets one datagram may coalesce (RFC 9000 §12.2). A client coalesces
#: at most Initial, 0-RTT and Handshake packets; 16 is generous and bounds the loop.
MAX_COALESCED_PACKETS: Final = 16

#: Frames in one Initial payload (PADDING runs count as one frame). Every frame is at
#: least one byte, so a 1500-byte packet holds < 1500; this caps jumbo-datagram abuse.
MAX_FRAMES_PER_PACKET: Final = 2048

#: Additional ACK Ranges in one ACK frame. A client's Initial acknowledges at most a few
#: server Initials, so real frames carry 0-2 ranges.
MAX_ACK_RANGES: Final = 256

#: Connection attempts one client flow may restart with a new DCID. A client accepts one
#: Retry (RFC 9000 §17.2.5.2) and acts on one Version Negotiation (§6.2) per connection.
MAX_RESTARTS: Final = 4

#: Tag/value pairs in a Google QUIC CHLO. Chrome sent about 25; Chromium's own parser
#: rejects messages with more than 128 entries (kMaxEntries).
MAX_GQUIC_TAGS: Final = 128

_AEAD_TAG_LEN: Final = 16
_HP_SAMPLE_LEN: Final = 16
_MAX_PN_LEN: Final = 4
_MAX_STREAM_OFFSET: Final = (1 << 62) - 1  # RFC 9000 §19.6: offset + length < 2^62
_HANDSHAKE_HEADER_LEN: Final = 4  # TLS msg_type (1) + uint24 length
_TLS_CLIENT_HELLO: Final = 1


class PacketType(IntEnum):
    """Long-header packet types, independent of their version-specific wire bits."""

    INITIAL = 0
    ZERO_RTT = 1
    HANDSHAKE = 2
    RETRY = 3


class FrameType(IntEnum):
    """Frame types an Initial packet may carry (RFC 9000 §12.4, Table 3)."""

    PADDING = 0x00
    PING = 0x01
    ACK = 0x02
    ACK_ECN = 0x03
    CRYPTO = 0x06
    CONNECTION_CLOSE = 0x1C  # transport variant; 0x1d is forbidden in Initials


class _Version(msgspec.Struct, frozen=True):
    salt: bytes
    key_label: bytes
    iv_label: bytes
    hp_label: bytes
    #: Packet type for each value of the two long-header type bits.
    types: tuple[PacketType, PacketType, PacketType, PacketType]


_V1_TYPES: Final = (PacketType.INITIAL, PacketType.ZERO_RTT, PacketType.HANDSHAKE,
                    PacketType.RETRY)
_VERSIONS: Final[dict[int, _Version]] = {
    # RFC 9001 §5.2
    QUIC_V1: _Version(bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"),
                      b"quic key", b"quic iv", b"quic hp", _V1_TYPES),
    # RFC 9369 §3.2 (type bits) and §3.3.1-3.3.2 (salt, labels)
    QUIC_V2: _Version(bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9"),
                      b"quicv2 key", b"quicv2 iv", b"quicv2 hp",
                      (PacketType.RETRY, PacketType.INITIAL, PacketType.ZERO_RTT,
                       PacketType.HANDSHAKE)),
    # draft-ietf-quic-tls-29 §5.2
    QUIC_DRAFT_29: _Version(bytes.fromhex("afbfec289993d24c9e9786f19c6111e04390a899"),
                            b"quic key", b"quic iv", b"quic hp", _V1_TYPES),
}

#: QUIC versions whose Initial packets this module decrypts.
SUPPORTED_VERSIONS: Final = frozenset(_VERSIONS)
#: The packet types of each version by the two type bits (for the compiled kernel).
_TYPES: Final = {version: params.types for version, params in _VERSIONS.items()}


# ------------------------------------------------------------------------------ errors


class DecryptError(ParseError):
    """Initial packet did not authenticate with the keys derived from its DCID."""

    reason: ClassVar[str] = "decrypt"


class UnsupportedVersion(ParseError):
    """QUIC version whose Initial packets this module cannot read."""

    reason: ClassVar[str] = "version"


# ----------------------------------------------------------------------------- records


class LongHeader(msgspec.Struct, frozen=True):
    """The clear-text part of one long-header packet inside a datagram."""

    #: The version field (0 for Version Negotiation).
    version: int
    #: The packet type; None for Version Negotiation.
    packet_type: PacketType | None
    dcid: bytes
    scid: bytes
    #: Initial: the token; Retry: the retry token; empty for other types.
    token: bytes
    #: Where the packet starts in the datagram.
    offset: int
    #: Bytes of the datagram the packet occupies (Retry and Version Negotiation run to
    #: the end of the datagram).
    size: int
    #: Offset of the protected packet number in the datagram; -1 for Retry and Version
    #: Negotiation, which have none.
    pn_offset: int


class PaddingFrame(msgspec.Struct, frozen=True):
    """A run of PADDING frames (RFC 9000 §19.1), counted as one."""

    length: int


class PingFrame(msgspec.Struct, frozen=True):
    """PING (RFC 9000 §19.2)."""


class AckFrame(msgspec.Struct, frozen=True):
    """ACK (RFC 9000 §19.3), types 0x02 and 0x03."""

    largest: int
    delay: int
    first_range: int
    #: Additional ACK Ranges as (gap, ack_range_length), in wire order.
    ranges: tuple[tuple[int, int], ...]
    #: (ECT0, ECT1, ECN-CE) counts for type 0x03, else None.
    ecn: tuple[int, int, int] | None


class CryptoFrame(msgspec.Struct, frozen=True):
    """CRYPTO (RFC 9000 §19.6)."""

    offset: int
    data: bytes


class ConnectionCloseFrame(msgspec.Struct, frozen=True):
    """CONNECTION_CLOSE of type 0x1c (RFC 9000 §19.19)."""

    error_code: int
    frame_type: int
    reason: bytes


Frame: TypeAlias = PaddingFrame | PingFrame | AckFrame | CryptoFrame | ConnectionCloseFrame


class InitialPacket(msgspec.Struct, frozen=True):
    """One decrypted client Initial packet."""

    header: LongHeader
    #: The full packet number (decoded against the largest one seen before).
    packet_number: int
    frames: tuple[Frame, ...]

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def dcid(self) -> bytes:
        return self.header.dcid

    @property
    def scid(self) -> bytes:
        return self.header.scid

    @property
    def crypto_frames(self) -> tuple[CryptoFrame, ...]:
        return tuple(f for f in self.frames if isinstance(f, CryptoFrame))


class QuicClientHello(msgspec.Struct, frozen=True):
    """A client's TLS ClientHello recovered from its Initial packets."""

    #: QUIC version of the Initial packets the keys were derived for.
    version: int
    #: The DCID the Initial keys were derived from (the client's first Initial, or the
    #: one after a Retry).
    dcid: bytes
    #: The client's Source Connection ID.
    scid: bytes
    #: The complete TLS handshake message: type 1, uint24 length, body.
    handshake: bytes
    client_hello: ClientHello


@dataclass(frozen=True, slots=True)
class InitialKeys:
    """Packet-protection material for one direction of the Initial packet space."""

    version: int
    dcid: bytes
    secret: bytes
    key: bytes
    iv: bytes
    hp: bytes
    _aead: AESGCM = field(repr=False, compare=False)
    #: One AES-ECB encryptor for every mask: ECB carries no state from one block to the
    #: next, and building a context costs several times more than encrypting a block.
    _hp_ecb: CipherContext = field(repr=False, compare=False)

    def hp_mask(self, sample: bytes | memoryview) -> bytes:
        """AES-ECB(hp, sample) (RFC 9001 §5.4.3); ``sample`` is 16 bytes."""
        if len(sample) % _HP_SAMPLE_LEN:
            # A partial block would stay buffered in the shared encryptor.
            raise ValueError("header protection sample is not a whole AES block")
        return self._hp_ecb.update(sample)

    def open(self, packet_number: int, ciphertext: bytes | memoryview,
             aad: bytes) -> bytes:
        """AEAD-decrypt a payload (RFC 9001 §5.3); :class:`DecryptError` if forged."""
        nonce = (int.from_bytes(self.iv, "big") ^ packet_number).to_bytes(len(self.iv), "big")
        try:
            return self._aead.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise DecryptError(
                f"Initial packet {packet_number} failed authentication") from None


# ---------------------------------------------------------------------- key derivation

@lru_cache(maxsize=None)
def _hkdf_label(label: bytes, length: int) -> bytes:
    """The HkdfLabel of RFC 8446 §7.1 with an empty context (a handful of labels)."""
    full = b"tls13 " + label
    return length.to_bytes(2, "big") + bytes([len(full)]) + full + b"\x00"


def _expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    """HKDF-Expand-Label with an empty context (RFC 8446 §7.1)."""
    return HKDFExpand(hashes.SHA256(), length, _hkdf_label(label, length)).derive(secret)


@lru_cache(maxsize=MAX_KEY_CACHE)
def _derive(version: int, dcid: bytes, server: bool) -> InitialKeys:
    params = _VERSIONS.get(version)
    if params is None:
        raise UnsupportedVersion(f"no Initial keys for QUIC version 0x{version:08x}")
    initial_secret = HKDF.extract(hashes.SHA256(), params.salt, dcid)
    secret = _expand_label(initial_secret, b"server in" if server else b"client in", 32)
    key = _expand_label(secret, params.key_label, 16)
    iv = _expand_label(secret, params.iv_label, 12)
    hp = _expand_label(secret, params.hp_label, 16)
    return InitialKeys(version, dcid, secret, key, iv, hp, AESGCM(key),
                       Cipher(algorithms.AES(hp), modes.ECB()).encryptor())


def initial_keys(version: int, dcid: bytes | memoryview, *, server: bool = False) -> InitialKeys:
    """The Initial keys of one direction for a client-chosen DCID (RFC 9001 §5.2).

    Cached (LRU, :data:`MAX_KEY_CACHE` entries). Raises :class:`UnsupportedVersion` for
    a version not in :data:`SUPPORTED_VERSIONS`.
    """
    return _derive(version, bytes(dcid), server)


# ---------------------------------------------------------------------- header parsing


def _parse_long_header(r: Reader, first_dcid: bytes | None) -> LongHeader | None:
    """Parse the long header at ``r``'s position and move past the whole packet.

    Returns None, consuming nothing useful, at a short-header packet (which runs to the
    end of the datagram) or at a packet whose DCID differs from ``first_dcid`` (RFC 9000
    §12.2: such packets are ignored).
    """
    start = r.pos
    first = r.u8()
    if not first & 0x80:
        return None
    version = r.u32()
    dcid_len = r.u8()
    if version in _VERSIONS and dcid_len > MAX_CID_LEN:
        raise BadValue(f"DCID of {dcid_len} bytes exceeds {MAX_CID_LEN}", offset=r.pos - 1)
    dcid = r.take_bytes(dcid_len)
    if first_dcid is not None and dcid != first_dcid:
        return None
    scid_len = r.u8()
    if version in _VERSIONS and scid_len > MAX_CID_LEN:
        raise BadValue(f"SCID of {scid_len} bytes exceeds {MAX_CID_LEN}", offset=r.pos - 1)
    scid = r.take_bytes(scid_len)

    if version == VERSION_NEGOTIATION:
        # RFC 9000 §17.2.1: a list of 32-bit versions fills the rest of the datagram.
        if r.remaining() % 4:
            raise BadValue("Version Negotiation list is not a multiple of 4 bytes",
                           offset=r.pos)
        r.skip(r.remaining())
        return LongHeader(version, None, dcid, scid, b"", start, r.pos - start, -1)
    params = _VERSIONS.get(version)
    if params is None:
        raise UnsupportedVersion(f"QUIC version 0x{version:08x}", offset=start + 1)

    ptype = params.types[(first >> 4) & 0x03]
    token = b""
    if ptype is PacketType.RETRY:
        # RFC 9000 §17.2.5: Retry Token, then a 16-byte integrity tag, to the end.
        if r.remaining() < _AEAD_TAG_LEN:
            raise Truncated("Retry packet shorter than its integrity tag", offset=r.pos)
        token = r.take_bytes(r.remaining() - _AEAD_TAG_LEN)
        r.skip(_AEAD_TAG_LEN)
        return LongHeader(version, ptype, dcid, scid, token, start, r.pos - start, -1)
    if ptype is PacketType.INITIAL:
        token = r.take_bytes(r.varint())
    length = r.varint()
    pn_offset = r.pos
    if length > r.remaining():
        raise Truncated(f"packet declares {length} bytes, datagram has {r.remaining()}",
                        offset=pn_offset)
    r.skip(length)
    return LongHeader(version, ptype, dcid, scid, token, start, r.pos - start, pn_offset)


def split_datagram(data: bytes | memoryview) -> tuple[LongHeader, ...]:
    """The long-header packets coalesced in one UDP datagram (RFC 9000 §12.2).

    Stops at a short-header packet (or zero padding) and at a packet whose DCID differs
    from the first one's; Retry and Version Negotiation packets run to the end. A
    datagram that starts with a short header yields ``()``; an empty one raises
    :class:`~monitor.errors.Truncated`.
    """
    return tuple(_long_headers(data, None))


def _flat(data: bytes | memoryview) -> bool:
    """``data`` is what the compiled kernels read: bytes or a flat view of bytes."""
    return type(data) is bytes or (isinstance(data, memoryview) and data.format == "B"
                                   and data.ndim == 1 and data.c_contiguous)


def _long_headers(data: bytes | memoryview, err: list[ParseError] | None
                  ) -> list[LongHeader]:
    """The long headers of a datagram as :func:`_walk` finds them; the compiled kernel
    takes the common case (Initial, 0-RTT and Handshake packets of known versions)."""
    if native is not None and _flat(data):
        found: list[LongHeader] | None = native.quic_long_headers(
            data, _TYPES, LongHeader, PacketType.INITIAL, PacketType.RETRY,
            MAX_COALESCED_PACKETS, MAX_CID_LEN)
        if found is not None:
            return found
    headers: list[LongHeader] = []
    _walk(Reader(data), headers, err)
    return headers


def _walk(r: Reader, out: list[LongHeader], err: list[ParseError] | None) -> None:
    """Append the datagram's long headers to ``out``. With ``err``, a parse error after
    at least one good header is stored there instead of raised."""
    if r.eof():
        raise Truncated("empty datagram", offset=0)
    first_dcid: bytes | None = None
    while not r.eof():
        if len(out) >= MAX_COALESCED_PACKETS:
            raise LimitExceeded(f"more than {MAX_COALESCED_PACKETS} coalesced packets",
                                offset=r.pos)
        try:
            hdr = _parse_long_header(r, first_dcid)
        except ParseError as exc:
            if err is None or not out:
                raise
            err.append(exc)
            return
        if hdr is None:
            return
        out.append(hdr)
        first_dcid = hdr.dcid


# ------------------------------------------------------------------ packet protection


def _decode_packet_number(truncated: int, nbits: int, largest: int) -> int:
    """RFC 9000 Appendix A.3."""
    expected = largest + 1
    win = 1 << nbits
    hwin = win // 2
    candidate = (expected & ~(win - 1)) | truncated
    if candidate <= expected - hwin and candidate < (1 << 62) - win:
        return candidate + win
    if candidate > expected + hwin and candidate >= win:
        return candidate - win
    return candidate


def _open_initial(data: bytes | memoryview, hdr: LongHeader, keys: InitialKeys,
                  largest_pn: int) -> InitialPacket:
    """Remove header protection from, decrypt and parse one Initial packet."""
    # Slices of one view: the header, sample and ciphertext are read in place, not copied.
    view = data if isinstance(data, memoryview) else memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    start, pn_offset, end = hdr.offset, hdr.pn_offset, hdr.offset + hdr.size
    # RFC 9001 §5.4.2: the sample starts 4 bytes after the packet number's start.
    sample_at = pn_offset + _MAX_PN_LEN
    if sample_at + _HP_SAMPLE_LEN > end:
        # The error a Reader raises for the first read that overruns the packet.
        at, need = (pn_offset, _MAX_PN_LEN) if sample_at > end else (sample_at, _HP_SAMPLE_LEN)
        raise Truncated(f"need {need} bytes at offset {at}, have {end - at}", offset=at)
    mask = keys.hp_mask(view[sample_at:sample_at + _HP_SAMPLE_LEN])
    first = view[start] ^ (mask[0] & 0x0F)
    pn_len = (first & 0x03) + 1
    pn_end = pn_offset + pn_len
    truncated = (int.from_bytes(view[pn_offset:pn_end], "big")
                 ^ int.from_bytes(mask[1:1 + pn_len], "big"))
    pn_bytes = truncated.to_bytes(pn_len, "big")
    packet_number = _decode_packet_number(truncated, 8 * pn_len, largest_pn)
    aad = bytes((first,)) + view[start + 1:pn_offset] + pn_bytes
    payload = keys.open(packet_number, view[pn_end:end], aad)
    # RFC 9000 §17.2: reserved bits are checked only after both protections are removed.
    if first & 0x0C:
        raise BadValue("reserved long-header bits are set", offset=hdr.offset)
    return InitialPacket(hdr, packet_number, parse_frames(payload))


# --------------------------------------------------------------------- frame parsing

_NONZERO: Final = re.compile(rb"[^\x00]")


def parse_frames(payload: bytes | memoryview) -> tuple[Frame, ...]:
    """Parse the decrypted payload of an Initial packet.

    Only the frames RFC 9000 §12.4 allows in Initial packets are accepted: PADDING, PING,
    ACK, CRYPTO and CONNECTION_CLOSE (0x1c); any other type is a protocol violation and
    raises :class:`~monitor.errors.BadValue`, as does an empty payload.
    """
    if native is not None and type(payload) is bytes:  # the common case, compiled
        fast: tuple[Frame, ...] | None = native.quic_frames(
            payload, PaddingFrame, PingFrame, AckFrame, CryptoFrame, ConnectionCloseFrame,
            MAX_FRAMES_PER_PACKET, MAX_ACK_RANGES)
        if fast is not None:
            return fast
    return _parse_frames_py(payload)


def _parse_frames_py(payload: bytes | memoryview) -> tuple[Frame, ...]:
    """The reference of :func:`parse_frames` (and of its compiled kernel)."""
    buf = payload if isinstance(payload, bytes) else memoryview(payload).cast("B")
    r = Reader(buf)
    if r.eof():
        raise BadValue("packet payload has no frames", offset=0)
    frames: list[Frame] = []
    while not r.eof():
        at = r.pos
        ftype = r.varint()
        if ftype == FrameType.PADDING:
            # RFC 9000 §19.1: each PADDING frame is one zero byte, and clients pad their
            # Initials to 1200 bytes (§14.1) with hundreds of them: skip the run at once.
            found = _NONZERO.search(buf, r.pos)
            run = 1 + (found.start() if found is not None else len(buf)) - r.pos
            r.skip(run - 1)
            if frames and isinstance(frames[-1], PaddingFrame):
                frames[-1] = PaddingFrame(frames[-1].length + run)
                continue
            frame: Frame = PaddingFrame(run)
        elif ftype == FrameType.PING:
            frame = PingFrame()
        elif ftype in (FrameType.ACK, FrameType.ACK_ECN):
            frame = _pull_ack(r, ftype == FrameType.ACK_ECN)
        elif ftype == FrameType.CRYPTO:
            offset = r.varint()
            data = r.take_bytes(r.varint())
            if offset + len(data) > _MAX_STREAM_OFFSET:
                raise BadValue("CRYPTO frame ends beyond 2^62-1", offset=at)
            frame = CryptoFrame(offset, data)
        elif ftype == FrameType.CONNECTION_CLOSE:
            error_code = r.varint()
            frame_type = r.varint()
            frame = ConnectionCloseFrame(error_code, frame_type, r.take_bytes(r.varint()))
        else:
            raise BadValue(f"frame type 0x{ftype:x} is not allowed in an Initial packet",
                           offset=at)
        if len(frames) >= MAX_FRAMES_PER_PACKET:
            raise LimitExceeded(f"more than {MAX_FRAMES_PER_PACKET} frames in a packet",
                                offset=at)
        frames.append(frame)
    return tuple(frames)


def _pull_ack(r: Reader, ecn: bool) -> AckFrame:
    at = r.pos
    largest = r.varint()
    delay = r.varint()
    count = r.varint()
    first_range = r.varint()
    if count > MAX_ACK_RANGES:
        raise LimitExceeded(f"ACK frame with {count} ranges exceeds {MAX_ACK_RANGES}",
                            offset=at)
    # RFC 9000 §19.3.1: a computed packet number below zero is a FRAME_ENCODING_ERROR.
    smallest = largest - first_range
    if smallest < 0:
        raise BadValue("ACK range below packet number 0", offset=at)
    ranges: list[tuple[int, int]] = []
    for _ in range(count):
        gap = r.varint()
        length = r.varint()
        smallest = smallest - gap - 2 - length
        if smallest < 0:
            raise BadValue("ACK range below packet number 0", offset=at)
        ranges.append((gap, length))
    counts = (r.varint(), r.varint(), r.varint()) if ecn else None
    return AckFrame(largest, delay, first_range, tuple(ranges), counts)


# ------------------------------------------------------------------ datagram helpers


def _open_datagram(
    data: bytes | memoryview, open_packet: Callable[[LongHeader], InitialPacket | None]
) -> tuple[list[InitialPacket], ParseError | None]:
    """Open every Initial in a datagram (``open_packet`` may drop one by returning None);
    a failure after a good packet is returned, not raised, so the packets before it
    still count."""
    errors: list[ParseError] = []
    headers = _long_headers(data, errors)
    packets: list[InitialPacket] = []
    for hdr in headers:
        if hdr.packet_type is not PacketType.INITIAL:
            continue  # 0-RTT, Handshake: other keys; Retry, VN: server-sent
        try:
            pkt = open_packet(hdr)
        except ParseError as exc:
            if not packets:
                raise
            return packets, exc
        if pkt is not None:
            packets.append(pkt)
    return packets, (errors[0] if errors else None)


def parse_initial_datagram(data: bytes | memoryview, *,
                           key_dcid: bytes | None = None) -> tuple[InitialPacket, ...]:
    """Decrypt and parse the client Initial packets of one UDP datagram.

    Keys come from the DCID of the datagram's first Initial, or from ``key_dcid`` (the
    DCID of the client's first Initial) when given. Other long-header packets are
    skipped by their length; a short-header packet ends the datagram. Packet numbers
    are decoded as if no earlier packet had been seen.

    Raises :class:`DecryptError`, :class:`UnsupportedVersion` or another
    :class:`~monitor.errors.ParseError`, for the first packet that fails.
    """
    def open_packet(hdr: LongHeader) -> InitialPacket | None:
        keys = initial_keys(hdr.version, key_dcid if key_dcid is not None else hdr.dcid)
        return _open_initial(data, hdr, keys, -1)

    packets, error = _open_datagram(data, open_packet)
    if error is not None:
        raise error
    return tuple(packets)


# ----------------------------------------------------------------- CRYPTO reassembly


class _CryptoStream:
    """CRYPTO data by offset; the first copy of each byte wins."""

    __slots__ = ("_buf", "_ranges")

    def __init__(self) -> None:
        self._buf = bytearray()
        #: Sorted, disjoint, non-adjacent [start, end) ranges held in ``_buf``.
        self._ranges: list[tuple[int, int]] = []

    def add(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        if end > MAX_CRYPTO_BYTES:
            raise LimitExceeded(f"CRYPTO data up to offset {end} exceeds MAX_CRYPTO_BYTES")
        if not data:
            return
        if len(self._buf) < end:
            self._buf.extend(bytes(end - len(self._buf)))
        # Copy only into the gaps: bytes already held are never overwritten.
        pos = offset
        for s, e in self._ranges:
            if e <= pos:
                continue
            if s >= end:
                break
            if s > pos:
                self._buf[pos:s] = data[pos - offset:s - offset]
            pos = max(pos, e)
            if pos >= end:
                break
        if pos < end:
            self._buf[pos:end] = data[pos - offset:]
        # Merge [offset, end) into the range list.
        merged: list[tuple[int, int]] = []
        new_s, new_e = offset, end
        for s, e in self._ranges:
            if e < new_s or s > new_e:
                merged.append((s, e))
            else:
                new_s, new_e = min(s, new_s), max(e, new_e)
        merged.append((new_s, new_e))
        merged.sort()
        if len(merged) > MAX_CRYPTO_RANGES:
            raise LimitExceeded(f"CRYPTO data in more than {MAX_CRYPTO_RANGES} pieces")
        self._ranges = merged

    def contiguous(self) -> int:
        """Bytes available without a gap from offset 0."""
        if self._ranges and self._ranges[0][0] == 0:
            return self._ranges[0][1]
        return 0

    def prefix(self, n: int) -> bytes:
        return bytes(self._buf[:n])


class QuicInitialAssembler:
    """Recovers the ClientHello of one QUIC connection from client-to-server datagrams.

    Sans-I/O and per flow: :meth:`feed` each UDP payload the client sends, in capture
    order. CRYPTO frames are joined by offset across Initial packets and datagrams
    (out-of-order, duplicated and retransmitted data tolerated; the first copy of a byte
    wins) up to :data:`MAX_CRYPTO_BYTES`. Keys are derived from the DCID of the client's
    first Initial and kept when the client switches to the server's connection ID. If a
    later Initial only decrypts with keys from its own DCID (a new attempt after a Retry)
    or has another version (a new attempt after Version Negotiation), reassembly
    restarts under the new keys, at most :data:`MAX_RESTARTS` times. Late copies of an
    abandoned attempt's Initials are ignored.

    After the hello is returned the flow's facts are known: later datagrams are ignored.
    """

    __slots__ = ("_version", "_dcid", "_scid", "_keys", "_largest_pn", "_crypto",
                 "_retired", "_handshake", "_result")

    def __init__(self) -> None:
        self._version: int | None = None
        self._dcid: bytes | None = None
        self._scid: bytes | None = None
        self._keys: InitialKeys | None = None
        self._largest_pn = -1
        self._crypto = _CryptoStream()
        #: (version, key DCID) of abandoned connection attempts (at most MAX_RESTARTS).
        self._retired: list[tuple[int, bytes]] = []
        self._handshake: bytes | None = None
        self._result: QuicClientHello | None = None

    @property
    def version(self) -> int | None:
        """QUIC version of the current connection attempt (None before an Initial)."""
        return self._version

    @property
    def dcid(self) -> bytes | None:
        """The DCID the current Initial keys derive from."""
        return self._dcid

    @property
    def scid(self) -> bytes | None:
        """The client's Source Connection ID."""
        return self._scid

    @property
    def buffered(self) -> int:
        """Bytes of CRYPTO data held for the current connection attempt."""
        return len(self._crypto._buf)

    @property
    def done(self) -> bool:
        """True once the complete ClientHello handshake message has been assembled."""
        return self._handshake is not None

    @property
    def result(self) -> QuicClientHello | None:
        """What :meth:`feed` returned, once it returned something."""
        return self._result

    def feed(self, datagram: bytes | memoryview) -> QuicClientHello | None:
        """Take one client-to-server UDP payload; return the ClientHello once complete.

        Returns None while more data is needed, for datagrams without Initial packets and
        after the result has been returned. Raises :class:`DecryptError`,
        :class:`UnsupportedVersion` or another :class:`~monitor.errors.ParseError`
        (including the TLS parser's) for a bad datagram; good Initial packets before the
        bad one in the same datagram are still used.
        """
        if self._handshake is not None:
            return None
        handshake = self.feed_handshake(datagram)
        if handshake is None:
            return None
        from monitor.parsers.tls import parse_client_hello

        client_hello = parse_client_hello(handshake)
        if self._version is None or self._dcid is None or self._scid is None:
            raise BadValue("assembler completed without connection state")  # unreachable
        self._result = QuicClientHello(self._version, self._dcid, self._scid, handshake,
                                       client_hello)
        return self._result

    def feed_handshake(self, datagram: bytes | memoryview) -> bytes | None:
        """Like :meth:`feed`, but return the raw handshake message (type 1, uint24
        length, body) without parsing it as a ClientHello."""
        if self._handshake is not None:
            return None
        packets, error = _open_datagram(datagram, lambda hdr: self._open(datagram, hdr))
        for pkt in packets:
            for frame in pkt.crypto_frames:
                self._crypto.add(frame.offset, frame.data)
        handshake = self._complete()
        if handshake is not None:
            self._handshake = handshake
            return handshake
        if error is not None:
            raise error
        return None

    def _open(self, datagram: bytes | memoryview, hdr: LongHeader) -> InitialPacket | None:
        keys = self._keys
        if keys is None:
            keys = initial_keys(hdr.version, hdr.dcid)
            pkt = _open_initial(datagram, hdr, keys, -1)
            self._start(pkt, keys)
            return pkt
        if hdr.version == keys.version:
            try:
                pkt = _open_initial(datagram, hdr, keys, self._largest_pn)
            except DecryptError:
                if hdr.dcid == keys.dcid:
                    raise
            else:
                self._largest_pn = max(self._largest_pn, pkt.packet_number)
                return pkt
        # A new connection attempt: after a Retry (new DCID, same version) or a Version
        # Negotiation (new version; the DCID may be kept or changed). Its keys come from
        # its own DCID, or from the previous one under the new version.
        candidates = [initial_keys(hdr.version, hdr.dcid)]
        if hdr.version != keys.version and hdr.dcid != keys.dcid:
            candidates.append(initial_keys(hdr.version, keys.dcid))
        for i, new_keys in enumerate(candidates):
            try:
                pkt = _open_initial(datagram, hdr, new_keys, -1)
            except DecryptError:
                if i == len(candidates) - 1:
                    raise
                continue
            if (new_keys.version, new_keys.dcid) in self._retired:
                return None  # a late copy from an abandoned attempt
            if len(self._retired) >= MAX_RESTARTS:
                raise LimitExceeded(f"more than {MAX_RESTARTS} connection restarts",
                                    offset=hdr.offset)
            self._retired.append((keys.version, keys.dcid))
            self._start(pkt, new_keys)
            return pkt
        return None  # not reached: the last candidate either returned or raised

    def _start(self, pkt: InitialPacket, keys: InitialKeys) -> None:
        """(Re)start reassembly for the connection attempt ``pkt`` belongs to."""
        self._version = pkt.version
        self._dcid = keys.dcid
        self._scid = pkt.scid
        self._keys = keys
        self._largest_pn = pkt.packet_number
        self._crypto = _CryptoStream()

    def _complete(self) -> bytes | None:
        n = self._crypto.contiguous()
        if n < _HANDSHAKE_HEADER_LEN:
            return None
        r = Reader(self._crypto.prefix(_HANDSHAKE_HEADER_LEN))
        msg_type = r.u8()
        length = r.u24()
        if msg_type != _TLS_CLIENT_HELLO:
            raise BadValue(f"first CRYPTO message has type {msg_type}, not ClientHello",
                           offset=0)
        total = _HANDSHAKE_HEADER_LEN + length
        if total > MAX_CRYPTO_BYTES:
            raise LimitExceeded(f"ClientHello of {length} bytes exceeds MAX_CRYPTO_BYTES",
                                offset=1)
        if n < total:
            return None
        return self._crypto.prefix(total)


# ---------------------------------------------------------------------- Google QUIC


class GQuicClientHello(msgspec.Struct, frozen=True):
    """The unencrypted CHLO of a Google QUIC (``Q0xx``) client."""

    #: Version tag, e.g. ``"Q025"``.
    version: str
    #: The 64-bit connection ID.
    cid: bytes
    #: The SNI tag, lower-cased; None if absent.
    sni: str | None
    #: The UAID (user agent) tag; None if absent.
    user_agent: str | None
    #: All tag/value pairs in wire order.
    tags: tuple[tuple[bytes, bytes], ...]


_GQUIC_MIN: Final = 24
_GQUIC_MAX: Final = 43  # Q044+ use the IETF invariant header; Q050+ encrypt the hello
_GQUIC_HASH_LEN: Final = 12  # FNV-1a-128 truncated to 96 bits (null encryption)
_GQUIC_CRYPTO_STREAM: Final = 1


def _ascii(value: bytes, what: str) -> str:
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        raise BadValue(f"{what} is not ASCII") from None


def may_be_gquic(data: bytes | memoryview) -> bool:
    """False when :func:`parse_gquic_client_hello` would refuse ``data`` at its first
    bytes: public flags without the version bit, with a reset or an IETF long header's
    bit, or without an 8-byte connection ID, or no ``Q`` version tag after it. Most UDP
    that is not QUIC ends here, without the cost of an exception."""
    return len(data) >= 13 and data[0] & 0x83 == 0x01 and data[0] & 0x08 != 0 \
        and data[9] == 0x51


def parse_gquic_client_hello(data: bytes | memoryview) -> GQuicClientHello:
    """Parse a Google QUIC client datagram carrying the CHLO (versions Q024-Q043).

    These versions use the legacy public header (version flag set, 8-byte connection
    ID), a 12-byte null-encryption hash, a private-flags byte before Q034, and a STREAM
    frame on stream 1 whose data is the CHLO tag/value message; integers in frame
    headers are little-endian before Q039. Only a CHLO complete in one packet (the
    normal case; clients pad it to fill the packet) is read.

    Raises :class:`UnsupportedVersion` for other versions and
    :class:`~monitor.errors.ParseError` subclasses for anything malformed.
    """
    r = Reader(data)
    flags = r.u8()
    if flags & 0x80:
        raise UnsupportedVersion("IETF-style long header, not a legacy gQUIC packet")
    if not flags & 0x01 or flags & 0x02:
        raise BadValue("gQUIC packet without version flag (or a reset)", offset=0)
    cid_bits = flags & 0x0C
    if cid_bits not in (0x08, 0x0C):
        raise BadValue("gQUIC packet without an 8-byte connection ID", offset=0)
    cid = r.take_bytes(8)
    tag = r.take_bytes(4)
    if tag[:1] != b"Q" or not tag[1:].isdigit():
        raise UnsupportedVersion(f"gQUIC version tag {tag!r}", offset=9)
    number = int(tag[1:])
    if not _GQUIC_MIN <= number <= _GQUIC_MAX:
        raise UnsupportedVersion(f"gQUIC version {tag.decode()}", offset=9)
    # Before Q033 the two bits 0x0c give the CID length (0b11 = 8 bytes); from Q033 0x08
    # alone means 8 bytes and 0x04 a server-only diversification nonce.
    if (number < 33) != (cid_bits == 0x0C):
        raise BadValue("gQUIC public flags do not match the version", offset=0)
    r.skip((1, 2, 4, 6)[(flags >> 4) & 0x03])  # packet number
    r.skip(_GQUIC_HASH_LEN)
    if number < 34:
        private = r.u8()
        if private & 0x02:
            raise BadValue("gQUIC FEC group in a CHLO packet", offset=r.pos - 1)
    order: Literal["little", "big"] = "little" if number < 39 else "big"

    ftype = r.u8()
    if not ftype & 0x80:
        raise BadValue(f"gQUIC frame 0x{ftype:02x} before the CHLO stream frame",
                       offset=r.pos - 1)
    stream_id = int.from_bytes(r.take((ftype & 0x03) + 1), order)
    off_len = (ftype >> 2) & 0x07
    offset = int.from_bytes(r.take(off_len + 1), order) if off_len else 0
    if stream_id != _GQUIC_CRYPTO_STREAM or offset != 0:
        raise BadValue("gQUIC STREAM frame is not the start of the crypto stream",
                       offset=r.pos)
    if ftype & 0x20:
        body = Reader(r.take(int.from_bytes(r.take(2), order)))
    else:
        body = Reader(r.rest())
    return _pull_chlo(body, tag.decode(), cid)


def _pull_chlo(r: Reader, version: str, cid: bytes) -> GQuicClientHello:
    """A crypto handshake message (tag, count, entries, values; little-endian)."""
    if r.take_bytes(4) != b"CHLO":
        raise BadValue("gQUIC handshake message is not a CHLO", offset=r.pos - 4)
    count = int.from_bytes(r.take(2), "little")
    r.skip(2)
    if count > MAX_GQUIC_TAGS:
        raise LimitExceeded(f"CHLO with {count} tags exceeds {MAX_GQUIC_TAGS}")
    entries: list[tuple[bytes, int]] = []
    for _ in range(count):
        entries.append((r.take_bytes(4), int.from_bytes(r.take(4), "little")))
    tags: list[tuple[bytes, bytes]] = []
    prev = 0
    for name, end in entries:
        if end < prev:
            raise BadValue("CHLO tag offsets are not ascending", offset=r.pos)
        tags.append((name, r.take_bytes(end - prev)))
        prev = end
    values = dict(tags)
    sni_raw = values.get(b"SNI\x00")
    uaid = values.get(b"UAID")
    sni = _ascii(sni_raw, "CHLO SNI").lower().rstrip(".") if sni_raw is not None else None
    user_agent = _ascii(uaid, "CHLO UAID") if uaid is not None else None
    return GQuicClientHello(version, cid, sni, user_agent, tuple(tags))
