"""Tests for monitor.parsers.dns: messages, CNAME chains, DNS over TCP, EVE ``dns`` objects.

Inputs are real messages (the peer corpus captures, read with scapy; messages cut from
them into tests/data/dns/; kdig's queries recorded against a loopback responder),
messages built with dnspython, and hand-assembled edge cases (compression loops, misplaced
OPT, bad RDATA). tshark is the oracle for the corpus: query names and the A/AAAA records
of the answer section. The pcap helpers here (``read_l4``, ``tcp_streams``) are shared
with tests/test_http.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.tsigkeyring
import dns.update
import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from monitor.errors import LimitExceeded, ParseError, TrailingData, Truncated
from monitor.parsers.dns import (
    MAX_ANSWERS,
    MAX_CNAME_DEPTH,
    MAX_DNS_MESSAGE,
    MAX_QUESTIONS,
    DnsAnswer,
    DnsMessage,
    DnsQuestion,
    Malformed,
    ResolvedAddress,
    answer_addresses,
    eve_dns_records,
    maybe_read_tcp_messages,
    parse_dns_message,
)
from tests.tshark_oracle import require_tool

DATA = Path(__file__).parent / "data"
CORPUS = DATA / "corpus"
DNS_DATA = DATA / "dns"
MANIFEST: list[dict[str, Any]] = json.loads((CORPUS / "MANIFEST.json").read_text())

#: Ports whose payloads are DNS wire format: DNS, mDNS (RFC 6762), LLMNR (RFC 4795).
DNS_PORTS = frozenset({53, 5353, 5355})

_FAST = settings(max_examples=300, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


# --- builders ---------------------------------------------------------------------------


def header(*, id: int = 0x1234, flags: int = 0x8180, qd: int = 1, an: int = 0, ns: int = 0,
           ar: int = 0) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in (id, flags, qd, an, ns, ar))


def wire_name(name: str) -> bytes:
    out = b""
    for label in name.split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def rr(owner: bytes, rdtype: int, rdata: bytes, *, rdclass: int = 1, ttl: int = 60) -> bytes:
    return (owner + rdtype.to_bytes(2, "big") + rdclass.to_bytes(2, "big")
            + ttl.to_bytes(4, "big") + len(rdata).to_bytes(2, "big") + rdata)


def question(name: str = "a.example", rdtype: int = 1) -> bytes:
    return wire_name(name) + rdtype.to_bytes(2, "big") + b"\x00\x01"


def response(qname: str, rdtype: str, *rrsets: tuple[str, int, str, tuple[str, ...]],
             flags: int = 0) -> dns.message.Message:
    """A dnspython response to (qname, rdtype) with answer RRsets (owner, ttl, type, rdatas)."""
    q = dns.message.make_query(qname, rdtype)
    r = dns.message.make_response(q)
    for owner, ttl, rtype, rdatas in rrsets:
        for rdata in rdatas:  # one RRset each, so the wire order is the order given
            r.answer.append(dns.rrset.from_text(owner, ttl, "IN", rtype, rdata))
    r.flags |= flags
    return r


def chain_response() -> dns.message.Message:
    """cloud.av.example -> edge.cdn.example -> pop1.cdn.example -> 2 A + 1 AAAA."""
    return response(
        "cloud.av.example", "A",
        ("cloud.av.example.", 3600, "CNAME", ("edge.cdn.example.",)),
        ("edge.cdn.example.", 300, "CNAME", ("pop1.cdn.example.",)),
        ("pop1.cdn.example.", 60, "A", ("192.0.2.10", "192.0.2.11")),
        ("pop1.cdn.example.", 120, "AAAA", ("2001:db8::10",)),
    )


def fixture(name: str) -> bytes:
    return (DNS_DATA / name).read_bytes()


def feed_tcp(chunks: Iterable[bytes]) -> tuple[list[bytes], bytes]:
    """Drive maybe_read_tcp_messages as a flow would: append, take messages, keep the rest."""
    buffer = b""
    messages: list[bytes] = []
    for chunk in chunks:
        buffer += chunk
        got, used = maybe_read_tcp_messages(buffer)
        messages.extend(got)
        buffer = buffer[used:]
    return messages, buffer


def framed(*messages: bytes) -> bytes:
    return b"".join(len(m).to_bytes(2, "big") + m for m in messages)


# --- pcap helpers (shared with tests/test_http.py) --------------------------------------


@dataclass(frozen=True)
class L4Segment:
    frame: int
    proto: str
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes
    seq: int = 0


def _nflog_l3(data: bytes) -> bytes | None:
    """The packet inside an NFLOG (DLT 239) record: 4-byte header, then little-endian TLVs
    (length includes the 4-byte TLV header, padded to 4); NFULA_PAYLOAD is type 9."""
    if len(data) < 4 or data[0] not in (2, 10):
        return None
    pos = 4
    while pos + 4 <= len(data):
        length = int.from_bytes(data[pos : pos + 2], "little")
        if length < 4:
            return None
        if int.from_bytes(data[pos + 2 : pos + 4], "little") == 9:
            return data[pos + 4 : pos + length]
        pos += (length + 3) & ~3
    return None


def _teredo_inner(payload: bytes) -> bytes | None:
    """IPv6 inside a Teredo UDP payload (RFC 4380 §5.1.1), after optional auth/origin."""
    data = payload
    if data[:2] == b"\x00\x01" and len(data) >= 13:
        data = data[4 + data[2] + data[3] + 9 :]
    if data[:2] == b"\x00\x00" and len(data) >= 8:
        data = data[8:]
    if len(data) >= 40 and data[0] >> 4 == 6 and int.from_bytes(data[4:6], "big") + 40 == len(
            data):
        return data
    return None


@cache
def read_l4(path: Path) -> tuple[L4Segment, ...]:
    """Every UDP/TCP payload in a capture, through VLAN/SLL/NFLOG framing, GRE-in-UDP
    (port 4754) and Teredo tunnels, with IPv4/IPv6 fragments reassembled by scapy."""
    scapy = pytest.importorskip("scapy.all")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        packets = scapy.rdpcap(str(path))
    ip_t, ip6_t, udp_t, tcp_t = scapy.IP, scapy.IPv6, scapy.UDP, scapy.TCP
    frag6_t = scapy.IPv6ExtHdrFragment
    out: list[L4Segment] = []
    frags4: list[Any] = []
    frags6: dict[tuple[str, str, int], list[tuple[int, Any]]] = defaultdict(list)

    def walk(frame: int, l3: Any, depth: int = 0) -> None:
        if depth > 3:
            return
        if isinstance(l3, ip_t):
            if l3.flags.MF or l3.frag:
                frags4.append(l3)
                return
        elif isinstance(l3, ip6_t):
            if l3.haslayer(frag6_t):
                frags6[(l3.src, l3.dst, l3[frag6_t].id)].append((frame, l3))
                return
        else:
            return
        if l3.haslayer(udp_t):
            udp = l3[udp_t]
            payload = bytes(udp.payload)
            if 4754 in (udp.sport, udp.dport):  # GRE-in-UDP (RFC 8086)
                inner = scapy.GRE(payload)
                inner_l3 = inner.getlayer(ip_t) or inner.getlayer(ip6_t)
                if inner_l3 is not None:
                    walk(frame, inner_l3, depth + 1)
                return
            teredo = _teredo_inner(payload)
            if teredo is not None:
                walk(frame, ip6_t(teredo), depth + 1)
                return
            out.append(L4Segment(frame, "udp", l3.src, udp.sport, l3.dst, udp.dport, payload))
        elif l3.haslayer(tcp_t):
            tcp = l3[tcp_t]
            out.append(L4Segment(frame, "tcp", l3.src, tcp.sport, l3.dst, tcp.dport,
                                 bytes(tcp.payload), tcp.seq))

    for frame, pkt in enumerate(packets, start=1):
        l3 = pkt.getlayer(ip_t) or pkt.getlayer(ip6_t)
        if l3 is None:
            inner = _nflog_l3(bytes(pkt))
            if not inner:
                continue
            l3 = ip_t(inner) if inner[0] >> 4 == 4 else ip6_t(inner)
        walk(frame, l3)
    if frags4:
        for whole in scapy.defragment(frags4):
            if not (whole.flags.MF or whole.frag):
                walk(0, whole)
    for group in frags6.values():
        whole = scapy.defragment6([p for _, p in group])
        if whole is not None:
            whole = ip6_t(bytes(whole))  # re-dissect: defragment6 leaves the payload raw
            if not whole.haslayer(frag6_t):
                walk(group[0][0], whole)
    return tuple(out)


def tcp_streams(segments: Iterable[L4Segment]) -> dict[tuple[str, int, str, int], bytes]:
    """In-order bytes per TCP direction from its first captured segment (retransmissions
    dropped, stopping at the first gap)."""
    by_direction: dict[tuple[str, int, str, int], dict[int, bytes]] = defaultdict(dict)
    for s in segments:
        if s.proto == "tcp" and s.payload:
            by_direction[(s.src, s.sport, s.dst, s.dport)].setdefault(s.seq, s.payload)
    streams = {}
    for key, parts in by_direction.items():
        base = min(parts)
        data = b""
        for seq in sorted(parts, key=lambda q: (q - base) % 2**32):
            rel = (seq - base) % 2**32
            if rel > len(data):
                break
            data += parts[seq][len(data) - rel :]
        streams[key] = data
    return streams


def corpus_dns_messages(path: Path) -> tuple[list[DnsMessage], list[str]]:
    """Every DNS message of a capture (UDP and TCP on DNS_PORTS) and the parse errors."""
    segments = read_l4(path)
    messages: list[DnsMessage] = []
    errors: list[str] = []
    for s in segments:
        if s.proto == "udp" and s.payload and {s.sport, s.dport} & DNS_PORTS:
            try:
                messages.append(parse_dns_message(s.payload))
            except ParseError as exc:
                errors.append(f"frame {s.frame}: {exc!r}")
    tcp = [s for s in segments if s.proto == "tcp" and 53 in (s.sport, s.dport)]
    for key, data in tcp_streams(tcp).items():
        frames, _ = maybe_read_tcp_messages(data)
        for frame in frames:
            try:
                messages.append(parse_dns_message(frame))
            except ParseError as exc:
                errors.append(f"{key}: {exc!r}")
    return messages, errors


def addresses_by_qname(messages: Iterable[DnsMessage]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for m in messages:
        for resolved in answer_addresses(m):
            out[resolved.qname].add(resolved.address)
    return out


# --- real messages: fixtures ------------------------------------------------------------


def test_fixture_zeek_dns53_response() -> None:
    data = fixture("zeek_dns53_response.bin")
    m = parse_dns_message(data)
    assert (m.id, m.flags, m.is_response, m.opcode, m.rcode) == (25701, 0x8480, True, 0, 0)
    assert (m.aa, m.tc, m.rd, m.ra, m.ad, m.cd) == (True, False, False, True, False, False)
    assert m.questions == (DnsQuestion("us.v27.distributed.net", "A", "IN"),)
    assert [a.rdata for a in m.answers] == [
        "206.109.64.186", "216.1.205.81", "205.149.163.211", "134.53.131.135",
        "134.53.131.192", "128.104.18.148", "204.152.186.139", "63.77.33.226"]
    assert {(a.rrname, a.rrtype, a.ttl, a.rrclass) for a in m.answers} == {
        ("us.v27.distributed.net", "A", 900, "IN")}
    assert (m.authority_count, m.additional_count) == (7, 7)
    assert len(m.authorities) == 7 and all(a.rrtype == "NS" for a in m.authorities)
    assert (m.partial, m.skipped_records, m.trailing_bytes) == (False, 0, 0)
    resolved = answer_addresses(m)
    assert [r.address for r in resolved] == [a.rdata for a in m.answers]
    assert all(r.chain == ("us.v27.distributed.net",) and r.ttl == 900 for r in resolved)


def test_fixture_cname_chain_with_rrsig() -> None:
    m = parse_dns_message(fixture("zeek_cmu_cname_response.bin"))
    assert [(a.rrname, a.rrtype, a.ttl) for a in m.answers] == [
        ("www.cmu.edu", "CNAME", 86400),
        ("www.cmu.edu", "RRSIG", 86400),
        ("www-cmu.andrew.cmu.edu", "CNAME", 5),
        ("www-cmu-2.andrew.cmu.edu", "A", 21600),
    ]
    assert m.answers[0].rdata == "www-cmu.andrew.cmu.edu"
    assert answer_addresses(m) == (ResolvedAddress(
        "www.cmu.edu", "128.2.10.163", 5,
        ("www.cmu.edu", "www-cmu.andrew.cmu.edu", "www-cmu-2.andrew.cmu.edu")),)


def test_fixture_kdig_tcp_queries() -> None:
    """kdig +tcp +keepopen: two length-prefixed queries on one connection."""
    data = fixture("kdig_tcp_queries.bin")
    messages, used = maybe_read_tcp_messages(data)
    assert used == len(data) == 72
    parsed = [parse_dns_message(m) for m in messages]
    assert [(p.questions[0].qname, p.questions[0].qtype) for p in parsed] == [
        ("cloud.av.example", "A"), ("cloud.av.example", "AAAA")]
    assert all(not p.is_response and p.rd and p.ad and p.flags == 0x0120 for p in parsed)


def test_fixture_large_dnssec_response_over_tcp() -> None:
    data = fixture("ndpi_weberlab_tcp_response.bin")
    messages, used = maybe_read_tcp_messages(data)
    assert (len(messages), used) == (1, len(data))
    assert len(messages[0]) == len(data) - 2
    m = parse_dns_message(messages[0])
    assert m.questions == (DnsQuestion("weberlab.de", "DNSKEY", "IN"),)
    assert [a.rrtype for a in m.answers].count("DNSKEY") >= 2
    assert "RRSIG" in {a.rrtype for a in m.answers}
    assert feed_tcp(data[i : i + 1] for i in range(len(data))) == (list(messages), b"")


@pytest.mark.parametrize("name", ["zeek_dns53_response.bin", "zeek_cmu_cname_response.bin"])
def test_every_truncation_is_truncated(name: str) -> None:
    data = fixture(name)
    for n in range(len(data)):
        with pytest.raises(Truncated):
            parse_dns_message(data[:n])


@pytest.mark.parametrize("name", ["zeek_dns53_response.bin", "zeek_cmu_cname_response.bin"])
def test_byte_corruption_returns_or_raises_parse_error(name: str) -> None:
    data = fixture(name)
    outcomes: set[str] = set()
    for pos in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            mutated = bytearray(data)
            mutated[pos] ^= mask
            try:
                parse_dns_message(bytes(mutated))
                outcomes.add("ok")
            except ParseError as exc:
                outcomes.add(exc.reason)
    assert "ok" in outcomes and "truncated" in outcomes and "malformed" in outcomes


def test_trailing_bytes_tolerated_or_strict() -> None:
    data = fixture("zeek_dns53_response.bin")
    m = parse_dns_message(data + b"\x00\x00\x07")
    assert m.trailing_bytes == 3
    assert m.answers == parse_dns_message(data).answers
    with pytest.raises(TrailingData):
        parse_dns_message(data + b"\x00", strict=True)
    assert parse_dns_message(data, strict=True).trailing_bytes == 0


# --- messages built with dnspython ----------------------------------------------------


def test_cname_chain_addresses_and_min_ttl() -> None:
    m = parse_dns_message(chain_response().to_wire())
    chain = ("cloud.av.example", "edge.cdn.example", "pop1.cdn.example")
    assert answer_addresses(m) == (
        ResolvedAddress("cloud.av.example", "192.0.2.10", 60, chain),
        ResolvedAddress("cloud.av.example", "192.0.2.11", 60, chain),
        ResolvedAddress("cloud.av.example", "2001:db8::10", 120, chain),
    )
    assert [a.rrtype for a in m.answers] == ["CNAME", "CNAME", "A", "A", "AAAA"]


def test_names_lower_case_no_trailing_dot_idn_a_label() -> None:
    m = parse_dns_message(response(
        "Bücher.Example.", "AAAA",
        ("xn--bcher-kva.example.", 30, "CNAME", ("WWW.Target.EXAMPLE.",)),
        ("www.target.example.", 40, "AAAA", ("2001:DB8:0:0::1",)),
    ).to_wire())
    assert m.questions == (DnsQuestion("xn--bcher-kva.example", "AAAA", "IN"),)
    assert m.answers == (
        DnsAnswer("xn--bcher-kva.example", "CNAME", 30, "www.target.example"),
        DnsAnswer("www.target.example", "AAAA", 40, "2001:db8::1"),
    )
    assert answer_addresses(m)[0].ttl == 30


def test_escaped_and_root_names() -> None:
    data = header(flags=0x0100, qd=2) + b"\x00\x00\x02\x00\x01" + (
        b"\x03a.b\x02A\xff\x00" + b"\x00\x01\x00\x01")
    m = parse_dns_message(data)
    assert [q.qname for q in m.questions] == [".", "a\\.b.a\\255"]
    assert [q.qtype for q in m.questions] == ["NS", "A"]
    assert eve_dns_records(m)[0]["rrname"] == "<root>"


def test_record_types_in_presentation_form() -> None:
    r = response("av.example", "ANY",
                 ("av.example.", 10, "MX", ("10 Mail.AV.example.",)),
                 ("av.example.", 10, "SRV", ("1 2 443 Svc.AV.example.",)),
                 ("av.example.", 10, "TXT", ('"v=spf1 -all"',)),
                 ("av.example.", 10, "PTR", ("host.av.example.",)))
    r.authority.append(dns.rrset.from_text(
        "av.example.", 900, "IN", "SOA", "NS.av.example. Hostmaster.av.example. 7 1 2 3 4"))
    m = parse_dns_message(r.to_wire())
    assert [a.rdata for a in m.answers] == ["10 mail.av.example", "1 2 443 svc.av.example",
                                            '"v=spf1 -all"', "host.av.example"]
    assert m.authorities == (DnsAnswer("av.example", "SOA", 900,
                                       "ns.av.example hostmaster.av.example 7 1 2 3 4"),)
    assert answer_addresses(m) == ()


def test_unknown_type_kept() -> None:
    data = header(an=1) + question() + rr(b"\xc0\x0c", 65400, b"\x01\x02")
    m = parse_dns_message(data)
    assert m.answers == (DnsAnswer("a.example", "TYPE65400", 60, "\\# 2 0102"),)
    assert eve_dns_records(m)[0]["answers"] == [
        {"rrname": "a.example", "rrtype": "65400", "ttl": 60}]


def test_nxdomain_negative_answer() -> None:
    q = dns.message.make_query("nothing.av.example", "A")
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.NXDOMAIN)
    r.authority.append(dns.rrset.from_text(
        "av.example.", 900, "IN", "SOA", "ns.av.example. h.av.example. 1 2 3 4 5"))
    m = parse_dns_message(r.to_wire())
    assert (m.rcode, m.rcode_name, m.answers, m.authority_count) == (3, "NXDOMAIN", (), 1)
    assert answer_addresses(m) == ()


def test_edns_and_tsig_are_recorded_not_validated() -> None:
    keyring = dns.tsigkeyring.from_text({"key.av.example.": "c2VjcmV0c2VjcmV0c2VjcmV0"})
    q = dns.message.make_query("cloud.av.example", "A", use_edns=0, payload=1232)
    q.use_tsig(keyring, keyname="key.av.example.")
    m = parse_dns_message(q.to_wire())
    assert m.additional_count == 2  # OPT + TSIG
    assert m.questions[0].qname == "cloud.av.example"


def test_multiple_questions_each_resolved() -> None:
    r = response("a.av.example", "A", ("a.av.example.", 5, "A", ("192.0.2.1",)),
                 ("b.av.example.", 7, "A", ("192.0.2.2",)))
    r.question.append(dns.rrset.RRset(dns.name.from_text("b.av.example."), 1, 1))
    m = parse_dns_message(r.to_wire())
    assert [(x.qname, x.address, x.ttl) for x in answer_addresses(m)] == [
        ("a.av.example", "192.0.2.1", 5), ("b.av.example", "192.0.2.2", 7)]


def test_unreachable_and_non_in_records_are_not_addresses() -> None:
    data = header(an=3) + question("a.example") + (
        rr(wire_name("other.example"), 1, b"\xc0\x00\x02\x09")  # not on the chain
        + rr(b"\xc0\x0c", 1, b"\xc0\x00\x02\x01", rdclass=4)  # class HS
        + rr(b"\xc0\x0c", 1, b"\xc0\x00\x02\x02"))
    m = parse_dns_message(data)
    assert len(m.answers) == 3 and m.answers[1].rrclass == "HS"
    assert [r.address for r in answer_addresses(m)] == ["192.0.2.2"]


# --- truncated (TC=1) responses -----------------------------------------------------------


def test_tc_response_cut_mid_record_keeps_complete_records() -> None:
    r = response("big.av.example", "A",
                 ("big.av.example.", 60, "A", tuple(f"192.0.2.{i}" for i in range(1, 6))),
                 flags=dns.flags.TC)
    wire = r.to_wire()
    cut = len(wire) - 16 - 5  # inside the fourth A record
    m = parse_dns_message(wire[:cut])
    assert m.tc and m.partial
    assert [a.rdata for a in m.answers] == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert [x.address for x in answer_addresses(m)] == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    for n in range(12, len(wire)):
        assert parse_dns_message(wire[:n]).partial  # TC=1: what it holds, never an error
    assert not parse_dns_message(wire).partial
    with pytest.raises(Truncated):
        parse_dns_message(response("big.av.example", "A", (
            "big.av.example.", 60, "A", ("192.0.2.1", "192.0.2.2"))).to_wire()[:-5])


def test_tc_response_cut_in_question() -> None:
    data = header(flags=0x8380, qd=1, an=1) + question()[:5]
    m = parse_dns_message(data)
    assert (m.partial, m.questions, m.answers) == (True, (), ())


# --- malformed input ---------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    # question name pointing at itself
    header(flags=0x0100) + b"\xc0\x0c" + b"\x00\x01\x00\x01",
    # name -> forward pointer -> pointer back to the first (a two-step loop)
    header(flags=0x0100) + b"\x01a\xc0\x10" + b"\xc0\x0c" + b"\x00\x01\x00\x01",
    # answer owner pointing at itself
    header(an=1) + question() + rr(b"\xc0\x1b", 1, b"\xc0\x00\x02\x01"),
    # pointer past the end of the message
    header(flags=0x0100) + b"\xc0\xff" + b"\x00\x01\x00\x01",
], ids=["self", "two-step", "answer-owner", "past-end"])
def test_compression_pointer_loops_are_malformed(data: bytes) -> None:
    with pytest.raises(Malformed) as info:
        parse_dns_message(data)
    assert info.value.reason == "malformed"


def test_pointer_loop_in_rdata_skips_only_that_record() -> None:
    cname_at = 12 + len(question()) + 12  # RDATA offset of the first answer
    data = header(an=2) + question() + (
        rr(b"\xc0\x0c", 5, (0xC000 | cname_at).to_bytes(2, "big"))
        + rr(b"\xc0\x0c", 1, b"\xc0\x00\x02\x01"))
    m = parse_dns_message(data)
    assert m.skipped_records == 1
    assert m.answers == (DnsAnswer("a.example", "A", 60, "192.0.2.1"),)


def test_bad_rdata_is_skipped_with_framing_intact() -> None:
    data = header(an=2) + question() + (
        rr(b"\xc0\x0c", 1, b"\xc0\x00\x02") + rr(b"\xc0\x0c", 1, b"\xc0\x00\x02\x02"))
    m = parse_dns_message(data)
    assert (m.skipped_records, [a.rdata for a in m.answers]) == (1, ["192.0.2.2"])


@pytest.mark.parametrize("data", [
    header(flags=0x0100) + b"\x41" + b"\x00" * 70,  # extended label type 0x40
    header(flags=0x0100) + b"\x81abc\x00\x00\x01\x00\x01",  # label type 0x80
    header(flags=0x0100) + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01",  # 257 octets
    header(an=1) + question() + rr(b"\x00", 41, b""),  # OPT in the answer section
    header(ar=2) + question() + rr(b"\x00", 41, b"") * 2,  # two OPT records
    # UPDATE (RFC 2136): a prerequisite of class IN with a TTL is a format error, and
    # UPDATE messages are never resynchronised past a bad record
    header(flags=0x2800, an=1) + question() + rr(b"\xc0\x0c", 1, b"\x01\x02\x03\x04"),
], ids=["label-0x40", "label-0x80", "long-name", "opt-in-answer", "two-opt", "update"])
def test_malformed(data: bytes) -> None:
    with pytest.raises(Malformed) as info:
        parse_dns_message(data)
    assert "\n" not in str(info.value)


def test_update_message() -> None:
    update = dns.update.UpdateMessage("av.example.")
    update.add("cloud.av.example.", 300, "A", "192.0.2.44")
    m = parse_dns_message(update.to_wire())
    assert (m.opcode, m.questions) == (5, (DnsQuestion("av.example", "SOA", "IN"),))
    assert m.authorities == (DnsAnswer("cloud.av.example", "A", 300, "192.0.2.44"),)


def test_short_and_empty() -> None:
    for n in range(12):
        with pytest.raises(Truncated):
            parse_dns_message(b"\x00" * n)
    assert parse_dns_message(header(qd=0)).questions == ()


def test_caps_raise_limit_exceeded() -> None:
    ok = response("many.av.example", "A", ("many.av.example.", 60, "A", tuple(
        f"10.0.{i // 256}.{i % 256}" for i in range(MAX_ANSWERS))))
    assert len(parse_dns_message(ok.to_wire()).answers) == MAX_ANSWERS
    over = response("many.av.example", "A", ("many.av.example.", 60, "A", tuple(
        f"10.0.{i // 256}.{i % 256}" for i in range(MAX_ANSWERS + 1))))
    for data in (over.to_wire(), header(qd=MAX_QUESTIONS + 1), header(an=0, ns=300, ar=300),
                 b"\x00" * (MAX_DNS_MESSAGE + 1)):
        with pytest.raises(LimitExceeded) as info:
            parse_dns_message(data)
        assert info.value.reason == "limit"


def test_memoryview_and_bytearray_input() -> None:
    data = fixture("zeek_cmu_cname_response.bin")
    expected = parse_dns_message(data)
    assert parse_dns_message(memoryview(data)) == expected
    assert parse_dns_message(bytearray(data)) == expected
    assert parse_dns_message(memoryview(b"xx" + data)[2:]) == expected


# --- CNAME chains ------------------------------------------------------------------------


def test_cname_loop_terminates() -> None:
    m = parse_dns_message(response(
        "a.loop.example", "A",
        ("a.loop.example.", 60, "CNAME", ("b.loop.example.",)),
        ("b.loop.example.", 60, "CNAME", ("a.loop.example.",)),
        ("b.loop.example.", 60, "A", ("192.0.2.7",)),
    ).to_wire())
    assert answer_addresses(m) == (ResolvedAddress(
        "a.loop.example", "192.0.2.7", 60, ("a.loop.example", "b.loop.example")),)


def test_cname_self_loop() -> None:
    m = parse_dns_message(response("s.example", "A",
                                   ("s.example.", 60, "CNAME", ("s.example.",))).to_wire())
    assert answer_addresses(m) == ()


@pytest.mark.parametrize("hops", [MAX_CNAME_DEPTH, MAX_CNAME_DEPTH + 1])
def test_cname_chain_depth_is_bounded(hops: int) -> None:
    names = [f"n{i}.chain.example." for i in range(hops + 1)]
    rrsets = [(names[i], 100 - i, "CNAME", (names[i + 1],)) for i in range(hops)]
    rrsets.append((names[-1], 90, "A", ("192.0.2.99",)))
    m = parse_dns_message(response(names[0], "A", *rrsets).to_wire())
    resolved = answer_addresses(m)
    if hops <= MAX_CNAME_DEPTH:
        assert len(resolved) == 1
        assert resolved[0].chain == tuple(n.rstrip(".") for n in names)
        assert resolved[0].ttl == 100 - hops + 1
    else:
        assert resolved == ()


def test_chain_walk_skips_other_classes_and_types() -> None:
    """Only IN A/AAAA/CNAME records are on a chain: a CNAME of another class is not
    followed, other types owned by a chain name give nothing, and an address reached
    twice for one question is reported once (for each question)."""
    m = DnsMessage(
        id=1, is_response=True, opcode=0, rcode=0, flags=0x8180, aa=False, tc=False, rd=True,
        ra=True, ad=False, cd=False,
        questions=(DnsQuestion("q.example", "A", "IN"), DnsQuestion("t.example", "A", "IN")),
        answers=(DnsAnswer("q.example", "CNAME", 50, "ch.example", "CH"),
                 DnsAnswer("q.example", "TXT", 10, '"x"'),
                 DnsAnswer("q.example", "DNAME", 10, "d.example"),
                 DnsAnswer("q.example", "CNAME", 40, "t.example"),
                 DnsAnswer("q.example", "CNAME", 5, "ignored.example"),
                 DnsAnswer("ch.example", "A", 1, "192.0.2.9"),
                 DnsAnswer("t.example", "A", 30, "192.0.2.1"),
                 DnsAnswer("t.example", "AAAA", 60, "2001:db8::1"),
                 DnsAnswer("t.example", "A", 20, "192.0.2.1")),
        authorities=(), authority_count=0, additional_count=0, partial=False,
        skipped_records=0, trailing_bytes=0)
    chain = ("q.example", "t.example")
    assert answer_addresses(m) == (
        ResolvedAddress("q.example", "192.0.2.1", 30, chain),
        ResolvedAddress("q.example", "2001:db8::1", 40, chain),
        ResolvedAddress("t.example", "192.0.2.1", 30, ("t.example",)),
        ResolvedAddress("t.example", "2001:db8::1", 60, ("t.example",)),
    )


# --- DNS over TCP ------------------------------------------------------------------------


def test_tcp_two_messages_in_one_segment() -> None:
    a, b = chain_response().to_wire(), fixture("zeek_dns53_response.bin")
    messages, used = maybe_read_tcp_messages(framed(a, b))
    assert messages == (a, b) and used == len(a) + len(b) + 4
    assert [parse_dns_message(m).questions[0].qname for m in messages] == [
        "cloud.av.example", "us.v27.distributed.net"]


def test_tcp_message_split_across_segments() -> None:
    a, b = chain_response().to_wire(), fixture("zeek_cmu_cname_response.bin")
    stream = framed(a, b)
    assert maybe_read_tcp_messages(stream[:1]) == ((), 0)
    assert maybe_read_tcp_messages(stream[: len(a) + 1]) == ((), 0)
    first, used = maybe_read_tcp_messages(stream[: len(a) + 5])
    assert first == (a,) and used == len(a) + 2
    for cut in range(len(stream) + 1):
        assert feed_tcp([stream[:cut], stream[cut:]]) == ([a, b], b"")
    assert feed_tcp(stream[i : i + 1] for i in range(len(stream))) == ([a, b], b"")


def test_tcp_splitter_on_a_bytearray_buffer_it_then_trims() -> None:
    """The flow layer keeps a bytearray per direction and deletes what was consumed:
    no view of it may outlive the call (a bytearray with exports cannot be resized)."""
    a = chain_response().to_wire()
    buffer = bytearray(framed(a) + b"\x00\x30\x01")
    messages, used = maybe_read_tcp_messages(buffer)
    del buffer[:used]
    assert messages == (a,) and buffer == bytearray(b"\x00\x30\x01")
    payload = bytearray(header(flags=0, qd=1) + b"\x03ab")
    with pytest.raises(Truncated) as kept:  # a caller may keep the error (and its frames)
        parse_dns_message(memoryview(payload))
    payload.extend(b"\x00")  # BufferError if anything still held a view of it
    assert kept.value.reason == "truncated"


def test_tcp_short_frames_are_left_to_the_parser() -> None:
    messages, used = maybe_read_tcp_messages(b"\x00\x00" + b"\x00\x03abc" + b"\x00")
    assert (messages, used) == ((b"", b"abc"), 7)
    for m in messages:
        with pytest.raises(Truncated):
            parse_dns_message(m)


# --- EVE ---------------------------------------------------------------------------------


def test_eve_v2_query_records() -> None:
    q = dns.message.make_query("cloud.av.example", "AAAA")
    q.id = 4321
    m = parse_dns_message(q.to_wire())
    assert eve_dns_records(m, tx_id=0) == ({
        "type": "query", "id": 4321, "rrname": "cloud.av.example", "rrtype": "AAAA",
        "tx_id": 0, "opcode": 0},)


def test_eve_v2_answer_detailed_grouped() -> None:
    r = chain_response()
    r.id = 18523
    r.flags |= dns.flags.RA
    r.authority.append(dns.rrset.from_text(
        "cdn.example.", 900, "IN", "SOA", "ns.cdn.example. h.cdn.example. 1 2 3 4 5"))
    m = parse_dns_message(r.to_wire())
    (record,) = eve_dns_records(m, grouped=True)
    assert record == {
        "version": 2, "type": "answer", "id": 18523, "flags": "8180", "qr": True, "rd": True,
        "ra": True, "opcode": 0, "rrname": "cloud.av.example", "rrtype": "A",
        "rcode": "NOERROR",
        "answers": [
            {"rrname": "cloud.av.example", "rrtype": "CNAME", "ttl": 3600,
             "rdata": "edge.cdn.example"},
            {"rrname": "edge.cdn.example", "rrtype": "CNAME", "ttl": 300,
             "rdata": "pop1.cdn.example"},
            {"rrname": "pop1.cdn.example", "rrtype": "A", "ttl": 60, "rdata": "192.0.2.10"},
            {"rrname": "pop1.cdn.example", "rrtype": "A", "ttl": 60, "rdata": "192.0.2.11"},
            {"rrname": "pop1.cdn.example", "rrtype": "AAAA", "ttl": 120,
             "rdata": "2001:0db8:0000:0000:0000:0000:0000:0010"},
        ],
        "grouped": {"CNAME": ["edge.cdn.example", "pop1.cdn.example"],
                    "A": ["192.0.2.10", "192.0.2.11"],
                    "AAAA": ["2001:0db8:0000:0000:0000:0000:0000:0010"]},
        "authorities": [{"rrname": "cdn.example", "rrtype": "SOA", "ttl": 900, "soa": {
            "mname": "ns.cdn.example", "rname": "h.cdn.example", "serial": 1, "refresh": 2,
            "retry": 3, "expire": 4, "minimum": 5}}],
    }
    assert "grouped" not in eve_dns_records(m)[0]
    assert "answers" not in eve_dns_records(m, detailed=False)[0]
    json.dumps(record)


def test_eve_v3_request_and_response() -> None:
    q = dns.message.make_query("cloud.av.example", "A")
    q.id = 0
    (request,) = eve_dns_records(parse_dns_message(q.to_wire()), version=3, tx_id=0)
    assert request == {"version": 3, "type": "request", "tx_id": 0, "id": 0, "flags": "100",
                       "rd": True, "opcode": 0, "rcode": "NOERROR",
                       "queries": [{"rrname": "cloud.av.example", "rrtype": "A"}]}
    (resp,) = eve_dns_records(parse_dns_message(chain_response().to_wire()), version=3)
    assert resp["type"] == "response" and resp["qr"] is True
    assert resp["queries"] == [{"rrname": "cloud.av.example", "rrtype": "A"}]
    assert isinstance(resp["answers"], list) and len(resp["answers"]) == 5
    with pytest.raises(ValueError):
        eve_dns_records(parse_dns_message(q.to_wire()), version=1)


def test_eve_flags_for_truncated_authoritative_nxdomain() -> None:
    data = header(flags=0x8603 | 0x0040, qd=1) + question()
    (record,) = eve_dns_records(parse_dns_message(data))
    assert record["flags"] == "8643"
    assert {k for k, v in record.items() if v is True} == {"qr", "aa", "tc", "z"}
    assert record["rcode"] == "NXDOMAIN"


def _message(*answers: DnsAnswer, flags: int = 0x8180) -> DnsMessage:
    return DnsMessage(
        id=7, is_response=True, opcode=0, rcode=0, flags=flags, aa=False, tc=False, rd=True,
        ra=True, ad=False, cd=False, questions=(DnsQuestion("q.example", "TYPE65400", "IN"),),
        answers=answers, authorities=answers, authority_count=len(answers),
        additional_count=0, partial=False, skipped_records=0, trailing_bytes=0)


def test_eve_data_of_every_record_shape() -> None:
    """What Suricata logs for each RDATA form, the generic RFC 3597 one included."""
    shapes: list[tuple[str, str, dict[str, Any]]] = [
        ("A", "192.0.2.1", {"rdata": "192.0.2.1"}),
        ("AAAA", "2001:db8::1", {"rdata": "2001:0db8:0000:0000:0000:0000:0000:0001"}),
        ("AAAA", "::ffff:192.0.2.1", {"rdata": "0000:0000:0000:0000:0000:ffff:c000:0201"}),
        ("CNAME", ".", {"rdata": "<root>"}),
        ("NS", "ns.example", {"rdata": "ns.example"}),
        ("PTR", "host.example", {"rdata": "host.example"}),
        ("DNAME", "d.example", {}),
        ("MX", "10 mail.example", {"rdata": "mail.example"}),
        ("MX", "0 .", {"rdata": "<root>"}),
        ("MX", "mail.example", {"rdata": "mail.example"}),
        ("TXT", '"v=spf1 -all"', {"rdata": '"v=spf1 -all"'}),
        ("NULL", "\\# 1 00", {"rdata": "\\# 1 00"}),
        ("A", "\\# 2 0102", {"rdata": "\\# 2 0102"}),
        ("AAAA", "\\# 2 0102", {"rdata": "\\# 2 0102"}),
        ("MX", "\\# 2 0102", {"rdata": "\\# 2 0102"}),
        ("SOA", "\\# 2 0102", {}),
        ("TYPE65400", "\\# 2 0102", {}),
        ("SOA", ". h.example 1 2 3 4 5", {"soa": {
            "mname": "<root>", "rname": "h.example", "serial": 1, "refresh": 2, "retry": 3,
            "expire": 4, "minimum": 5}}),
        ("SOA", "ns.example h.example 1 2 3 4", {}),
        ("SRV", "1 2 443 svc.example", {"srv": {"priority": 1, "weight": 2, "port": 443,
                                                "name": "svc.example"}}),
        ("SRV", "1 2 svc.example", {}),
        ("SSHFP", "1 2 ABCDEF 12", {"sshfp": {"fingerprint": "ab:cd:ef:12", "algo": 1,
                                              "type": 2}}),
        ("SSHFP", "1 2", {}),
        ("HTTPS", "1 . alpn=h2", {}),
    ]
    answers = [DnsAnswer("o.example", rrtype, 9, rdata) for rrtype, rdata, _ in shapes]
    (record,) = eve_dns_records(_message(*answers), grouped=True)
    expected = [{"rrname": "o.example", "rrtype": "65400" if t == "TYPE65400" else t,
                 "ttl": 9, **data} for t, _, data in shapes]
    assert record["answers"] == expected
    assert record["authorities"] == expected
    assert record["rrtype"] == "65400"
    grouped: dict[str, list[Any]] = {}
    for rrtype, _, data in shapes:
        if data:
            grouped.setdefault(rrtype, []).extend(data.values())
    assert record["grouped"] == grouped


def test_eve_type_names() -> None:
    """dnspython's ``TYPE<n>`` for an unknown type is Suricata's number; other names stay."""
    answers = [DnsAnswer("o.example", rrtype, 1, "\\# 0")
               for rrtype in ("TYPE65400", "TYPE0", "TYPE", "TYPEx1", "Type12", "A")]
    (record,) = eve_dns_records(_message(*answers))
    assert isinstance(record["answers"], list)
    assert [a["rrtype"] for a in record["answers"] if isinstance(a, dict)] == [
        "65400", "0", "TYPE", "TYPEx1", "Type12", "A"]


def test_eve_flags_every_header_word() -> None:
    """The hex word and the qr/aa/tc/rd/ra/z keys, for every value of the flags word."""
    base = _message()
    keys = (("qr", 0x8000), ("aa", 0x0400), ("tc", 0x0200), ("rd", 0x0100), ("ra", 0x0080),
            ("z", 0x0040))
    for flags in range(0x10000):
        (record,) = eve_dns_records(msgspec.structs.replace(base, flags=flags))
        assert list(record)[:3] == ["version", "type", "id"]
        assert record["flags"] == f"{flags:x}"
        assert [k for k in record if record[k] is True] == [k for k, bit in keys if flags & bit]


# --- property tests ----------------------------------------------------------------------

_SEEDS = [fixture("zeek_dns53_response.bin"), fixture("zeek_cmu_cname_response.bin"),
          chain_response().to_wire()]


@_FAST
@given(st.binary(max_size=512))
def test_arbitrary_bytes_return_or_raise_parse_error(data: bytes) -> None:
    try:
        m = parse_dns_message(data)
    except ParseError:
        return
    answer_addresses(m)
    json.dumps(eve_dns_records(m, grouped=True))
    json.dumps(eve_dns_records(m, version=3, grouped=True))


@_FAST
@given(st.integers(0, 0xFFFF), st.lists(st.integers(0, 3), min_size=4, max_size=4),
       st.binary(max_size=300))
def test_header_then_arbitrary_body(flags: int, counts: list[int], body: bytes) -> None:
    qd, an, ns, ar = counts
    try:
        m = parse_dns_message(header(flags=flags, qd=qd, an=an, ns=ns, ar=ar) + body)
    except ParseError:
        return
    assert len(m.answers) + m.skipped_records <= an + ns + ar
    json.dumps(eve_dns_records(m, grouped=True))


@_FAST
@given(st.sampled_from(_SEEDS), st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)),
                                         max_size=6),
       st.integers(0, 2000))
def test_mutated_real_messages(seed: bytes, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(seed)
    for pos, value in edits:
        data[pos % len(data)] = value
    try:
        m = parse_dns_message(bytes(data[: max(cut, 12)]))
    except ParseError:
        return
    for resolved in answer_addresses(m):
        assert len(resolved.chain) <= MAX_CNAME_DEPTH + 1
        assert len(set(resolved.chain)) == len(resolved.chain)
    json.dumps(eve_dns_records(m, grouped=True))


@_FAST
@given(st.binary(max_size=400))
def test_tcp_splitter_never_raises_and_accounts_bytes(data: bytes) -> None:
    messages, used = maybe_read_tcp_messages(data)
    assert used == sum(2 + len(m) for m in messages) <= len(data)
    rest = data[used:]
    assert len(rest) < 2 or int.from_bytes(rest[:2], "big") > len(rest) - 2


@_FAST
@given(st.lists(st.binary(max_size=80), max_size=5), st.lists(st.integers(1, 40), max_size=20),
       st.binary(max_size=3))
def test_tcp_splitter_whole_equals_incremental(messages: list[bytes], sizes: list[int],
                                               tail: bytes) -> None:
    # The tail is an incomplete frame (b"\0\0" alone would be a complete empty one).
    assume(len(tail) < 2 or int.from_bytes(tail[:2], "big") > len(tail) - 2)
    stream = framed(*messages) + tail
    whole, used = maybe_read_tcp_messages(stream)
    assert list(whole) == messages[: len(whole)]
    chunks, pos = [], 0
    for size in sizes:
        chunks.append(stream[pos : pos + size])
        pos += size
    chunks.append(stream[pos:])
    assert feed_tcp(chunks) == (list(whole), stream[used:])
    assert feed_tcp(stream[i : i + 1] for i in range(len(stream))) == (list(whole),
                                                                       stream[used:])


# --- corpus ------------------------------------------------------------------------------

_DNS_ENTRIES = [e for e in MANIFEST if e["expected"]["dns_queries"]
                or e["tshark"]["derived"]["dns_queries"]]
#: Expected names that are not DNS wire format on any port: NetBIOS-NS (UDP 137, RFC 1002)
#: names, which Zeek logs in dns.log. Every other expected name must be found.
_NOT_DNS = {("zeek_wikipedia.pcap", "workgroup")}


@pytest.mark.parametrize("entry", _DNS_ENTRIES, ids=[e["file"] for e in _DNS_ENTRIES])
def test_corpus_queries_and_answers(entry: dict[str, Any]) -> None:
    messages, errors = corpus_dns_messages(CORPUS / entry["file"])
    assert errors == []
    names = {q.qname for m in messages for q in m.questions}
    expected = {n.lower() for n in entry["expected"]["dns_queries"]}
    expected -= {n for f, n in _NOT_DNS if f == entry["file"]}
    assert expected <= names
    assert {n.lower() for n in entry["tshark"]["derived"]["dns_queries"]} <= names
    found = addresses_by_qname(messages)
    for qname, addresses in entry["tshark"]["derived"]["dns_answers"].items():
        assert found.get(qname) == set(addresses), qname
    for qname, addresses in entry["expected"]["dns_answers"].items():
        assert set(addresses) <= found.get(qname, set()), qname


def test_corpus_recall(record_property: Callable[[str, object], None]) -> None:
    """How many of the peers' expected names (MANIFEST ``expected.dns_queries``) are found."""
    total = found = 0
    missed: list[tuple[str, str]] = []
    for entry in _DNS_ENTRIES:
        messages, _ = corpus_dns_messages(CORPUS / entry["file"])
        names = {q.qname for m in messages for q in m.questions}
        for name in entry["expected"]["dns_queries"]:
            total += 1
            if name.lower() in names:
                found += 1
            else:
                missed.append((entry["file"], name.lower()))
    record_property("dns_query_recall", f"{found}/{total}")
    print(f"dns query recall {found}/{total}; missed {missed}")
    assert set(missed) == _NOT_DNS
    assert total >= 40


