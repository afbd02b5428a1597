"""Tests for monitor.parsers.quic: QUIC Initial decryption and ClientHello reassembly.

Evidence, from most to least independent:
- RFC 9001 / RFC 9369 Appendix A vectors (keys, header-protection mask, protected
  packets), typed in from the RFC text (tests/data/quic/*.hex);
- real captures from other projects (tests/data/corpus) compared with their expected
  names (MANIFEST.json) and with tshark, which decrypts Initials itself;
- client Initials produced in memory by aioquic (v1, v2, Retry, 0-RTT, retransmission);
- edge cases built with a test-side packet protector that is first checked to
  reproduce the RFC 9001 A.2 packet byte for byte.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import random
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.errors import BadValue, LimitExceeded, ParseError, Truncated
from monitor.parsers import quic as q
from monitor.parsers.quic import (
    QUIC_DRAFT_29,
    QUIC_V1,
    QUIC_V2,
    AckFrame,
    ConnectionCloseFrame,
    CryptoFrame,
    DecryptError,
    PacketType,
    PaddingFrame,
    PingFrame,
    QuicInitialAssembler,
    UnsupportedVersion,
    initial_keys,
    may_be_gquic,
    parse_frames,
    parse_gquic_client_hello,
    parse_initial_datagram,
    split_datagram,
)

_tls: ModuleType | None
try:
    from monitor.parsers import tls as _tls
except ImportError:  # the TLS parser is developed separately
    _tls = None

needs_tls = pytest.mark.skipif(_tls is None, reason="monitor.parsers.tls not available")

DATA = Path(__file__).parent / "data"
QDATA = DATA / "quic"
CORPUS = DATA / "corpus"
RFC_DCID = bytes.fromhex("8394c8f03e515708")


def hexfile(name: str) -> bytes:
    return bytes.fromhex("".join((QDATA / name).read_text().split()))


RFC_V1_PACKET = hexfile("rfc9001_a2_client_initial.hex")
RFC_V2_PACKET = hexfile("rfc9369_a2_client_initial.hex")
RFC_CRYPTO_FRAME = hexfile("rfc9001_a2_crypto_frame.hex")
#: The ClientHello inside the RFC's CRYPTO frame (06, offset 00, 2-byte length 40f1).
RFC_CLIENT_HELLO = RFC_CRYPTO_FRAME[4:]
RFC_PAYLOAD = RFC_CRYPTO_FRAME + bytes(1162 - len(RFC_CRYPTO_FRAME))


def check_handshake_bytes(handshake: bytes, sni: str | None) -> None:
    """Byte-level checks that need no TLS parser."""
    assert handshake[0] == 1  # client_hello
    assert int.from_bytes(handshake[1:4], "big") == len(handshake) - 4
    if sni is not None:
        assert sni.encode() in handshake


# ---------------------------------------------------------------- test-side protector


def varint(v: int) -> bytes:
    if v < 1 << 6:
        return v.to_bytes(1, "big")
    if v < 1 << 14:
        return (v | 0x4000).to_bytes(2, "big")
    if v < 1 << 30:
        return (v | 0x8000_0000).to_bytes(4, "big")
    return (v | 0xC000_0000_0000_0000).to_bytes(8, "big")


def crypto(offset: int, data: bytes) -> bytes:
    return b"\x06" + varint(offset) + varint(len(data)) + data


TYPE_BITS = {QUIC_V1: {"initial": 0, "0rtt": 1, "handshake": 2, "retry": 3},
             QUIC_DRAFT_29: {"initial": 0, "0rtt": 1, "handshake": 2, "retry": 3},
             QUIC_V2: {"initial": 1, "0rtt": 2, "handshake": 3, "retry": 0}}


def protect(version: int, dcid: bytes, payload: bytes, *, scid: bytes = b"", pn: int = 0,
            pn_len: int = 4, token: bytes = b"", key_dcid: bytes | None = None,
            reserved: int = 0) -> bytes:
    """Build a protected client Initial (RFC 9001 §5.3-5.4), written from the RFC."""
    keys = initial_keys(version, key_dcid if key_dcid is not None else dcid)
    first = 0xC0 | (TYPE_BITS[version]["initial"] << 4) | (reserved << 2) | (pn_len - 1)
    length = pn_len + len(payload) + 16
    header = (bytes([first]) + version.to_bytes(4, "big") + bytes([len(dcid)]) + dcid
              + bytes([len(scid)]) + scid + varint(len(token)) + token + varint(length)
              + (pn % (1 << (8 * pn_len))).to_bytes(pn_len, "big"))
    nonce = (int.from_bytes(keys.iv, "big") ^ pn).to_bytes(12, "big")
    sealed = AESGCM(keys.key).encrypt(nonce, payload, header)
    sample = sealed[4 - pn_len:4 - pn_len + 16]
    enc = Cipher(algorithms.AES(keys.hp), modes.ECB()).encryptor()
    mask = enc.update(sample) + enc.finalize()
    out = bytearray(header + sealed)
    out[0] ^= mask[0] & 0x0F
    pn_offset = len(header) - pn_len
    for i in range(pn_len):
        out[pn_offset + i] ^= mask[1 + i]
    return bytes(out)


def long_packet(version: int, kind: str, dcid: bytes, body: bytes, scid: bytes = b"") -> bytes:
    """An unprotected-looking 0-RTT/Handshake packet (we only skip these by length)."""
    first = 0xC0 | (TYPE_BITS[version][kind] << 4) | 0x03
    return (bytes([first]) + version.to_bytes(4, "big") + bytes([len(dcid)]) + dcid
            + bytes([len(scid)]) + scid + varint(len(body)) + body)


def test_protector_reproduces_rfc9001_a2() -> None:
    assert protect(QUIC_V1, RFC_DCID, RFC_PAYLOAD, pn=2) == RFC_V1_PACKET


def test_protector_reproduces_rfc9369_a2() -> None:
    assert protect(QUIC_V2, RFC_DCID, RFC_PAYLOAD, pn=2) == RFC_V2_PACKET


# ------------------------------------------------------------------ RFC test vectors


def test_rfc9001_a1_client_and_server_keys() -> None:
    c = initial_keys(QUIC_V1, RFC_DCID)
    assert c.secret.hex() == ("c00cf151ca5be075ed0ebfb5c80323c4"
                              "2d6b7db67881289af4008f1f6c357aea")
    assert c.key.hex() == "1f369613dd76d5467730efcbe3b1a22d"
    assert c.iv.hex() == "fa044b2f42a3fd3b46fb255c"
    assert c.hp.hex() == "9f50449e04a0e810283a1e9933adedd2"
    s = initial_keys(QUIC_V1, RFC_DCID, server=True)
    assert s.secret.hex() == ("3c199828fd139efd216c155ad844cc81"
                              "fb82fa8d7446fa7d78be803acdda951b")
    assert s.key.hex() == "cf3a5331653c364c88f0f379b6067e37"
    assert s.iv.hex() == "0ac1493ca1905853b0bba03e"
    assert s.hp.hex() == "c206b8d9b9f0f37644430b490eeaa314"


def test_rfc9369_a1_client_and_server_keys() -> None:
    c = initial_keys(QUIC_V2, RFC_DCID)
    assert c.secret.hex() == ("14ec9d6eb9fd7af83bf5a668bc17a7e2"
                              "83766aade7ecd0891f70f9ff7f4bf47b")
    assert c.key.hex() == "8b1a0bc121284290a29e0971b5cd045d"
    assert c.iv.hex() == "91f73e2351d8fa91660e909f"
    assert c.hp.hex() == "45b95e15235d6f45a6b19cbcb0294ba9"
    s = initial_keys(QUIC_V2, RFC_DCID, server=True)
    assert s.secret.hex() == ("0263db1782731bf4588e7e4d93b74639"
                              "07cb8cd8200b5da55a8bd488eafc37c1")
    assert s.key.hex() == "82db637861d55e1d011f19ea71d5d2a7"
    assert s.iv.hex() == "dd13c276499c0249d3310652"
    assert s.hp.hex() == "edf6d05c83121201b436e16877593c3a"


@pytest.mark.parametrize(("version", "sample", "mask"), [
    (QUIC_V1, "d1b1c98dd7689fb8ec11d242b123dc9b", "437b9aec36"),
    (QUIC_V2, "ffe67b6abcdb4298b485dd04de806071", "94a0c95e80"),
])
def test_rfc_header_protection_mask(version: int, sample: str, mask: str) -> None:
    assert initial_keys(version, RFC_DCID).hp_mask(bytes.fromhex(sample))[:5].hex() == mask


def test_draft29_keys_differ_from_v1() -> None:
    assert initial_keys(QUIC_DRAFT_29, RFC_DCID).key != initial_keys(QUIC_V1, RFC_DCID).key


@pytest.mark.parametrize(("version", "packet"), [(QUIC_V1, RFC_V1_PACKET),
                                                 (QUIC_V2, RFC_V2_PACKET)])
def test_rfc_client_initial_decrypts(version: int, packet: bytes) -> None:
    (pkt,) = parse_initial_datagram(packet)
    assert pkt.version == version
    assert pkt.header.packet_type is PacketType.INITIAL
    assert pkt.dcid == RFC_DCID
    assert pkt.scid == b""
    assert pkt.header.token == b""
    assert pkt.header.offset == 0
    assert pkt.header.size == 1200  # the whole datagram was consumed
    assert pkt.header.pn_offset == 18
    assert pkt.packet_number == 2
    assert pkt.frames == (CryptoFrame(0, RFC_CLIENT_HELLO), PaddingFrame(1162 - 245))


@pytest.mark.parametrize("packet", [RFC_V1_PACKET, RFC_V2_PACKET])
def test_rfc_client_initial_assembles(packet: bytes) -> None:
    asm = QuicInitialAssembler()
    handshake = asm.feed_handshake(packet)
    assert handshake == RFC_CLIENT_HELLO
    assert asm.done
    check_handshake_bytes(handshake, "example.com")


@needs_tls
@pytest.mark.parametrize(("version", "packet"), [(QUIC_V1, RFC_V1_PACKET),
                                                 (QUIC_V2, RFC_V2_PACKET)])
def test_rfc_client_initial_client_hello(version: int, packet: bytes) -> None:
    asm = QuicInitialAssembler()
    result = asm.feed(memoryview(packet))
    assert result is not None
    assert (result.version, result.dcid, result.scid) == (version, RFC_DCID, b"")
    assert result.handshake == RFC_CLIENT_HELLO
    assert result.client_hello.sni == "example.com"
    assert result.client_hello.alpn == ("alpn",)
    assert asm.result is result
    assert asm.feed(packet) is None  # facts known: later datagrams are ignored


@pytest.mark.parametrize(("name", "version"), [("rfc9001_a3_server_initial.hex", QUIC_V1),
                                               ("rfc9369_a3_server_initial.hex", QUIC_V2)])
def test_rfc_server_initial(name: str, version: int) -> None:
    data = hexfile(name)
    # With the client-direction keys of its own (empty) DCID it cannot authenticate.
    with pytest.raises(DecryptError) as exc:
        parse_initial_datagram(data)
    assert exc.value.reason == "decrypt"
    # With the server keys from the client's DCID it decrypts (2-byte packet number).
    (hdr,) = split_datagram(data)
    assert (hdr.packet_type, hdr.dcid, hdr.scid) == (
        PacketType.INITIAL, b"", bytes.fromhex("f067a5502a4262b5"))
    pkt = q._open_initial(data, hdr, initial_keys(version, RFC_DCID, server=True), -1)
    assert pkt.packet_number == 1
    assert pkt.frames == parse_frames(hexfile("rfc9001_a3_server_payload.hex"))
    assert pkt.frames[0] == AckFrame(0, 0, 0, (), None)
    assert isinstance(pkt.frames[1], CryptoFrame) and pkt.frames[1].data[0] == 2


@pytest.mark.parametrize("name", ["rfc9001_a4_retry.hex", "rfc9369_a4_retry.hex"])
def test_rfc_retry_is_recognised_and_skipped(name: str) -> None:
    data = hexfile(name)
    (hdr,) = split_datagram(data)
    assert hdr.packet_type is PacketType.RETRY
    assert hdr.token == b"token"
    assert hdr.size == len(data)
    assert parse_initial_datagram(data) == ()
    assert QuicInitialAssembler().feed_handshake(data) is None


def test_packet_number_decoding_rfc9000_a3() -> None:
    assert q._decode_packet_number(0x9B32, 16, 0xA82F30EA) == 0xA82F9B32
    assert q._decode_packet_number(0, 8, -1) == 0
    assert q._decode_packet_number(0x01, 8, 0xFF) == 0x101
    assert q._decode_packet_number(0x01, 8, 0x2EF) == 0x301  # wrapped forwards
    assert q._decode_packet_number(0xFF, 8, 0x200) == 0x1FF  # a late, older packet


def test_key_cache_is_bounded() -> None:
    assert q._derive.cache_info().maxsize == q.MAX_KEY_CACHE
    assert initial_keys(QUIC_V1, RFC_DCID) is initial_keys(QUIC_V1, memoryview(RFC_DCID))


INITIAL_SALTS = {  # RFC 9001 §5.2, RFC 9369 §3.3.1, draft-ietf-quic-tls-29 §5.2
    QUIC_V1: "38762cf7f55934b34d179ae6a4c80cadccbb7f0a",
    QUIC_V2: "0dede3def700a6db819381be6e269dcbf9bd2ed9",
    QUIC_DRAFT_29: "afbfec289993d24c9e9786f19c6111e04390a899",
}


def hkdf_initial_keys(version: int, dcid: bytes, server: bool) -> tuple[bytes, ...]:
    """(secret, key, iv, hp) by RFC 9001 §5.2 with cryptography's general HKDF."""
    def expand_label(secret: bytes, label: bytes, length: int) -> bytes:
        full = b"tls13 " + label
        info = length.to_bytes(2, "big") + bytes([len(full)]) + full + b"\x00"
        return HKDFExpand(hashes.SHA256(), length, info).derive(secret)

    prefix = b"quicv2 " if version == QUIC_V2 else b"quic "
    initial = HKDF.extract(hashes.SHA256(), bytes.fromhex(INITIAL_SALTS[version]), dcid)
    secret = expand_label(initial, b"server in" if server else b"client in", 32)
    return (secret, expand_label(secret, prefix + b"key", 16),
            expand_label(secret, prefix + b"iv", 12), expand_label(secret, prefix + b"hp", 16))


