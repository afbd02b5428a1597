"""The TLS ClientHello: parsing, record-layer joining and JA3/JA4 fingerprints.

This module owns everything avmon reads from a client's first TLS message.
:func:`parse_client_hello` takes one complete Handshake message (what a QUIC CRYPTO
stream carries, or what the TLS record layer carries once its fragments are joined) and
returns a :class:`ClientHello`. :func:`maybe_read_client_hello` takes the first bytes a
client sent on a TCP connection, joins the handshake records (a ClientHello may be split
over several records and TCP segments; post-quantum key shares make it large) and returns
``None`` until the whole message is there. Fingerprints follow Salesforce's JA3 and
FoxIO's JA4 definitions; see :func:`ja3` and :func:`ja4`.

Only :class:`~monitor.errors.ParseError` subclasses escape on malformed input.
"""

from __future__ import annotations

import functools
import hashlib
import re
import struct
from enum import IntEnum
from typing import Final, TypeAlias

import msgspec

from monitor.errors import BadValue, LimitExceeded, TrailingData, Truncated
from monitor.kernels import native
from monitor.parsers.idn import a_label
from monitor.wire import Reader

__all__ = [
    "MAX_CLIENT_HELLO_LEN",
    "MAX_CLIENT_HELLO_RECORDS",
    "MAX_CLIENT_HELLO_STREAM_LEN",
    "MAX_EXTENSIONS",
    "MAX_SNI_LEN",
    "ClientHello",
    "ContentType",
    "ExtensionType",
    "HandshakeType",
    "fingerprints",
    "is_grease",
    "ja3",
    "ja3_hash",
    "ja4",
    "ja4_r",
    "maybe_read_client_hello",
    "maybe_read_client_hello_bytes",
    "parse_client_hello",
]


class ContentType(IntEnum):
    """TLS record content types (RFC 8446 §5.1)."""

    CHANGE_CIPHER_SPEC = 20
    ALERT = 21
    HANDSHAKE = 22
    APPLICATION_DATA = 23


class HandshakeType(IntEnum):
    """Handshake message types (RFC 8446 §4)."""

    CLIENT_HELLO = 1
    SERVER_HELLO = 2


class ExtensionType(IntEnum):
    """Extension code points this module interprets (IANA TLS ExtensionType Values)."""

    SERVER_NAME = 0x0000  # RFC 6066 §3
    SUPPORTED_GROUPS = 0x000A  # RFC 8422 §5.1.1, RFC 8446 §4.2.7
    EC_POINT_FORMATS = 0x000B  # RFC 8422 §5.1.2
    SIGNATURE_ALGORITHMS = 0x000D  # RFC 8446 §4.2.3
    ALPN = 0x0010  # RFC 7301 §3.1
    PRE_SHARED_KEY = 0x0029  # RFC 8446 §4.2.11
    EARLY_DATA = 0x002A  # RFC 8446 §4.2.10
    SUPPORTED_VERSIONS = 0x002B  # RFC 8446 §4.2.1
    KEY_SHARE = 0x0033  # RFC 8446 §4.2.8
    QUIC_TRANSPORT_PARAMETERS = 0x0039  # RFC 9001 §8.2
    ENCRYPTED_CLIENT_HELLO = 0xFE0D  # draft-ietf-tls-esni (RFC 9849)


#: A ClientHello body may not exceed one full TLS record of plaintext (2^14, RFC 8446
#: §5.1). Real ones are 200-600 bytes, 1.2-2 kB with post-quantum key shares
#: (X25519MLKEM768 alone adds 1216 bytes), so this is generous and bounds memory.
MAX_CLIENT_HELLO_LEN: Final = 2**14

#: Records one ClientHello may be split into. Splitting the hello into tiny records is a
#: known DPI-evasion trick that servers must accept (RFC 8446 §5.1 lets handshake
#: messages be fragmented freely), down to one byte per record: so as many records as a
#: hello can have bytes. Memory stays bounded by the stream prefix the caller keeps.
MAX_CLIENT_HELLO_RECORDS: Final = MAX_CLIENT_HELLO_LEN + 4