def test_corpus_fragmented_udp_needs_reassembly() -> None:
    """ndpi_dns_fragmented.pcap: pa.weberlab.de's answer only exists after IPv6
    reassembly; the first fragment alone is a truncated message."""
    messages, _ = corpus_dns_messages(CORPUS / "ndpi_dns_fragmented.pcap")
    assert addresses_by_qname(messages)["pa.weberlab.de"] == {"2001:470:1f0b:1024::2"}
    scapy = pytest.importorskip("scapy.all")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        packets = scapy.rdpcap(str(CORPUS / "ndpi_dns_fragmented.pcap"))
    first = packets[4][scapy.IPv6]  # frame 5: first fragment of that response
    assert first.haslayer(scapy.IPv6ExtHdrFragment)
    payload = bytes(first[scapy.IPv6ExtHdrFragment].payload)[8:]  # past the UDP header
    with pytest.raises(Truncated):
        parse_dns_message(payload)


def _tshark_dns(path: Path) -> tuple[set[str], dict[str, set[str]]]:
    """tshark's query names and answer-section A/AAAA addresses per first query name."""
    tshark = require_tool("tshark")
    fields = ["dns.flags.response", "dns.qry.name", "dns.count.answers", "dns.resp.type",
              "dns.a", "dns.aaaa"]
    out = subprocess.run(
        [tshark, "-n", "-r", str(path), "-Y", "dns", "-T", "fields", "-E", "separator=\t",
         "-E", "occurrence=a", "-E", "aggregator=,"] + [a for f in fields for a in ("-e", f)],
        check=True, capture_output=True, text=True, timeout=120).stdout
    names: set[str] = set()
    answers: dict[str, set[str]] = defaultdict(set)
    for line in out.splitlines():
        cols = dict(zip(fields, line.split("\t"), strict=False))
        qnames = [n.lower() for n in cols.get("dns.qry.name", "").split(",") if n]
        names.update(qnames)
        if cols.get("dns.flags.response") not in ("1", "True") or not qnames:
            continue
        count = int(cols.get("dns.count.answers") or 0)
        types = [t for t in cols.get("dns.resp.type", "").split(",") if t]
        a_list = [x for x in cols.get("dns.a", "").split(",") if x]
        aaaa_list = [x for x in cols.get("dns.aaaa", "").split(",") if x]
        for rtype in types[:count]:
            if rtype == "1" and a_list:
                answers[qnames[0]].add(a_list.pop(0))
            elif rtype == "28" and aaaa_list:
                answers[qnames[0]].add(aaaa_list.pop(0))
    return names, answers


