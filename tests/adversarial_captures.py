"""Adversarial captures: traffic shaped to make avmon's state grow, and a measured replay.

Shared by ``bench/adversarial`` (full size, default limits, a table of peak memory and the
limit counters) and ``tests/test_adversarial.py`` (small sizes, small limits, assertions).
Each generator streams one classic pcap with :class:`monitor.synth.PcapWriter`; the frames
are packed here with :mod:`struct` (correct IPv4, TCP and UDP checksums), because hundreds
of thousands of packets must be written in seconds. The one real ClientHello (the AV flow
hidden in the ClientHello flood) comes from OpenSSL through :func:`monitor.synth.client_hello`.

The captures (see docs/adversarial.md):

- :func:`syn_flood`: SYNs from unique (address, port) tuples to one server; the flow table
  fills (limit ``flows``).
- :func:`dns_answer_flood`: answers naming a distinct address each, and one address
  answered for many names (``dns_cache_entries``, ``dns_names_per_address``).
- :func:`hello_flood`: TCP flows that send most of a 16 KiB ClientHello and never the rest
  (``reassembly_bytes_total``), optionally with one real AV ClientHello near the end.
- :func:`quic_initial_flood`: QUIC v1 Initials with random connection IDs and random
  payloads, which fail decryption.
- :func:`vlan_bomb`: frames with thousands of stacked 802.1Q tags among ordinary DNS
  exchanges (decode failures, ``vlan_depth``).

:func:`replay` runs ``avmon replay`` in a child process and returns its exit status, wall
time, peak resident set size (the child's ``VmHWM``) and the metrics of its ``--metrics-textfile``.
"""

from __future__ import annotations

import os
import random
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from monitor.synth import GATEWAY_MAC, PcapWriter, inet_checksum, ones_sum

__all__ = [
    "CAPTURES",
    "AV_SERVER",
    "AV_SNI",
    "LIMIT_METRICS",
    "Capture",
    "Metrics",
    "ReplayResult",
    "dns_answer_flood",
    "hello_flood",
    "pcap_packets",
    "quic_initial_flood",
    "replay",
    "syn_flood",
    "vlan_bomb",
]

ROOT: Final = Path(__file__).resolve().parent.parent
#: 2026-03-02T09:00:00Z, the demo capture's day.
T0: Final = 1_772_442_000 * 10**9
SECOND: Final = 10**9

CLIENT: Final = "10.20.1.10"
RESOLVER: Final = "10.20.0.53"
#: Documentation addresses: no IP signature matches them.
SERVER: Final = "203.0.113.7"
#: The AV flow of :func:`hello_flood`: a Kaspersky lookup name (signatures/vendors/kaspersky.toml).
AV_SNI: Final = "ksn-file-geo.kaspersky-labs.com"
AV_SERVER: Final = "203.0.113.99"
AV_CLIENT: Final = "10.20.7.7"

_CLIENT_MAC: Final = bytes.fromhex("02a0a0a0a001")
_ETH_IP4_OUT: Final = GATEWAY_MAC + _CLIENT_MAC + b"\x08\x00"  # client -> gateway
_ETH_IP4_IN: Final = _CLIENT_MAC + GATEWAY_MAC + b"\x08\x00"  # gateway -> client
_IP4: Final = struct.Struct(">BBHHHBBH4s4s")
_TCP: Final = struct.Struct(">HHIIHHHH")
_UDP: Final = struct.Struct(">HHHH")
_SYN: Final = 0x02
_ACK: Final = 0x10
_PSH_ACK: Final = 0x18
_SYN_ACK: Final = 0x12
_FIN_ACK: Final = 0x11
_PROTO_TCP: Final = 6
_PROTO_UDP: Final = 17
#: MSS 1460, NOP, window scale 7, NOP, NOP, SACK permitted (Linux without timestamps).
_MSS_OPTION: Final = bytes.fromhex("020405b4010303070101" "0402")
MSS: Final = 1460


def _addr(text: str) -> bytes:
    return bytes(int(part) for part in text.split("."))