_RECORD_HEADER_LEN: Final = 5
_HANDSHAKE_HEADER_LEN: Final = 4
#: The first record header (type, major and minor version, length) and the handshake
#: header after it (msg_type, uint24 length as 8 + 16 bits).
_FIRST_HEADERS: Final = struct.Struct("!BBxHBBH")
_CONTENT_HANDSHAKE: Final = int(ContentType.HANDSHAKE)
_HANDSHAKE_CLIENT_HELLO: Final = int(HandshakeType.CLIENT_HELLO)
#: Record-layer bytes that can precede the end of an acceptable ClientHello; a stream
#: prefix this long always decides :func:`maybe_read_client_hello` (result or error).
MAX_CLIENT_HELLO_STREAM_LEN: Final = (
    MAX_CLIENT_HELLO_LEN + _HANDSHAKE_HEADER_LEN + _RECORD_HEADER_LEN * MAX_CLIENT_HELLO_RECORDS
)

#: IANA has assigned about 60 extension types; real hellos carry 10-25 plus a few GREASE.
MAX_EXTENSIONS: Final = 128

#: Text form of a 255-octet DNS name without its trailing dot (RFC 1035 §2.3.4).
MAX_SNI_LEN: Final = 253

#: TLSPlaintext.length limit (RFC 8446 §5.1: larger is a record_overflow).
_MAX_RECORD_LEN: Final = 2**14
_MAX_SESSION_ID_LEN: Final = 32  # RFC 8446 §4.1.2 legacy_session_id<0..32>
_NAME_TYPE_HOST_NAME: Final = 0  # RFC 6066 §3

# Letters, digits, hyphen and underscore labels (underscore: seen in real SNI such as
# service names), dot-separated, optional single trailing dot. Anything else in a
# host_name (spaces, control bytes, non-ASCII, empty labels) is rejected.
_HOSTNAME_RE: Final = re.compile(rb"[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*\.?")

_JA4_VERSIONS: Final[dict[int, str]] = {
    0x0304: "13",
    0x0303: "12",
    0x0302: "11",
    0x0301: "10",
    0x0300: "s3",
    0x0002: "s2",
    0xFEFF: "d1",
    0xFEFD: "d2",
    0xFEFC: "d3",
}
_JA4_TRANSPORTS: Final = frozenset({"t", "q", "d"})
_JA4_EMPTY_HASH: Final = "000000000000"
_ASCII_ALNUM: Final = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


#: The RFC 8701 GREASE code points 0x0A0A, 0x1A1A, ..., 0xFAFA.
_GREASE: Final = frozenset(0x0A0A + 0x1010 * i for i in range(16))


_EXT_HEADER: Final = struct.Struct("!HH")
_EXT_SERVER_NAME: Final = int(ExtensionType.SERVER_NAME)
_EXT_ALPN: Final = int(ExtensionType.ALPN)
_EXT_SUPPORTED_VERSIONS: Final = int(ExtensionType.SUPPORTED_VERSIONS)
_EXT_SUPPORTED_GROUPS: Final = int(ExtensionType.SUPPORTED_GROUPS)
_EXT_EC_POINT_FORMATS: Final = int(ExtensionType.EC_POINT_FORMATS)
_EXT_SIGNATURE_ALGORITHMS: Final = int(ExtensionType.SIGNATURE_ALGORITHMS)
_EXT_KEY_SHARE: Final = int(ExtensionType.KEY_SHARE)
_EXT_PSK: Final = int(ExtensionType.PRE_SHARED_KEY)
_EXT_EARLY_DATA: Final = int(ExtensionType.EARLY_DATA)
_EXT_ECH: Final = int(ExtensionType.ENCRYPTED_CLIENT_HELLO)
#: Extensions whose body is interpreted (the rest are kept as bytes).
_PARSED_EXTENSIONS: Final = frozenset((
    _EXT_SERVER_NAME, _EXT_ALPN, _EXT_SUPPORTED_VERSIONS, _EXT_SUPPORTED_GROUPS,
    _EXT_EC_POINT_FORMATS, _EXT_SIGNATURE_ALGORITHMS, _EXT_KEY_SHARE, _EXT_PSK,
    _EXT_EARLY_DATA, _EXT_ECH))


