"""Real protocol bytes built without a network, for the demo capture, the benchmark and tests.

Everything that carries a name avmon must find is produced by the real implementations, in
memory: TLS ClientHellos and whole TLS 1.3 handshakes come from OpenSSL through Python's
:mod:`ssl` (two ``SSLObject`` ends joined by ``MemoryBIO`` pairs), QUIC conversations from
aioquic (a client and a server :class:`~aioquic.quic.connection.QuicConnection` passing
datagrams to each other), DNS messages from dnspython. What surrounds those bytes is built
here with :mod:`struct`, fast enough to frame a million packets a minute: Ethernet (with an
optional 802.1Q tag), IPv4/IPv6, TCP/UDP/ICMP with correct lengths and checksums, a
:class:`TcpSession` that emits a handshake, MSS-segmented data with ACKs and a FIN
teardown with consistent sequence numbers, and a streaming classic-pcap writer.

Two things are synthesised rather than produced by a library, and are marked as such:

- Post-quantum hybrid key shares. The OpenSSL this runs on (3.0) has no ML-KEM and
  Python's ssl module cannot set a group list, so :func:`client_hello` with a hybrid group
  (``groups="X25519MLKEM768:X25519"``) inserts a key share of the right size for that group
  (and the group id into supported_groups) into the real ClientHello, the way Chrome's and
  Firefox's hellos grow past one MSS. The share's contents are random bytes.
- QUIC per-flow connection IDs. :meth:`QuicConversation.rebind` gives a recorded aioquic
  conversation fresh connection IDs so that one expensive handshake can be replayed as many
  distinct flows: Initial packets are decrypted and re-encrypted with keys derived from the
  new destination ID (so tshark and avmon still decrypt them); Handshake and 1-RTT packets
  get the new IDs in their headers but keep their original protected payloads.

OpenSSL and aioquic draw randoms and key shares from the OS, so their bytes differ from run
to run while names, sizes and packet counts stay the same (the server certificate is
Ed25519, whose signatures have a fixed length). Pass ``seed`` to :func:`client_hello` to
replace a hello's random, session id and key shares with seeded bytes.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import ipaddress
import os
import random
import ssl
import struct
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, BinaryIO, Final

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

if TYPE_CHECKING:
    from aioquic.quic.configuration import QuicConfiguration

__all__ = [
    "DEFAULT_ALPN",
    "GATEWAY_MAC",
    "HTTP_CONNECT_OK",
    "HYBRID_GROUPS",
    "QUIC_V1",
    "QUIC_V2",
    "EtherType",
    "Frame",
    "IpProto",
    "NetPath",
    "PcapWriter",
    "QuicConversation",
    "TcpFlags",
    "TcpSession",
    "TlsPair",
    "arp_frame",
    "client_hello",
    "dns_query",
    "dns_response",
    "dns_tcp",
    "http_connect_request",
    "inet_checksum",
    "mac_for",
    "ntp_packet",
    "ones_sum",
    "quic_conversation",
    "quic_initial_datagrams",
    "rewrite_client_hello",
    "tls_app_records",
    "udp_exchange",
]

Frame = tuple[int, bytes]
"""A timestamp in nanoseconds since the epoch and the frame's bytes."""

# --------------------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------------------

DEFAULT_ALPN: Final = ("h2", "http/1.1")

#: Hybrid post-quantum groups: name -> (IANA codepoint, client key share length).
#: X25519MLKEM768 = ML-KEM-768 encapsulation key (1184) + X25519 (32), per
#: draft-ietf-tls-ecdhe-mlkem; the Kyber draft codepoint Chrome shipped first has the same size.
HYBRID_GROUPS: Final[dict[str, tuple[int, int]]] = {
    "X25519MLKEM768": (0x11EC, 1216),
    "SecP256r1MLKEM768": (0x11EB, 1249),
    "SecP384r1MLKEM1024": (0x11ED, 1665),
    "X25519Kyber768Draft00": (0x6399, 1216),
}

#: Classical group names accepted in ``groups`` -> the name OpenSSL's set_ecdh_curve takes.
_CLASSICAL_GROUPS: Final[dict[str, str]] = {
    "x25519": "X25519",
    "x448": "X448",
    "p-256": "prime256v1",
    "prime256v1": "prime256v1",
    "secp256r1": "prime256v1",
    "p-384": "secp384r1",
    "secp384r1": "secp384r1",
    "p-521": "secp521r1",
    "secp521r1": "secp521r1",
}

_EXT_SUPPORTED_GROUPS: Final = 10
_EXT_PADDING: Final = 21
_EXT_KEY_SHARE: Final = 51
_TLS_MAX_FRAGMENT: Final = 16384  # RFC 8446 §5.1: 2^14 bytes of plaintext per record
_HANDSHAKE_CLIENT_HELLO: Final = 1


def _split_groups(groups: str | None) -> tuple[list[tuple[int, int]], str | None]:
    """Split an OpenSSL-style group list into hybrid shares to add and one classical curve."""
    if not groups:
        return [], None
    hybrids: list[tuple[int, int]] = []
    classical: list[str] = []
    for raw in groups.split(":"):
        name = raw.strip()
        if not name:
            continue
        if name in HYBRID_GROUPS:
            hybrids.append(HYBRID_GROUPS[name])
        elif name.lower() in _CLASSICAL_GROUPS:
            classical.append(_CLASSICAL_GROUPS[name.lower()])
        else:
            raise ValueError(f"unknown TLS group {name!r}")
    # ssl can restrict OpenSSL to one curve but cannot set a list; with several classical
    # groups named, OpenSSL's default list (which contains all of them) is kept.
    return hybrids, classical[0] if len(classical) == 1 else None


def _client_context(alpn: Sequence[str], curve: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if curve is not None:
        ctx.set_ecdh_curve(curve)
    return ctx


@functools.cache
def _server_context() -> ssl.SSLContext:
    """A TLS server context with a throwaway self-signed Ed25519 certificate."""
    key, cert = _ed25519_identity()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_alpn_protocols(["h2", "http/1.1", "h3"])
    with tempfile.TemporaryDirectory() as tmp:
        cert_path = os.path.join(tmp, "cert.pem")
        key_path = os.path.join(tmp, "key.pem")
        FsPath(cert_path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        FsPath(key_path).write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        ctx.load_cert_chain(cert_path, key_path)
    return ctx


@functools.cache
def _ed25519_identity() -> tuple[ed25519.Ed25519PrivateKey, x509.Certificate]:
    """One Ed25519 key and self-signed certificate shared by every synthetic server.

    Ed25519 signatures have a fixed length, so server flights have the same size every run.
    """
    import datetime

    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "avmon-synth.invalid")])
    start = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("avmon-synth.invalid")]), critical=False
        )
        .sign(key, None)
    )
    return key, cert