@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2, QUIC_DRAFT_29])
def test_initial_keys_match_general_hkdf(version: int) -> None:
    rnd = random.Random(version)
    for _ in range(100):
        dcid = rnd.randbytes(rnd.randrange(q.MAX_CID_LEN + 1))
        for server in (False, True):
            keys = initial_keys(version, dcid, server=server)
            assert (keys.secret, keys.key, keys.iv, keys.hp) == hkdf_initial_keys(
                version, dcid, server)


def test_hp_mask_shares_one_encryptor() -> None:
    keys = initial_keys(QUIC_V1, RFC_DCID)
    with pytest.raises(ValueError):
        keys.hp_mask(bytes(15))  # a partial block would stay in the shared encryptor
    rnd = random.Random(5)
    for sample in [rnd.randbytes(16) for _ in range(20)]:
        enc = Cipher(algorithms.AES(keys.hp), modes.ECB()).encryptor()
        assert keys.hp_mask(sample) == enc.update(sample) + enc.finalize()
    sample = memoryview(bytes.fromhex("d1b1c98dd7689fb8ec11d242b123dc9b"))
    assert keys.hp_mask(sample)[:5].hex() == "437b9aec36"  # RFC 9001 A.2


# ------------------------------------------------------------------- aioquic clients

SERVER_ADDR = ("127.0.0.1", 443)
CLIENT_ADDR = ("127.0.0.1", 50000)