def is_grease(value: int) -> bool:
    """True for the RFC 8701 GREASE code points 0x0A0A, 0x1A1A, ..., 0xFAFA."""
    return value in _GREASE


class ClientHello(msgspec.Struct, frozen=True):
    """A parsed ClientHello (RFC 8446 §4.1.2; TLS 1.0-1.2 hellos too).

    Lists keep wire order and GREASE values; fingerprints drop GREASE themselves.
    """

    #: legacy_version (``client_version`` before TLS 1.3), e.g. 0x0303.
    legacy_version: int
    #: The 32-byte client random.
    random: bytes
    #: legacy_session_id (0-32 bytes).
    session_id: bytes
    #: Cipher suite code points, in wire order.
    cipher_suites: tuple[int, ...]
    #: legacy_compression_methods, in wire order.
    compression_methods: tuple[int, ...]
    #: Extension types in wire order (empty for a hello without extensions).
    extensions: tuple[int, ...]
    #: host_name from server_name, lower-cased, trailing dot removed; None if absent.
    #: With ECH this is the outer (public) name.
    sni: str | None
    #: ALPN protocol names in wire order. Each byte is one code point (ISO-8859-1), so a
    #: value maps back to its exact wire bytes with ``.encode("latin-1")``.
    alpn: tuple[str, ...]
    #: supported_versions if present, else ``(legacy_version,)``.
    versions: tuple[int, ...]
    #: supported_groups (named groups), in wire order.
    supported_groups: tuple[int, ...]
    #: ec_point_formats, in wire order.
    ec_point_formats: tuple[int, ...]
    #: signature_algorithms (SignatureScheme values), in wire order.
    signature_algorithms: tuple[int, ...]
    #: Named groups of the key_share entries, in wire order.
    key_share_groups: tuple[int, ...]
    #: True when an encrypted_client_hello (0xfe0d) extension is present: the real server
    #: name is encrypted and ``sni`` is the outer one.
    ech: bool
    #: True when a pre_shared_key extension is present (session resumption).
    psk: bool
    #: True when the early_data extension is present (0-RTT data follows).
    early_data: bool
    #: Extensions not interpreted above (GREASE, quic_transport_parameters, padding, ...)
    #: as (type, raw extension_data), in wire order.
    other_extensions: tuple[tuple[int, bytes], ...]

    @property
    def is_quic(self) -> bool:
        """True when the hello carries quic_transport_parameters (RFC 9001 §8.2)."""
        return ExtensionType.QUIC_TRANSPORT_PARAMETERS in self.extensions

    @property
    def ja3(self) -> str:
        """The JA3 string; see :func:`ja3`."""
        return _fingerprints(self)[0]

    @property
    def ja3_hash(self) -> str:
        """MD5 of the JA3 string, lower-case hex; see :func:`ja3_hash`."""
        return _fingerprints(self)[1]

    @property
    def ja4(self) -> str:
        """JA4 with the transport inferred from the hello: ``q`` when it carries
        quic_transport_parameters, else ``t`` (as FoxIO's reference and s2n-tls do).
        Call :func:`ja4` to state the transport explicitly."""
        return ja4(self, "q" if self.is_quic else "t")


def parse_client_hello(data: bytes | memoryview) -> ClientHello:
    """Parse one TLS Handshake message of type client_hello (RFC 8446 §4.1.2).

    The compiled kernel takes well-formed hellos (when it was built); anything it
    declines goes to :func:`_parse_client_hello_py`, the reference, which it matches
    exactly and which decides every error. See that function for what is malformed.
    """
    if native is not None and isinstance(data, bytes):
        hello: ClientHello | None = native.client_hello(data, ClientHello)
        if hello is not None:
            return hello
    return _parse_client_hello_py(data)


