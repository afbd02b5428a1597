"""Tests for monitor.parsers.tls: ClientHello parsing, record joining, JA3 and JA4.

Inputs come from real clients (Python's ssl module in memory; openssl s_client and
gnutls-cli recorded against openssl s_server on loopback, see tests/data/tls/; the peer
corpus captures) and from a small builder for edge cases. JA3 is compared with tshark's
``tls.handshake.ja3_full``; JA4 with published vectors (FoxIO's reference tests, the
JA4 specification's examples) and with nDPI's expected outputs for the corpus captures.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import shutil
import ssl
import subprocess
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import monitor.parsers.tls as tlsp
from monitor.errors import BadValue, LimitExceeded, ParseError, TrailingData, Truncated
from monitor.flow.reassembly import StreamPrefix
from monitor.parsers.tls import (
    MAX_CLIENT_HELLO_LEN,
    MAX_CLIENT_HELLO_RECORDS,
    MAX_CLIENT_HELLO_STREAM_LEN,
    MAX_EXTENSIONS,
    ClientHello,
    is_grease,
    ja3,
    ja3_hash,
    ja4,
    ja4_r,
    maybe_read_client_hello,
    maybe_read_client_hello_bytes,
    parse_client_hello,
)

DATA = Path(__file__).parent / "data"
TLS_DATA = DATA / "tls"
CORPUS = DATA / "corpus"
IN_CI = os.environ.get("CI") == "true"


def require_tool(name: str) -> None:
    """Skip when ``name`` is missing, except in CI, where it must be installed."""
    if shutil.which(name) is None:
        if IN_CI:
            pytest.fail(f"{name} is required in CI")
        pytest.skip(f"{name} not installed")


@cache
def recorder() -> ModuleType:
    """tests/data/tls/record_hellos.py (records fixtures; computes tshark's JA3)."""
    spec = importlib.util.spec_from_file_location("record_hellos", TLS_DATA / "record_hellos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- building ClientHellos -------------------------------------------------------------


def u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def vec(size: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(size, "big") + payload


def ext(ext_type: int, data: bytes) -> bytes:
    return u16(ext_type) + vec(2, data)


def sni_ext(*names: bytes, name_type: int = 0) -> bytes:
    return ext(0x0000, vec(2, b"".join(bytes([name_type]) + vec(2, n) for n in names)))


def alpn_ext(*protocols: bytes) -> bytes:
    return ext(0x0010, vec(2, b"".join(vec(1, p) for p in protocols)))


def u16_list_ext(ext_type: int, values: Iterable[int], length_size: int = 2) -> bytes:
    return ext(ext_type, vec(length_size, b"".join(u16(v) for v in values)))


def versions_ext(*versions: int) -> bytes:
    return u16_list_ext(0x002B, versions, length_size=1)


def groups_ext(*groups: int) -> bytes:
    return u16_list_ext(0x000A, groups)


def sigalgs_ext(*algs: int) -> bytes:
    return u16_list_ext(0x000D, algs)


def key_share_ext(*shares: tuple[int, int]) -> bytes:
    return ext(0x0033, vec(2, b"".join(u16(g) + vec(2, bytes([g & 0xFF]) * n)
                                       for g, n in shares)))


def ech_outer_ext(payload_len: int = 200) -> bytes:
    """An outer encrypted_client_hello (type 0, HKDF-SHA256/AES-128-GCM, config 7)."""
    return ext(0xFE0D, b"\x00" + u16(1) + u16(1) + b"\x07" + vec(2, b"\x11" * 32)
               + vec(2, b"\x22" * payload_len))


def client_hello(
    *,
    version: int = 0x0303,
    session_id: bytes = b"\x5a" * 32,
    ciphers: Iterable[int] = (0x1301, 0x1302, 0xC02B),
    compression: bytes = b"\x00",
    extensions: list[bytes] | None = None,
) -> bytes:
    """A Handshake message (type 1) with the given fields; ``extensions=None`` omits the
    extensions block entirely (a TLS <= 1.2 hello)."""
    body = (u16(version) + bytes(range(32)) + vec(1, session_id)
            + vec(2, b"".join(u16(c) for c in ciphers)) + vec(1, compression))
    if extensions is not None:
        body += vec(2, b"".join(extensions))
    return b"\x01" + len(body).to_bytes(3, "big") + body


def records(message: bytes, sizes: Iterable[int] = (), version: int = 0x0301) -> bytes:
    """``message`` as handshake records: fragment sizes from ``sizes``, the rest in one."""
    out, pos = bytearray(), 0
    for size in sizes:
        if pos >= len(message):
            break
        chunk = message[pos : pos + size]
        out += b"\x16" + u16(version) + vec(2, chunk)
        pos += len(chunk)
    while pos < len(message):
        chunk = message[pos : pos + 2**14]
        out += b"\x16" + u16(version) + vec(2, chunk)
        pos += len(chunk)
    return bytes(out)


def rich_hello() -> bytes:
    """A TLS 1.3-style hello exercising every interpreted extension."""
    return client_hello(
        ciphers=(0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F),
        extensions=[
            sni_ext(b"Rich.Example.ORG"),
            ext(0x000B, vec(1, b"\x00")),
            groups_ext(0x001D, 0x0017),
            sigalgs_ext(0x0403, 0x0804, 0x0401),
            alpn_ext(b"h2", b"http/1.1"),
            versions_ext(0x0304, 0x0303),
            key_share_ext((0x001D, 32)),
            ext(0x002D, b"\x01\x01"),
            ext(0x002A, b""),
            ext(0x0029, vec(2, vec(2, b"id") + b"\x00\x00\x00\x01") + vec(2, vec(1, b"\x33" * 32))),
        ],
    )


def python_client_hello(
    server_hostname: str | None,
    alpn: list[str] | None = None,
    maximum_version: ssl.TLSVersion | None = None,
) -> bytes:
    """The records a Python ssl (OpenSSL) client sends first, generated in memory."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if maximum_version is not None:
        ctx.maximum_version = maximum_version
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def single_record_message(stream: bytes) -> bytes:
    """The handshake message of a one-record stream, read from the header directly."""
    assert stream[0] == 22 and int.from_bytes(stream[3:5], "big") == len(stream) - 5
    return stream[5:]


def with_extension(message: bytes, extra: bytes, *, first: bool = False) -> bytes:
    """``message`` (a hello with extensions) with one more extension added."""
    ch = parse_client_hello(message)
    body_start = 4 + 2 + 32 + 1 + len(ch.session_id) + 2 + 2 * len(ch.cipher_suites)
    body_start += 1 + len(ch.compression_methods)
    head, exts = message[4:body_start], message[body_start + 2 :]
    exts = extra + exts if first else exts + extra
    body = head + vec(2, exts)
    return b"\x01" + len(body).to_bytes(3, "big") + body


# --- incremental reading, h11 style ----------------------------------------------------

Outcome = tuple[str, object]


def outcome(fn: Callable[[bytes], object], data: bytes) -> Outcome:
    try:
        result = fn(data)
    except ParseError as exc:
        return ("error", type(exc))
    return ("none", None) if result is None else ("ok", result)


def bytewise(data: bytes) -> tuple[Outcome, int]:
    """Feed growing prefixes; the first decisive outcome and the prefix length."""
    for i in range(len(data) + 1):
        result = outcome(maybe_read_client_hello, data[:i])
        if result[0] != "none":
            return result, i
    return ("none", None), len(data)


def read_three_ways(stream: bytes) -> ClientHello:
    """Read ``stream`` whole, byte by byte and with trailing bytes; all must agree."""
    joined = maybe_read_client_hello_bytes(stream)
    assert joined is not None
    message, consumed = joined
    assert consumed == len(stream), "fixtures hold exactly the records of the hello"
    whole = maybe_read_client_hello(stream)
    assert whole is not None
    by_byte, needed = bytewise(stream)
    assert by_byte == ("ok", whole)
    assert needed == len(stream)
    trailing = stream + b"\x17\x03\x03\x00\x05early" + bytes(range(40))
    assert maybe_read_client_hello(trailing) == whole
    assert maybe_read_client_hello_bytes(trailing) == (message, consumed)
    assert parse_client_hello(message) == whole
    return whole


# --- real clients ----------------------------------------------------------------------

PYTHON_CASES = [
    ("example.com", None, "example.com", ()),
    ("Mixed.Case.Example.", ["h2", "http/1.1"], "mixed.case.example", ("h2", "http/1.1")),
    ("xn--bcher-kva.example", ["http/1.1"], "xn--bcher-kva.example", ("http/1.1",)),
    ("a" * 63 + ".av", ["x"], "a" * 63 + ".av", ("x",)),
    (None, ["h2"], None, ("h2",)),
]


@pytest.mark.parametrize(("hostname", "alpn", "sni", "expected_alpn"), PYTHON_CASES)
def test_python_ssl_client_hello(hostname: str | None, alpn: list[str] | None, sni: str | None,
                                 expected_alpn: tuple[str, ...]) -> None:
    stream = python_client_hello(hostname, alpn)
    ch = read_three_ways(stream)
    assert ch.sni == sni
    assert ch.alpn == expected_alpn
    assert ch.legacy_version == 0x0303
    assert 0x0304 in ch.versions and 0x002B in ch.extensions
    assert (0x0000 in ch.extensions) is (hostname is not None)
    assert len(ch.random) == 32 and ch.compression_methods == (0,)
    assert ch.key_share_groups and ch.key_share_groups[0] in ch.supported_groups
    assert not ch.ech and not ch.psk and not ch.early_data
    fp = ja4(ch)
    assert fp[:4] == ("t13d" if hostname else "t13i")
    assert fp[8:10] == (alpn[0][0] + alpn[0][-1] if alpn else "00")
    assert int(fp[4:6]) == len(ch.cipher_suites)
    assert int(fp[6:8]) == len(ch.extensions)


def test_python_ssl_tls12_only_has_no_supported_versions() -> None:
    ch = read_three_ways(python_client_hello("tls12.example", None, ssl.TLSVersion.TLSv1_2))
    assert 0x002B not in ch.extensions
    assert ch.versions == (0x0303,)
    assert ja4(ch).startswith("t12d")


def fixture_cases() -> list[str]:
    return sorted(json.loads((TLS_DATA / "expected.json").read_text()))


@pytest.mark.parametrize("name", fixture_cases())
def test_recorded_client_hello(name: str) -> None:
    """Hellos recorded from openssl s_client and gnutls-cli against openssl s_server."""
    expected = json.loads((TLS_DATA / "expected.json").read_text())[name]
    stream = (TLS_DATA / f"{name}.bin").read_bytes()
    assert len(stream) == expected["bytes"]
    ch = read_three_ways(stream)
    assert ch.sni == expected["sni"]
    assert list(ch.alpn) == expected["alpn"]
    assert ja3(ch) == expected["tshark_ja3_full"]
    assert ja3_hash(ch) == expected["tshark_ja3"] == ch.ja3_hash


def test_recorded_tls1_client_hello_details() -> None:
    ch = read_three_ways((TLS_DATA / "openssl-s_client-tls1.bin").read_bytes())
    assert ch.legacy_version == 0x0301 and ch.versions == (0x0301,)
    assert ch.sni == "legacy.avmon.test"  # sent as "Legacy.AVMON.test."
    assert ja4(ch).startswith("t10d")


@pytest.mark.slow
def test_live_openssl_s_client_against_s_server() -> None:
    require_tool("openssl")
    rec = recorder()
    sent = rec.record_client_hello(
        ["openssl", "s_client", "-connect", "127.0.0.1:{port}", "-servername", "Live.AVMON.test",
         "-alpn", "avmon/1,h2"])
    ch = read_three_ways(rec.first_flight(sent))
    assert ch.sni == "live.avmon.test"
    assert ch.alpn == ("avmon/1", "h2")
    assert ja4(ch)[8:10] == "a1"


def _openssl_has_mlkem() -> bool:
    if shutil.which("openssl") is None:
        return False
    out = subprocess.run(["openssl", "list", "-kem-algorithms"], capture_output=True,
                         text=True, timeout=30).stdout
    return "MLKEM" in out.upper()


@pytest.mark.slow
@pytest.mark.skipif(not _openssl_has_mlkem(), reason="installed OpenSSL has no ML-KEM")
def test_live_post_quantum_client_hello() -> None:
    rec = recorder()
    sent = rec.record_client_hello(
        ["openssl", "s_client", "-connect", "127.0.0.1:{port}", "-servername", "pq.avmon.test",
         "-groups", "X25519MLKEM768:X25519"])
    ch = read_three_ways(rec.first_flight(sent))
    assert ch.sni == "pq.avmon.test"
    assert 0x11EC in ch.key_share_groups


# --- corpus captures -------------------------------------------------------------------


@cache
def corpus_client_hellos(name: str) -> tuple[tuple[int, ClientHello], ...]:
    """Every ClientHello in a capture: TCP payloads per direction through StreamPrefix,
    then maybe_read_client_hello; (client port, hello) pairs."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.utils import rdpcap

    streams: dict[tuple[str, int, str, int], StreamPrefix] = {}
    for pkt in rdpcap(str(CORPUS / name)):
        ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
        if ip is None or not pkt.haslayer(TCP):
            continue
        tcp = pkt[TCP]
        key = (ip.src, int(tcp.sport), ip.dst, int(tcp.dport))
        prefix = streams.setdefault(key, StreamPrefix(MAX_CLIENT_HELLO_STREAM_LEN))
        if int(tcp.flags) & 0x02:
            prefix.set_isn(int(tcp.seq))
        prefix.add(int(tcp.seq), bytes(tcp.payload))
    found = []
    for key, prefix in streams.items():
        data = prefix.contiguous()
        if len(data) > 5 and data[0] == 22 and data[5] == 1:
            ch = maybe_read_client_hello(data)
            assert ch is not None, f"incomplete ClientHello on {key}"
            found.append((key[1], ch))
    return tuple(sorted(found, key=lambda item: item[0]))


def manifest() -> list[dict[str, object]]:
    entries: list[dict[str, object]] = json.loads((CORPUS / "MANIFEST.json").read_text())
    return entries


TLS_CAPTURES = [
    str(e["file"]) for e in manifest()
    if e["file"] in {
        "ndpi_dingtalk.pcap", "ndpi_KakaoTalk_chat.pcap", "zeek_tls_tls-conn-with-extensions.pcap",
        "zeek_tls_chrome-34-google.pcap", "zeek_tls_tls1.2.pcap",
        "zeek_tls_openjdk-25.0.2-zeek.org.pcap", "sv_community-id-ipv6.pcap",
        "sv_community-id-ipv4.pcap", "sv_bug-2646-02.pcap", "ndpi_tls_heur__trojan-tcp-tls.pcapng",
        "ndpi_tls_2_reasms.pcapng", "ndpi_tls_ech.pcapng", "ndpi_http_ipv6.pcap",
    }
]


@pytest.mark.parametrize("name", TLS_CAPTURES)
def test_corpus_sni_matches_manifest(name: str) -> None:
    entry = next(e for e in manifest() if e["file"] == name)
    expected = entry["expected"]
    assert isinstance(expected, dict)
    hellos = corpus_client_hellos(name)
    assert hellos, "no ClientHello found"
    got = {ch.sni for _, ch in hellos if ch.sni is not None}
    assert got == set(expected["sni"])


#: JA4 values nDPI's test suite expects for these captures
#: (ntop/nDPI tests/cfgs/default/result/<capture>.out, "JA4:" per flow), by client port.
#: ndpi_http_ipv6.pcap is left out: its stored result prints "ht" for ALPN "http/1.1",
#: where the JA4 specification's own example says "h1".
NDPI_JA4 = {
    "ndpi_dingtalk.pcap": {49352: "t13d1516h2_8daaf6152771_e5627efa2ab1"},
    "ndpi_tls_ech.pcapng": {47460: "t13d1516h2_8daaf6152771_02713d6af862"},
    "ndpi_tls_2_reasms.pcapng": {38134: "t00d0309h2_55b375c5d22e_566d5108064c"},
    "ndpi_tls_heur__trojan-tcp-tls.pcapng": {
        58730: "t13d3113h2_e8f1e7e78f70_ce5650b735ce",
        41796: "t13d1911h2_9dc949149365_e7c285222651",
    },
}


@pytest.mark.parametrize("name", sorted(NDPI_JA4))
def test_corpus_ja4_matches_ndpi(name: str) -> None:
    got = {port: ja4(ch) for port, ch in corpus_client_hellos(name)}
    for port, expected in NDPI_JA4[name].items():
        assert got[port] == expected


def test_corpus_ech_hello() -> None:
    [(_, ch)] = corpus_client_hellos("ndpi_tls_ech.pcapng")
    assert ch.ech
    assert ch.sni == "performance.radar.cloudflare.com"  # the outer name
    assert any(is_grease(e) for e in ch.extensions)


def test_corpus_tls10_hello_without_extensions() -> None:
    """KakaoTalk frame 345: a TLS 1.0 ClientHello with no extensions block at all."""
    bare = [ch for _, ch in corpus_client_hellos("ndpi_KakaoTalk_chat.pcap") if not ch.extensions]
    assert len(bare) == 1
    ch = bare[0]
    assert ch.legacy_version == 0x0301 and ch.versions == (0x0301,)
    assert ch.sni is None and ch.alpn == () and ch.other_extensions == ()
    assert ja3(ch) == "769,4-5-47-51-50-10-22-19-9-21-18-3-8-20-17,,,"
    assert ja4(ch) == "t10i150000_e2ff6cb279ee_000000000000"


def test_corpus_split_hello_reassembled() -> None:
    """dingtalk's ClientHello spans two TCP segments (MANIFEST notes)."""
    [(_, ch)] = corpus_client_hellos("ndpi_dingtalk.pcap")
    assert ch.sni == "static.dingtalk.com"
    assert ch.alpn == ("h2", "http/1.1")


def tshark_hellos(path: Path) -> dict[int, tuple[str, str]]:
    """Client port -> (SNI, ja3_full) for every ClientHello tshark dissects over TCP."""
    out = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-o", "tcp.desegment_tcp_streams:TRUE",
         "-Y", "tls.handshake.type == 1 and tcp", "-T", "fields", "-e", "tcp.srcport",
         "-e", "tls.handshake.extensions_server_name", "-e", "tls.handshake.ja3_full"],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout
    rows = [line.split("\t") for line in out.splitlines() if line.strip()]
    return {int(port): (sni, full) for port, sni, full in rows}


#: Client ports where tshark finds a ClientHello inside another protocol (TLS after a
#: SOCKS handshake, nDPI flow 3), which a stream-start reader rightly does not see.
TUNNELLED_HELLOS = {"ndpi_tls_heur__trojan-tcp-tls.pcapng": {60654}}


@pytest.mark.parametrize("name", TLS_CAPTURES)
def test_corpus_ja3_matches_tshark(name: str) -> None:
    require_tool("tshark")
    ours = {port: (ch.sni or "", ja3(ch)) for port, ch in corpus_client_hellos(name)}
    theirs = tshark_hellos(CORPUS / name)
    assert set(theirs) - set(ours) == TUNNELLED_HELLOS.get(name, set())
    assert ours == {port: theirs[port] for port in ours}


def test_corpus_ja3_hash_is_md5_of_string() -> None:
    for _, ch in corpus_client_hellos("zeek_tls_chrome-34-google.pcap"):
        assert ch.ja3_hash == hashlib.md5(ch.ja3.encode()).hexdigest()
        assert ch.ja3_hash == "a607f3a5c94c2ee592af1456f36c8367"  # tshark, MANIFEST run


# --- crafted edge cases ----------------------------------------------------------------


def test_rich_hello_fields() -> None:
    ch = read_three_ways(records(rich_hello()))
    assert ch.sni == "rich.example.org"
    assert ch.alpn == ("h2", "http/1.1")
    assert ch.versions == (0x0304, 0x0303)
    assert ch.supported_groups == (0x001D, 0x0017)
    assert ch.ec_point_formats == (0,)
    assert ch.signature_algorithms == (0x0403, 0x0804, 0x0401)
    assert ch.key_share_groups == (0x001D,)
    assert ch.psk and ch.early_data and not ch.ech
    assert ch.extensions == (0x0000, 0x000B, 0x000A, 0x000D, 0x0010, 0x002B, 0x0033, 0x002D,
                             0x002A, 0x0029)
    assert ch.other_extensions == ((0x002D, b"\x01\x01"),)
    assert ch.session_id == b"\x5a" * 32
    assert ch.cipher_suites == (0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F)


def test_post_quantum_hello_spans_records_and_segments() -> None:
    """A Chrome-like hello with an X25519MLKEM768 key share (1216-byte key) is ~1.6 kB:
    two TCP segments; here also split into three records and delivered out of order."""
    message = client_hello(
        ciphers=(0x2A2A, 0x1301, 0x1302, 0x1303, 0xC02B),
        extensions=[
            ext(0x0A0A, b""),
            sni_ext(b"pq.example"),
            alpn_ext(b"h2"),
            versions_ext(0x3A3A, 0x0304, 0x0303),
            groups_ext(0x4A4A, 0x11EC, 0x001D, 0x0017),
            key_share_ext((0x4A4A, 1), (0x11EC, 1216), (0x001D, 32)),
            sigalgs_ext(0x0403, 0x0804),
            ech_outer_ext(208),  # Chrome sends a GREASE ECH extension of about this size
            ext(0x1A1A, b"\x00"),
        ],
    )
    assert len(message) > 1448
    stream = records(message, sizes=(700, 600))
    ch = read_three_ways(stream)
    assert ch.key_share_groups == (0x4A4A, 0x11EC, 0x001D)
    assert ch.sni == "pq.example" and ch.ech
    segments = [(i, stream[i : i + 1448]) for i in range(0, len(stream), 1448)]
    prefix = StreamPrefix(MAX_CLIENT_HELLO_STREAM_LEN)
    prefix.set_isn(0xFFFFFF00)  # the stream wraps the 32-bit sequence space
    for offset, seg in reversed(segments):
        assert maybe_read_client_hello(prefix.contiguous()) is None
        prefix.add((0xFFFFFF01 + offset) % 2**32, seg)
    assert maybe_read_client_hello(prefix.contiguous()) == ch
    assert ja4(ch) == "t13d0407h2_" + ja4(ch)[11:]
    assert ja4_r(ch).split("_")[1] == "1301,1302,1303,c02b"


def test_ech_extension_inserted_into_real_hello() -> None:
    message = with_extension(single_record_message(python_client_hello("outer.example", ["h2"])),
                             ech_outer_ext())
    ch = read_three_ways(records(message))
    assert ch.ech
    assert ch.sni == "outer.example"
    assert 0xFE0D in ch.extensions
    assert all(t != 0xFE0D for t, _ in ch.other_extensions)
    assert "fe0d" in ja4_r(ch).split("_")[2].split(",")


def test_tls10_hello_without_extensions() -> None:
    message = client_hello(version=0x0301, session_id=b"", ciphers=(0x0035, 0x002F, 0x000A),
                           extensions=None)
    ch = read_three_ways(records(message))
    assert ch.extensions == () and ch.versions == (0x0301,)
    assert ja3(ch) == "769,53-47-10,,,"
    assert ja4(ch) == "t10i030000_" + hashlib.sha256(b"000a,002f,0035").hexdigest()[:12] \
        + "_000000000000"


def test_empty_extensions_block() -> None:
    ch = parse_client_hello(client_hello(extensions=[]))
    assert ch.extensions == ()
    assert ja4(ch).endswith("_000000000000")


def grease_hello() -> bytes:
    return client_hello(
        ciphers=(0xDADA, 0x1301, 0xC02F, 0x3A3A),
        extensions=[
            ext(0xBABA, b""),
            sni_ext(b"grease.example"),
            versions_ext(0x7A7A, 0x0304, 0x0303),
            groups_ext(0x8A8A, 0x001D),
            sigalgs_ext(0x0403, 0xAAAA, 0x0804),
            alpn_ext(b"h2"),
            key_share_ext((0x8A8A, 1), (0x001D, 32)),
            ext(0xBABA, b"\x00"),  # a GREASE type may repeat; real types may not
            ext(0x0A0A, b"\x00"),
        ],
    )


def test_grease_tolerated_and_ignored_by_fingerprints() -> None:
    ch = read_three_ways(records(grease_hello()))
    assert ch.cipher_suites[0] == 0xDADA
    assert ch.versions == (0x7A7A, 0x0304, 0x0303)
    assert (0xBABA, b"") in ch.other_extensions
    assert ja3(ch) == "771,4865-49199,0-43-10-13-16-51,29,"
    assert ja4_r(ch) == "t13d0206h2_1301,c02f_000a,000d,002b,0033_0403,0804"
    assert ja4(ch) == "t13d0206h2_" + hashlib.sha256(b"1301,c02f").hexdigest()[:12] + "_" \
        + hashlib.sha256(b"000a,000d,002b,0033_0403,0804").hexdigest()[:12]


def test_ja3_of_grease_hello_matches_tshark() -> None:
    require_tool("tshark")
    stream = records(grease_hello())
    full, digest = recorder().tshark_ja3(stream)
    ch = maybe_read_client_hello(stream)
    assert ch is not None
    assert (ja3(ch), ja3_hash(ch)) == (full, digest)


@pytest.mark.parametrize("hostname", ["tshark.example", None])
def test_ja3_of_python_hello_matches_tshark(hostname: str | None) -> None:
    require_tool("tshark")
    stream = python_client_hello(hostname, ["h2", "http/1.1"])
    full, digest = recorder().tshark_ja3(stream)
    ch = maybe_read_client_hello(stream)
    assert ch is not None
    assert (ja3(ch), ja3_hash(ch)) == (full, digest)


def test_unknown_extension_passes_through() -> None:
    message = client_hello(extensions=[ext(0x1234, b"xyz"), sni_ext(b"u.example"),
                                       ext(0xFFCE, b""), ext(0x0039, b"\x01\x02")])
    ch = parse_client_hello(message)
    assert ch.extensions == (0x1234, 0x0000, 0xFFCE, 0x0039)
    assert ch.other_extensions == ((0x1234, b"xyz"), (0xFFCE, b""), (0x0039, b"\x01\x02"))
    assert ch.is_quic
    assert ch.ja4.startswith("q")
    assert ja4(ch).startswith("t") and ja4(ch, "q") == ch.ja4


def test_server_name_rules() -> None:
    def sni_of(*names: bytes, name_type: int = 0) -> str | None:
        return parse_client_hello(client_hello(extensions=[sni_ext(*names, name_type=name_type)])
                                  ).sni

    assert sni_of(b"WWW.Example.COM.") == "www.example.com"
    assert sni_of(b"_svc.example") == "_svc.example"
    assert sni_of(b"first.example", b"second.example") == "first.example"
    assert sni_of(b"other-type", name_type=7) is None
    assert sni_of(b"x" * 63 + b"." + b"y" * 63 + b"." + b"z" * 63 + b"." + b"w" * 61) is not None
    # A UTF-8 (U-label) name is taken in A-label form, as signatures and DNS use it.
    assert sni_of("CAFÉ.example".encode()) == "xn--caf-dma.example"
    for bad in (b"", b"caf\xe9.example", b"has space.example", b"a..b", b".lead", b"nul\x00",
                b"x" * 64 + b".example", b"x" * 63 + b"." + b"y" * 63 + b"." + b"z" * 63 + b"."
                + b"w" * 62, b"example.com.."):
        with pytest.raises(BadValue):
            sni_of(bad)
    empty_ext = parse_client_hello(client_hello(extensions=[ext(0x0000, b"")]))
    assert empty_ext.sni is None and ja4(empty_ext)[3] == "d"
    with pytest.raises(BadValue):
        parse_client_hello(client_hello(extensions=[ext(0x0000, vec(2, b""))]))


def _patched_ciphers(cipher_bytes: bytes) -> bytes:
    body = u16(0x0303) + bytes(32) + vec(1, b"") + vec(2, cipher_bytes) + vec(1, b"\x00")
    return b"\x01" + len(body).to_bytes(3, "big") + body


DECLARED_RULE_VIOLATIONS: dict[str, bytes] = {
    "duplicate extension": client_hello(extensions=[sni_ext(b"a.example"),
                                                    sni_ext(b"b.example")]),
    "pre_shared_key not last": client_hello(extensions=[ext(0x0029, b"\x00"),
                                                        sni_ext(b"a.example")]),
    "empty ALPN name": client_hello(extensions=[alpn_ext(b"h2", b"")]),
    "odd cipher length": _patched_ciphers(b"\x13\x01\x13"),
    "no ciphers": client_hello(ciphers=()),
    "no compression": client_hello(compression=b""),
    "session id over 32": client_hello(session_id=b"\x01" * 33),
    "odd groups": client_hello(extensions=[ext(0x000A, vec(2, b"\x00\x1d\x00"))]),
    "odd versions": client_hello(extensions=[ext(0x002B, vec(1, b"\x03\x04\x03"))]),
    "odd signature algorithms": client_hello(extensions=[ext(0x000D, vec(2, b"\x04"))]),
    "server hello type": b"\x02" + client_hello()[1:],
}


@pytest.mark.parametrize("what", sorted(DECLARED_RULE_VIOLATIONS))
def test_declared_rules_are_enforced(what: str) -> None:
    with pytest.raises(BadValue):
        parse_client_hello(DECLARED_RULE_VIOLATIONS[what])


def test_truncation_at_every_offset() -> None:
    """Cut the body anywhere (fixing the handshake length): only the cut right after the
    compression methods is a valid (extension-less) hello; every other cut is Truncated."""
    message = rich_hello()
    body = message[4:]
    no_ext_end = 2 + 32 + 1 + 32 + 2 + 10 + 1 + 1
    for cut in range(len(body)):
        short = b"\x01" + cut.to_bytes(3, "big") + body[:cut]
        if cut == no_ext_end:
            assert parse_client_hello(short).extensions == ()
            continue
        with pytest.raises(Truncated):
            parse_client_hello(short)
    for cut in range(len(message)):
        with pytest.raises(Truncated):
            parse_client_hello(message[:cut])


def test_inner_length_overruns_are_truncated() -> None:
    message = bytearray(rich_hello())
    name = message.index(b"Rich.Example.ORG")
    for offset, size in ((name - 2, 2), (message.index(b"http/1.1") - 1, 1)):
        mutated = bytearray(message)
        value = int.from_bytes(mutated[offset : offset + size], "big") + 100
        mutated[offset : offset + size] = value.to_bytes(size, "big")
        with pytest.raises(Truncated):
            parse_client_hello(bytes(mutated))


def test_trailing_data_is_rejected() -> None:
    with pytest.raises(TrailingData):
        parse_client_hello(rich_hello() + b"\x00")
    # one byte too many inside supported_versions' extension_data
    with pytest.raises(TrailingData):
        parse_client_hello(client_hello(extensions=[ext(0x002B, vec(1, b"\x03\x04") + b"\x00")]))
    # junk between the end of the extensions block and the end of the message
    message = client_hello(extensions=[sni_ext(b"t.example")])
    body = message[4:] + b"\x00"
    with pytest.raises(TrailingData):
        parse_client_hello(b"\x01" + len(body).to_bytes(3, "big") + body)


def test_over_cap_hello_raises_limit() -> None:
    big = client_hello(extensions=[ext(0xFFCE, b"\x00" * MAX_CLIENT_HELLO_LEN)])
    readers: list[Callable[[bytes], object]] = [parse_client_hello, maybe_read_client_hello]
    for reader, data in zip(readers, (big, records(big)), strict=True):
        with pytest.raises(LimitExceeded) as info:
            reader(data)
        assert info.value.reason == "limit"
    # decided from the handshake header alone, before the body arrives
    header_only = b"\x16\x03\x01\x00\x04" + b"\x01" + (MAX_CLIENT_HELLO_LEN + 1).to_bytes(3, "big")
    with pytest.raises(LimitExceeded):
        maybe_read_client_hello(header_only)
    largest = client_hello(extensions=[ext(0xFFCE, b"")])
    pad = MAX_CLIENT_HELLO_LEN - (len(largest) - 4)
    largest = client_hello(extensions=[ext(0xFFCE, b"\x00" * pad)])
    assert len(largest) - 4 == MAX_CLIENT_HELLO_LEN
    assert maybe_read_client_hello(records(largest)) is not None


def test_too_many_extensions_or_records() -> None:
    many = client_hello(extensions=[ext(0x1000 + i, b"") for i in range(MAX_EXTENSIONS + 1)])
    with pytest.raises(LimitExceeded):
        parse_client_hello(many)
    ok = client_hello(extensions=[ext(0x1000 + i, b"") for i in range(MAX_EXTENSIONS)])
    assert len(parse_client_hello(ok).extensions) == MAX_EXTENSIONS
    message = rich_hello()
    assert len(message) < MAX_CLIENT_HELLO_RECORDS
    assert maybe_read_client_hello(records(message, sizes=[1] * len(message))) is not None
    huge = client_hello(extensions=[ext(0xFFCE, b"\x00" * MAX_CLIENT_HELLO_RECORDS)])
    with pytest.raises(LimitExceeded):
        maybe_read_client_hello(records(huge, sizes=[1] * len(huge)))


def test_record_layer_errors() -> None:
    stream = records(rich_hello(), sizes=(100,))
    assert maybe_read_client_hello(b"") is None
    for i in range(len(stream)):
        assert maybe_read_client_hello(stream[:i]) is None
    bad: dict[str, bytes] = {
        "not a handshake record": b"\x17",
        "SSLv2-style hello": b"\x80\x2e\x01\x00\x02",
        "HTTP": b"GET / HTTP/1.1\r\n",
        "record major version": b"\x16\x04",
        "zero-length record": b"\x16\x03\x01\x00\x00",
        "record over 2^14": b"\x16\x03\x01\x40\x01",
        "server hello": b"\x16\x03\x03\x00\x04\x02",
        "alert between fragments": stream[:105] + b"\x15\x03\x03\x00\x02\x02\x28",
    }
    for what, data in bad.items():
        with pytest.raises(BadValue):
            maybe_read_client_hello(data)
            pytest.fail(what)


# --- fingerprint vectors ---------------------------------------------------------------


def test_ja3_salesforce_readme_example() -> None:
    """The example in salesforce/ja3's README and its MD5."""
    ch = parse_client_hello(client_hello(
        version=0x0301,
        ciphers=(47, 53, 5, 10, 49161, 49162, 49171, 49172, 50, 56, 19, 4),
        extensions=[sni_ext(b"ja3.example"), groups_ext(23, 24, 25),
                    ext(0x000B, vec(1, b"\x00"))],
    ))
    assert ch.ja3 == "769,47-53-5-10-49161-49162-49171-49172-50-56-19-4,0-10-11,23-24-25,0"
    assert ch.ja3_hash == "ada70206e40642a3e4461f35503241d5"


def test_ja4_foxio_reference_vector() -> None:
    """FoxIO's reference unit test (rust/ja4/src/tls.rs, test_client_stats_into_out) and
    the JA4 specification example: ciphers, extensions and signature algorithms in this
    wire order with SNI and ALPN h2 give t13d1516h2_8daaf6152771_e5627efa2ab1."""
    ciphers = (0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013,
               0xC014, 0x009C, 0x009D, 0x002F, 0x0035)
    order = (0x001B, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002D, 0x000D, 0x0005, 0x0023,
             0x0012, 0x002B, 0xFF01, 0x000B, 0x000A, 0x0015)
    built = {
        0x0000: sni_ext(b"example.com"),
        0x0010: alpn_ext(b"h2", b"http/1.1"),
        0x000D: sigalgs_ext(0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601),
        0x002B: versions_ext(0x0304, 0x0303),
        0x0033: key_share_ext((0x001D, 32)),
        0x000A: groups_ext(0x001D, 0x0017, 0x0018),
        0x000B: ext(0x000B, vec(1, b"\x00")),
    }
    message = client_hello(
        ciphers=(0x0A0A, *ciphers),
        extensions=[ext(0x2A2A, b""), *(built.get(t, ext(t, b"")) for t in order),
                    ext(0x3A3A, b"\x00")],
    )
    ch = read_three_ways(records(message))
    assert ja4(ch) == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    assert ja4_r(ch) == (
        "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_"
        "0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_"
        "0403,0804,0401,0503,0805,0501,0806,0601"
    )
    assert ja4(ch, "q").startswith("q13d1516h2_")


def test_ja4_published_raw_vector() -> None:
    """A JA4/JA4_r pair published by a third-party JA4 reporting service:
    t13d1011h2_61a7ad8aa9b6_3fcd1a44f3e3 for the raw lists below."""
    ciphers = (0x1302, 0x1303, 0x1301, 0xC02C, 0xC030, 0xC02B, 0xC02F, 0xCCA9, 0xCCA8, 0x00FF)
    sigs = (0x0503, 0x0403, 0x0807, 0x0806, 0x0805, 0x0804, 0x0601, 0x0501, 0x0401)
    message = client_hello(ciphers=ciphers, extensions=[
        sni_ext(b"x.example"), ext(0x000B, vec(1, b"\x00")), groups_ext(0x001D),
        ext(0x0023, b""), alpn_ext(b"h2"), ext(0x0005, b""), ext(0x0017, b""), sigalgs_ext(*sigs),
        versions_ext(0x0304), ext(0x002D, b"\x01\x01"), key_share_ext((0x001D, 32)),
    ])
    ch = parse_client_hello(message)
    assert ja4_r(ch) == (
        "t13d1011h2_00ff,1301,1302,1303,c02b,c02c,c02f,c030,cca8,cca9_"
        "0005,000a,000b,000d,0017,0023,002b,002d,0033_0503,0403,0807,0806,0805,0804,0601,0501,0401"
    )
    assert ja4(ch) == "t13d1011h2_61a7ad8aa9b6_3fcd1a44f3e3"


@pytest.mark.parametrize(("protocols", "expected"), [
    ((), "00"),
    ((b"h2",), "h2"),
    ((b"http/1.1", b"h2"), "h1"),
    ((b"h",), "hh"),
    ((b"\xab\xcd",), "ad"),   # non-alphanumeric: hex nibbles of first and last byte
    ((b"h2!",), "61"),
    ((b"*x",), "28"),
    ((b"caf\xc3\xa9",), "69"),
])
def test_ja4_alpn_characters(protocols: tuple[bytes, ...], expected: str) -> None:
    exts = [alpn_ext(*protocols)] if protocols else []
    assert ja4(parse_client_hello(client_hello(extensions=exts)))[8:10] == expected


@pytest.mark.parametrize(("versions", "legacy", "expected"), [
    (None, 0x0303, "12"),
    (None, 0x0300, "s3"),
    (None, 0x0002, "s2"),
    (None, 0x0305, "00"),
    ((0x0303, 0x0304), 0x0303, "13"),
    ((0x5A5A,), 0x0303, "00"),   # only GREASE in supported_versions
    ((0x0304, 0xFB1A), 0x0303, "00"),  # highest value is an unknown draft version
    ((0x0302, 0x0301), 0x0303, "11"),
])
def test_ja4_version(versions: tuple[int, ...] | None, legacy: int, expected: str) -> None:
    exts = [versions_ext(*versions)] if versions is not None else []
    ch = parse_client_hello(client_hello(version=legacy, extensions=exts))
    assert ja4(ch)[1:3] == expected


def test_ja4_counts_cap_at_99() -> None:
    ch = parse_client_hello(client_hello(ciphers=range(1, 121),
                                         extensions=[ext(0x1000 + i, b"") for i in range(110)]))
    assert ja4(ch)[4:8] == "9999"
    assert len(ja4_r(ch).split("_")[1].split(",")) == 120


def test_ja4_transport_is_validated() -> None:
    ch = parse_client_hello(client_hello())
    assert ja4(ch, "d").startswith("d")
    with pytest.raises(ValueError):
        ja4(ch, "x")


def test_ja4_of_each_transport_hashes_ja4_r() -> None:
    """JA4 is JA4_r with its lists hashed, for every transport (they share all but the
    first character)."""
    for message in SEEDS:
        ch = parse_client_hello(message)
        for transport in ("t", "q", "d"):
            a, b, c = ja4_r(ch, transport).split("_", 2)
            hashed = [hashlib.sha256(part.encode()).hexdigest()[:12] if part
                      else "000000000000" for part in (b, c)]
            assert ja4(ch, transport) == "_".join([a, *hashed])
            assert a[0] == transport


def test_fingerprints_of_interleaved_hellos() -> None:
    """The fingerprints of several hellos asked for in any order are each one's own."""
    hellos = [parse_client_hello(m) for m in SEEDS]
    alone = []
    for ch in hellos:
        tlsp._fingerprints_of.cache_clear()
        alone.append((ja4(ch, "t"), ja4(ch, "q"), ch.ja3_hash, ch.ja3, ch.ja4))
        assert tlsp.fingerprints(ch, "q") == (ch.ja3, ch.ja3_hash, ja4(ch, "q"))
    assert len({a[3] for a in alone}) == len(hellos)
    asks: list[Callable[[ClientHello], str]] = [
        lambda ch: ja4(ch, "t"), lambda ch: ja4(ch, "q"), lambda ch: ch.ja3_hash,
        lambda ch: ch.ja3, lambda ch: ch.ja4]
    rng = random.Random(7)
    for _ in range(500):
        i = rng.randrange(len(hellos))
        ch = parse_client_hello(SEEDS[i]) if rng.random() < 0.3 else hellos[i]
        which = rng.randrange(len(asks))
        assert asks[which](ch) == alone[i][which]
    assert (ja3(hellos[0]), ja3_hash(hellos[0])) == (alone[0][3], alone[0][2])


def test_is_grease() -> None:
    greases = {v for v in range(0x10000) if is_grease(v)}
    assert greases == {0x0A0A + 0x1010 * i for i in range(16)}


# --- properties ------------------------------------------------------------------------

SEEDS = [rich_hello(), grease_hello(), client_hello(extensions=None),
         single_record_message(python_client_hello("seed.example", ["h2"]))]


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    """A valid hello, byte-mutated and split into random records."""
    message = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, len(message) - 1))
        message[pos] = draw(st.integers(0, 255))
    sizes = draw(st.lists(st.integers(1, 300), max_size=6))
    stream = records(bytes(message), sizes)
    if draw(st.booleans()):
        stream = stream[: draw(st.integers(0, len(stream)))]
    return stream + draw(st.binary(max_size=8))


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=600), st.builds(lambda m: m[5:], mutated_streams())))
def test_parse_client_hello_raises_only_parse_error(data: bytes) -> None:
    try:
        result = parse_client_hello(data)
    except ParseError:
        return
    assert isinstance(result, ClientHello)
    assert len(ja3_hash(result)) == 32  # fingerprints never raise
    assert ja4(result) and ja4_r(result)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=64),
                 st.builds(lambda b: b"\x16\x03\x01" + b, st.binary(max_size=200)),
                 mutated_streams()))