def _pump(obj: ssl.SSLObject) -> bool:
    """Advance a handshake; True when it is complete."""
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        return False
    return True


@dataclass(slots=True)
class _Hello:
    """A ClientHello split into the fields the rewriter touches (RFC 8446 §4.1.2)."""

    legacy_version: bytes
    random: bytes
    session_id: bytes
    cipher_suites: bytes  # with its 2-byte length
    compression: bytes  # with its 1-byte length
    extensions: list[tuple[int, bytes]]


def _hello_from_records(records: bytes) -> _Hello:
    """Parse OpenSSL's own ClientHello output (trusted input; raises ValueError if odd)."""
    handshake = bytearray()
    pos = 0
    while pos < len(records):
        ctype, _, length = struct.unpack_from(">BHH", records, pos)
        if ctype != 22:
            raise ValueError("not a TLS handshake record")
        handshake += records[pos + 5 : pos + 5 + length]
        pos += 5 + length
    if handshake[0] != _HANDSHAKE_CLIENT_HELLO:
        raise ValueError("not a ClientHello")
    body = bytes(handshake[4 : 4 + int.from_bytes(handshake[1:4], "big")])
    p = 34
    sid = body[p + 1 : p + 1 + body[p]]
    p += 1 + body[p]
    cs_len = int.from_bytes(body[p : p + 2], "big")
    cipher_suites = body[p : p + 2 + cs_len]
    p += 2 + cs_len
    compression = body[p : p + 1 + body[p]]
    p += 1 + body[p]
    ext_end = p + 2 + int.from_bytes(body[p : p + 2], "big")
    p += 2
    extensions: list[tuple[int, bytes]] = []
    while p < ext_end:
        etype, elen = struct.unpack_from(">HH", body, p)
        extensions.append((etype, body[p + 4 : p + 4 + elen]))
        p += 4 + elen
    return _Hello(body[0:2], body[2:34], sid, cipher_suites, compression, extensions)


def _hello_to_records(hello: _Hello) -> bytes:
    exts = b"".join(struct.pack(">HH", t, len(v)) + v for t, v in hello.extensions)
    body = (
        hello.legacy_version
        + hello.random
        + bytes([len(hello.session_id)])
        + hello.session_id
        + hello.cipher_suites
        + hello.compression
        + struct.pack(">H", len(exts))
        + exts
    )
    handshake = bytes([_HANDSHAKE_CLIENT_HELLO]) + len(body).to_bytes(3, "big") + body
    out = bytearray()
    for i in range(0, len(handshake), _TLS_MAX_FRAGMENT):
        chunk = handshake[i : i + _TLS_MAX_FRAGMENT]
        out += struct.pack(">BHH", 22, 0x0301, len(chunk)) + chunk
    return bytes(out)


def _key_shares(data: bytes) -> list[tuple[int, bytes]]:
    shares: list[tuple[int, bytes]] = []
    p = 2
    while p < len(data):
        group, klen = struct.unpack_from(">HH", data, p)
        shares.append((group, data[p + 4 : p + 4 + klen]))
        p += 4 + klen
    return shares


def _pack_key_shares(shares: Sequence[tuple[int, bytes]]) -> bytes:
    inner = b"".join(struct.pack(">HH", g, len(k)) + k for g, k in shares)
    return struct.pack(">H", len(inner)) + inner


def _rewrite_hello(
    records: bytes, hybrids: Sequence[tuple[int, int]], seed: int | str | None
) -> bytes:
    """Add hybrid key shares and/or replace random values with seeded ones."""
    hello = _hello_from_records(records)
    rng = random.Random(seed) if seed is not None else random.Random(os.urandom(16))
    if seed is not None:
        hello.random = rng.randbytes(32)
        hello.session_id = rng.randbytes(len(hello.session_id))
    new_exts: list[tuple[int, bytes]] = []
    for etype, value in hello.extensions:
        if etype == _EXT_PADDING and hybrids:
            continue  # the hello is past 512 bytes now; padding only serves short hellos
        if etype == _EXT_SUPPORTED_GROUPS and hybrids:
            ids = b"".join(struct.pack(">H", g) for g, _ in hybrids)
            listed = value[2:]
            value = struct.pack(">H", len(ids) + len(listed)) + ids + listed
        elif etype == _EXT_KEY_SHARE:
            shares = _key_shares(value)
            if seed is not None:
                shares = [(g, rng.randbytes(len(k))) for g, k in shares]
            value = _pack_key_shares([(g, rng.randbytes(n)) for g, n in hybrids] + shares)
        new_exts.append((etype, value))
    hello.extensions = new_exts
    return _hello_to_records(hello)


def rewrite_client_hello(
    records: bytes, *, groups: str | None = None, seed: int | str | None = None
) -> bytes:
    """Rewrite ClientHello records made by :func:`client_hello` or :class:`TlsPair`.

    Hybrid groups in ``groups`` are added as key shares (classical ones are ignored here);
    ``seed`` replaces the random, session id and key shares with seeded bytes.
    """
    hybrids, _ = _split_groups(groups)
    return _rewrite_hello(records, hybrids, seed)


def client_hello(
    sni: str | None,
    *,
    alpn: Sequence[str] = DEFAULT_ALPN,
    groups: str | None = None,
    seed: int | str | None = None,
) -> bytes:
    """Return the TLS record(s) carrying a ClientHello produced by OpenSSL in memory.

    ``sni`` None sends no server_name extension (as ECH or IP-literal clients do). ``groups``
    is an OpenSSL-style list such as ``"X25519MLKEM768:X25519"``: a single classical group
    restricts OpenSSL to that curve; hybrid post-quantum groups (:data:`HYBRID_GROUPS`) are
    added as key shares of their real sizes, which takes the hello to 1.5-2 KB, past one
    Ethernet MSS. ``seed`` makes the output byte-for-byte reproducible.
    """
    hybrids, curve = _split_groups(groups)
    ctx = _client_context(alpn, curve)
    outgoing = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=sni)
    _pump(obj)
    records = outgoing.read()
    if hybrids or seed is not None:
        records = _rewrite_hello(records, hybrids, seed)
    return records