def _parse_client_hello_py(data: bytes | memoryview) -> ClientHello:
    """Parse one TLS Handshake message of type client_hello (RFC 8446 §4.1.2).

    ``data`` is exactly the message: msg_type (1), a uint24 length and the body, with
    nothing after it. TLS 1.0-1.2 hellos that end after the compression methods (no
    extensions) are accepted; GREASE values (RFC 8701) and unknown extensions are kept.

    Malformed means: a length that overruns its container or is not consumed exactly, a
    body longer than :data:`MAX_CLIENT_HELLO_LEN`, more than :data:`MAX_EXTENSIONS`
    extensions, a repeated extension type, pre_shared_key not last, a list of 2-byte
    values with an odd length, an empty cipher-suite or compression list, a session id
    over 32 bytes, an empty ALPN protocol name, or a host_name that is not an ASCII
    host name of at most :data:`MAX_SNI_LEN` characters.

    Raises :class:`~monitor.errors.Truncated`, :class:`~monitor.errors.TrailingData`,
    :class:`~monitor.errors.LimitExceeded` (reason ``limit``) or
    :class:`~monitor.errors.BadValue`; never any other exception.
    """
    r = Reader(data)
    msg_type = r.u8()
    if msg_type != HandshakeType.CLIENT_HELLO:
        raise BadValue(f"handshake type {msg_type} is not client_hello", offset=0)
    length = r.u24()
    if length > MAX_CLIENT_HELLO_LEN:
        raise LimitExceeded(
            f"ClientHello of {length} bytes exceeds MAX_CLIENT_HELLO_LEN", offset=1
        )
    if length > r.remaining():
        raise Truncated(f"ClientHello declares {length} bytes, have {r.remaining()}", offset=1)
    if length < r.remaining():
        raise TrailingData(f"{r.remaining() - length} bytes after the ClientHello",
                           offset=_HANDSHAKE_HEADER_LEN + length)
    with r.restrict(length):
        return _pull_client_hello_body(r)


def _pull_u16_list(r: Reader, what: str) -> tuple[int, ...]:
    """The rest of the current block as big-endian uint16 values."""
    n = r.remaining()
    if n % 2:
        raise BadValue(f"{what} has odd length {n}", offset=r.pos)
    return struct.unpack(f"!{n // 2}H", r.take(n))