def test_maybe_read_whole_equals_bytewise(data: bytes) -> None:
    whole = outcome(maybe_read_client_hello, data)
    assert bytewise(data)[0] == whole


def record_walk(stream: bytes) -> Outcome:
    """What maybe_read_client_hello_bytes answers, by its docstring, one byte at a time:
    its fast paths must agree with this on every prefix."""
    message = bytearray()
    need: int | None = None
    pos = records_seen = 0
    try:
        while True:
            if pos >= len(stream):
                return ("none", None)
            if stream[pos] != 22:
                raise BadValue("content type")
            if pos + 1 >= len(stream):
                return ("none", None)
            if stream[pos + 1] != 3:
                raise BadValue("version")
            if pos + 5 > len(stream):
                return ("none", None)
            records_seen += 1
            if records_seen > MAX_CLIENT_HELLO_RECORDS:
                raise LimitExceeded("records")
            rec_len = int.from_bytes(stream[pos + 3 : pos + 5], "big")
            if not 0 < rec_len <= 2**14:
                raise BadValue("record length")
            for i in range(pos + 5, min(pos + 5 + rec_len, len(stream))):
                message.append(stream[i])
                if len(message) == 1 and message[0] != 1:
                    raise BadValue("handshake type")
                if len(message) == 4:
                    need = 4 + int.from_bytes(message[1:4], "big")
                    if need - 4 > MAX_CLIENT_HELLO_LEN:
                        raise LimitExceeded("hello length")
                if need is not None and len(message) == need:
                    return ("ok", (bytes(message), i + 1))
            if pos + 5 + rec_len > len(stream):
                return ("none", None)
            pos += 5 + rec_len
    except ParseError as exc:
        return ("error", type(exc))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.lists(st.integers(1, 400), max_size=3),
       st.lists(st.tuples(st.integers(0, 8), st.integers(0, 255)), max_size=3))
def test_maybe_read_bytes_equals_the_record_walk(message: bytes, sizes: list[int],
                                                 header_edits: list[tuple[int, int]]) -> None:
    """Every prefix of a hello in records, its first headers possibly damaged (type,
    version, record length, handshake type and length: what the fast paths read)."""
    stream = bytearray(records(message, sizes))
    for pos, value in header_edits:
        stream[pos] = value
    for cut in range(len(stream) + 1):
        prefix = bytes(stream[:cut])
        assert outcome(maybe_read_client_hello_bytes, prefix) == record_walk(prefix), cut


def test_maybe_read_random_splits_agree() -> None:
    rng = random.Random(1234)
    for seed in SEEDS:
        expected = parse_client_hello(seed)
        for _ in range(20):
            sizes = [rng.randint(1, 200) for _ in range(rng.randint(0, 8))]
            assert maybe_read_client_hello(records(seed, sizes)) == expected