def _ipv4(src: bytes, dst: bytes, proto: int, l4: bytes, ipid: int, ttl: int = 64) -> bytes:
    """An IPv4 header (DF, no options, correct checksum) followed by ``l4``."""
    header = _IP4.pack(0x45, 0, 20 + len(l4), ipid & 0xFFFF, 0x4000, ttl, proto, 0, src, dst)
    csum = inet_checksum(header)
    return header[:10] + csum.to_bytes(2, "big") + header[12:] + l4


def _tcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
         payload: bytes = b"", *, options: bytes = b"", payload_sum: int | None = None,
         window: int = 64240) -> bytes:
    """A TCP segment with a correct checksum (RFC 9293 §3.1); ``payload_sum`` is
    :func:`ones_sum` of ``payload`` when the caller has it."""
    off_flags = (5 + len(options) // 4) << 12 | flags
    header = _TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, off_flags, window,
                       0, 0) + options
    psum = ones_sum(payload) if payload_sum is None else payload_sum
    pseudo = ones_sum(src + dst) + _PROTO_TCP + len(header) + len(payload) + psum
    csum = inet_checksum(header, pseudo)
    return header[:16] + csum.to_bytes(2, "big") + header[18:] + payload


def _udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP datagram with a correct checksum (RFC 768)."""
    length = 8 + len(payload)
    pseudo = ones_sum(src + dst) + _PROTO_UDP + length
    csum = inet_checksum(_UDP.pack(sport, dport, length, 0) + payload, pseudo) or 0xFFFF
    return _UDP.pack(sport, dport, length, csum) + payload


@dataclass(slots=True)
class Capture:
    """One generated capture and what a replay of it must show."""

    #: Short name (the table's first column).
    name: str
    path: Path
    packets: int
    #: File size in bytes.
    size: int
    #: What the capture contains, for the table and the docs.
    description: str
    #: Flow records the EVE output must hold (None where eviction timing decides it).
    flows: int | None = None
    #: Further expectations, by name (see each generator).
    expect: dict[str, int] = field(default_factory=dict)


def _finish(name: str, writer: PcapWriter, path: Path, description: str, *,
            flows: int | None = None, **expect: int) -> Capture:
    writer.close()
    return Capture(name, path, writer.packets, path.stat().st_size, description, flows,
                   dict(expect))


# ------------------------------------------------------------------------ SYN flood


def syn_flood(path: Path, *, syns: int = 400_000, seconds: float = 20.0,
              seed: int = 1) -> Capture:
    """``syns`` SYNs to SERVER:443 from unique (source address, source port) tuples, spread
    evenly over ``seconds`` of capture time, nothing answered.

    Sources are 100.64.0.0/10 addresses (spoofed floods draw them at random; these are
    distinct, with 25 ports each), so every SYN opens a flow and nothing ever closes one:
    past ``flow.max_flows`` every new SYN evicts the oldest flow. Each SYN is one flow
    record in the EVE output.
    """
    if syns > (1 << 22) * 25:
        raise ValueError("too many SYNs for the source space")
    rng = random.Random(seed)
    dst = _addr(SERVER)
    step = int(seconds * SECOND) // max(syns, 1)
    base = 0x64400000  # 100.64.0.0
    with PcapWriter(path) as w:
        for i in range(syns):
            src = (base + 1 + i // 25).to_bytes(4, "big")
            sport = 1024 + (i % 25) * 2557 + rng.randrange(2557)
            seg = _tcp(src, dst, sport, 443, rng.getrandbits(32), 0, _SYN,
                       options=_MSS_OPTION)
            w.write(T0 + i * step, _ETH_IP4_OUT + _ipv4(src, dst, _PROTO_TCP, seg, i))
        return _finish("syn_flood", w, path,
                       f"{syns:,} SYNs from unique (address, port) to one server, "
                       f"{seconds:g} s", flows=syns)


# ------------------------------------------------------------------- DNS answer flood


def _dns_name(name: str) -> bytes:
    out = bytearray()
    for label in name.split("."):
        out.append(len(label))
        out += label.encode("ascii")
    return bytes(out) + b"\x00"


def _dns_query(qid: int, name: str) -> bytes:
    """An A query with RD (RFC 1035 §4.1)."""
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _dns_name(name) + b"\x00\x01\x00\x01"


def _dns_answer(qid: int, name: str, addresses: Sequence[bytes], ttl: int = 3600) -> bytes:
    """A recursive resolver's A answer, the owner compressed to the question (0xC00C)."""
    head = struct.pack(">HHHHHH", qid, 0x8180, 1, len(addresses), 0, 0)
    question = _dns_name(name) + b"\x00\x01\x00\x01"
    answers = b"".join(b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, ttl, 4) + a
                       for a in addresses)
    return head + question + answers