def _pull_client_hello_body(r: Reader) -> ClientHello:
    legacy_version = r.u16()
    random = r.take_bytes(32)
    with r.block(1) as n:
        if n > _MAX_SESSION_ID_LEN:
            raise BadValue(f"legacy_session_id of {n} bytes (max 32)", offset=r.pos - 1)
        session_id = r.take_bytes(n)
    with r.block(2) as n:
        if n == 0:
            raise BadValue("empty cipher_suites", offset=r.pos)
        cipher_suites = _pull_u16_list(r, "cipher_suites")
    with r.block(1) as n:
        if n == 0:
            raise BadValue("empty legacy_compression_methods", offset=r.pos)
        compression_methods = tuple(r.take(n))

    ext_types: list[int] = []
    seen: set[int] = set()
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    supported_versions: tuple[int, ...] | None = None
    groups: tuple[int, ...] = ()
    point_formats: tuple[int, ...] = ()
    sig_algs: tuple[int, ...] = ()
    key_share_groups: tuple[int, ...] = ()
    ech = psk = early_data = False
    other: list[tuple[int, bytes]] = []

    # TLS <= 1.2 hellos may end here (RFC 5246 §7.4.1.2: extensions are optional).
    if not r.eof():
        with r.block(2) as total:
            base = r.pos
            # The extensions are walked by offset (this loop runs for every hello, ~20
            # times each); each known body is checked with a Reader of its own.
            buf = r.take_bytes(total)
            pos = 0
            while pos < total:
                if len(ext_types) >= MAX_EXTENSIONS:
                    raise LimitExceeded(f"more than {MAX_EXTENSIONS} extensions",
                                        offset=base + pos)
                if total - pos < 4:
                    raise Truncated(f"extension header needs 4 bytes at offset {base + pos}, "
                                    f"have {total - pos}", offset=base + pos)
                ext_type, ext_len = _EXT_HEADER.unpack_from(buf, pos)
                if ext_type in seen and ext_type not in _GREASE:
                    # RFC 8446 §4.2: at most one extension of each type.
                    raise BadValue(f"duplicate extension 0x{ext_type:04x}", offset=base + pos)
                if psk:
                    raise BadValue("pre_shared_key is not the last extension",
                                   offset=base + pos)
                start = pos + 4
                pos = start + ext_len
                if pos > total:
                    raise Truncated(f"block of {ext_len} bytes at offset {base + start} "
                                    "overruns its container", offset=base + start)
                ext_types.append(ext_type)
                seen.add(ext_type)
                if ext_type not in _PARSED_EXTENSIONS:
                    other.append((ext_type, buf[start:pos]))
                    continue
                if ext_type == _EXT_PSK:
                    psk = True
                    continue
                if ext_type == _EXT_EARLY_DATA:
                    early_data = True
                    continue
                if ext_type == _EXT_ECH:
                    ech = True
                    continue
                e = Reader(buf[start:pos])
                if ext_type == _EXT_SERVER_NAME:
                    sni = _pull_server_name(e)
                elif ext_type == _EXT_ALPN:
                    alpn = _pull_alpn(e)
                elif ext_type == _EXT_SUPPORTED_VERSIONS:
                    with e.block(1):
                        supported_versions = _pull_u16_list(e, "supported_versions")
                elif ext_type == _EXT_SUPPORTED_GROUPS:
                    with e.block(2):
                        groups = _pull_u16_list(e, "supported_groups")
                elif ext_type == _EXT_EC_POINT_FORMATS:
                    with e.block(1) as n:
                        point_formats = tuple(e.take(n))
                elif ext_type == _EXT_SIGNATURE_ALGORITHMS:
                    with e.block(2):
                        sig_algs = _pull_u16_list(e, "signature_algorithms")
                else:  # key_share
                    key_share_groups = _pull_key_share(e)
                if not e.eof():
                    raise TrailingData(f"{e.remaining()} bytes left unread in extension "
                                       f"0x{ext_type:04x}", offset=base + start + e.pos)

    return ClientHello(
        legacy_version=legacy_version,
        random=random,
        session_id=session_id,
        cipher_suites=cipher_suites,
        compression_methods=compression_methods,
        extensions=tuple(ext_types),
        sni=sni,
        alpn=alpn,
        versions=supported_versions if supported_versions is not None else (legacy_version,),
        supported_groups=groups,
        ec_point_formats=point_formats,
        signature_algorithms=sig_algs,
        key_share_groups=key_share_groups,
        ech=ech,
        psk=psk,
        early_data=early_data,
        other_extensions=tuple(other),
    )


def _pull_server_name(r: Reader) -> str | None:
    """server_name extension_data (RFC 6066 §3); the first host_name wins."""
    if r.eof():
        # Empty extension_data is the server's acknowledgement form; tolerate it.
        return None
    sni: str | None = None
    with r.block(2) as n:
        if n == 0:
            raise BadValue("empty server_name_list", offset=r.pos)
        while not r.eof():
            name_type = r.u8()
            with r.block(2) as name_len:
                name_offset = r.pos
                name = r.take_bytes(name_len)
            if name_type == _NAME_TYPE_HOST_NAME and sni is None:
                sni = _decode_host_name(name, name_offset)
    return sni


def _decode_host_name(name: bytes, offset: int) -> str:
    if not name:
        raise BadValue("empty host_name", offset=offset)
    if _HOSTNAME_RE.fullmatch(name) is None:
        converted = None if name.isascii() else a_label(name)
        if converted is None or _HOSTNAME_RE.fullmatch(converted.encode()) is None:
            raise BadValue("host_name is not a host name", offset=offset)
        name = converted.encode()
    try:
        text = name.decode("ascii")
    except UnicodeDecodeError as exc:  # unreachable after the regex; kept as the boundary
        raise BadValue("host_name is not ASCII", offset=offset) from exc
    text = text.lower().removesuffix(".")
    if len(text) > MAX_SNI_LEN:
        raise BadValue(f"host_name of {len(text)} characters exceeds {MAX_SNI_LEN}",
                       offset=offset)
    return text