class TlsPair:
    """A TLS 1.3 client and server joined in memory; the handshake runs in the constructor.

    The wire bytes of each flight are kept as attributes; after the handshake,
    :meth:`client_write` and :meth:`server_write` return encrypted application-data records.
    """

    def __init__(
        self,
        sni: str | None,
        *,
        alpn: Sequence[str] = DEFAULT_ALPN,
        groups: str | None = None,
        seed: int | str | None = None,
    ) -> None:
        hybrids, curve = _split_groups(groups)
        self._c_in, self._c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._s_in, self._s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._client = _client_context(alpn, curve).wrap_bio(
            self._c_in, self._c_out, server_hostname=sni
        )
        self._server = _server_context().wrap_bio(self._s_in, self._s_out, server_side=True)
        _pump(self._client)
        hello = self._c_out.read()
        self._s_in.write(hello)
        _pump(self._server)
        #: ServerHello, ChangeCipherSpec and the encrypted flight up to the server Finished.
        self.server_flight: bytes = self._s_out.read()
        self._c_in.write(self.server_flight)
        if not _pump(self._client):
            raise RuntimeError("in-memory TLS handshake did not complete on the client")
        #: The client's ChangeCipherSpec and Finished.
        self.client_finished: bytes = self._c_out.read()
        self._s_in.write(self.client_finished)
        if not _pump(self._server):
            raise RuntimeError("in-memory TLS handshake did not complete on the server")
        #: NewSessionTicket records the server sends after the handshake.
        self.server_tickets: bytes = self._s_out.read()
        #: The ClientHello as it goes on the wire (rewritten when ``groups``/``seed`` ask).
        self.client_hello: bytes = (
            _rewrite_hello(hello, hybrids, seed) if hybrids or seed is not None else hello
        )
        #: The ALPN protocol the server chose.
        self.alpn: str | None = self._client.selected_alpn_protocol()

    def client_write(self, data: bytes) -> bytes:
        """Encrypt ``data`` from the client; returns application-data records."""
        self._client.write(data)
        return self._c_out.read()

    def server_write(self, data: bytes) -> bytes:
        """Encrypt ``data`` from the server; returns application-data records."""
        self._server.write(data)
        return self._s_out.read()


def tls_app_records(length: int, filler: bytes) -> bytes:
    """TLS 1.3 application-data records carrying ``length`` bytes, bodies cut from ``filler``.

    For bulk traffic where real encryption would cost time and say nothing new: each record
    is 16 KiB of ciphertext-looking bytes plus a 17-byte overhead, as TLS 1.3 sends them.
    ``filler`` must be at least 16401 bytes long.
    """
    out = bytearray()
    pos = 0
    while length > 0:
        n = min(length, _TLS_MAX_FRAGMENT) + 17  # content type byte + 16-byte AEAD tag
        start = pos % (len(filler) - n + 1)
        out += struct.pack(">BHH", 23, 0x0303, n) + filler[start : start + n]
        pos += 4099
        length -= n - 17
    return bytes(out)


def http_connect_request(host: str, port: int = 443, *, user_agent: str = "") -> bytes:
    """An HTTP/1.1 CONNECT request head as clients send it to an explicit proxy."""
    lines = [f"CONNECT {host}:{port} HTTP/1.1", f"Host: {host}:{port}"]
    if user_agent:
        lines.append(f"User-Agent: {user_agent}")
    lines += ["Proxy-Connection: Keep-Alive", "", ""]
    return "\r\n".join(lines).encode("ascii")


HTTP_CONNECT_OK: Final = b"HTTP/1.1 200 Connection established\r\n\r\n"

# --------------------------------------------------------------------------------------
# QUIC
# --------------------------------------------------------------------------------------

QUIC_V1: Final = 0x00000001
QUIC_V2: Final = 0x6B3343CF

_QUIC_CLIENT_ADDR: Final = ("192.0.2.10", 50000)
_QUIC_SERVER_ADDR: Final = ("198.51.100.20", 443)
_QUIC_CID_LEN: Final = 8  # aioquic's default connection_id_length
_QUIC_MAX_ROUNDS: Final = 64  # loop guard for the in-memory exchange


def _quic_config(
    sni: str,
    *,
    is_client: bool,
    version: int,
    alpn: Sequence[str],
    large: bool,
    max_datagram_size: int,
) -> QuicConfiguration:
    from aioquic.quic.configuration import QuicConfiguration

    versions = [version] + [v for v in (QUIC_V1, QUIC_V2) if v != version]
    cfg = QuicConfiguration(
        is_client=is_client,
        alpn_protocols=list(alpn),
        max_datagram_size=max_datagram_size,
        supported_versions=versions if not is_client else [version],
        quantum_readiness_test=large,
    )
    if is_client:
        cfg.server_name = sni
        cfg.verify_mode = ssl.CERT_NONE
    else:
        key, cert = _ed25519_identity()
        cfg.certificate = cert
        cfg.private_key = key
    return cfg