@pytest.mark.parametrize("entry", _DNS_ENTRIES, ids=[e["file"] for e in _DNS_ENTRIES])
def test_corpus_against_live_tshark(entry: dict[str, Any]) -> None:
    path = CORPUS / entry["file"]
    tshark_names, tshark_answers = _tshark_dns(path)
    messages, _ = corpus_dns_messages(path)
    names = {q.qname for m in messages for q in m.questions}
    assert tshark_names <= names
    found = addresses_by_qname(messages)
    for qname, addresses in tshark_answers.items():
        assert found.get(qname) == addresses, qname


# --- a real client on loopback -------------------------------------------------------------


def _loopback_responder(sock: socket.socket, received: list[bytes]) -> None:
    """Answer length-prefixed queries on one TCP connection with chain_response()."""
    conn, _ = sock.accept()
    buffer = b""
    with conn:
        conn.settimeout(10)
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                break
            if not data:
                break
            received.append(data)
            buffer += data
            messages, used = maybe_read_tcp_messages(buffer)
            buffer = buffer[used:]
            for message in messages:
                query = dns.message.from_wire(message)
                reply = chain_response()
                reply.id = query.id
                reply.question = query.question
                wire = reply.to_wire()
                conn.sendall(len(wire).to_bytes(2, "big") + wire)


def test_kdig_over_tcp_on_loopback() -> None:
    kdig = require_tool("kdig")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        received: list[bytes] = []
        server = threading.Thread(target=_loopback_responder, args=(sock, received))
        server.start()
        out = subprocess.run([kdig, "@127.0.0.1", "-p", str(port), "+tcp", "+keepopen",
                              "+timeout=5", "cloud.av.example", "A", "Cloud.AV.example",
                              "AAAA"], capture_output=True, text=True, timeout=30)
        server.join(timeout=30)
    assert out.returncode == 0, out.stderr
    messages, rest = feed_tcp(received)
    assert rest == b"" and len(messages) == 2
    parsed = [parse_dns_message(m) for m in messages]
    assert [(p.questions[0].qname, p.questions[0].qtype) for p in parsed] == [
        ("cloud.av.example", "A"), ("cloud.av.example", "AAAA")]
    assert "192.0.2.10" in out.stdout  # kdig accepted what the responder built