def _pull_alpn(r: Reader) -> tuple[str, ...]:
    """ProtocolNameList (RFC 7301 §3.1); empty names are forbidden."""
    names: list[str] = []
    with r.block(2):
        while not r.eof():
            with r.block(1) as n:
                if n == 0:
                    raise BadValue("empty ALPN protocol name", offset=r.pos)
                names.append(r.take_bytes(n).decode("latin-1"))
    return tuple(names)


def _pull_key_share(r: Reader) -> tuple[int, ...]:
    """KeyShareClientHello (RFC 8446 §4.2.8): the groups, key bytes skipped."""
    groups: list[int] = []
    with r.block(2):
        while not r.eof():
            groups.append(r.u16())
            with r.block(2) as n:
                r.skip(n)
    return tuple(groups)


# --- record layer ----------------------------------------------------------------------


def maybe_read_client_hello_bytes(stream_prefix: bytes | memoryview) -> tuple[bytes, int] | None:
    """Join the TLS handshake records at the start of a client's TCP stream.

    Returns ``(message, consumed)``: the complete ClientHello Handshake message (header
    included, ready for :func:`parse_client_hello`) and the number of stream bytes up to
    and including its last byte. Returns ``None`` while more bytes are needed. The answer
    for a prefix never changes as more bytes are appended, so a caller may retry after
    each segment; bytes after the message are ignored.

    Malformed means: a record that is not a handshake record (RFC 8446 §5.1 forbids
    interleaving other types with a fragmented handshake message), a record version
    whose major byte is not 3, an empty or over-2^14 record, a first handshake message
    that is not a client_hello (all :class:`~monitor.errors.BadValue`), or a hello over
    :data:`MAX_CLIENT_HELLO_LEN` bytes or :data:`MAX_CLIENT_HELLO_RECORDS` records
    (:class:`~monitor.errors.LimitExceeded`). Errors are raised as soon as the bytes
    that show them are present; :class:`~monitor.errors.Truncated` is never raised.
    """
    view = memoryview(stream_prefix).cast("B")
    total = len(view)
    # The common cases, decided from the first record and handshake headers (the loop
    # below gives the same answers, a byte at a time for the headers): one handshake
    # record that holds the whole hello, and the start of one (what has arrived ends
    # inside the first record, before the end of the hello) with valid headers.
    if total >= _RECORD_HEADER_LEN + _HANDSHAKE_HEADER_LEN:
        content_type, major, rec_len, msg_type, length_hi, length_lo = \
            _FIRST_HEADERS.unpack_from(view)
        if content_type == _CONTENT_HANDSHAKE and major == 3 \
                and msg_type == _HANDSHAKE_CLIENT_HELLO and rec_len <= _MAX_RECORD_LEN:
            # Both cases below need the first record to reach byte 9, so bytes 5-8 are
            # its handshake header, as read above.
            record_end = _RECORD_HEADER_LEN + rec_len
            length = (length_hi << 16) | length_lo
            end = _RECORD_HEADER_LEN + _HANDSHAKE_HEADER_LEN + length
            if end <= min(record_end, total):
                return bytes(view[_RECORD_HEADER_LEN:end]), end
            if total < min(record_end, end) and length <= MAX_CLIENT_HELLO_LEN:
                return None
    message = bytearray()
    need: int | None = None  # full message length once the handshake header is known
    pos = 0
    records = 0
    while True:
        if pos >= total:
            return None
        if view[pos] != ContentType.HANDSHAKE:
            raise BadValue(f"record content type {view[pos]} is not handshake", offset=pos)
        if pos + 1 >= total:
            return None
        if view[pos + 1] != 3:
            raise BadValue(f"record version major {view[pos + 1]} is not 3", offset=pos + 1)
        if pos + _RECORD_HEADER_LEN > total:
            return None
        records += 1
        if records > MAX_CLIENT_HELLO_RECORDS:
            raise LimitExceeded(f"ClientHello spans more than {MAX_CLIENT_HELLO_RECORDS} records",
                                offset=pos)
        rec_len = (view[pos + 3] << 8) | view[pos + 4]
        if rec_len == 0:
            raise BadValue("zero-length handshake record", offset=pos + 3)
        if rec_len > _MAX_RECORD_LEN:
            raise BadValue(f"record of {rec_len} bytes exceeds 2^14", offset=pos + 3)
        body = pos + _RECORD_HEADER_LEN
        end = min(body + rec_len, total)
        i = body
        while i < end:
            if need is None:
                message.append(view[i])
                i += 1
                if len(message) == 1 and message[0] != HandshakeType.CLIENT_HELLO:
                    raise BadValue(f"handshake type {message[0]} is not client_hello",
                                   offset=i - 1)
                if len(message) == _HANDSHAKE_HEADER_LEN:
                    length = (message[1] << 16) | (message[2] << 8) | message[3]
                    if length > MAX_CLIENT_HELLO_LEN:
                        raise LimitExceeded(
                            f"ClientHello of {length} bytes exceeds MAX_CLIENT_HELLO_LEN",
                            offset=i - 3,
                        )
                    need = _HANDSHAKE_HEADER_LEN + length
            else:
                take = min(end - i, need - len(message))
                message += view[i : i + take]
                i += take
            if need is not None and len(message) == need:
                return bytes(message), i
        if end < body + rec_len:
            return None
        pos = end


