"""The DNS fast path (common messages decoded straight from the wire) gives exactly what
the full dnspython path gives: the same message, or the same error, on generated messages,
their bit flips and truncations, and the corpus."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import monitor.parsers.dns as dnsp
from monitor.errors import ParseError

DATA = Path(__file__).parent / "data" / "dns"

LABEL = st.text(alphabet="abcXYZ019-_*\\. @\x01", min_size=1, max_size=12)
NAME = st.lists(LABEL, min_size=1, max_size=4).map(
    lambda labels: ".".join(label.replace("\\", "\\\\").replace(".", "\\.") for label in labels)
    + ".")
TTL = st.sampled_from([0, 1, 300, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF])
RDATA = st.one_of(
    st.tuples(st.just("A"), st.ip_addresses(v=4).map(str)),
    st.tuples(st.just("AAAA"), st.ip_addresses(v=6).map(str)),
    st.tuples(st.sampled_from(["CNAME", "NS", "PTR", "DNAME"]), NAME),
    st.tuples(st.just("MX"), NAME.map(lambda n: f"10 {n}")),
    st.tuples(st.just("TXT"), st.just('"v=spf1 -all"')),
    st.tuples(st.just("SOA"), st.just("ns. host. 1 2 3 4 5")),
)
RR = st.tuples(NAME, TTL, st.sampled_from(["IN", "IN", "IN", "CH"]), RDATA)


@contextmanager
def _full_path_only() -> Iterator[None]:
    fast, native = dnsp._fast_message, dnsp.native
    dnsp._fast_message = lambda raw, strict: None  # type: ignore[assignment]
    dnsp.native = None  # the compiled fast path too
    try:
        yield
    finally:
        dnsp._fast_message, dnsp.native = fast, native  # type: ignore[assignment]


def _outcome(wire: bytes, strict: bool) -> object:
    try:
        return dnsp.parse_dns_message(wire, strict=strict)
    except ParseError as exc:
        return type(exc)


def _same(wire: bytes) -> None:
    for strict in (False, True):
        got = _outcome(wire, strict)
        with _full_path_only():
            want = _outcome(wire, strict)
        assert got == want, wire.hex()


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    qname = draw(NAME)
    query = dns.message.make_query(qname, draw(st.sampled_from(["A", "AAAA", "HTTPS"])),
                                   use_edns=draw(st.sampled_from([None, 0])))
    if draw(st.booleans()) and query.edns >= 0:
        query.use_edns(0, options=[dns.edns.GenericOption(draw(st.integers(8, 20)), b"x")])
    msg = dns.message.make_response(query) if draw(st.booleans()) else query
    msg.set_opcode(draw(st.sampled_from([dns.opcode.QUERY, dns.opcode.QUERY,
                                         dns.opcode.NOTIFY])))
    for section in (msg.answer, msg.authority):
        for owner, ttl, rdclass, (rdtype, rdata) in draw(st.lists(RR, max_size=4)):
            try:
                section.append(dns.rrset.from_text(owner, ttl, rdclass, rdtype, rdata))
            except Exception:  # noqa: BLE001 - a combination dnspython will not build
                continue
    try:
        return bytes(msg.to_wire())
    except Exception:  # noqa: BLE001
        return bytes(query.to_wire())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_generated_messages(wire: bytes) -> None:
    _same(wire)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(), st.integers(0, 10_000), st.integers(0, 7))
def test_bit_flips_and_truncations(wire: bytes, where: int, bit: int) -> None:
    flipped = bytearray(wire)
    flipped[where % len(wire)] ^= 1 << bit
    _same(bytes(flipped))
    _same(wire[: where % (len(wire) + 1)])


def test_corpus_messages() -> None:
    seen = 0
    for path in sorted(DATA.glob("*.bin")):
        data = path.read_bytes()
        for cut in range(len(data) + 1):
            _same(data[:cut])
            seen += 1
    assert seen > 100


def test_fast_path_takes_the_common_response() -> None:
    query = dns.message.make_query("ds.kaspersky-labs.com", "A", use_edns=0)
    resp = dns.message.make_response(query)
    resp.answer.append(dns.rrset.from_text("ds.kaspersky-labs.com.", 60, "IN", "CNAME",
                                           "ds.geo.kaspersky-labs.com."))
    resp.answer.append(dns.rrset.from_text("ds.geo.kaspersky-labs.com.", 60, "IN", "A",
                                           "77.74.176.61"))
    wire = resp.to_wire()
    fast = dnsp._fast_message(wire, False)
    assert fast is not None
    assert [a.rdata for a in fast.answers] == ["ds.geo.kaspersky-labs.com", "77.74.176.61"]
    _same(wire)
    _same(wire + b"\0\0")  # trailing bytes: counted alike
    assert dnsp._fast_message(wire + b"\0", True) is None  # strict: the full path raises


@pytest.mark.parametrize("pure", ["0", "1"])
def test_dnspython_is_imported_only_for_the_full_path(pure: str) -> None:
    """dnspython's message decoder costs a tenth of a second at start-up: a replay whose
    messages all take the fast path never imports it; one that needs it still works."""
    code = (
        "import sys\n"
        "import monitor.cli\n"
        "from monitor.parsers.dns import parse_dns_message\n"
        "query = bytes.fromhex('abcd01000001000000000000'"
        " '03777777076578616d706c6503636f6d0000010001')\n"
        "assert parse_dns_message(query).questions[0].qname == 'www.example.com'\n"
        "print('dns.message' in sys.modules)\n"
        "chaos = query[:-1] + b'\\x03'  # class CH: the fast path declines it\n"
        "print(parse_dns_message(chaos).questions[0].qclass)\n"
        "print('dns.message' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "AVMON_PURE_PYTHON": pure}, check=True).stdout
    assert out.split() == ["False", "CH", "True"]


def test_live_capture_preloads_the_full_decoder() -> None:
    """A live capture imports the full path's modules before it opens its capture: the
    first message that needs them must not stall the reader (0.1 s at 120,000 packets/s
    overflowed the benchmark's ring)."""
    code = (
        "import sys\n"
        "import monitor.cli as cli\n"
        "def opened(args):\n"
        "    print('dns.message' in sys.modules)\n"
        "    raise SystemExit(0)\n"
        "cli._open_live_source = opened\n"
        "print('dns.message' in sys.modules)\n"
        "cli.main(['live', '-i', 'lo'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "True"]