def quic_initial_datagrams(
    sni: str,
    *,
    version: int = QUIC_V1,
    max_datagram_size: int = 1200,
    alpn: Sequence[str] = ("h3",),
    large: bool = False,
) -> list[bytes]:
    """Return the first flight of a QUIC client (its Initial datagrams) from aioquic.

    ``version`` is :data:`QUIC_V1` or :data:`QUIC_V2`. ``large`` sets aioquic's
    quantum-readiness test (a 1200-byte transport parameter), so the ClientHello spans two
    Initial packets, as post-quantum hellos do. Connection IDs and key shares are random.
    """
    from aioquic.quic.connection import QuicConnection

    cfg = _quic_config(
        sni,
        is_client=True,
        version=version,
        alpn=alpn,
        large=large,
        max_datagram_size=max_datagram_size,
    )
    conn = QuicConnection(configuration=cfg)
    conn.connect(_QUIC_SERVER_ADDR, now=0.0)
    return [data for data, _ in conn.datagrams_to_send(now=0.0)]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode a QUIC variable-length integer (RFC 9000 §16); returns (value, next pos)."""
    first = data[pos]
    size = 1 << (first >> 6)
    value = first & 0x3F
    for b in data[pos + 1 : pos + size]:
        value = (value << 8) | b
    return value, pos + size


def _long_header_cids(data: bytes) -> tuple[bytes, bytes]:
    """(destination, source) connection IDs of a long-header packet (RFC 9000 §17.2)."""
    dlen = data[5]
    slen = data[6 + dlen]
    return data[6 : 6 + dlen], data[7 + dlen : 7 + dlen + slen]


def _is_initial(first: int, version: int) -> bool:
    ptype = (first & 0x30) >> 4
    return ptype == (1 if version == QUIC_V2 else 0)  # RFC 9369 §3.2 renumbers the types


@dataclass(frozen=True, slots=True)
class _QuicPacket:
    from_client: bool
    datagram: int  # index of the datagram this packet is coalesced into
    initial: bool
    #: For Initial packets the unprotected header (through the packet number) and the
    #: plaintext payload; for the rest, the packet bytes as sent.
    header: bytes
    payload: bytes
    packet_number: int
    #: Where connection IDs sit in ``header``: (offset, cid).
    cids: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True, slots=True)
class QuicConversation:
    """A recorded aioquic client/server conversation that can be replayed with new IDs."""

    sni: str
    version: int
    #: (from_client, datagram) in the order they were sent.
    datagrams: tuple[tuple[bool, bytes], ...]
    #: How many leading client datagrams carry the ClientHello.
    hello_datagrams: int
    original_dcid: bytes
    client_cid: bytes
    server_cid: bytes
    _packets: tuple[_QuicPacket, ...] = field(repr=False, default=())

    def rebind(self, rng: random.Random) -> list[tuple[bool, bytes]]:
        """Return the conversation with fresh connection IDs drawn from ``rng``.

        See :meth:`rebind_to`.
        """
        return self.rebind_to(
            rng.randbytes(len(self.original_dcid)),
            rng.randbytes(len(self.client_cid)),
            rng.randbytes(len(self.server_cid)),
        )

    def rebind_to(
        self, original_dcid: bytes, client_cid: bytes, server_cid: bytes
    ) -> list[tuple[bool, bytes]]:
        """Return the conversation with the given connection IDs (each of the old length).

        Initial packets are re-encrypted with keys from the new original destination ID
        (and the client's initial_source_connection_id transport parameter is updated when it
        lies wholly inside one packet); other packets get the new IDs in their headers only.
        """
        from aioquic.quic.crypto import CryptoPair

        mapping = {
            self.original_dcid: original_dcid,
            self.client_cid: client_cid,
            self.server_cid: server_cid,
        }
        new_dcid = original_dcid
        client_keys, server_keys = CryptoPair(), CryptoPair()
        client_keys.setup_initial(new_dcid, is_client=True, version=self.version)
        server_keys.setup_initial(new_dcid, is_client=False, version=self.version)
        parts: list[list[bytes]] = [[] for _ in self.datagrams]
        for pkt in self._packets:
            header = bytearray(pkt.header)
            for off, cid in pkt.cids:
                header[off : off + len(cid)] = mapping.get(cid, cid)
            if pkt.initial:
                payload = pkt.payload
                if pkt.from_client:
                    payload = payload.replace(self.client_cid, mapping[self.client_cid])
                keys = client_keys if pkt.from_client else server_keys
                parts[pkt.datagram].append(
                    keys.encrypt_packet(bytes(header), payload, pkt.packet_number)
                )
            else:
                parts[pkt.datagram].append(bytes(header))
        return [(fc, b"".join(p)) for (fc, _), p in zip(self.datagrams, parts, strict=True)]


def _dissect_datagrams(
    datagrams: Sequence[tuple[bool, bytes]], version: int, original_dcid: bytes
) -> tuple[_QuicPacket, ...]:
    from aioquic.quic.crypto import CryptoPair

    as_server, as_client = CryptoPair(), CryptoPair()
    as_server.setup_initial(original_dcid, is_client=False, version=version)
    as_client.setup_initial(original_dcid, is_client=True, version=version)
    packets: list[_QuicPacket] = []
    for index, (from_client, data) in enumerate(datagrams):
        pos = 0
        while pos < len(data):
            first = data[pos]
            if not first & 0x80:  # short header: the rest of the datagram
                cid = data[pos + 1 : pos + 1 + _QUIC_CID_LEN]
                packets.append(
                    _QuicPacket(from_client, index, False, data[pos:], b"", 0, ((1, cid),))
                )
                break
            p = pos + 5
            dlen = data[p]
            dcid = data[p + 1 : p + 1 + dlen]
            p += 1 + dlen
            slen = data[p]
            scid = data[p + 1 : p + 1 + slen]
            p += 1 + slen
            cids = ((6, dcid), (7 + dlen, scid))
            initial = _is_initial(first, version)
            if initial:
                tlen, p = _varint(data, p)
                p += tlen
            length, p = _varint(data, p)
            end = p + length
            raw = data[pos:end]
            if initial:
                keys = as_server if from_client else as_client
                header, payload, pn = keys.decrypt_packet(raw, p - pos, 0)
                packets.append(_QuicPacket(from_client, index, True, header, payload, pn, cids))
            else:
                packets.append(_QuicPacket(from_client, index, False, raw, b"", 0, cids))
            pos = end
    return tuple(packets)


def quic_conversation(
    sni: str,
    *,
    version: int = QUIC_V1,
    large: bool = False,
    alpn: Sequence[str] = ("h3",),
    request: bytes = b"",
    response_size: int = 0,
) -> QuicConversation:
    """Run an aioquic client and server against each other in memory and record the datagrams.

    After the handshake the client sends ``request`` on a bidirectional stream and the server
    answers with ``response_size`` bytes; the client then closes the connection.
    """
    from aioquic.quic.connection import QuicConnection

    client = QuicConnection(
        configuration=_quic_config(
            sni, is_client=True, version=version, alpn=alpn, large=large, max_datagram_size=1200
        )
    )
    server_cfg = _quic_config(
        sni, is_client=False, version=version, alpn=alpn, large=False, max_datagram_size=1200
    )
    server: QuicConnection | None = None
    now = 1.0
    client.connect(_QUIC_SERVER_ADDR, now=now)
    log: list[tuple[bool, bytes]] = []

    def run() -> None:
        nonlocal server, now
        for _ in range(_QUIC_MAX_ROUNDS):
            moved = False
            for data, _ in client.datagrams_to_send(now=now):
                moved = True
                log.append((True, data))
                if server is None:
                    server = QuicConnection(
                        configuration=server_cfg,
                        original_destination_connection_id=_long_header_cids(data)[0],
                    )
                server.receive_datagram(data, _QUIC_CLIENT_ADDR, now=now)
            now += 0.001
            if server is not None:
                for data, _ in server.datagrams_to_send(now=now):
                    moved = True
                    log.append((False, data))
                    client.receive_datagram(data, _QUIC_SERVER_ADDR, now=now)
            now += 0.001
            if not moved:
                return

    run()
    if server is None:
        raise RuntimeError("aioquic client sent nothing")
    if request or response_size:
        stream_id = client.get_next_available_stream_id()
        client.send_stream_data(stream_id, request, end_stream=True)
        run()
        server.send_stream_data(stream_id, os.urandom(response_size), end_stream=True)
        run()
    client.close(error_code=0)
    run()
    hello_datagrams = next((i for i, (fc, _) in enumerate(log) if not fc), len(log))
    original_dcid, client_cid = _long_header_cids(log[0][1])
    server_cid = _long_header_cids(next(d for fc, d in log if not fc))[1]
    return QuicConversation(
        sni=sni,
        version=version,
        datagrams=tuple(log),
        hello_datagrams=hello_datagrams,
        original_dcid=original_dcid,
        client_cid=client_cid,
        server_cid=server_cid,
        _packets=_dissect_datagrams(log, version, original_dcid),
    )


# --------------------------------------------------------------------------------------
# DNS
# --------------------------------------------------------------------------------------


def dns_query(qname: str, rdtype: str = "A", *, qid: int = 0, edns: bool = False) -> bytes:
    """A recursive DNS query in wire format (RFC 1035 §4.1), built by dnspython."""
    msg = dns.message.make_query(qname, rdtype, use_edns=0 if edns else False)
    msg.id = qid
    return msg.to_wire()


def dns_response(
    qname: str,
    rdtype: str = "A",
    *,
    qid: int = 0,
    cnames: Sequence[str] = (),
    addresses: Sequence[str] = (),
    ttl: int = 300,
    cname_ttl: int | None = None,
    rcode: int = 0,
) -> bytes:
    """A recursive resolver's answer: ``qname`` CNAME cnames[0] ... CNAME cnames[-1], then
    A/AAAA records for ``addresses`` on the last name of the chain (RFC 1034 §3.6.2).
    """
    query = dns.message.make_query(qname, rdtype, use_edns=False)
    query.id = qid
    resp = dns.message.make_response(query)
    resp.flags |= dns.flags.RA
    resp.set_rcode(dns.rcode.Rcode.make(rcode))
    chain = [dns.name.from_text(n) for n in (qname, *cnames)]
    for owner, target in zip(chain, chain[1:], strict=False):
        resp.answer.append(
            dns.rrset.from_text(
                owner,
                cname_ttl if cname_ttl is not None else ttl,
                "IN",
                "CNAME",
                target.to_text(),
            )
        )
    if addresses:
        by_type: dict[str, list[str]] = {}
        for addr in addresses:
            kind = "AAAA" if ipaddress.ip_address(addr).version == 6 else "A"
            by_type.setdefault(kind, []).append(addr)
        for kind, addrs in by_type.items():
            resp.answer.append(dns.rrset.from_text_list(chain[-1], ttl, "IN", kind, addrs))
    return resp.to_wire()


def dns_tcp(message: bytes) -> bytes:
    """Frame a DNS message for TCP with its two-byte length (RFC 1035 §4.2.2)."""
    return struct.pack(">H", len(message)) + message


# --------------------------------------------------------------------------------------
# Other payloads
# --------------------------------------------------------------------------------------

_NTP_EPOCH_OFFSET: Final = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01


def _ntp_ts(ts_ns: int) -> bytes:
    secs, rem = divmod(ts_ns, 1_000_000_000)
    return struct.pack(">II", secs + _NTP_EPOCH_OFFSET, (rem << 32) // 1_000_000_000)


def ntp_packet(ts_ns: int, *, server: bool = False, origin_ns: int = 0) -> bytes:
    """An NTPv4 client request (mode 3) or server reply (mode 4), 48 bytes (RFC 5905 §7.3)."""
    if not server:
        return bytes([0x23]) + bytes(39) + _ntp_ts(ts_ns)
    return (
        struct.pack(">BBbb", 0x24, 2, 6, -23)
        + struct.pack(">II", 0x00000110, 0x00000260)
        + b"\xc0\x00\x02\x7b"  # reference id: 192.0.2.123
        + _ntp_ts(ts_ns - 60_000_000_000)
        + _ntp_ts(origin_ns)
        + _ntp_ts(ts_ns)
        + _ntp_ts(ts_ns)
    )


# --------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------


class EtherType(IntEnum):
    IPV4 = 0x0800
    ARP = 0x0806
    VLAN = 0x8100
    IPV6 = 0x86DD


class IpProto(IntEnum):
    ICMP = 1
    TCP = 6
    UDP = 17
    ICMPV6 = 58


class TcpFlags(IntFlag):
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """The 16-bit one's-complement sum of ``data`` (RFC 1071), reduced mod 0xFFFF.

    2**16 = 1 (mod 0xFFFF), so the big-endian integer value of the data is congruent to the
    sum of its 16-bit words: one C-level conversion instead of a Python loop. Sums of parts
    that start at even offsets add up.
    """
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8  # odd length: pad with a zero byte
    return value % 0xFFFF


def inet_checksum(data: bytes | bytearray | memoryview, partial: int = 0) -> int:
    """The Internet checksum of ``data`` plus an already-summed ``partial``."""
    total = ones_sum(data) + partial
    if total % 0xFFFF == 0 and not (partial or any(data)):
        return 0xFFFF  # every word zero: the sum is 0x0000, its complement 0xFFFF
    return _complement(total)


def _complement(total: int) -> int:
    """The checksum for a sum of 16-bit words that are not all zero: the one's complement
    of their one's-complement sum. That sum is then never 0x0000 but 0xFFFF (the two
    zeros of one's complement; reducing mod 0xFFFF gives 0 for it), and its complement
    is 0x0000, never 0xFFFF (RFC 1624 §3; Wireshark flags an 0xFFFF TCP checksum). About
    one segment in 65,535 has such a sum."""
    rest = total % 0xFFFF
    return 0xFFFF - rest if rest else 0


def mac_for(address: str) -> bytes:
    """A stable, locally administered unicast MAC address for a host address."""
    digest = hashlib.blake2s(address.encode("ascii"), digest_size=5).digest()
    return b"\x02" + digest


#: The MAC of the default gateway every synthetic path sends its off-link traffic through.
GATEWAY_MAC: Final = bytes.fromhex("00005e0001fe")


def _eth(dst: bytes, src: bytes, ethertype: int, vlan: int | None) -> bytes:
    if vlan is None:
        return dst + src + struct.pack(">H", ethertype)
    return dst + src + struct.pack(">HHH", EtherType.VLAN, vlan & 0x0FFF, ethertype)


def arp_frame(
    op: int,
    sender_mac: bytes,
    sender_ip: str,
    target_mac: bytes,
    target_ip: str,
    *,
    vlan: int | None = None,
) -> bytes:
    """An Ethernet ARP request (op 1, broadcast) or reply (op 2) (RFC 826)."""
    dst = b"\xff" * 6 if op == 1 else target_mac
    body = struct.pack(">HHBBH", 1, EtherType.IPV4, 6, 4, op) + (
        sender_mac
        + ipaddress.IPv4Address(sender_ip).packed
        + (target_mac if op == 2 else bytes(6))
        + ipaddress.IPv4Address(target_ip).packed
    )
    frame = _eth(dst, sender_mac, EtherType.ARP, vlan) + body
    return frame + bytes(max(0, 60 - len(frame)))  # Ethernet minimum frame size


_IP4: Final = struct.Struct(">HHHHHH")
_IP6: Final = struct.Struct(">IHBB")
_TCP: Final = struct.Struct(">HHIIHHHH")
_UDP: Final = struct.Struct(">HHHH")


class NetPath:
    """Ethernet + IP between one client and one server, building whole frames quickly.

    ``from_client`` selects the direction. Server frames carry the gateway's MAC as their
    source, as a capture on the client's LAN or at the egress sees them.
    """

    __slots__ = ("client", "server", "v6", "_l2", "_addrs", "_addr_sum", "_ipid", "_ttl")

    def __init__(
        self,
        client: str,
        server: str,
        *,
        client_mac: bytes | None = None,
        server_mac: bytes = GATEWAY_MAC,
        vlan: int | None = None,
        client_ttl: int = 64,
        server_ttl: int = 52,
        ipid: int = 0,
    ) -> None:
        c = ipaddress.ip_address(client)
        s = ipaddress.ip_address(server)
        if c.version != s.version:
            raise ValueError("client and server must be of the same IP version")
        self.client = client
        self.server = server
        self.v6 = c.version == 6
        cmac = client_mac if client_mac is not None else mac_for(client)
        etype = EtherType.IPV6 if self.v6 else EtherType.IPV4
        self._l2 = (_eth(cmac, server_mac, etype, vlan), _eth(server_mac, cmac, etype, vlan))
        self._addrs = (s.packed + c.packed, c.packed + s.packed)
        self._addr_sum = ones_sum(c.packed + s.packed)
        self._ipid = [ipid & 0xFFFF, (ipid * 7 + 1) & 0xFFFF]
        self._ttl = (server_ttl, client_ttl)

    def _ip_header(self, d: int, proto: int, l4_len: int) -> bytes:
        if self.v6:
            return _IP6.pack(0x60000000, l4_len, proto, self._ttl[d]) + self._addrs[d]
        ipid = self._ipid[d]
        self._ipid[d] = (ipid + 1) & 0xFFFF
        total = 20 + l4_len
        ttl_proto = self._ttl[d] << 8 | proto
        # header words: 0x4500, total, id, 0x4000 (DF), ttl/proto, checksum, addresses
        csum = _complement(0x8500 + total + ipid + ttl_proto + self._addr_sum)
        return _IP4.pack(0x4500, total, ipid, 0x4000, ttl_proto, csum) + self._addrs[d]

    def ip(self, from_client: bool, proto: int, l4: bytes) -> bytes:
        """Wrap a transport segment (whose checksum is already set) into a frame."""
        d = 1 if from_client else 0
        return self._l2[d] + self._ip_header(d, proto, len(l4)) + l4

    def tcp(
        self,
        from_client: bool,
        sport: int,
        dport: int,
        seq: int,
        ack: int,
        flags: int,
        payload: bytes = b"",
        *,
        window: int = 502,
        options: bytes = b"",
        payload_sum: int | None = None,
    ) -> bytes:
        """A TCP segment in a frame, with a correct checksum (RFC 9293 §3.1).

        ``payload_sum`` is :func:`ones_sum` of ``payload`` when the caller has it cached.
        """
        olen = len(options)
        total = 20 + olen + len(payload)
        off_flags = (5 + olen // 4) << 12 | flags
        # the header's 16-bit words summed directly: no packing twice, no byte conversion
        s = (
            self._addr_sum
            + 6
            + total
            + sport
            + dport
            + (seq >> 16)
            + (seq & 0xFFFF)
            + (ack >> 16)
            + (ack & 0xFFFF)
            + off_flags
            + window
            + (ones_sum(payload) if payload_sum is None else payload_sum)
        )
        if olen:
            s += ones_sum(options)
        d = 1 if from_client else 0
        return b"".join(
            (
                self._l2[d],
                self._ip_header(d, IpProto.TCP, total),
                _TCP.pack(sport, dport, seq, ack, off_flags, window, _complement(s), 0),
                options,
                payload,
            )
        )

    def udp(
        self,
        from_client: bool,
        sport: int,
        dport: int,
        payload: bytes,
        *,
        payload_sum: int | None = None,
    ) -> bytes:
        """A UDP datagram in a frame, with a correct checksum (RFC 768, RFC 8200 §8.1)."""
        length = 8 + len(payload)
        psum = ones_sum(payload) if payload_sum is None else payload_sum
        s = (self._addr_sum + IpProto.UDP + length * 2 + sport + dport + psum) % 0xFFFF
        d = 1 if from_client else 0
        # A computed checksum of 0x0000 goes out as 0xFFFF: 0 means "no checksum" in UDP
        # (RFC 768); that is the s == 0 case here.
        return b"".join(
            (
                self._l2[d],
                self._ip_header(d, IpProto.UDP, length),
                _UDP.pack(sport, dport, length, 0xFFFF - s),
                payload,
            )
        )

    def icmp_echo(
        self, from_client: bool, ident: int, seq: int, payload: bytes, *, reply: bool = False
    ) -> bytes:
        """An ICMP (or ICMPv6) echo request or reply."""
        if self.v6:
            kind = 129 if reply else 128
            body = struct.pack(">BBHHH", kind, 0, 0, ident, seq) + payload
            csum = inet_checksum(body, self._addr_sum + IpProto.ICMPV6 + len(body))
            body = body[:2] + struct.pack(">H", csum) + body[4:]
            return self.ip(from_client, IpProto.ICMPV6, body)
        kind = 0 if reply else 8
        body = struct.pack(">BBHHH", kind, 0, 0, ident, seq) + payload
        body = body[:2] + struct.pack(">H", inet_checksum(body)) + body[4:]
        return self.ip(from_client, IpProto.ICMP, body)


_ACK: Final = int(TcpFlags.ACK)
_ACK_PSH: Final = int(TcpFlags.ACK | TcpFlags.PSH)


def _mss_option(mss: int) -> bytes:
    # MSS, NOP, window scale 7, NOP, NOP, SACK permitted: what Linux sends without timestamps
    return struct.pack(">BBH", 2, 4, mss) + b"\x01\x03\x03\x07\x01\x01\x04\x02"


class TcpSession:
    """One TCP connection as seen at a tap next to the client.

    Each method appends frames to the session and returns them sorted by time; the clock
    (:attr:`now`, nanoseconds) advances so the next call continues the conversation. Data is
    cut at the peer's MSS, ACKed every second segment (delayed ACK), and sent in windows of
    ``window_bytes`` one RTT apart; sequence and acknowledgement numbers are consistent.
    """

    __slots__ = (
        "path",
        "client_port",
        "server_port",
        "now",
        "rtt_ns",
        "gap_ns",
        "client_mss",
        "server_mss",
        "window_bytes",
        "c_seq",
        "s_seq",
        "packets",
        "bytes_to_server",
        "bytes_to_client",
    )

    def __init__(
        self,
        path: NetPath,
        client_port: int,
        server_port: int,
        *,
        start_ns: int,
        rtt_ns: int = 20_000_000,
        gap_ns: int = 12_000,
        client_isn: int = 0x1000,
        server_isn: int = 0x8000,
        client_mss: int = 1460,
        server_mss: int = 1460,
        window_bytes: int = 65_535,
    ) -> None:
        self.path = path
        self.client_port = client_port
        self.server_port = server_port
        self.now = start_ns
        self.rtt_ns = rtt_ns
        self.gap_ns = gap_ns
        self.client_mss = client_mss
        self.server_mss = server_mss
        self.window_bytes = window_bytes
        self.c_seq = client_isn & 0xFFFFFFFF
        self.s_seq = server_isn & 0xFFFFFFFF
        self.packets = 0
        self.bytes_to_server = 0
        self.bytes_to_client = 0

    def _seg(
        self,
        from_client: bool,
        flags: int,
        payload: bytes = b"",
        *,
        options: bytes = b"",
        payload_sum: int | None = None,
    ) -> bytes:
        self.packets += 1
        if from_client:
            frame = self.path.tcp(
                True,
                self.client_port,
                self.server_port,
                self.c_seq,
                self.s_seq,
                flags,
                payload,
                options=options,
                payload_sum=payload_sum,
            )
            self.bytes_to_server += len(frame)
        else:
            frame = self.path.tcp(
                False,
                self.server_port,
                self.client_port,
                self.s_seq,
                self.c_seq,
                flags,
                payload,
                options=options,
                payload_sum=payload_sum,
            )
            self.bytes_to_client += len(frame)
        return frame

    def handshake(self) -> list[Frame]:
        """SYN, SYN-ACK, ACK."""
        t = self.now
        self.packets += 1
        syn = self.path.tcp(
            True,
            self.client_port,
            self.server_port,
            self.c_seq,
            0,  # no ACK flag, so no acknowledgement number
            TcpFlags.SYN,
            options=_mss_option(self.client_mss),
            window=64240,
        )
        self.bytes_to_server += len(syn)
        self.c_seq = (self.c_seq + 1) & 0xFFFFFFFF
        synack = self._seg(False, TcpFlags.SYN | TcpFlags.ACK, options=_mss_option(self.server_mss))
        self.s_seq = (self.s_seq + 1) & 0xFFFFFFFF
        ack = self._seg(True, TcpFlags.ACK)
        self.now = t + self.rtt_ns + 2 * self.gap_ns
        return [(t, syn), (t + self.rtt_ns, synack), (t + self.rtt_ns + self.gap_ns, ack)]

    def send(
        self,
        from_client: bool,
        data: bytes,
        *,
        segments: Sequence[int] | None = None,
        chunks: Sequence[tuple[bytes, int]] | None = None,
    ) -> list[Frame]:
        """Send ``data`` one way, with the other side's ACKs.

        ``segments`` overrides the segment sizes (to split a hello at chosen offsets);
        ``chunks`` gives ready-cut (payload, ones_sum) pairs instead of ``data``.
        """
        mss = self.server_mss if from_client else self.client_mss
        if chunks is None:
            sizes = list(segments) if segments else []
            if sum(sizes) < len(data):
                rest = len(data) - sum(sizes)
                sizes += [mss] * (rest // mss) + ([rest % mss] if rest % mss else [])
            pieces: list[tuple[bytes, int | None]] = []
            pos = 0
            for size in sizes:
                if pos >= len(data):
                    break
                pieces.append((data[pos : pos + size], None))
                pos += size
        else:
            pieces = list(chunks)
        frames: list[Frame] = []
        t = self.now
        start = t
        in_window = 0
        half_rtt_ack = self.rtt_ns if from_client else 50_000  # when the peer's ACK is seen
        last = len(pieces) - 1
        for i, (payload, psum) in enumerate(pieces):
            if in_window + len(payload) > self.window_bytes:
                t = max(t, start + self.rtt_ns)
                start = t
                in_window = 0
            flags = _ACK_PSH if i == last else _ACK
            frames.append((t, self._seg(from_client, flags, payload, payload_sum=psum)))
            if from_client:
                self.c_seq = (self.c_seq + len(payload)) & 0xFFFFFFFF
            else:
                self.s_seq = (self.s_seq + len(payload)) & 0xFFFFFFFF
            in_window += len(payload)
            if i % 2 == 1 or i == last:
                frames.append((t + half_rtt_ack, self._seg(not from_client, _ACK)))
            t += self.gap_ns
        frames.sort(key=lambda f: f[0])
        self.now = frames[-1][0] + self.gap_ns if frames else t
        return frames

    def client_send(self, data: bytes, *, segments: Sequence[int] | None = None) -> list[Frame]:
        """Client-to-server data (see :meth:`send`)."""
        return self.send(True, data, segments=segments)

    def server_send(self, data: bytes, *, segments: Sequence[int] | None = None) -> list[Frame]:
        """Server-to-client data (see :meth:`send`)."""
        return self.send(False, data, segments=segments)

    def close(self, *, by_client: bool = True) -> list[Frame]:
        """FIN-ACK from one side, FIN-ACK back, final ACK."""
        t = self.now
        first = self._seg(by_client, TcpFlags.FIN | TcpFlags.ACK)
        self._advance(by_client, 1)
        second = self._seg(not by_client, TcpFlags.FIN | TcpFlags.ACK)
        self._advance(not by_client, 1)
        last = self._seg(by_client, TcpFlags.ACK)
        back = self.rtt_ns if by_client else 50_000
        self.now = t + back + 2 * self.gap_ns
        return [(t, first), (t + back, second), (t + back + self.gap_ns, last)]

    def reset(self, *, by_client: bool = True) -> list[Frame]:
        """An RST|ACK from one side."""
        frame = self._seg(by_client, TcpFlags.RST | TcpFlags.ACK)
        t = self.now
        self.now += self.gap_ns
        return [(t, frame)]

    def _advance(self, from_client: bool, n: int) -> None:
        if from_client:
            self.c_seq = (self.c_seq + n) & 0xFFFFFFFF
        else:
            self.s_seq = (self.s_seq + n) & 0xFFFFFFFF


def udp_exchange(
    path: NetPath,
    client_port: int,
    server_port: int,
    datagrams: Iterable[tuple[bool, bytes]],
    *,
    start_ns: int,
    rtt_ns: int = 20_000_000,
    gap_ns: int = 20_000,
) -> list[Frame]:
    """Frame a UDP conversation, (from_client, payload) in order, as seen next to the client.

    A server datagram following a client one arrives an RTT later; back-to-back datagrams
    in one direction are ``gap_ns`` apart.
    """
    frames: list[Frame] = []
    t = start_ns
    prev: bool | None = None
    for from_client, payload in datagrams:
        if prev is not None:
            if prev and not from_client:
                t += rtt_ns
            elif not prev and from_client:
                t += 200_000  # the client's turnaround
            else:
                t += gap_ns
        prev = from_client
        if from_client:
            frames.append((t, path.udp(True, client_port, server_port, payload)))
        else:
            frames.append((t, path.udp(False, server_port, client_port, payload)))
    return frames


# --------------------------------------------------------------------------------------
# pcap
# --------------------------------------------------------------------------------------

_PCAP_MAGIC_US: Final = 0xA1B2C3D4
_PCAP_MAGIC_NS: Final = 0xA1B23C4D
_WRITE_BUFFER: Final = 1 << 20


class PcapWriter:
    """Stream frames into a classic pcap file (little-endian, version 2.4).

    ``nanosecond`` selects the nanosecond-resolution magic; a path ending in ``.gz`` (or
    ``compress=True``) is gzip-compressed while written. Memory use is constant.
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | BinaryIO,
        *,
        linktype: int = 1,
        snaplen: int = 262_144,
        nanosecond: bool = False,
        compress: bool | None = None,
    ) -> None:
        self._own = not hasattr(target, "write")
        self._fh: BinaryIO
        if self._own:
            path = os.fspath(target)  # type: ignore[arg-type]
            gz = path.endswith(".gz") if compress is None else compress
            raw: BinaryIO = open(path, "wb", buffering=_WRITE_BUFFER)  # noqa: SIM115
            self._fh = (
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=3)  # type: ignore[assignment]
                if gz
                else raw
            )
            self._raw = raw
        else:
            self._fh = target  # type: ignore[assignment]
            self._raw = self._fh
        self._ns = nanosecond
        self._snaplen = snaplen
        self.packets = 0
        #: Bytes written so far (uncompressed), including the file header.
        self.bytes_written = 24
        magic = _PCAP_MAGIC_NS if nanosecond else _PCAP_MAGIC_US
        self._fh.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))
        self._pack = struct.Struct("<IIII").pack

    def write(self, ts_ns: int, frame: bytes, wirelen: int | None = None) -> None:
        """Append one frame (truncated to the snap length; ``wirelen`` defaults to its size)."""
        secs, frac = divmod(ts_ns, 1_000_000_000)
        if not self._ns:
            frac //= 1000
        caplen = min(len(frame), self._snaplen)
        self._fh.write(self._pack(secs, frac, caplen, len(frame) if wirelen is None else wirelen))
        self._fh.write(frame if caplen == len(frame) else frame[:caplen])
        self.packets += 1
        self.bytes_written += 16 + caplen

    def write_all(self, frames: Iterable[Frame]) -> None:
        for ts, frame in frames:
            self.write(ts, frame)

    def close(self) -> None:
        if self._own:
            self._fh.close()
            if self._raw is not self._fh:
                self._raw.close()
        else:
            self._fh.flush()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