def maybe_read_client_hello(stream_prefix: bytes | memoryview) -> ClientHello | None:
    """The ClientHello at the start of a client's TCP stream, or ``None`` if more bytes
    are needed.

    Joins records with :func:`maybe_read_client_hello_bytes`, then parses with
    :func:`parse_client_hello`; raises what either raises (only ParseError subclasses).
    """
    joined = maybe_read_client_hello_bytes(stream_prefix)
    if joined is None:
        return None
    return parse_client_hello(joined[0])


# --- fingerprints ----------------------------------------------------------------------


def _dash(values: tuple[int, ...] | list[int]) -> str:
    return "-".join(str(v) for v in values)


def ja3(ch: ClientHello) -> str:
    """The JA3 string (Salesforce JA3): ``version,ciphers,extensions,groups,formats``.

    Decimal values joined by ``-``; GREASE removed from ciphers, extensions and groups;
    an absent list is an empty field. The version is legacy_version.
    """
    return _fingerprints(ch)[0]


def ja3_hash(ch: ClientHello) -> str:
    """MD5 of :func:`ja3`, lower-case hex."""
    return _fingerprints(ch)[1]


#: A hello's fingerprints: the JA3 string, its MD5, and JA4 without its first character
#: (the transport, the only part of any of them that depends on it).
_Fingerprints: TypeAlias = tuple[str, str, str]

def fingerprints(ch: ClientHello, transport: str = "t") -> tuple[str, str, str]:
    """The JA3 string, its MD5 and the JA4 of ``ch`` at once (one cache lookup where
    :func:`ja3`, :func:`ja3_hash` and :func:`ja4` take one each)."""
    if transport not in _JA4_TRANSPORTS:
        raise ValueError(f"transport must be one of t, q, d; got {transport!r}")
    ja3_text, ja3_md5, ja4_rest = _fingerprints(ch)
    return ja3_text, ja3_md5, transport + ja4_rest


def _fingerprints(ch: ClientHello) -> _Fingerprints:
    """All fingerprints of ``ch``, computed together (cached by the fields they read)."""
    return _fingerprints_of(ch.legacy_version, ch.cipher_suites, ch.extensions,
                            ch.supported_groups, ch.ec_point_formats, ch.versions,
                            ch.alpn[:1], ch.signature_algorithms)


@functools.lru_cache(maxsize=4096)
def _fingerprints_of(legacy_version: int, cipher_suites: tuple[int, ...],
                     extensions: tuple[int, ...], groups: tuple[int, ...],
                     point_formats: tuple[int, ...], versions: tuple[int, ...],
                     alpn: tuple[str, ...], signature_algorithms: tuple[int, ...]
                     ) -> _Fingerprints:
    """The fingerprints from the fields they depend on (one client stack sends the same
    ones again)."""
    ja3_text = ",".join((
        str(legacy_version),
        _dash([c for c in cipher_suites if c not in _GREASE]),
        _dash([e for e in extensions if e not in _GREASE]),
        _dash([g for g in groups if g not in _GREASE]),
        _dash(point_formats),
    ))
    shape = ClientHello(legacy_version=legacy_version, random=b"", session_id=b"",
                        cipher_suites=cipher_suites, compression_methods=(0,),
                        extensions=extensions, sni=None, alpn=alpn, versions=versions,
                        supported_groups=(), ec_point_formats=(),
                        signature_algorithms=signature_algorithms, key_share_groups=(),
                        ech=False, psk=False, early_data=False, other_extensions=())
    a, b, c = _ja4_parts(shape, "t")
    return (ja3_text, hashlib.md5(ja3_text.encode("ascii"), usedforsecurity=False).hexdigest(),
            f"{a[1:]}_{_hash12(b)}_{_hash12(c)}")