def aioquic_client(version: int, server_name: str = "av.example.com",
                   **cfg: Any) -> tuple[Any, list[Any]]:
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    cfg.setdefault("alpn_protocols", ["h3"])
    config = QuicConfiguration(is_client=True, server_name=server_name,
                               **cfg)
    config.supported_versions = [version]
    config.verify_mode = ssl.CERT_NONE
    tickets: list[object] = []
    conn = QuicConnection(configuration=config, session_ticket_handler=tickets.append)
    conn.connect(SERVER_ADDR, now=0.0)
    return conn, tickets


def sent(conn: Any, now: float = 0.0) -> list[bytes]:
    return [d for d, _ in conn.datagrams_to_send(now=now)]


@pytest.fixture(scope="module")
def server_cert() -> tuple[Any, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "av.example.com")])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256()))
    return cert, key


def aioquic_server(version: int, odcid: bytes, cert_key: tuple[Any, Any]) -> Any:
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    config = QuicConfiguration(is_client=False, alpn_protocols=["h3"],
                               certificate=cert_key[0], private_key=cert_key[1])
    config.supported_versions = [version]
    store: dict[bytes, Any] = {}
    return QuicConnection(configuration=config, original_destination_connection_id=odcid,
                          session_ticket_handler=lambda t: store.__setitem__(t.ticket, t),
                          session_ticket_fetcher=store.get)


@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2])
def test_aioquic_single_datagram(version: int) -> None:
    conn, _ = aioquic_client(version, "telemetry.av-vendor.example")
    (datagram,) = sent(conn)
    (hdr,) = split_datagram(datagram)
    assert hdr.version == version and hdr.packet_type is PacketType.INITIAL
    asm = QuicInitialAssembler()
    handshake = asm.feed_handshake(datagram)
    assert handshake is not None
    check_handshake_bytes(handshake, "telemetry.av-vendor.example")
    assert (asm.version, asm.dcid, asm.scid) == (version, hdr.dcid, hdr.scid)


@needs_tls
@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2])
def test_aioquic_single_datagram_client_hello(version: int) -> None:
    conn, _ = aioquic_client(version, "telemetry.av-vendor.example")
    (datagram,) = sent(conn)
    result = QuicInitialAssembler().feed(datagram)
    assert result is not None
    assert result.version == version
    assert result.client_hello.sni == "telemetry.av-vendor.example"
    assert result.client_hello.alpn == ("h3",)
    assert result.client_hello.is_quic


LARGE_HELLOS: dict[str, dict[str, Any]] = {
    "quantum_readiness": {"quantum_readiness_test": True},
    "many_alpns": {"alpn_protocols": [f"proto-{i:03d}" for i in range(150)]},
}


@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2])
@pytest.mark.parametrize("kind", sorted(LARGE_HELLOS))
def test_aioquic_hello_spanning_two_initials(version: int, kind: str) -> None:
    conn, _ = aioquic_client(version, "upload.av-vendor.example", **LARGE_HELLOS[kind])
    datagrams = sent(conn)
    assert len(datagrams) == 2
    # In order.
    asm = QuicInitialAssembler()
    assert asm.feed_handshake(datagrams[0]) is None
    handshake = asm.feed_handshake(datagrams[1])
    assert handshake is not None and len(handshake) > 1200
    check_handshake_bytes(handshake, "upload.av-vendor.example")
    # Out of order gives the same bytes.
    asm = QuicInitialAssembler()
    assert asm.feed_handshake(datagrams[1]) is None
    assert asm.feed_handshake(datagrams[0]) == handshake
    if _tls is not None:
        result = QuicInitialAssembler()
        result.feed(datagrams[1])
        hello = result.feed(datagrams[0])
        assert hello is not None and hello.client_hello.sni == "upload.av-vendor.example"
        assert hello.handshake == handshake


def test_aioquic_retransmitted_initials() -> None:
    conn, _ = aioquic_client(QUIC_V1, quantum_readiness_test=True)
    first = sent(conn)
    timer = conn.get_timer()
    conn.handle_timer(now=timer)
    again = sent(conn, timer)
    pns = [p.packet_number for d in again
           for p in parse_initial_datagram(d, key_dcid=split_datagram(first[0])[0].dcid)]
    assert pns == [2, 3]  # real retransmissions with new packet numbers
    asm = QuicInitialAssembler()
    assert asm.feed_handshake(first[0]) is None
    assert asm.feed_handshake(first[0]) is None  # exact duplicate
    assert asm.feed_handshake(again[0]) is None  # retransmitted copy of the first half
    handshake = asm.feed_handshake(again[1])
    assert handshake is not None
    check_handshake_bytes(handshake, "av.example.com")
    # The retransmissions alone are enough too.
    asm = QuicInitialAssembler()
    assert asm.feed_handshake(again[1]) is None
    assert asm.feed_handshake(again[0]) == handshake


def test_aioquic_retry_restarts_reassembly() -> None:
    from aioquic.quic.packet import encode_quic_retry

    conn, _ = aioquic_client(QUIC_V1, "retry.av-vendor.example", quantum_readiness_test=True)
    before = sent(conn)
    hdr = split_datagram(before[0])[0]
    new_cid = bytes.fromhex("1122334455667788")
    retry = encode_quic_retry(QUIC_V1, source_cid=new_cid, destination_cid=hdr.scid,
                              original_destination_cid=hdr.dcid, retry_token=b"retry-token")
    assert split_datagram(retry)[0].packet_type is PacketType.RETRY
    conn.receive_datagram(retry, SERVER_ADDR, now=0.01)
    after = sent(conn, 0.01)
    assert [split_datagram(d)[0].token for d in after] == [b"retry-token"] * 2

    asm = QuicInitialAssembler()
    assert asm.feed_handshake(before[0]) is None  # half a hello under the first DCID
    assert asm.dcid == hdr.dcid
    assert asm.feed_handshake(after[0]) is None  # new DCID: keys re-derived, restart
    assert asm.dcid == new_cid
    assert asm.feed_handshake(before[0]) is None  # late copy of the abandoned attempt
    assert asm.dcid == new_cid
    handshake = asm.feed_handshake(after[1])
    assert handshake is not None
    check_handshake_bytes(handshake, "retry.av-vendor.example")


