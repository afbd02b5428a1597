"""Tests for monitor.parsers.http: HTTP/1.x request heads, Host and CONNECT targets.

Inputs are real requests (curl recorded against a loopback server into tests/data/http/,
the same live, and the peer corpus captures through the pcap helpers of
tests/test_dns.py), plus hand-written edge cases. tshark is the oracle for the corpus:
``http.host`` of every ``http.request``, with the request bytes taken from tshark itself
(``tcp.reassembled.data`` or ``tcp.payload``) as a second, scapy-independent source.
Every fixture is checked whole, split at every byte, fed byte by byte, and followed by
body bytes (h11's discipline).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.errors import BadValue, LimitExceeded, ParseError
from monitor.parsers.http import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    MAX_METHOD_LEN,
    HttpRequestHead,
    maybe_read_request_head,
)
from tests.test_dns import CORPUS, MANIFEST, read_l4, require_tool, tcp_streams

HTTP_DATA = Path(__file__).parent / "data" / "http"

_FAST = settings(max_examples=300, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])

FIXTURES = ["curl_get.bin", "curl_proxy_get.bin", "curl_connect.bin", "curl_connect_ipv6.bin",
            "curl_post.bin"]


def fixture(name: str) -> bytes:
    return (HTTP_DATA / name).read_bytes()


def parse(data: bytes) -> HttpRequestHead:
    head = maybe_read_request_head(data)
    assert head is not None
    return head


def incremental(data: bytes) -> HttpRequestHead | None:
    """Feed ``data`` one byte more each call until the parser returns a head."""
    for n in range(len(data) + 1):
        head = maybe_read_request_head(data[:n])
        if head is not None:
            return head
    return None


def outcome(fn: Callable[[], HttpRequestHead | None]) -> HttpRequestHead | str | None:
    try:
        return fn()
    except ParseError:
        return "error"


# --- recorded curl requests --------------------------------------------------------------


def test_plain_get_with_host() -> None:
    data = fixture("curl_get.bin")
    head = parse(data)
    found = re.search(rb"Host: 127\.0\.0\.1:(\d+)", data)
    assert found is not None
    port = int(found.group(1))
    assert (head.method, head.target, head.version) == ("GET", "/scan?x=1", "HTTP/1.1")
    assert (head.host, head.port, head.user_agent) == ("127.0.0.1", port, "avmon-test/1.0")
    assert head.headers == (("host", f"127.0.0.1:{port}"), ("user-agent", "avmon-test/1.0"),
                            ("accept", "*/*"))
    assert (head.connect_host, head.connect_port, head.head_length) == (None, None, len(data))


def test_absolute_form_proxy_request() -> None:
    head = parse(fixture("curl_proxy_get.bin"))
    assert head.target == "http://Cloud.AV.example:8080/lookup"
    assert (head.host, head.port) == ("cloud.av.example", 8080)
    assert ("proxy-connection", "Keep-Alive") in head.headers
    assert head.connect_host is None


def test_connect_host_port() -> None:
    head = parse(fixture("curl_connect.bin"))
    assert (head.method, head.target) == ("CONNECT", "cloud.av.example:443")
    assert (head.connect_host, head.connect_port) == ("cloud.av.example", 443)
    assert (head.host, head.port) == ("cloud.av.example", 443)


def test_connect_ipv6_literal() -> None:
    head = parse(fixture("curl_connect_ipv6.bin"))
    assert head.target == "[2001:db8::1]:443"
    assert (head.connect_host, head.connect_port, head.host) == ("2001:db8::1", 443,
                                                                 "2001:db8::1")


def test_post_body_is_not_part_of_the_head() -> None:
    data = fixture("curl_post.bin")
    head = parse(data)
    assert data[head.head_length :] == b"a=1"
    assert (head.method, head.host, head.port) == ("POST", "upload.av.example", None)
    assert dict(head.headers)["content-length"] == "3"


@pytest.mark.parametrize("name", FIXTURES)
def test_split_at_every_byte(name: str) -> None:
    data = fixture(name)
    whole = parse(data)
    for n in range(whole.head_length):
        assert maybe_read_request_head(data[:n]) is None, n
    for n in range(whole.head_length, len(data) + 1):
        assert maybe_read_request_head(data[:n]) == whole
    assert incremental(data) == whole
    assert parse(data + b"\x16\x03\x01" + bytes(range(256)) * 80) == whole  # trailing bytes
    assert parse(memoryview(b"xx" + data)[2:]) == whole
    assert parse(bytearray(data)) == whole


# --- grammar and tolerance ---------------------------------------------------------------


def test_errors_do_not_pin_the_callers_buffer() -> None:
    buffer = bytearray(b"\x16\x03\x01\x02\x00")
    with pytest.raises(BadValue) as kept:
        maybe_read_request_head(memoryview(buffer))
    buffer.extend(b"\x00")  # BufferError if the kept error still exported the buffer
    assert kept.value.reason == "bad_value"


def test_bare_lf_and_leading_empty_lines() -> None:
    crlf = parse(b"GET /a HTTP/1.1\r\nHost: av.example\r\n\r\n")
    lf = parse(b"\r\n\nGET /a HTTP/1.1\nHost: av.example\n\n")
    assert (lf.method, lf.target, lf.host, lf.headers) == (crlf.method, crlf.target,
                                                            crlf.host, crlf.headers)
    assert lf.head_length == len(b"\r\n\nGET /a HTTP/1.1\nHost: av.example\n\n")
    mixed = parse(b"GET / HTTP/1.0\r\nHost: av.example\n\r\nbody")
    assert mixed.head_length == len(b"GET / HTTP/1.0\r\nHost: av.example\n\r\n")


def test_obs_fold_and_ows() -> None:
    head = parse(b"GET / HTTP/1.1\r\nX-Long: a\r\n \t b\r\nHost:\t av.example \r\n\r\n")
    assert head.headers == (("x-long", "a b"), ("host", "av.example"))


def test_multiple_spaces_in_request_line() -> None:
    head = parse(b"GET  /x   HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (head.target, head.version) == ("/x", "HTTP/1.1")


@pytest.mark.parametrize(("host_line", "host", "port"), [
    (b"Host: AV.Example.", "av.example", None),
    (b"Host: av.example:8443", "av.example", 8443),
    (b"Host: av.example:", "av.example", None),
    (b"Host: [2001:DB8:0::1]:8080", "2001:db8::1", 8080),
    (b"Host: [2001:db8::2]", "2001:db8::2", None),
    (b"Host: 192.0.2.7", "192.0.2.7", None),
    (b"Host:", None, None),
    (b"Accept: */*", None, None),
])
def test_host_forms(host_line: bytes, host: str | None, port: int | None) -> None:
    head = parse(b"GET / HTTP/1.1\r\n" + host_line + b"\r\n\r\n")
    assert (head.host, head.port) == (host, port)


@pytest.mark.parametrize(("target", "host", "port"), [
    ("http://user:pw@Proxy.AV.example:3128/x?y=1", "proxy.av.example", 3128),
    ("https://cloud.av.example/", "cloud.av.example", None),
    ("http://[2001:db8::5]:81/", "2001:db8::5", 81),
    ("HTTP://AV.example", "av.example", None),
])
def test_absolute_form_overrides_host_field(target: str, host: str, port: int | None) -> None:
    head = parse(f"GET {target} HTTP/1.1\r\nHost: other.example\r\n\r\n".encode())
    assert (head.host, head.port, head.target) == (host, port, target)


def test_asterisk_form_and_h2_preface() -> None:
    head = parse(b"OPTIONS * HTTP/1.1\r\nHost: av.example\r\n\r\n")
    assert (head.target, head.host) == ("*", "av.example")
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    h2 = parse(preface)
    assert (h2.method, h2.version, h2.head_length) == ("PRI", "HTTP/2.0", 18)


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost : av.example\r\n\r\n",  # space before colon (RFC 9112 5.1)
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # two Host fields
    b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",  # NUL in a value
    b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",  # bare CR inside a line
    b"GET / HTTP/1.1\r\n continued\r\n\r\n",  # fold before any field
    b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: 2001:db8::1\r\n\r\n",  # IPv6 without brackets
    b"GET / HTTP/1.1\r\nHost: [2001:db8::zz]\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: [2001:db8::1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: av.example:70000\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: av.example:8o\r\n\r\n",
    b"CONNECT av.example HTTP/1.1\r\n\r\n",  # CONNECT needs host:port
    b"CONNECT :443 HTTP/1.1\r\n\r\n",
    b"CONNECT [2001:db8::1] HTTP/1.1\r\n\r\n",
    b"GET /\r\n\r\n",  # HTTP/0.9
    b"GET / HTTP/1.1 extra\r\n\r\n",
    b"GET / http/1.1\r\n\r\n",  # the version is case-sensitive
    b"GET / HTTP/11\r\n\r\n",
    b"GET\r\n\r\n",
    b" GET / HTTP/1.1\r\n\r\n",
    b"G(T / HTTP/1.1\r\n\r\n",
])
def test_rejected_heads(data: bytes) -> None:
    with pytest.raises(BadValue):
        maybe_read_request_head(data)
    assert outcome(lambda: incremental(data)) == "error"


# --- not HTTP, and the caps ----------------------------------------------------------------


_CLIENT_HELLO = bytes.fromhex("160301020001000200fc0303") + bytes(range(32)) * 8


@pytest.mark.parametrize("data", [
    _CLIENT_HELLO,
    b"\x00\x00\x00\x2a" + bytes(40),
    b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n",
    b"\xff\xfe",
    bytes.fromhex("c300000001") + bytes(1200),  # a QUIC long header, should TCP carry it
], ids=["tls", "binary", "ssh", "utf16", "quic"])
def test_not_http_is_rejected_early(data: bytes) -> None:
    with pytest.raises(BadValue):
        maybe_read_request_head(data)
    first_error = next(n for n in range(1, len(data) + 1)
                       if outcome(lambda n=n: maybe_read_request_head(data[:n])) == "error")
    assert first_error <= 40


def test_tls_fails_on_first_byte() -> None:
    with pytest.raises(BadValue):
        maybe_read_request_head(b"\x16")
    with pytest.raises(BadValue):
        maybe_read_request_head(_CLIENT_HELLO + bytes(MAX_HEAD_BYTES * 4))


def test_method_length_cap() -> None:
    ok = b"M" * MAX_METHOD_LEN
    assert maybe_read_request_head(ok) is None
    assert parse(ok + b" / HTTP/1.1\r\n\r\n").method == ok.decode()
    with pytest.raises(BadValue):
        maybe_read_request_head(ok + b"M")


def test_head_size_cap() -> None:
    start = b"GET / HTTP/1.1\r\nHost: av.example\r\n"
    filler = b"X-Pad: " + b"p" * 100 + b"\r\n"
    n = (MAX_HEAD_BYTES - len(start) - 2) // len(filler)
    fits = start + filler * n
    fits += b"X: " + b"q" * (MAX_HEAD_BYTES - len(fits) - 7) + b"\r\n\r\n"
    assert len(fits) == MAX_HEAD_BYTES
    with pytest.raises(LimitExceeded):  # n > MAX_HEADERS fields
        parse(fits)
    big_fields = start + (b"X-Pad: " + b"p" * 400 + b"\r\n") * 39
    big_fields += b"X: " + b"q" * (MAX_HEAD_BYTES - len(big_fields) - 7) + b"\r\n\r\n"
    assert len(big_fields) == MAX_HEAD_BYTES
    assert parse(big_fields).head_length == MAX_HEAD_BYTES
    over = big_fields[:-4] + b"q\r\n\r\n"
    assert maybe_read_request_head(over[:MAX_HEAD_BYTES - 1]) is None
    for data in (over, start + b"X: " + b"p" * MAX_HEAD_BYTES,
                 b"GET /" + b"a" * MAX_HEAD_BYTES):
        with pytest.raises(LimitExceeded) as info:
            maybe_read_request_head(data)
        assert info.value.reason == "limit"


def test_header_count_cap() -> None:
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADERS))
    assert len(parse(b"GET / HTTP/1.1\r\n" + fields + b"\r\n").headers) == MAX_HEADERS
    with pytest.raises(LimitExceeded):
        parse(b"GET / HTTP/1.1\r\n" + fields + b"X-Last: v\r\n\r\n")


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nX: a" + b" " * 16000 + b"b\r\n\r\n",
    b"GET / HTTP/1.1\r\nX:" + b" \t" * 8000 + b"\r\n\r\n",
    b"GET /" + b"%" * 16000 + b" HTTP/1.1\r\n\r\n",
    b"GET http://" + b"a" * 15000 + b"@" * 800 + b" HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"a:" * 8000 + b"\r\n\r\n",
    b"\r\n" * 8000 + b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"\n\r" * 8000,
], ids=["spaces-in-value", "ows", "long-target", "userinfo", "colons", "empty-lines",
        "lf-cr"])
def test_pathological_inputs_are_linear(data: bytes) -> None:
    started = time.perf_counter()
    outcome(lambda: maybe_read_request_head(data))
    outcome(lambda: maybe_read_request_head(data[: len(data) // 2]))
    assert time.perf_counter() - started < 1.0


# --- property tests ----------------------------------------------------------------------

_TOKEN = st.text(alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNO",
                 min_size=1, max_size=12)
_VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
_HOST = st.one_of(
    st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){0,3}", fullmatch=True),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
    st.ip_addresses(v=4).map(str),
)


@st.composite
def request_heads(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "POST", "HEAD", "PUT", "OPTIONS"]) | _TOKEN)
    host = draw(_HOST)
    port = draw(st.none() | st.integers(0, 65535))
    authority = host + ("" if port is None else f":{port}")
    target = draw(st.sampled_from(["/", "/a?b=c", "*", f"http://{authority}/x"]))
    if draw(st.booleans()):
        method, target = "CONNECT", f"{host}:{port or 443}"
    eol = draw(st.sampled_from(["\r\n", "\n"]))
    fields = draw(st.lists(st.tuples(_TOKEN.filter(lambda t: t.lower() != "host"), _VALUE),
                           max_size=6))
    lines = [f"{method} {target} HTTP/1.{draw(st.integers(0, 1))}", f"Host: {authority}"]
    lines += [f"{name}: {value}" for name, value in fields]
    return (eol.join(lines) + eol + eol).encode()


@_FAST
@given(request_heads(), st.binary(max_size=20))
def test_generated_heads_whole_equals_incremental(data: bytes, body: bytes) -> None:
    whole = parse(data + body)
    assert whole.head_length == len(data)
    assert incremental(data + body) == whole
    assert whole.host is not None
    if whole.method == "CONNECT":
        assert (whole.connect_host, whole.connect_port) == (whole.host, whole.port)


_HTTPISH = st.lists(st.sampled_from([b"GET", b" ", b"/", b"HTTP/1.1", b"\r\n", b"\n", b"Host",
                                     b":", b"a.example", b"[::1]", b":80", b"\t", b"\r",
                                     b"CONNECT", b"x", b"\x00", b"\xff", b"http://"]),
                    max_size=30).map(b"".join)


@_FAST
@given(st.one_of(st.binary(max_size=120), _HTTPISH))
def test_any_bytes_whole_equals_incremental(data: bytes) -> None:
    """Only ParseError escapes, and the answer never depends on how bytes arrive: once
    a prefix is rejected every longer input is, and a head found in a prefix is the head
    of every longer input."""
    whole = outcome(lambda: maybe_read_request_head(data))
    if isinstance(whole, HttpRequestHead):
        assert incremental(data) == whole
        assert outcome(lambda: maybe_read_request_head(data[: whole.head_length])) == whole
    else:
        for n in range(len(data) + 1):
            prefix = outcome(lambda n=n: maybe_read_request_head(data[:n]))
            assert prefix is None or prefix == "error"
            if prefix == "error":
                assert whole == "error"
                break


# --- corpus --------------------------------------------------------------------------------

_HTTP_ENTRIES = [e for e in MANIFEST if e["expected"]["http_hosts"]
                 or e["tshark"]["derived"]["http_hosts"]]


def corpus_heads(path: Path) -> list[HttpRequestHead]:
    """Request heads of every TCP stream of a capture (several per keep-alive stream)."""
    heads: list[HttpRequestHead] = []
    for data in tcp_streams(read_l4(path)).values():
        pos = 0
        while pos < len(data):
            try:
                head = maybe_read_request_head(data[pos:])
            except ParseError:
                break  # not HTTP (TLS, a response direction, a body we did not skip)
            if head is None:
                break
            heads.append(head)
            length = dict(head.headers).get("content-length", "0")
            pos += head.head_length + (int(length) if length.isdigit() else 0)
    return heads


@pytest.mark.parametrize("entry", _HTTP_ENTRIES, ids=[e["file"] for e in _HTTP_ENTRIES])
def test_corpus_hosts(entry: dict[str, Any]) -> None:
    hosts = {h.host for h in corpus_heads(CORPUS / entry["file"])}
    assert set(entry["expected"]["http_hosts"]) <= hosts
    assert set(entry["tshark"]["derived"]["http_hosts"]) <= hosts


def test_corpus_recall(record_property: Callable[[str, object], None]) -> None:
    total = found = 0
    for entry in _HTTP_ENTRIES:
        hosts = {h.host for h in corpus_heads(CORPUS / entry["file"])}
        total += len(entry["expected"]["http_hosts"])
        found += len(set(entry["expected"]["http_hosts"]) & hosts)
    record_property("http_host_recall", f"{found}/{total}")
    print(f"http host recall {found}/{total}")
    assert (found, total) == (9, 9)


def _tshark_requests(path: Path) -> list[tuple[str, bytes]]:
    """(http.host, request bytes) for every request tshark dissects."""
    tshark = require_tool("tshark")
    out = subprocess.run(
        [tshark, "-n", "-r", str(path), "-o", "tcp.desegment_tcp_streams:TRUE", "-Y",
         "http.request", "-T", "fields", "-E", "separator=\t", "-E", "occurrence=f",
         "-e", "http.host", "-e", "tcp.reassembled.data", "-e", "tcp.payload"],
        check=True, capture_output=True, text=True, timeout=120).stdout
    rows = []
    for line in out.splitlines():
        host, reassembled, payload = (line.split("\t") + ["", ""])[:3]
        rows.append((host, bytes.fromhex((reassembled or payload).replace(":", ""))))
    return rows


@pytest.mark.parametrize("entry", _HTTP_ENTRIES, ids=[e["file"] for e in _HTTP_ENTRIES])
def test_corpus_against_live_tshark(entry: dict[str, Any]) -> None:
    rows = _tshark_requests(CORPUS / entry["file"])
    assert rows
    for tshark_host, data in rows:
        head = parse(data)
        expected = tshark_host.lower()
        if expected.startswith("["):
            expected = expected[1 : expected.index("]")]
        elif ":" in expected:
            expected = expected.rsplit(":", 1)[0]
        assert head.host == expected
    scapy_hosts = {h.host for h in corpus_heads(CORPUS / entry["file"])}
    assert {parse(data).host for _, data in rows} <= scapy_hosts


# --- a real client on loopback -------------------------------------------------------------


def _serve_once(sock: socket.socket, received: list[bytes]) -> None:
    conn, _ = sock.accept()
    with conn:
        conn.settimeout(10)
        data = b""
        while maybe_read_request_head(data) is None:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        received.append(data)
        if data.startswith(b"CONNECT"):
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


def _curl(args: Iterable[str]) -> bytes:
    curl = require_tool("curl")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        received: list[bytes] = []
        server = threading.Thread(target=_serve_once, args=(sock, received))
        server.start()
        subprocess.run([curl, "-sS", "--max-time", "10", "--noproxy", "", "-A", "avmon/1"]
                       + [a.replace("PORT", str(port)) for a in args],
                       capture_output=True, timeout=30)
        server.join(timeout=30)
    assert received
    return received[0]


@pytest.mark.parametrize(("args", "host", "port", "connect"), [
    (["http://127.0.0.1:PORT/x"], "127.0.0.1", None, False),
    (["-x", "http://127.0.0.1:PORT", "http://Update.AV.example/def.bin"], "update.av.example",
     None, False),
    (["-p", "-x", "http://127.0.0.1:PORT", "https://telemetry.av.example:8443/"],
     "telemetry.av.example", 8443, True),
    (["-p", "-x", "http://127.0.0.1:PORT", "https://[2001:db8::7]/"], "2001:db8::7", 443,
     True),
], ids=["get", "proxy-get", "connect", "connect-ipv6"])
def test_curl_on_loopback(args: list[str], host: str, port: int | None,
                          connect: bool) -> None:
    data = _curl(args)
    head = parse(data)
    assert head.host == host
    if connect:
        assert (head.connect_host, head.connect_port) == (host, port)
    elif port is not None:
        assert head.port == port
    assert head.user_agent == "avmon/1"
    json.dumps(head.headers)