def _ja4_version(ch: ClientHello) -> str:
    if ExtensionType.SUPPORTED_VERSIONS in ch.extensions:
        real = [v for v in ch.versions if not is_grease(v)]
        version = max(real) if real else -1
    else:
        version = ch.legacy_version
    return _JA4_VERSIONS.get(version, "00")


def _ja4_alpn(ch: ClientHello) -> str:
    if not ch.alpn or not ch.alpn[0]:
        return "00"
    first = ch.alpn[0].encode("latin-1")
    a, z = first[0], first[-1]
    if a in _ASCII_ALNUM and z in _ASCII_ALNUM:
        return chr(a) + chr(z)
    # Not alphanumeric: first and last characters of the value's hex representation.
    return f"{a >> 4:x}{z & 0x0F:x}"


def _ja4_parts(ch: ClientHello, transport: str) -> tuple[str, str, str]:
    if transport not in _JA4_TRANSPORTS:
        raise ValueError(f"transport must be one of t, q, d; got {transport!r}")
    ciphers = sorted(f"{c:04x}" for c in ch.cipher_suites if c not in _GREASE)
    exts = [e for e in ch.extensions if e not in _GREASE]
    sni = "d" if ExtensionType.SERVER_NAME in exts else "i"
    part_a = (f"{transport}{_ja4_version(ch)}{sni}{min(len(ciphers), 99):02d}"
              f"{min(len(exts), 99):02d}{_ja4_alpn(ch)}")
    hashed_exts = sorted(f"{e:04x}" for e in exts
                         if e not in (ExtensionType.SERVER_NAME, ExtensionType.ALPN))
    sigs = [f"{s:04x}" for s in ch.signature_algorithms if s not in _GREASE]
    part_c = ",".join(hashed_exts)
    if sigs:
        part_c += "_" + ",".join(sigs)
    return part_a, ",".join(ciphers), part_c


def ja4(ch: ClientHello, transport: str = "t") -> str:
    """The JA4 fingerprint (FoxIO JA4, technical_details/JA4.md) ``a_b_c``.

    ``transport`` is ``t`` (TLS over TCP), ``q`` (QUIC) or ``d`` (DTLS); anything else is a
    programming error (ValueError). JA4_a: transport, highest non-GREASE supported
    version (else legacy_version; unknown is ``00``), ``d``/``i`` for SNI present or
    not, non-GREASE cipher and extension counts (capped at 99), and the first and last
    characters of the first ALPN value (``00`` if none; hex nibbles when either is not
    ASCII alphanumeric). JA4_b: sha256 of the sorted cipher hex list, 12 hex characters.
    JA4_c: the same over the sorted extension list without SNI and ALPN, then ``_`` and
    the signature algorithms in wire order (no ``_`` when there are none). An empty list
    hashes to ``000000000000``. GREASE is ignored everywhere.
    """
    return fingerprints(ch, transport)[2]


@functools.lru_cache(maxsize=4096)
def _hash12(text: str) -> str:
    """12 hex characters of SHA-256 (the same lists recur: one client stack, many hellos)."""
    if not text:
        return _JA4_EMPTY_HASH
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:12]


def ja4_r(ch: ClientHello, transport: str = "t") -> str:
    """The raw (unhashed) JA4 form, ``JA4_r``: the lists that :func:`ja4` hashes."""
    a, b, c = _ja4_parts(ch, transport)
    return f"{a}_{b}_{c}"