def test_aioquic_dcid_switch_keeps_initial_keys(server_cert: tuple[Any, Any]) -> None:
    conn, _ = aioquic_client(QUIC_V1, "switch.av-vendor.example", quantum_readiness_test=True)
    first = sent(conn)
    odcid = split_datagram(first[0])[0].dcid
    server = aioquic_server(QUIC_V1, odcid, server_cert)
    for d in first:
        server.receive_datagram(d, CLIENT_ADDR, now=0.0)
    for d in sent(server):
        conn.receive_datagram(d, SERVER_ADDR, now=0.01)
    second = sent(conn, 0.01)
    hdrs = split_datagram(second[0])
    assert hdrs[0].packet_type is PacketType.INITIAL and hdrs[0].dcid != odcid
    assert [h.packet_type for h in hdrs[1:]] == [PacketType.HANDSHAKE]
    # The client's later Initial (DCID = server's CID) still uses the original keys.
    (ack,) = parse_initial_datagram(second[0], key_dcid=odcid)
    assert isinstance(ack.frames[0], AckFrame)
    with pytest.raises(DecryptError):
        parse_initial_datagram(second[0])
    asm = QuicInitialAssembler()
    assert asm.feed_handshake(first[0]) is None
    assert asm.feed_handshake(second[0]) is None  # no restart, no error
    assert asm.dcid == odcid
    handshake = asm.feed_handshake(first[1])
    assert handshake is not None
    check_handshake_bytes(handshake, "switch.av-vendor.example")


def test_aioquic_coalesced_initial_and_0rtt(server_cert: tuple[Any, Any]) -> None:
    # A first connection to obtain a session ticket, then a 0-RTT resumption.
    conn, tickets = aioquic_client(QUIC_V1, "early.av-vendor.example")  # tickets bind the name
    first = sent(conn)
    server = aioquic_server(QUIC_V1, split_datagram(first[0])[0].dcid, server_cert)
    now = 0.0
    for _ in range(4):
        for d in first:
            server.receive_datagram(d, CLIENT_ADDR, now=now)
        now += 0.01
        for d in sent(server, now):
            conn.receive_datagram(d, SERVER_ADDR, now=now)
        first = sent(conn, now)
    assert tickets, "no session ticket issued"
    resumed, _ = aioquic_client(QUIC_V1, "early.av-vendor.example", session_ticket=tickets[-1])
    stream_id = resumed.get_next_available_stream_id()
    resumed.send_stream_data(stream_id, b"GET /lookup?hash=0123 early data", end_stream=True)
    (datagram,) = sent(resumed, 1.0)
    kinds = [h.packet_type for h in split_datagram(datagram)]
    assert kinds == [PacketType.INITIAL, PacketType.ZERO_RTT]
    (pkt,) = parse_initial_datagram(datagram)
    assert pkt.crypto_frames
    handshake = QuicInitialAssembler().feed_handshake(datagram)
    assert handshake is not None
    check_handshake_bytes(handshake, "early.av-vendor.example")


def test_aioquic_version_negotiation_restarts() -> None:
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection
    from aioquic.quic.packet import encode_quic_version_negotiation

    config = QuicConfiguration(is_client=True, server_name="vn.av-vendor.example",
                               supported_versions=[QUIC_V1, QUIC_V2],
                               quantum_readiness_test=True)
    conn = QuicConnection(configuration=config)
    conn.connect(SERVER_ADDR, now=0.0)
    before = sent(conn)
    hdr = split_datagram(before[0])[0]
    vn = encode_quic_version_negotiation(source_cid=hdr.dcid, destination_cid=hdr.scid,
                                         supported_versions=[QUIC_V2])
    (vn_hdr,) = split_datagram(vn)
    assert vn_hdr.version == 0 and vn_hdr.packet_type is None and vn_hdr.size == len(vn)
    assert parse_initial_datagram(vn) == ()
    conn.receive_datagram(vn, SERVER_ADDR, now=0.01)
    after = sent(conn, 0.01)
    assert split_datagram(after[0])[0].version == QUIC_V2
    asm = QuicInitialAssembler()
    assert asm.feed_handshake(before[0]) is None
    assert asm.feed_handshake(vn) is None
    for d in after[:-1]:
        assert asm.feed_handshake(d) is None
    assert asm.version == QUIC_V2
    handshake = asm.feed_handshake(after[-1])
    assert handshake is not None
    check_handshake_bytes(handshake, "vn.av-vendor.example")


# ------------------------------------------------------------------- captured fixtures


def test_chromium_fixture_out_of_order_crypto_frames() -> None:
    """Chrome 115's first Initial (from the zeek corpus capture): nine CRYPTO frames in
    scrambled order with PADDING between them; values as tshark 4.0 reports them."""
    data = (QDATA / "chromium115_initial.bin").read_bytes()
    (hdr,) = split_datagram(data)
    assert hdr.size == len(data) == 1250
    assert hdr.dcid.hex() == "95412c47018cdfe8" and hdr.scid == b""
    assert len(hdr.token) == 70
    (pkt,) = parse_initial_datagram(data)
    assert pkt.packet_number == 1
    frames = [(f.offset, len(f.data)) for f in pkt.crypto_frames]
    assert frames == [(549, 17), (346, 189), (330, 16), (0, 277), (319, 11), (277, 42),
                      (535, 5), (566, 8), (540, 9)]
    assert [f.length for f in pkt.frames if isinstance(f, PaddingFrame)] == [108, 66, 359]
    handshake = QuicInitialAssembler().feed_handshake(data)
    assert handshake is not None and len(handshake) == 570 + 4
    check_handshake_bytes(handshake, "api.cirrus-ci.com")


def test_gquic_q025_fixture() -> None:
    """The Q025 CHLO from nDPI's http_ipv6 capture; tshark shows gquic.tag.sni."""
    data = (QDATA / "gquic_q025_chlo.bin").read_bytes()
    hello = parse_gquic_client_hello(data)
    assert hello.version == "Q025"
    assert hello.cid.hex() == "49bee2d3f0edccd6"
    assert hello.sni == "www.google.it"
    assert hello.user_agent == "Chrome/46.0.2490.80 Linux x86_64"
    assert len(hello.tags) == 23
    assert hello.tags[1] == (b"SNI\x00", b"www.google.it")
    assert [t for t, _ in hello.tags][:4] == [b"PAD\x00", b"SNI\x00", b"STK\x00", b"VER\x00"]
    # Not an IETF QUIC long header: the IETF path sees a short header and stops.
    assert split_datagram(data) == ()
    assert QuicInitialAssembler().feed_handshake(data) is None


_GQUIC_CHLO = (QDATA / "gquic_q025_chlo.bin").read_bytes()


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=40), st.sampled_from([b"", b"Q043", b"Q025", b"Q050", b"T051"]),
       st.integers(0, 255))
def test_gquic_quick_refusal_is_the_parsers(head: bytes, tag: bytes, flags: int) -> None:
    """What may_be_gquic turns away, the parser refuses too (the dissector skips the
    parser, and its exception, for those); the real CHLO passes."""
    data = _GQUIC_CHLO
    assert may_be_gquic(data)
    for candidate in (head, bytes([flags]) + head[1:9] + tag + data[13:],
                      bytes([flags]) + data[1:], head + data[len(head):]):
        if not may_be_gquic(candidate):
            with pytest.raises(ParseError):
                parse_gquic_client_hello(candidate)