def dns_answer_flood(path: Path, *, names: int = 100_000, shared_names: int = 20,
                     seconds: float = 20.0, seed: int = 1) -> Capture:
    """One client's DNS exchanges with its resolver: ``names`` distinct names answered with
    a distinct address each (100.64.0.0/10), then ``shared_names`` names all answered with
    one address (198.51.100.77). Every query comes from its own source port (cycling
    through 1024-64999), so each exchange up to 63,976 of them is its own flow.

    The DNS cache keeps (client, answer address) pairs: ``names + 1`` pairs, so past
    ``limits.dns_cache_entries`` each new pair evicts the oldest; the shared address
    collects ``shared_names`` names, past ``limits.dns_names_per_address`` the oldest go.
    """
    rng = random.Random(seed)
    client, resolver = _addr(CLIENT), _addr(RESOLVER)
    shared = _addr("198.51.100.77")
    total = names + shared_names
    step = int(seconds * SECOND) // max(total, 1)
    ports = 64_000 - 1024
    ipid = 0
    with PcapWriter(path) as w:
        for i in range(total):
            if i < names:
                name = f"n{i}.flood{i % 97}.example"
                answer = [(0x64400000 + 1 + i).to_bytes(4, "big")]
            else:
                name = f"alias{i - names}.shared.example"
                answer = [shared]
            qid = rng.getrandbits(16)
            sport = 1024 + i % ports
            t = T0 + i * step
            q = _udp(client, resolver, sport, 53, _dns_query(qid, name))
            w.write(t, _ETH_IP4_OUT + _ipv4(client, resolver, _PROTO_UDP, q, ipid))
            a = _udp(resolver, client, 53, sport, _dns_answer(qid, name, answer))
            w.write(t + step // 2, _ETH_IP4_IN + _ipv4(resolver, client, _PROTO_UDP, a, ipid))
            ipid += 1
        return _finish("dns_answer_flood", w, path,
                       f"{names:,} names each answered with its own address, one address "
                       f"answered for {shared_names} names; one client",
                       flows=min(total, ports), cache_pairs=names + 1,
                       shared_names=shared_names)


# -------------------------------------------------------------- ClientHello flood


def _partial_hello(declared: int) -> bytes:
    """A TLS record of ``declared`` bytes holding one ClientHello that fills it (TLS 1.2
    layout, one cipher suite, one padding extension; RFC 8446 §4.1.2, RFC 7685)."""
    body_len = declared - 4
    fixed = 2 + 32 + 1 + 4 + 2 + 2  # version, random, sid, suites, compression, ext len
    pad = body_len - fixed - 4
    if pad < 0:
        raise ValueError("declared ClientHello too small")
    body = (b"\x03\x03" + bytes(range(32)) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
            + struct.pack(">HHH", 4 + pad, 21, pad) + bytes(pad))
    handshake = b"\x01" + body_len.to_bytes(3, "big") + body
    return struct.pack(">BHH", 22, 0x0301, len(handshake)) + handshake


def _segments(data: bytes) -> list[tuple[int, bytes, int]]:
    """``data`` cut at the MSS: (stream offset, payload, ones_sum) per segment."""
    out = []
    for off in range(0, len(data), MSS):
        piece = data[off:off + MSS]
        out.append((off, piece, ones_sum(piece)))
    return out


class _TcpConn:
    """One client connection; frames come back as (time, frame) pairs."""

    def __init__(self, client: bytes, server: bytes, cport: int, sport: int, isn: int,
                 t: int, rtt: int = 200_000, gap: int = 10_000) -> None:
        self.c, self.s, self.cport, self.sport = client, server, cport, sport
        self.cseq, self.sseq = isn, (isn * 7 + 0x1234567) & 0xFFFFFFFF
        self.t, self.rtt, self.gap = t, rtt, gap
        self.ipid = isn & 0xFFFF

    def _out(self, flags: int, payload: bytes = b"", psum: int | None = None,
             options: bytes = b"") -> bytes:
        self.ipid += 1
        seg = _tcp(self.c, self.s, self.cport, self.sport, self.cseq, self.sseq, flags,
                   payload, options=options, payload_sum=psum)
        return _ETH_IP4_OUT + _ipv4(self.c, self.s, _PROTO_TCP, seg, self.ipid)

    def _in(self, flags: int, options: bytes = b"") -> bytes:
        seg = _tcp(self.s, self.c, self.sport, self.cport, self.sseq, self.cseq, flags,
                   options=options)
        return _ETH_IP4_IN + _ipv4(self.s, self.c, _PROTO_TCP, seg, self.ipid, ttl=52)

    def open(self) -> list[tuple[int, bytes]]:
        t = self.t
        syn = _tcp(self.c, self.s, self.cport, self.sport, self.cseq, 0, _SYN,
                   options=_MSS_OPTION)
        frames = [(t, _ETH_IP4_OUT + _ipv4(self.c, self.s, _PROTO_TCP, syn, self.ipid))]
        self.cseq += 1
        frames.append((t + self.rtt, self._in(_SYN_ACK, _MSS_OPTION)))
        self.sseq += 1
        frames.append((t + self.rtt + self.gap, self._out(_ACK)))
        self.t = t + self.rtt + 2 * self.gap
        return frames

    def send(self, segments: Sequence[tuple[int, bytes, int]]) -> list[tuple[int, bytes]]:
        """Client segments back to back, the server's ACK of each pair one RTT later."""
        frames: list[tuple[int, bytes]] = []
        t = self.t
        for n, (_, payload, psum) in enumerate(segments):
            last = n == len(segments) - 1
            frames.append((t, self._out(_PSH_ACK if last else _ACK, payload, psum)))
            self.cseq += len(payload)
            if n % 2 == 1 or last:
                frames.append((t + self.rtt, self._in(_ACK)))
            t += self.gap
        frames.sort(key=lambda f: f[0])
        self.t = frames[-1][0] + self.gap if frames else t
        return frames

    def close(self) -> list[tuple[int, bytes]]:
        t = self.t
        frames = [(t, self._out(_FIN_ACK))]
        self.cseq += 1
        frames.append((t + self.rtt, self._in(_FIN_ACK)))
        self.sseq += 1
        frames.append((t + self.rtt + self.gap, self._out(_ACK)))
        self.t = t + self.rtt + 2 * self.gap
        return frames


def hello_flood(path: Path, *, flows: int = 20_000, declared: int = 16_384,
                sent: int = 12_288, clients: int = 20, seconds: float = 20.0,
                av_hello: bytes | None = None, av_newer: int = 10) -> Capture:
    """``flows`` TCP connections to SERVER:443 from ``clients`` addresses (10.99.0.0/16),
    each a handshake and then the first ``sent`` bytes of a TLS record declaring a
    ``declared``-byte ClientHello, cut at the MSS and ACKed; the rest never comes and the
    connection never closes. A connection starts every ``seconds / flows``; each lasts well
    under a millisecond, so all are open (and idle) at the end.

    Every connection holds ``sent`` bytes of reassembly state until it is given up:
    ``flows * sent`` in all without a total limit.

    ``av_hello`` (a real ClientHello's records, e.g. from :func:`monitor.synth.client_hello`)
    adds one connection AV_CLIENT -> AV_SERVER:443 that sends the hello's first segment
    (half of it, at most one MSS) when ``av_newer`` flood connections are still to come,
    and the rest, then a FIN teardown, after the last flood connection.
    """
    if not 0 < sent < declared + 5:
        raise ValueError("sent must be part of the record")
    record = _partial_hello(declared)[:sent]
    segs = _segments(record)
    server = _addr(SERVER)
    step = int(seconds * SECOND) // max(flows, 1)
    av: _TcpConn | None = None
    av_rest: list[tuple[int, bytes, int]] = []
    with PcapWriter(path) as w:
        for i in range(flows):
            t = T0 + i * step
            if av_hello is not None and i == flows - av_newer:
                av = _TcpConn(_addr(AV_CLIENT), _addr(AV_SERVER), 51000, 443, 0x0A0A0000, t)
                cut = min(len(av_hello) // 2, MSS)
                first = av_hello[:cut]
                av_rest = [(cut + s[0], s[1], s[2]) for s in _segments(av_hello[cut:])]
                w.write_all(av.open() + av.send([(0, first, ones_sum(first))]))
                t = av.t
            client = _addr(f"10.99.{i % clients // 250}.{1 + i % clients % 250}")
            conn = _TcpConn(client, server, 20000 + i // clients, 443,
                            (i * 2654435761) & 0xFFFFFFFF, t)
            w.write_all(conn.open() + conn.send(segs))
        if av is not None:
            av.t = T0 + flows * step
            w.write_all(av.send(av_rest) + av.close())
        desc = (f"{flows:,} TCP flows each sending {sent:,} of a {declared:,}-byte "
                f"ClientHello record, never the rest")
        if av_hello is not None:
            desc += f"; one real AV ClientHello ({AV_SNI}) across the last {av_newer} flows"
        return _finish("hello_flood", w, path, desc,
                       flows=flows + (av_hello is not None), held_per_flow=sent)


# ------------------------------------------------------------- QUIC Initial flood

_QUIC_DATAGRAM: Final = 1200  # RFC 9000 §14.1: client Initials are padded to 1200 bytes


def quic_initial_flood(path: Path, *, datagrams: int = 100_000, clients: int = 4,
                       ports_per_client: int = 5_000, seconds: float = 20.0,
                       seed: int = 1) -> Capture:
    """``datagrams`` QUIC v1 Initial packets (RFC 9000 §17.2.2) to SERVER:443, each with a
    random 8-byte destination and source connection ID and a random protected payload, so
    none decrypts. ``clients`` addresses (10.30.9.x) each cycle through
    ``ports_per_client`` source ports: ``clients * ports_per_client`` flows, each getting
    ``datagrams / (clients * ports_per_client)`` Initials spread over the capture.
    """
    rng = random.Random(seed)
    server = _addr(SERVER)
    addrs = [_addr(f"10.30.9.{1 + k}") for k in range(clients)]
    pool = rng.randbytes(1 << 16)
    step = int(seconds * SECOND) // max(datagrams, 1)
    # header: first byte, version, DCID len + 8, SCID len + 8, token length 0, length (2-byte
    # varint), then a 4-byte packet number and the payload (RFC 9000 §17.2.2)
    fixed = 1 + 4 + 1 + 8 + 1 + 8 + 1 + 2
    length = _QUIC_DATAGRAM - fixed
    nflows = clients * ports_per_client
    with PcapWriter(path) as w:
        for i in range(datagrams):
            k = i % clients
            sport = 10_000 + (i // clients) % ports_per_client
            off = rng.randrange(len(pool) - length)
            packet = (b"\xc3\x00\x00\x00\x01\x08" + rng.randbytes(8) + b"\x08"
                      + rng.randbytes(8) + b"\x00" + (0x4000 | length).to_bytes(2, "big")
                      + pool[off:off + length])
            dgram = _udp(addrs[k], server, sport, 443, packet)
            w.write(T0 + i * step, _ETH_IP4_OUT + _ipv4(addrs[k], server, _PROTO_UDP, dgram, i))
        return _finish("quic_initial_flood", w, path,
                       f"{datagrams:,} QUIC v1 Initials with random DCIDs and payloads, "
                       f"{clients} clients, {min(nflows, datagrams):,} flows",
                       flows=min(nflows, datagrams))


# ----------------------------------------------------------------------- VLAN bomb


def vlan_bomb(path: Path, *, frames: int = 3_000, depth: int = 10_000, normal: int = 3_000,
              seconds: float = 20.0) -> Capture:
    """``frames`` Ethernet frames whose header is followed by ``depth`` stacked 802.1Q tags
    (EtherType 0x8100, VLAN 1..) before an IPv4/UDP DNS query from 10.66.6.6, interleaved
    with ``normal`` ordinary DNS exchanges of CLIENT (query and answer, own source port
    each, so each is a flow).

    avmon follows at most ``MAX_VLAN_DEPTH`` tags: each deep frame must count as one
    ``avmon_decode_failures_total{reason="vlan_depth"}`` and make no flow; the ordinary
    exchanges must give ``normal`` flows with their names.
    """
    client, resolver = _addr(CLIENT), _addr(RESOLVER)
    ghost = _addr("10.66.6.6")
    tags = bytearray()
    for n in range(depth):
        tags += struct.pack(">HH", 1 + n % 4094, 0x8100 if n < depth - 1 else 0x0800)
    deep_l2 = GATEWAY_MAC + _CLIENT_MAC + b"\x81\x00" + bytes(tags)
    total = frames + normal
    step = int(seconds * SECOND) // max(total, 1)
    made = normal_made = 0
    with PcapWriter(path) as w:
        for i in range(total):
            t = T0 + i * step
            # spread the deep frames evenly among the ordinary exchanges
            if made * total < (i + 1) * frames and made < frames:
                q = _udp(ghost, resolver, 30000 + made % 30000, 53,
                         _dns_query(made & 0xFFFF, f"deep{made}.vlan.example"))
                w.write(t, deep_l2 + _ipv4(ghost, resolver, _PROTO_UDP, q, made))
                made += 1
                continue
            n = normal_made
            name = f"ok{n}.normal.example"
            sport = 1024 + n % 60000
            q = _udp(client, resolver, sport, 53, _dns_query(n & 0xFFFF, name))
            w.write(t, _ETH_IP4_OUT + _ipv4(client, resolver, _PROTO_UDP, q, n))
            a = _udp(resolver, client, 53, sport,
                     _dns_answer(n & 0xFFFF, name, [(0x64400000 + 1 + n).to_bytes(4, "big")]))
            w.write(t + step // 2, _ETH_IP4_IN + _ipv4(resolver, client, _PROTO_UDP, a, n))
            normal_made += 1
        return _finish("vlan_bomb", w, path,
                       f"{frames:,} frames with {depth:,} stacked 802.1Q tags among "
                       f"{normal:,} ordinary DNS exchanges",
                       flows=min(normal, 60000), deep_frames=frames)


#: name -> generator, in the order the bench runs them.
CAPTURES: Final = {
    "syn_flood": syn_flood,
    "dns_answer_flood": dns_answer_flood,
    "hello_flood": hello_flood,
    "quic_initial_flood": quic_initial_flood,
    "vlan_bomb": vlan_bomb,
}


def pcap_packets(path: Path) -> int:
    """Records in a classic (little- or big-endian) pcap file, by walking its headers."""
    with open(path, "rb") as fh:
        head = fh.read(24)
        endian = "<" if head[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        rec = struct.Struct(endian + "IIII")
        count = 0
        while True:
            h = fh.read(16)
            if len(h) < 16:
                return count
            fh.seek(rec.unpack(h)[2], os.SEEK_CUR)
            count += 1


# --------------------------------------------------------------------------- replay

_SAMPLE: Final = re.compile(r"^([A-Za-z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$")
_LABEL: Final = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class Metrics(dict[tuple[str, tuple[tuple[str, str], ...]], float]):
    """Samples of a Prometheus text file: (name, sorted labels) -> value."""

    @classmethod
    def parse(cls, text: str) -> Metrics:
        out = cls()
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = _SAMPLE.match(line)
            if m is None:
                continue
            labels = tuple(sorted(_LABEL.findall(m.group(2) or "")))
            out[(m.group(1), labels)] = float(m.group(3))
        return out

    def get_value(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels``."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.items() if n == name and want <= set(ls))

    def nonzero(self, names: Sequence[str]) -> Iterator[tuple[str, float]]:
        """Non-zero samples of ``names`` as ('short_name[label/values]', value)."""
        for name in names:
            for (n, ls), v in sorted(self.items()):
                if n != name or not v:
                    continue
                short = n.removeprefix("avmon_").removesuffix("_total")
                yield (short + (f"[{'/'.join(val for _, val in ls)}]" if ls else ""), v)


#: The counters the bench table shows when they are not zero.
LIMIT_METRICS: Final = ("avmon_limit_hits_total", "avmon_flow_table_evictions_total",
                        "avmon_dns_cache_evictions_total", "avmon_dissection_abandoned_total",
                        "avmon_reassembly_bytes", "avmon_parse_errors_total",
                        "avmon_decode_failures_total")


#: Runs ``avmon`` (argv[2:]) in this process and, at exit, writes its peak resident set
#: size (``VmHWM``, KiB) to the file argv[1]. ``ru_maxrss`` cannot be used: on Linux a
#: process keeps the largest ``ru_maxrss`` of the memory maps it had before ``exec``, so a
#: child forked from a large parent (a pytest run) reports the parent's peak.
_WRAPPER: Final = """\
import atexit, sys
def _peak(path=sys.argv[1]):
    with open('/proc/self/status') as fh:
        kib = next((line.split()[1] for line in fh if line.startswith('VmHWM:')), '')
    with open(path, 'w') as out:
        out.write(kib)
atexit.register(_peak)
sys.argv = ['avmon', *sys.argv[2:]]
from monitor.cli import main
sys.exit(main())
"""


@dataclass(slots=True)
class ReplayResult:
    """One ``avmon replay`` child process."""

    returncode: int
    #: Wall-clock seconds from start to exit.
    wall: float
    #: The child's peak resident set size in KiB (``VmHWM`` at its exit; ``ru_maxrss`` from
    #: ``os.wait4`` where /proc is missing).
    rss_kib: int
    #: CPU seconds (user + system) of the child.
    cpu: float
    stderr: str
    metrics: Metrics
    eve: Path
    timed_out: bool = False

    def eve_lines(self) -> int:
        with open(self.eve, "rb") as fh:
            return sum(1 for _ in fh)


def replay(capture: Path, out: Path, *, config: Path | None = None,
           timeout: float | None = None, extra: Sequence[str] = ()) -> ReplayResult:
    """Run ``avmon replay CAPTURE --eve --metrics-textfile --quiet --workers 1`` (this
    tree's ``monitor.cli``) in a child process and measure it. One process, so its peak RSS
    is that of the process holding all the state; a child past ``timeout`` is killed."""
    out.mkdir(parents=True, exist_ok=True)
    eve = out / f"{capture.stem}.eve.json"
    prom = out / f"{capture.stem}.prom"
    peak = out / f"{capture.stem}.peak"
    for stale in (eve, prom, peak):
        stale.unlink(missing_ok=True)
    argv = [sys.executable, "-c", _WRAPPER, str(peak), "replay", str(capture),
            "--eve", str(eve), "--metrics-textfile", str(prom), "--quiet", "--workers", "1",
            *extra]
    if config is not None:
        argv += ["-c", str(config)]
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
        killed = threading.Event()

        def kill() -> None:
            killed.set()
            proc.kill()

        timer = threading.Timer(timeout, kill) if timeout else None
        if timer is not None:
            timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if timer is not None:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    text = peak.read_text().strip() if peak.exists() else ""
    rss = int(text) if text.isdigit() else int(usage.ru_maxrss)
    metrics = Metrics.parse(prom.read_text()) if prom.exists() else Metrics()
    return ReplayResult(proc.returncode, wall, rss, usage.ru_utime + usage.ru_stime, stderr,
                        metrics, eve, killed.is_set())