def test_gquic_rejects() -> None:
    data = (QDATA / "gquic_q025_chlo.bin").read_bytes()
    with pytest.raises(UnsupportedVersion):
        parse_gquic_client_hello(RFC_V1_PACKET)
    with pytest.raises(UnsupportedVersion):
        parse_gquic_client_hello(data[:9] + b"Q050" + data[13:])
    with pytest.raises(UnsupportedVersion):
        parse_gquic_client_hello(data[:9] + b"T051" + data[13:])
    with pytest.raises(Truncated):
        parse_gquic_client_hello(data[:600])
    with pytest.raises(Truncated):
        parse_gquic_client_hello(b"")
    with pytest.raises(BadValue):
        parse_gquic_client_hello(bytes([0x0C]) + data[1:])  # no version flag
    assert data[27:29] == b"\xa0\x01"  # STREAM frame type, stream 1
    with pytest.raises(BadValue):
        parse_gquic_client_hello(data[:28] + b"\x03" + data[29:])  # not the crypto stream
    not_chlo = bytearray(data)
    not_chlo[data.index(b"CHLO")] = ord("S")
    with pytest.raises(BadValue):
        parse_gquic_client_hello(bytes(not_chlo))


# --------------------------------------------------------------------------- corpus


@dataclass
class Flow:
    index: int  # order of first appearance
    client: tuple[str, int]
    server_port: int
    datagrams: list[tuple[int, bytes]] = field(default_factory=list)  # (frame, payload)


@functools.lru_cache(maxsize=None)
def udp_flows(path: Path) -> list[Flow]:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.utils import rdpcap

    flows: dict[tuple[tuple[str, int], tuple[str, int]], Flow] = {}
    for frame, pkt in enumerate(rdpcap(str(path)), 1):
        if UDP not in pkt:
            continue
        ip = pkt[IP] if IP in pkt else pkt[IPv6] if IPv6 in pkt else None
        if ip is None:
            continue
        udp = pkt[UDP]
        a, b = (str(ip.src), int(udp.sport)), (str(ip.dst), int(udp.dport))
        key = (min(a, b), max(a, b))
        flow = flows.get(key)
        if flow is None:
            flow = flows[key] = Flow(len(flows), a, int(udp.dport))
        if a == flow.client:
            flow.datagrams.append((frame, bytes(udp.payload)))
    return list(flows.values())


@dataclass
class Found:
    frame: int
    sni: str | None
    handshake_len: int
    kind: str  # "quic" or "gquic"


QUIC_PORTS = (443, 853)  # HTTP/3 and DNS over QUIC (RFC 9250)


def quic_hellos(path: Path) -> dict[int, Found]:
    """First ClientHello per UDP flow to a QUIC port, keyed by frame number."""
    found: dict[int, Found] = {}
    for flow in udp_flows(path):
        if flow.server_port not in QUIC_PORTS:
            continue
        asm = QuicInitialAssembler()
        for frame, payload in flow.datagrams:
            handshake = asm.feed_handshake(payload)  # no ParseError on real traffic
            if handshake is not None:
                sni = _tls.parse_client_hello(handshake).sni if _tls is not None else None
                found[frame] = Found(frame, sni, len(handshake) - 4, "quic")
                break
            if asm.version is None and payload and not payload[0] & 0x80:
                try:
                    hello = parse_gquic_client_hello(payload)
                except ParseError:
                    continue
                found[frame] = Found(frame, hello.sni, 0, "gquic")
                break
    return found


MANIFEST = json.loads((CORPUS / "MANIFEST.json").read_text())
QUIC_ENTRIES = [e for e in MANIFEST
                if e["expected"]["quic_sni"] or e["file"].startswith("zeek_quic_")]


def test_corpus_selection() -> None:
    names = {e["file"] for e in QUIC_ENTRIES}
    assert {"ndpi_quic-29.pcap", "ndpi_http_ipv6.pcap", "zeek_quic_quicv2-http3-443.pcap",
            "zeek_quic_quicdoq.pcap"} <= names
    assert len(names) == 8


@needs_tls
@pytest.mark.parametrize("entry", QUIC_ENTRIES, ids=[e["file"] for e in QUIC_ENTRIES])
def test_corpus_expected_quic_sni(entry: dict[str, object]) -> None:
    found = quic_hellos(CORPUS / str(entry["file"]))
    expected = entry["expected"]
    assert isinstance(expected, dict)
    assert sorted({f.sni for f in found.values() if f.sni}) == sorted(set(expected["quic_sni"]))


def test_corpus_negative_cases_still_find_the_hello() -> None:
    """No SNI in these, but there is a ClientHello: we must decrypt it, not miss it."""
    v2 = quic_hellos(CORPUS / "zeek_quic_quicv2-http3-443.pcap")
    doq = quic_hellos(CORPUS / "zeek_quic_quicdoq.pcap")
    assert [(f.frame, f.kind) for f in v2.values()] == [(1, "quic")]
    assert [(f.frame, f.kind) for f in doq.values()] == [(1, "quic")]
    if _tls is not None:
        assert [f.sni for f in v2.values()] == [None]
        assert [f.sni for f in doq.values()] == [None]
    flows = udp_flows(CORPUS / "zeek_quic_quicv2-http3-443.pcap")
    first = QuicInitialAssembler()
    first.feed_handshake(flows[0].datagrams[0][1])
    assert first.version == QUIC_V2


def test_corpus_draft29_retry_flow() -> None:
    """ndpi_quic-29: Initial (frame 1), Retry (2), Initial with the Retry's CID and token
    (3), and after a HelloRetryRequest a second ClientHello at CRYPTO offset 301 (5)."""
    (flow,) = [f for f in udp_flows(CORPUS / "ndpi_quic-29.pcap") if f.server_port == 443]
    frames = dict(flow.datagrams)
    (p1,) = parse_initial_datagram(frames[1])
    (p3,) = parse_initial_datagram(frames[3])
    assert p1.version == p3.version == QUIC_DRAFT_29
    assert p3.dcid != p1.dcid and len(p3.header.token) == 59
    assert [(f.offset, len(f.data)) for f in p3.crypto_frames] == [(0, 301)]
    # Frame 5 switched to the server's CID but is protected with frame 3's keys.
    (p5,) = parse_initial_datagram(frames[5], key_dcid=p3.dcid)
    assert p5.dcid not in (p1.dcid, p3.dcid)
    assert p5.packet_number == 2
    assert [(f.offset, len(f.data)) for f in p5.crypto_frames] == [(301, 268)]
    # Only half of frame 1's hello arrives; the post-Retry attempt restarts reassembly.
    hello = p1.crypto_frames[0].data
    half = protect(QUIC_DRAFT_29, p1.dcid, crypto(0, hello[:150]) + bytes(900),
                   scid=p1.scid)
    asm = QuicInitialAssembler()
    assert asm.feed_handshake(half) is None
    handshake = asm.feed_handshake(frames[3])
    assert handshake is not None and asm.dcid == p3.dcid
    check_handshake_bytes(handshake, "localhost")
    assert asm.feed_handshake(frames[5]) is None


TSHARK = shutil.which("tshark")


def require_tshark() -> str:
    if TSHARK is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tshark is required in CI")
        pytest.skip("tshark not installed")
    return TSHARK


def tshark_rows(path: Path, display_filter: str, fields: list[str]) -> list[list[str]]:
    cmd = [require_tshark(), "-n", "-r", str(path), "-d", "udp.port==853,quic",
           "-Y", display_filter, "-T", "fields", "-E", "occurrence=f"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def tshark_hellos(path: Path) -> dict[int, Found]:
    """tshark's first ClientHello per UDP stream, keyed by frame number."""
    found: dict[int, Found] = {}
    rows = tshark_rows(
        path, "(quic && tls.handshake.type==1) || gquic.tag.sni",
        ["udp.stream", "frame.number", "tls.handshake.extensions_server_name",
         "tls.handshake.length", "gquic.tag.sni"])
    for stream, frame, sni, length, gquic_sni in rows:
        if length:
            hello = Found(int(frame), sni or None, int(length), "quic")
        else:
            hello = Found(int(frame), gquic_sni or None, 0, "gquic")
        found.setdefault(int(stream), hello)
    return {f.frame: f for f in found.values()}


ALL_CAPTURES = sorted(p.name for p in CORPUS.iterdir() if p.suffix in (".pcap", ".pcapng"))


@needs_tls
@pytest.mark.parametrize("name", ALL_CAPTURES)
def test_corpus_matches_tshark(name: str) -> None:
    """First ClientHello per UDP flow: same frame, SNI and handshake length as tshark
    (which also decrypts Initials). tshark additionally reports a second hello after a
    HelloRetryRequest (ndpi_quic-29 frame 5); we stop at the first one per flow."""
    path = CORPUS / name
    expected = tshark_hellos(path)
    if not expected and not any(f.server_port in QUIC_PORTS for f in udp_flows(path)):
        assert quic_hellos(path) == {}
        return
    assert quic_hellos(path) == expected


# ------------------------------------------------------------- built edge cases


def test_empty_and_short_header() -> None:
    with pytest.raises(Truncated):
        parse_initial_datagram(b"")
    with pytest.raises(Truncated):
        QuicInitialAssembler().feed(b"")
    short = b"\x40" + bytes(40)
    assert split_datagram(short) == ()
    assert parse_initial_datagram(short) == ()
    assert QuicInitialAssembler().feed(short) is None


def test_truncated_at_every_length() -> None:
    for n in range(1, len(RFC_V1_PACKET)):
        with pytest.raises(Truncated):
            parse_initial_datagram(RFC_V1_PACKET[:n])
        with pytest.raises(Truncated):
            QuicInitialAssembler().feed_handshake(RFC_V1_PACKET[:n])


def test_trailing_zero_padding_is_ignored() -> None:
    (pkt,) = parse_initial_datagram(RFC_V1_PACKET + bytes(300))
    assert pkt.header.size == 1200
    assert QuicInitialAssembler().feed_handshake(RFC_V1_PACKET + bytes(300)) is not None


def test_trailing_damaged_packet() -> None:
    junk = (b"\xc0" + QUIC_V1.to_bytes(4, "big") + bytes([8]) + RFC_DCID + b"\x00\x00"
            + varint(500) + bytes(20))
    with pytest.raises(Truncated):  # the stateless view is strict
        parse_initial_datagram(RFC_V1_PACKET + junk)
    # The assembler keeps the good packet before the damage.
    assert QuicInitialAssembler().feed_handshake(RFC_V1_PACKET + junk) == RFC_CLIENT_HELLO
    # ... and reports the damage when it does not complete a hello.
    half = protect(QUIC_V1, RFC_DCID, crypto(0, RFC_CLIENT_HELLO[:100]) + bytes(1000))
    with pytest.raises(Truncated):
        QuicInitialAssembler().feed_handshake(half + junk)


def test_coalesced_packets_are_skipped_by_length() -> None:
    dcid = bytes.fromhex("0102030405060708")
    initial = protect(QUIC_V1, dcid, crypto(0, RFC_CLIENT_HELLO) + bytes(900), scid=b"\x09")
    zero_rtt = long_packet(QUIC_V1, "0rtt", dcid, os.urandom(80), scid=b"\x09")
    handshake = long_packet(QUIC_V1, "handshake", dcid, os.urandom(40), scid=b"\x09")
    other = protect(QUIC_V1, b"\xee" * 8, crypto(0, b"\x01\x00\x00\x10" + bytes(16)))
    short = b"\x43" + dcid + os.urandom(30)
    datagram = initial + zero_rtt + handshake + other + short
    hdrs = split_datagram(datagram)
    # The packet with another DCID ends the datagram (RFC 9000 §12.2).
    assert [h.packet_type for h in hdrs] == [PacketType.INITIAL, PacketType.ZERO_RTT,
                                             PacketType.HANDSHAKE]
    assert [h.size for h in hdrs] == [len(initial), len(zero_rtt), len(handshake)]
    assert [h.offset for h in hdrs] == [0, len(initial), len(initial) + len(zero_rtt)]
    (pkt,) = parse_initial_datagram(datagram)
    assert pkt.crypto_frames[0].data == RFC_CLIENT_HELLO
    assert QuicInitialAssembler().feed_handshake(datagram) == RFC_CLIENT_HELLO
    # 0-RTT first, then Initial (unusual order) works too; v2 type bits are honoured.
    v2_initial = protect(QUIC_V2, dcid, crypto(0, RFC_CLIENT_HELLO) + bytes(900))
    v2_zero = long_packet(QUIC_V2, "0rtt", dcid, os.urandom(50))
    hdrs = split_datagram(v2_zero + v2_initial)
    assert [h.packet_type for h in hdrs] == [PacketType.ZERO_RTT, PacketType.INITIAL]
    assert QuicInitialAssembler().feed_handshake(v2_zero + v2_initial) == RFC_CLIENT_HELLO


def test_too_many_coalesced_packets() -> None:
    dcid = b"\x01" * 8
    datagram = b"".join(long_packet(QUIC_V1, "handshake", dcid, b"x")
                        for _ in range(q.MAX_COALESCED_PACKETS + 1))
    with pytest.raises(LimitExceeded) as exc:
        split_datagram(datagram)
    assert exc.value.reason == "limit"


def test_hello_split_over_initials_out_of_order_and_retransmitted() -> None:
    dcid = bytes.fromhex("a1a2a3a4a5a6a7a8")
    p0 = protect(QUIC_V1, dcid, crypto(0, RFC_CLIENT_HELLO[:120]) + bytes(1000), pn=0)
    p1 = protect(QUIC_V1, dcid, crypto(120, RFC_CLIENT_HELLO[120:]) + bytes(1000), pn=1)
    # A retransmission with other framing and other bytes where it overlaps data already
    # held: the first copy wins.
    rtx = protect(QUIC_V1, dcid, crypto(60, bytes(60)) + bytes(1000), pn=2, pn_len=1)
    asm = QuicInitialAssembler()
    assert asm.feed_handshake(p1) is None
    assert asm.feed_handshake(p1) is None
    assert asm.feed_handshake(p0) == RFC_CLIENT_HELLO
    asm = QuicInitialAssembler()
    assert asm.feed_handshake(p0) is None
    assert asm.feed_handshake(rtx) is None
    assert asm.feed_handshake(p1) == RFC_CLIENT_HELLO


@pytest.mark.parametrize("where", [6, 13, 18, 19, 25, 600, 1183, 1199])
def test_bit_flip_is_decrypt_error(where: int) -> None:
    """Flips in the DCID (other keys), the protected packet number, the sample, the
    ciphertext and the tag all fail authentication."""
    damaged = bytearray(RFC_V1_PACKET)
    damaged[where] ^= 0x01
    with pytest.raises(DecryptError) as exc:
        parse_initial_datagram(bytes(damaged))
    assert exc.value.reason == "decrypt"
    with pytest.raises(DecryptError):
        QuicInitialAssembler().feed(bytes(damaged))


def test_unknown_version() -> None:
    for version in (0x1A2A3A4A, 0xFF00001B, 0x51303530):  # grease, draft-27, gQUIC Q050
        packet = RFC_V1_PACKET[:1] + version.to_bytes(4, "big") + RFC_V1_PACKET[5:]
        with pytest.raises(UnsupportedVersion) as exc:
            parse_initial_datagram(packet)
        assert exc.value.reason == "version"
        with pytest.raises(UnsupportedVersion):
            QuicInitialAssembler().feed(packet)
    with pytest.raises(UnsupportedVersion):
        initial_keys(0x1A2A3A4A, RFC_DCID)


def test_connection_id_cap() -> None:
    packet = (b"\xc0" + QUIC_V1.to_bytes(4, "big") + bytes([21]) + bytes(21) + b"\x00"
              + bytes(1200))
    with pytest.raises(BadValue):
        parse_initial_datagram(packet)
    ok = protect(QUIC_V1, bytes(20), crypto(0, RFC_CLIENT_HELLO) + bytes(900))
    assert parse_initial_datagram(ok)[0].dcid == bytes(20)


def test_reserved_bits_after_unprotection() -> None:
    packet = protect(QUIC_V1, RFC_DCID, RFC_PAYLOAD, reserved=1)
    with pytest.raises(BadValue):
        parse_initial_datagram(packet)


def test_too_short_for_header_protection_sample() -> None:
    # pn (1) + payload (3) + tag (16) is exactly the 4 + 16 bytes the sample needs.
    packet = protect(QUIC_V1, RFC_DCID, b"\x01\x00\x00", pn_len=1)
    assert parse_initial_datagram(packet)[0].frames == (PingFrame(), PaddingFrame(2))
    # One byte less (length field 20 -> 19) leaves no room for the sample.
    assert packet[16] == 20
    short = packet[:16] + bytes([19]) + packet[17:-1]
    with pytest.raises(Truncated):
        parse_initial_datagram(short)


def test_version_negotiation_packet() -> None:
    vn = (b"\x80" + bytes(4) + b"\x08" + RFC_DCID + b"\x00"
          + QUIC_V2.to_bytes(4, "big") + QUIC_V1.to_bytes(4, "big"))
    (hdr,) = split_datagram(vn)
    assert hdr.version == 0 and hdr.packet_type is None and hdr.size == len(vn)
    assert parse_initial_datagram(vn) == ()
    assert QuicInitialAssembler().feed(vn) is None
    with pytest.raises(BadValue):
        split_datagram(vn + b"\x00")


# ------------------------------------------------------------------------- frames


def test_parse_frames_all_initial_types() -> None:
    payload = (b"\x00\x00\x00" + b"\x01"
               + b"\x02" + varint(10) + varint(3) + varint(2) + varint(1)
               + varint(0) + varint(2) + varint(1) + varint(0)
               + b"\x03" + varint(5) + varint(0) + varint(0) + varint(5)
               + varint(7) + varint(8) + varint(9)
               + crypto(1000, b"abc")
               + b"\x1c" + varint(0x0A) + varint(0x06) + varint(4) + b"oops"
               + b"\x00")
    assert parse_frames(payload) == (
        PaddingFrame(3), PingFrame(),
        AckFrame(10, 3, 1, ((0, 2), (1, 0)), None),
        AckFrame(5, 0, 5, (), (7, 8, 9)),
        CryptoFrame(1000, b"abc"),
        ConnectionCloseFrame(0x0A, 0x06, b"oops"),
        PaddingFrame(1),
    )


@pytest.mark.parametrize("ftype", [0x04, 0x05, 0x07, 0x08, 0x0F, 0x10, 0x18, 0x1D, 0x1E,
                                   0x30, 0x31, 0x40, 0x4000 + 0x21, 0xFFFFFF])
def test_frames_not_allowed_in_initial(ftype: int) -> None:
    with pytest.raises(BadValue):
        parse_frames(varint(ftype) + bytes(8))
    packet = protect(QUIC_V1, RFC_DCID, crypto(0, b"\x01") + varint(ftype) + bytes(40))
    with pytest.raises(BadValue):
        parse_initial_datagram(packet)


def test_padding_runs() -> None:
    # Every zero byte is a PADDING frame and a run of them is reported as one; a type 0
    # in a longer encoding (0x40 0x00) is one more PADDING frame of the run.
    payload = bytes(5) + b"\x01" + b"\x40\x00" + bytes(3) + crypto(0, b"hi") + bytes(900)
    expected = (PaddingFrame(5), PingFrame(), PaddingFrame(4), CryptoFrame(0, b"hi"),
                PaddingFrame(900))
    assert parse_frames(payload) == expected
    assert parse_frames(memoryview(payload)) == expected
    assert parse_frames(bytes(1200)) == (PaddingFrame(1200),)
    assert parse_frames(bytes(3) + b"\x40\x00") == (PaddingFrame(4),)
    with pytest.raises(Truncated):
        parse_frames(bytes(3) + b"\x40")


def test_frame_errors() -> None:
    with pytest.raises(BadValue):
        parse_frames(b"")  # a packet must carry a frame
    with pytest.raises(BadValue):  # first range below packet number 0
        parse_frames(b"\x02" + varint(1) + varint(0) + varint(0) + varint(2))
    with pytest.raises(BadValue):  # additional range below 0
        parse_frames(b"\x02" + varint(3) + varint(0) + varint(1) + varint(0)
                     + varint(1) + varint(1))
    with pytest.raises(LimitExceeded):
        parse_frames(b"\x02" + varint(10) + varint(0) + varint(q.MAX_ACK_RANGES + 1)
                     + varint(0))
    with pytest.raises(BadValue):
        parse_frames(b"\x06" + varint((1 << 62) - 2) + varint(4) + b"abcd")
    for cut in (b"\x06", b"\x06\x00", b"\x06\x00\x05ab", b"\x1c\x00", b"\x03\x00\x00\x00\x00"):
        with pytest.raises(Truncated):
            parse_frames(cut)
    with pytest.raises(LimitExceeded):
        parse_frames(b"\x01" * (q.MAX_FRAMES_PER_PACKET + 1))


# ------------------------------------------------------------------------- caps


def test_crypto_beyond_cap() -> None:
    packet = protect(QUIC_V1, RFC_DCID, crypto(q.MAX_CRYPTO_BYTES - 2, b"abc") + bytes(900))
    with pytest.raises(LimitExceeded) as exc:
        QuicInitialAssembler().feed(packet)
    assert exc.value.reason == "limit"
    # Exactly up to the cap is fine (and incomplete).
    packet = protect(QUIC_V1, RFC_DCID, crypto(q.MAX_CRYPTO_BYTES - 3, b"abc") + bytes(900))
    assert QuicInitialAssembler().feed(packet) is None


def test_hello_declaring_more_than_cap() -> None:
    header = b"\x01" + (q.MAX_CRYPTO_BYTES).to_bytes(3, "big")
    packet = protect(QUIC_V1, RFC_DCID, crypto(0, header + bytes(100)) + bytes(900))
    with pytest.raises(LimitExceeded):
        QuicInitialAssembler().feed(packet)


def test_first_message_not_client_hello() -> None:
    packet = protect(QUIC_V1, RFC_DCID, crypto(0, b"\x02\x00\x00\x04abcd") + bytes(900))
    with pytest.raises(BadValue):
        QuicInitialAssembler().feed(packet)


def test_overlapping_retransmission_fills_only_gaps() -> None:
    """A later frame that spans held data and gaps fills the gaps from its own bytes."""
    dcid = bytes.fromhex("b1b2b3b4b5b6b7b8")
    hello = RFC_CLIENT_HELLO
    middle = protect(QUIC_V1, dcid, crypto(50, hello[50:60]) + crypto(100, hello[100:110])
                     + bytes(900), pn=0)
    spanning = protect(QUIC_V1, dcid, crypto(0, hello[:200]) + bytes(900), pn=1)
    tail = protect(QUIC_V1, dcid, crypto(150, hello[150:]) + bytes(900), pn=2)
    asm = QuicInitialAssembler()
    assert asm.feed_handshake(middle) is None
    assert asm.feed_handshake(spanning) is None
    assert asm.feed_handshake(tail) == hello


def test_compatible_version_change_keeps_first_dcid_keys() -> None:
    """A v2 Initial with the server's CID but keys from the client's first DCID (RFC 9368
    compatible negotiation) restarts under v2 with the first DCID's keys."""
    first_dcid, server_cid = b"\x0a" * 8, b"\x0b" * 8
    v1_part = protect(QUIC_V1, first_dcid, crypto(0, RFC_CLIENT_HELLO[:100]) + bytes(900))
    v2_all = protect(QUIC_V2, server_cid, crypto(0, RFC_CLIENT_HELLO) + bytes(900),
                     key_dcid=first_dcid, pn=1)
    asm = QuicInitialAssembler()
    assert asm.feed_handshake(v1_part) is None
    assert asm.feed_handshake(v2_all) == RFC_CLIENT_HELLO
    assert (asm.version, asm.dcid) == (QUIC_V2, first_dcid)


def test_crypto_range_cap() -> None:
    frames = b"".join(crypto(10 + 3 * i, b"x") for i in range(q.MAX_CRYPTO_RANGES + 1))
    packet = protect(QUIC_V1, RFC_DCID, frames)
    with pytest.raises(LimitExceeded):
        QuicInitialAssembler().feed(packet)
    frames = b"".join(crypto(10 + 3 * i, b"x") for i in range(q.MAX_CRYPTO_RANGES))
    assert QuicInitialAssembler().feed(protect(QUIC_V1, RFC_DCID, frames)) is None


def test_restart_cap_and_late_copies() -> None:
    part = crypto(0, RFC_CLIENT_HELLO[:50]) + bytes(1000)
    dcids = [bytes([i]) * 8 for i in range(1, q.MAX_RESTARTS + 3)]
    asm = QuicInitialAssembler()
    for dcid in dcids[:q.MAX_RESTARTS + 1]:
        assert asm.feed_handshake(protect(QUIC_V1, dcid, part)) is None
        assert asm.dcid == dcid
    # A late copy of an abandoned attempt is ignored, not a restart.
    assert asm.feed_handshake(protect(QUIC_V1, dcids[0], part, pn=7)) is None
    assert asm.dcid == dcids[q.MAX_RESTARTS]
    with pytest.raises(LimitExceeded):
        asm.feed_handshake(protect(QUIC_V1, dcids[-1], part))


# --------------------------------------------------------------------- properties

_FAST = settings(max_examples=300, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


@_FAST
@given(st.binary(max_size=2000))
def test_fuzz_parse_initial_datagram(data: bytes) -> None:
    try:
        parse_initial_datagram(data)
        split_datagram(data)
    except ParseError:
        pass


_FRAME_PIECES = st.one_of(
    st.integers(1, 1500).map(lambda n: ("padding", n)),
    st.just(("padding2", 1)),  # type 0 as a two-byte varint
    st.just(("ping", 0)),
    st.binary(max_size=40).map(lambda data: ("crypto", data)),
)


@_FAST
@given(st.lists(_FRAME_PIECES, min_size=1, max_size=12))
def test_padding_runs_any_layout(pieces: list[tuple[str, Any]]) -> None:
    payload = b""
    expected: list[object] = []
    for kind, value in pieces:
        if kind == "ping":
            payload += b"\x01"
            expected.append(PingFrame())
        elif kind == "crypto":
            payload += crypto(0, value)
            expected.append(CryptoFrame(0, value))
        else:
            payload += bytes(value) if kind == "padding" else b"\x40\x00"
            if expected and isinstance(expected[-1], PaddingFrame):
                expected[-1] = PaddingFrame(expected[-1].length + value)
            else:
                expected.append(PaddingFrame(value))
    assert parse_frames(payload) == tuple(expected)


@_FAST
@given(st.lists(st.binary(max_size=1500), max_size=5))
def test_fuzz_assembler(datagrams: list[bytes]) -> None:
    asm = QuicInitialAssembler()
    for d in datagrams:
        try:
            asm.feed(d)
        except ParseError:
            pass


@_FAST
@given(st.sampled_from([QUIC_V1, QUIC_V2, QUIC_DRAFT_29]),
       st.integers(0, 0x30), st.binary(max_size=40), st.binary(max_size=1500))
def test_fuzz_long_header_prefix(version: int, bits: int, middle: bytes, rest: bytes) -> None:
    data = bytes([0xC0 | bits]) + version.to_bytes(4, "big") + b"\x08" + RFC_DCID + middle + rest
    try:
        parse_initial_datagram(data)
        QuicInitialAssembler().feed(data)
    except ParseError:
        pass


@_FAST
@given(st.sampled_from([RFC_V1_PACKET, RFC_V2_PACKET]),
       st.lists(st.tuples(st.integers(0, 1199), st.integers(1, 255)), min_size=1, max_size=4),
       st.integers(1, 1200))
def test_fuzz_mutated_rfc_packet(packet: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    damaged = bytearray(packet)
    for pos, bits in flips:
        damaged[pos] ^= bits
    for data in (bytes(damaged), bytes(damaged[:cut])):
        try:
            QuicInitialAssembler().feed(data)
        except ParseError:
            pass


@_FAST
@given(st.binary(max_size=1500))
def test_fuzz_gquic(data: bytes) -> None:
    try:
        parse_gquic_client_hello(data)
    except ParseError:
        pass


@_FAST
@given(st.lists(st.integers(0, 1350), max_size=6), st.binary(max_size=200))
def test_fuzz_gquic_mutated(positions: list[int], noise: bytes) -> None:
    data = bytearray((QDATA / "gquic_q025_chlo.bin").read_bytes())
    for i, pos in enumerate(positions):
        data[pos % len(data)] ^= noise[i] if i < len(noise) and noise[i] else 0xFF
    try:
        parse_gquic_client_hello(bytes(data))
    except ParseError:
        pass


def _chunks(draw_sizes: list[int], data: bytes) -> Iterator[tuple[int, bytes]]:
    pos = 0
    for size in draw_sizes:
        if pos >= len(data):
            return
        yield pos, data[pos:pos + size]
        pos += size
    if pos < len(data):
        yield pos, data[pos:]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 120), max_size=30), st.randoms(use_true_random=False),
       st.integers(1, 4), st.lists(st.tuples(st.integers(0, 240), st.integers(1, 245)),
                                   max_size=4))
def test_split_hello_any_order_same_bytes(sizes: list[int], rnd: random.Random,
                                          per_packet: int,
                                          overlaps: list[tuple[int, int]]) -> None:
    """Whole == split: the hello cut into CRYPTO frames of any sizes, packed into several
    Initials with duplicates and re-framed overlapping copies, delivered in any order,
    always reassembles identically."""
    frames = list(_chunks(sizes, RFC_CLIENT_HELLO))
    frames += rnd.sample(frames, k=min(2, len(frames)))  # retransmitted pieces
    frames += [(o, RFC_CLIENT_HELLO[o:o + n]) for o, n in overlaps]  # re-framed copies
    rnd.shuffle(frames)
    packets = []
    for pn, i in enumerate(range(0, len(frames), per_packet)):
        payload = b"".join(crypto(o, d) for o, d in frames[i:i + per_packet])
        packets.append(protect(QUIC_V1, RFC_DCID, payload + bytes(16), pn=pn))
    rnd.shuffle(packets)
    asm = QuicInitialAssembler()
    results = [asm.feed_handshake(p) for p in packets]
    assert [r for r in results if r is not None] == [RFC_CLIENT_HELLO]
