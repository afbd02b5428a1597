#!/usr/bin/env python3
"""Generate a large, realistic benchmark capture and its ground truth.

    python bench/gen_capture.py [--packets N | --size-gb X] [--out PATH] [--seed S]

writes a classic pcap (default ``bench/.cache/capture-<N>-s<S>.pcap``) and, beside it,
``<capture>.truth.json``: every TLS SNI, QUIC SNI, DNS query name and DNS answer written, by
count, and flow and packet counts by kind.

The traffic: TLS 1.3 sessions over TCP (about a fifth of the ClientHellos carry a hybrid
post-quantum key share and are split across two segments), QUIC v1 and v2 (about a third of
the ClientHellos span two Initial packets), DNS over UDP (and some over TCP) with CNAME
chains, bulk downloads and uploads, NTP, ICMP echo and random UDP. About 11% of packets are
IPv6 and some hosts sit behind 802.1Q VLAN tags. Server names are mostly concrete hosts
derived from the patterns in tests/data/vendors/vendors.json, plus ordinary web names.

Speed comes from doing the expensive work once: a pool of names gets real TLS handshakes
(OpenSSL), QUIC conversations (aioquic) and DNS messages (dnspython) up front; flows then
reuse those bytes with their own addresses, ports, sequence numbers, DNS IDs and QUIC
connection IDs (Initials re-encrypted), framed by :mod:`monitor.synth`'s struct builders and
streamed to disk. Memory stays constant, so ``--size-gb 10`` works.

Names, flows, sizes, timestamps and packet counts are fixed by ``--seed``. The bytes inside
the TLS and QUIC handshakes (randoms, key shares, ciphertext) come from OpenSSL and aioquic
and differ between runs; the ground truth depends only on the names.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import ipaddress
import json
import math
import random
import re
import struct
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from monitor import synth  # noqa: E402
from monitor.synth import Frame, NetPath, TcpSession  # noqa: E402

#: The researched vendor reference the signatures were written from (copied into the tests).
VENDORS_JSON = ROOT / "tests" / "data" / "vendors" / "vendors.json"
CACHE = ROOT / "bench" / ".cache"
SECOND = 1_000_000_000
MS = 1_000_000

#: Ordinary destinations mixed in with the AV names.
ORDINARY_NAMES = (
    "www.google.com",
    "www.youtube.com",
    "accounts.google.com",
    "fonts.gstatic.com",
    "www.bbc.co.uk",
    "www.gov.uk",
    "login.microsoftonline.com",
    "outlook.office365.com",
    "teams.microsoft.com",
    "www.github.com",
    "api.github.com",
    "objects.githubusercontent.com",
    "www.wikipedia.org",
    "en.wikipedia.org",
    "upload.wikimedia.org",
    "www.amazon.co.uk",
    "images-eu.ssl-images-amazon.com",
    "www.linkedin.com",
    "static.licdn.com",
    "www.reddit.com",
    "www.theguardian.com",
    "assets.guim.co.uk",
    "www.nhs.uk",
    "www.ncsc.gov.uk",
    "cdn.jsdelivr.net",
    "cdnjs.cloudflare.com",
    "ajax.googleapis.com",
    "www.stackoverflow.com",
    "pypi.org",
    "files.pythonhosted.org",
    "registry.npmjs.org",
    "deb.debian.org",
    "security.debian.org",
    "archive.ubuntu.com",
    "zoom.us",
    "slack.com",
    "edge.microsoft.com",
    "www.apple.com",
    "gateway.icloud.com",
    "www.dropbox.com",
    "docs.google.com",
    "drive.google.com",
    "mail.google.com",
    "www.facebook.com",
    "www.instagram.com",
    "www.netflix.com",
    "www.spotify.com",
    "www.office.com",
    "graph.microsoft.com",
    "ocsp.digicert.com",
    "www.ft.com",
    "www.economist.com",
    "www.parliament.uk",
    "www.metoffice.gov.uk",
    "www.cloudflare.com",
    "time.cloudflare.com",
    "www.mozilla.org",
    "incoming.telemetry.mozilla.org",
    "www.gstatic.com",
    "clients4.google.com",
)

#: Labels to put where a pattern has '*' standing for a whole label.
_LABELS = (
    "www",
    "api",
    "cdn",
    "eu",
    "us",
    "edge",
    "cloud",
    "update",
    "telemetry",
    "a1",
    "s3",
    "dl",
    "cdn2",
    "eu-west",
    "prod",
    "lookup",
    "stats",
    "files",
    "ksn",
    "gw",
)
#: Tokens to put where '*' is part of a label.
_TOKENS = ("01", "1", "eu", "us", "file", "url", "verdict", "east", "prod", "a", "02", "x")

#: Where a vendor's hosts live: a prefix per vendor name fragment (otherwise hashed).
_VENDOR_NETS = {
    "Kaspersky": ("77.74.176.0/21", "2a03:2480:8010::/48"),
    "ESET": ("91.228.164.0/22", "2a01:ab8::/32"),
    "Microsoft": ("20.42.0.0/16", "2a01:111::/32"),
    "Bitdefender": ("91.199.104.0/22", "2a02:2ac0::/32"),
    "Sophos": ("35.156.0.0/16", "2a05:d014::/32"),
}

_HOSTS = 1500
_BULK_STREAMS = 3
_BULK_RECORDS = 256  # 4 MiB per stream: the largest single transfer
_NAME_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


# --------------------------------------------------------------------------------------
# names
# --------------------------------------------------------------------------------------


def expand_pattern(pattern: str, rng: random.Random) -> str:
    """One concrete host name matching a vendors.json pattern (see its schema notes)."""
    name = pattern.lower()
    while "(" in name:
        m = re.search(r"\(([^()]*)\)(\?)?", name)
        if m is None:
            break
        alts = m.group(1).split("|")
        pick = "" if m.group(2) and rng.random() < 0.5 else rng.choice(alts)
        name = name[: m.start()] + pick + name[m.end() :]
    while "[" in name:
        m = re.search(r"\[(\d+)-(\d+)\]", name)
        if m is None:
            break
        lo, hi = m.group(1), m.group(2)
        num = rng.randint(int(lo), int(hi))
        name = name[: m.start()] + str(num).zfill(len(lo)) + name[m.end() :]
    labels = name.split(".")
    out = []
    for label in labels:
        if label == "*":
            out.append(rng.choice(_LABELS))
        else:
            while "*" in label:
                label = label.replace("*", rng.choice(_TOKENS), 1)
            out.append(label)
    return ".".join(out)


#: Used when vendors.json is not available: a few hosts per vendor, taken from it.
FALLBACK_AV_NAMES = (
    ("ksn-file-geo.kaspersky-labs.com", "Kaspersky (AO Kaspersky Lab)"),
    ("ksn-url-geo.kaspersky-labs.com", "Kaspersky (AO Kaspersky Lab)"),
    ("dc1.ksn.kaspersky-labs.com", "Kaspersky (AO Kaspersky Lab)"),
    ("s07.upd.kaspersky.com", "Kaspersky (AO Kaspersky Lab)"),
    ("ds.kaspersky.com", "Kaspersky (AO Kaspersky Lab)"),
    ("update.drweb.com", "Dr.Web (Doctor Web Ltd.)"),
    ("update.ptsecurity.com", "Positive Technologies (JSC Positive Technologies)"),
    ("update.eset.com", "ESET"),
    ("dnsj.e5.sk", "ESET"),
    ("wdcp.microsoft.com", "Microsoft Defender (Antivirus / for Endpoint)"),
    ("fastpath.wdcp.microsoft.com", "Microsoft Defender (Antivirus / for Endpoint)"),
    ("http.00.a.sophosxl.net", "Sophos (SophosLabs Intelix / SXL)"),
    ("www.virustotal.com", "VirusTotal"),
)


def load_av_names(rng: random.Random, path: Path = VENDORS_JSON) -> list[tuple[str, str]]:
    """(name, vendor) for concrete hosts derived from every vendors.json pattern."""
    if not path.exists():
        print(f"warning: {path} not found; using a built-in list of AV names", file=sys.stderr)
        return sorted(FALLBACK_AV_NAMES)
    doc = json.loads(path.read_text(encoding="utf-8"))
    names: dict[str, str] = {}
    for vendor in doc["vendors"]:
        for entry in vendor["domains"]:
            pattern = entry["pattern"]
            tries = 3 if any(c in pattern for c in "*[(") else 1
            for _ in range(tries):
                host = expand_pattern(pattern, rng)
                if _NAME_RE.match(host) and host not in names:
                    names[host] = vendor["vendor"]
    return sorted(names.items())


def _address(name: str, vendor: str | None, v6: bool) -> str:
    digest = hashlib.blake2s(name.encode(), digest_size=16).digest()
    for fragment, nets in _VENDOR_NETS.items():
        if vendor and fragment in vendor:
            net = ipaddress.ip_network(nets[1 if v6 else 0])
            host = int.from_bytes(digest, "big") % (net.num_addresses - 2) + 1
            return str(net.network_address + host)
    if v6:
        return str(ipaddress.IPv6Address(b"\x2a\x00" + digest[2:]))
    first = 11 + digest[0] % 180
    if first in (100, 127, 169, 172, 192, 198):
        first += 1
    return f"{first}.{digest[1]}.{digest[2]}.{1 + digest[3] % 253}"


# --------------------------------------------------------------------------------------
# precomputed protocol bytes
# --------------------------------------------------------------------------------------


@dataclass(slots=True)
class NameKit:
    """Real protocol bytes for one name, computed once and reused by many flows."""

    name: str
    vendor: str | None
    v4: str
    v6: str
    cnames: tuple[str, ...]
    ttl: int
    hello: bytes
    hello_pq: bytes
    server_flight: bytes  # server flight + client finished are sent in order below
    client_finished: bytes
    tickets: bytes
    dns_q: dict[str, bytes] = field(default_factory=dict)
    dns_r: dict[str, bytes] = field(default_factory=dict)
    quic: synth.QuicConversation | None = None


@dataclass(slots=True)
class Pools:
    kits: list[NameKit]
    av_kits: list[NameKit]
    plain_kits: list[NameKit]
    quic_kits: list[NameKit]
    #: ClientHello without SNI (an ECH-less client connecting by address).
    hello_nosni: bytes
    nosni_pair: synth.TlsPair
    #: Bulk TLS application-data streams (whole records) and their pre-summed MSS chunks,
    #: keyed by MSS; a flow's bulk data is a prefix of one stream.
    bulk: list[bytes]
    bulk_chunks: list[dict[int, list[tuple[bytes, int]]]]
    record_len: int
    #: Small application-data records: requests and first responses.
    requests: list[bytes]
    #: Random bytes for noise payloads.
    noise: bytes


def _cname_chain(name: str, rng: random.Random) -> tuple[str, ...]:
    roll = rng.random()
    if roll < 0.55:
        return ()
    first = name.split(".")[0]
    tag = hashlib.blake2s(name.encode(), digest_size=3).hexdigest()
    options = [
        (f"{name}.edgekey.net", f"e{int(tag, 16) % 9000 + 1000}.a.akamaiedge.net"),
        (f"{first}-{tag}.trafficmanager.net",),
        (f"{first}.cdn.cloudflare.net",),
        (f"{name}.cdn.cloudflare.net", f"{first}.{tag}.cloudfront.net", f"d{tag}.cloudfront.net"),
    ]
    return rng.choice(options)


def build_pools(rng: random.Random, *, quic_names: int, log: bool) -> Pools:
    t0 = time.perf_counter()
    av = load_av_names(rng)
    entries: list[tuple[str, str | None]] = [(n, v) for n, v in av]
    entries += [(n, None) for n in ORDINARY_NAMES]
    kits: list[NameKit] = []
    for name, vendor in entries:
        pair = synth.TlsPair(name)
        hello_pq = synth.rewrite_client_hello(pair.client_hello, groups="X25519MLKEM768")
        cnames = _cname_chain(name, rng)
        ttl = rng.choice((30, 60, 120, 300, 600, 3600, 86400))
        kit = NameKit(
            name,
            vendor,
            _address(name, vendor, False),
            _address(name, vendor, True),
            cnames,
            ttl,
            pair.client_hello,
            hello_pq,
            pair.server_flight,
            pair.client_finished,
            pair.server_tickets,
        )
        for qtype, addr in (("A", kit.v4), ("AAAA", kit.v6)):
            kit.dns_q[qtype] = synth.dns_query(name, qtype, edns=True)
            kit.dns_r[qtype] = synth.dns_response(
                name, qtype, cnames=cnames, addresses=[addr], ttl=ttl, cname_ttl=ttl
            )
        kits.append(kit)
    t1 = time.perf_counter()
    # QUIC: AV names mostly, some ordinary ones (browsers speak h3 to the big sites).
    quic_pool = rng.sample(kits, min(quic_names, len(kits)))
    for i, kit in enumerate(quic_pool):
        kit.quic = synth.quic_conversation(
            kit.name,
            version=synth.QUIC_V2 if i % 8 == 0 else synth.QUIC_V1,
            large=i % 3 == 0,
            request=bytes(120),
            response_size=2_500,
        )
    t2 = time.perf_counter()
    nosni = synth.TlsPair(None)
    record_len = 16_384 + 17 + 5
    filler = rng.randbytes(256 * 1024)
    bulk: list[bytes] = []
    bulk_chunks: list[dict[int, list[tuple[bytes, int]]]] = []
    for i in range(_BULK_STREAMS):
        stream = synth.tls_app_records(16_384 * _BULK_RECORDS, filler[i * 4099 :])
        bulk.append(stream)
        bulk_chunks.append(
            {
                mss: [
                    (stream[j : j + mss], synth.ones_sum(stream[j : j + mss]))
                    for j in range(0, len(stream) - mss + 1, mss)
                ]
                for mss in (1460, 1440)
            }
        )
    requests = [synth.tls_app_records(n, filler) for n in range(180, 1800, 97)]
    if log:
        print(
            f"pools: {len(kits)} names ({len(av)} AV) TLS+DNS {t1 - t0:.1f}s, "
            f"{len(quic_pool)} QUIC conversations {t2 - t1:.1f}s, "
            f"bulk {time.perf_counter() - t2:.1f}s",
            file=sys.stderr,
        )
    return Pools(
        kits,
        [k for k in kits if k.vendor],
        [k for k in kits if not k.vendor],
        quic_pool,
        nosni.client_hello,
        nosni,
        bulk,
        bulk_chunks,
        record_len,
        requests,
        filler,
    )


# --------------------------------------------------------------------------------------
# flows
# --------------------------------------------------------------------------------------

Fact = tuple[str, str, tuple[str, ...]]
"""(kind, name, extra): kind is tls | quic | dns_q | dns_a; extra holds answer data."""


@dataclass(slots=True)
class Flow:
    kind: str
    frames: list[Frame]
    facts: dict[int, list[Fact]]
    pos: int = 0


@dataclass(slots=True)
class Host:
    v4: str
    v6: str
    vlan: int | None


class Generator:
    """Produces flows one at a time, in start-time order."""

    def __init__(self, seed: int, pools: Pools) -> None:
        self.rng = random.Random(seed ^ 0x5EED)
        self.p = pools
        self.hosts: list[Host] = []
        for i in range(_HOSTS):
            # one host in five on the 10.20/16 enclave; one in seven behind a VLAN tag
            v4 = (
                f"10.20.{i // 200}.{10 + i % 200}"
                if i % 5 == 0
                else f"10.{40 + i // 250}.{i % 250 // 50}.{10 + i % 50}"
            )
            vlan = (110 if i % 3 == 0 else 120) if i % 7 == 0 else None
            self.hosts.append(Host(v4, f"fd00:{40 + i // 250:x}::{i + 10:x}", vlan))
        self.resolver = ("10.0.0.53", "fd00::53")
        self.ports: dict[str, int] = {}

    def port(self, host: str) -> int:
        p = self.ports.get(host)
        p = self.rng.randrange(32768, 60999) if p is None else (p + self.rng.randrange(1, 9))
        if p > 60999:
            p = 32768 + p % 1000
        self.ports[host] = p
        return p

    def path(self, host: Host, server: str, v6: bool) -> NetPath:
        return NetPath(
            host.v6 if v6 else host.v4, server, vlan=host.vlan, ipid=self.rng.getrandbits(16)
        )

    def pick_kit(self) -> NameKit:
        pool = self.p.av_kits if self.rng.random() < 0.7 else self.p.plain_kits
        return pool[self.rng.randrange(len(pool))]

    def make(self, start: int) -> Flow:
        r = self.rng.random()
        host = self.hosts[self.rng.randrange(len(self.hosts))]
        v6 = self.rng.random() < 0.125
        if r < 0.40:
            flow = self.dns_udp(start, host, v6)
        elif r < 0.42:
            flow = self.dns_tcp(start, host, v6)
        elif r < 0.76:
            flow = self.tls(start, host, v6)
        elif r < 0.84:
            flow = self.quic(start, host, v6)
        elif r < 0.88:
            flow = self.ntp(start, host)
        elif r < 0.94:
            flow = self.udp_noise(start, host, v6)
        else:
            flow = self.icmp(start, host, v6)
        return flow

    # --- DNS -----------------------------------------------------------------------------

    def _dns_pair(self, kit: NameKit, qtype: str) -> tuple[bytes, bytes, list[Fact]]:
        qid = struct.pack(">H", self.rng.getrandbits(16))
        addr = kit.v6 if qtype == "AAAA" else kit.v4
        facts_q: Fact = ("dns_q", kit.name, ())
        facts_a: Fact = ("dns_a", kit.name, (qtype, addr, *kit.cnames))
        return (
            qid + kit.dns_q[qtype][2:],
            qid + kit.dns_r[qtype][2:],
            [facts_q, facts_a],
        )

    def dns_udp(self, start: int, host: Host, v6: bool) -> Flow:
        kit = self.p.kits[self.rng.randrange(len(self.p.kits))]
        qtype = "AAAA" if v6 or self.rng.random() < 0.25 else "A"
        query, answer, facts = self._dns_pair(kit, qtype)
        path = self.path(host, self.resolver[1 if v6 else 0], v6)
        frames = synth.udp_exchange(
            path,
            self.port(host.v4),
            53,
            [(True, query), (False, answer)],
            start_ns=start,
            rtt_ns=self.rng.randrange(300_000, 30 * MS),
        )
        return Flow("dns_udp", frames, {0: [facts[0]], 1: [facts[1]]})

    def dns_tcp(self, start: int, host: Host, v6: bool) -> Flow:
        kit = self.p.kits[self.rng.randrange(len(self.p.kits))]
        query, answer, facts = self._dns_pair(kit, "AAAA" if v6 else "A")
        sess = self._session(host, self.resolver[1 if v6 else 0], 53, v6, start, rtt=MS)
        frames = sess.handshake()
        q_at = len(frames)
        frames += sess.client_send(synth.dns_tcp(query))
        a_frames = sess.server_send(synth.dns_tcp(answer))
        a_at = len(frames) + next(i for i, (_, f) in enumerate(a_frames) if len(f) > 80)
        frames += a_frames
        frames += sess.close()
        return Flow("dns_tcp", frames, {q_at: [facts[0]], a_at: [facts[1]]})

    # --- TLS -----------------------------------------------------------------------------

    def _session(
        self, host: Host, server: str, port: int, v6: bool, start: int, *, rtt: int | None = None
    ) -> TcpSession:
        mss = 1440 if v6 else 1460
        return TcpSession(
            self.path(host, server, v6),
            self.port(host.v4),
            port,
            start_ns=start,
            rtt_ns=rtt if rtt is not None else self.rng.randrange(8, 120) * MS,
            client_isn=self.rng.getrandbits(32),
            server_isn=self.rng.getrandbits(32),
            client_mss=mss,
            server_mss=mss,
        )

    def _bulk_chunks(self, mss: int, size: int) -> list[tuple[bytes, int]]:
        """Whole TLS records, about ``size`` bytes, cut at ``mss`` (sums precomputed)."""
        which = self.rng.randrange(len(self.p.bulk))
        stream = self.p.bulk[which]
        records = max(1, round(size / self.p.record_len))
        length = min(records * self.p.record_len, len(stream))
        whole = length // mss
        out = self.p.bulk_chunks[which][mss][:whole]
        tail = length - whole * mss
        if tail:
            piece = stream[whole * mss : length]
            out = [*out, (piece, synth.ones_sum(piece))]
        return out

    def _bulk_size(self) -> int:
        roll = self.rng.random()
        if roll < 0.60:
            return 0
        if roll < 0.95:
            return int(math.exp(self.rng.gauss(math.log(30_000), 1.0)))
        return int(math.exp(self.rng.gauss(math.log(900_000), 0.8)))

    def tls(self, start: int, host: Host, v6: bool) -> Flow:
        kit = self.pick_kit()
        nosni = self.rng.random() < 0.02
        pq = not nosni and self.rng.random() < 0.20
        hello = self.p.hello_nosni if nosni else (kit.hello_pq if pq else kit.hello)
        sess = self._session(host, kit.v6 if v6 else kit.v4, 443, v6, start)
        frames = sess.handshake()
        frames += sess.client_send(hello)
        # the last client segment of the hello completes it
        hello_at = max(i for i, (_, f) in enumerate(frames) if len(f) > 100)
        frames += sess.server_send(kit.server_flight)
        frames += sess.client_send(kit.client_finished)
        reqs = self.p.requests
        frames += sess.client_send(reqs[self.rng.randrange(len(reqs))])
        frames += sess.server_send(kit.tickets + reqs[self.rng.randrange(len(reqs))])
        mss = 1440 if v6 else 1460
        down = self._bulk_size()
        if down:
            frames += sess.send(False, b"", chunks=self._bulk_chunks(mss, down))
        if kit.vendor and self.rng.random() < 0.06:
            up = int(math.exp(self.rng.gauss(math.log(400_000), 0.9)))
            frames += sess.send(True, b"", chunks=self._bulk_chunks(mss, up))
        frames += sess.close(by_client=self.rng.random() < 0.6)
        facts: dict[int, list[Fact]] = {} if nosni else {hello_at: [("tls", kit.name, ())]}
        kind = "tls_nosni" if nosni else ("tls_large_hello" if pq else "tls")
        return Flow(kind, frames, facts)

    # --- QUIC ----------------------------------------------------------------------------

    def quic(self, start: int, host: Host, v6: bool) -> Flow:
        kit = self.p.quic_kits[self.rng.randrange(len(self.p.quic_kits))]
        conv = kit.quic
        if conv is None:  # pragma: no cover - quic_kits only holds kits with a conversation
            raise RuntimeError("kit without QUIC conversation")
        dcid, ccid, scid = (self.rng.randbytes(8) for _ in range(3))
        datagrams = conv.rebind_to(dcid, ccid, scid)
        path = self.path(host, kit.v6 if v6 else kit.v4, v6)
        cport = self.port(host.v4)
        frames = synth.udp_exchange(
            path,
            cport,
            443,
            datagrams[:-1],
            start_ns=start,
            rtt_ns=self.rng.randrange(8, 120) * MS,
            gap_ns=15_000,
        )
        t = frames[-1][0]
        extra = min(self._bulk_size() // 1200, 3500)
        noise = self.p.noise
        for i in range(extra):
            # more protected 1-RTT data from the server (short header, RFC 9000 §17.3),
            # acknowledged by the client every second datagram
            t += 15_000
            off = (i * 1187) % (len(noise) - 1200)
            first = bytes([0x40 | (noise[off] & 0x1B)])
            dg = first + ccid + noise[off + 1 : off + 1192 - len(ccid)]
            frames.append((t, path.udp(False, 443, cport, dg)))
            if i % 2 == 1:
                ack = bytes([0x41]) + scid + noise[off + 7 : off + 31]
                frames.append((t + 80_000, path.udp(True, cport, 443, ack)))
        frames.sort(key=lambda f: f[0])
        frames.append((frames[-1][0] + 200_000, path.udp(True, cport, 443, datagrams[-1][1])))
        kind = "quic_v2" if conv.version == synth.QUIC_V2 else "quic"
        if conv.hello_datagrams > 1:
            kind += "_multi_initial"
        return Flow(kind, frames, {conv.hello_datagrams - 1: [("quic", kit.name, ())]})

    # --- noise ---------------------------------------------------------------------------

    def ntp(self, start: int, host: Host) -> Flow:
        server = ("10.0.0.123", "162.159.200.1", "162.159.200.123")[self.rng.randrange(3)]
        path = self.path(host, server, False)
        rtt = self.rng.randrange(1, 40) * MS
        frames = synth.udp_exchange(
            path,
            123,
            123,
            [
                (True, synth.ntp_packet(start)),
                (False, synth.ntp_packet(start + rtt, server=True, origin_ns=start)),
            ],
            start_ns=start,
            rtt_ns=rtt,
        )
        return Flow("ntp", frames, {})

    def udp_noise(self, start: int, host: Host, v6: bool) -> Flow:
        digest = self.rng.getrandbits(32)
        if v6:
            server = f"2a00:{digest >> 16:x}::{digest & 0xFFFF:x}"
        else:
            b1, b2, b3 = (digest >> 8) & 255, (digest >> 16) & 255, 1 + (digest >> 24) % 250
            server = f"{60 + digest % 60}.{b1}.{b2}.{b3}"
        dport = self.rng.randrange(20000, 60000)
        body = self.p.noise
        datagrams = []
        for i in range(self.rng.randrange(1, 12)):
            size = self.rng.choice((48, 120, 160, 400, 1100, 1200))
            off = self.rng.randrange(len(body) - size)
            payload = bytes([body[off] & 0x3F]) + body[off + 1 : off + size]
            datagrams.append((i % 3 != 2, payload))
        frames = synth.udp_exchange(
            self.path(host, server, v6),
            self.port(host.v4),
            dport,
            datagrams,
            start_ns=start,
            rtt_ns=self.rng.randrange(5, 80) * MS,
        )
        return Flow("udp_other", frames, {})

    def icmp(self, start: int, host: Host, v6: bool) -> Flow:
        server = self.p.kits[self.rng.randrange(len(self.p.kits))]
        path = self.path(host, server.v6 if v6 else server.v4, v6)
        ident = self.rng.getrandbits(16)
        payload = bytes(range(56))
        rtt = self.rng.randrange(5, 90) * MS
        frames: list[Frame] = []
        for seq in range(1, self.rng.randrange(2, 5)):
            t = start + (seq - 1) * SECOND
            frames.append((t, path.icmp_echo(True, ident, seq, payload)))
            frames.append((t + rtt, path.icmp_echo(False, ident, seq, payload, reply=True)))
        return Flow("icmp", frames, {})


# --------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Truth:
    tls_sni: Counter[str] = field(default_factory=Counter)
    quic_sni: Counter[str] = field(default_factory=Counter)
    dns_queries: Counter[str] = field(default_factory=Counter)
    dns_answers: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    flows: Counter[str] = field(default_factory=Counter)
    ipv6_packets: int = 0
    vlan_packets: int = 0

    def record(self, fact: Fact) -> None:
        kind, name, extra = fact
        if kind == "tls":
            self.tls_sni[name] += 1
        elif kind == "quic":
            self.quic_sni[name] += 1
        elif kind == "dns_q":
            self.dns_queries[name] += 1
        else:
            qtype, addr, *cnames = extra
            entry = self.dns_answers.setdefault(name, {"cnames": list(cnames), "A": [], "AAAA": []})
            if addr not in entry[qtype]:
                entry[qtype].append(addr)


def generate(
    out: Path,
    *,
    packets: int | None,
    size_bytes: int | None,
    seed: int,
    quic_names: int = 80,
    log: bool = True,
) -> dict[str, object]:
    """Write the capture to ``out`` and the truth beside it; returns the truth document."""
    t0 = time.perf_counter()
    c0 = time.process_time()
    rng = random.Random(seed)
    pools = build_pools(rng, quic_names=quic_names, log=log)
    gen = Generator(seed, pools)
    truth = Truth()
    out.parent.mkdir(parents=True, exist_ok=True)
    start_ts = 1_772_442_000 * SECOND  # 2026-03-02T09:00:00Z
    heap: list[tuple[int, int, Flow]] = []
    next_start = start_ts
    seq = 0
    arrivals = random.Random(seed ^ 0xA11)
    mean_gap = 9 * MS
    written = 0
    t_gen = time.perf_counter()
    limit_packets = packets if packets is not None else 1 << 62
    limit_bytes = size_bytes if size_bytes is not None else 1 << 62
    last_report = t_gen
    with synth.PcapWriter(out) as writer:
        while written < limit_packets and writer.bytes_written < limit_bytes:
            while not heap or next_start <= heap[0][0]:
                flow = gen.make(next_start)
                truth.flows[flow.kind] += 1
                heapq.heappush(heap, (flow.frames[0][0], seq, flow))
                seq += 1
                next_start += int(arrivals.expovariate(1.0) * mean_gap) + 1
            ts, _, flow = heapq.heappop(heap)
            frame = flow.frames[flow.pos][1]
            writer.write(ts, frame)
            written += 1
            etype_at = 16 if frame[12:14] == b"\x81\x00" else 12
            if frame[etype_at : etype_at + 2] == b"\x86\xdd":
                truth.ipv6_packets += 1
            if etype_at == 16:
                truth.vlan_packets += 1
            facts = flow.facts.get(flow.pos)
            if facts:
                for fact in facts:
                    truth.record(fact)
            flow.pos += 1
            if flow.pos < len(flow.frames):
                heapq.heappush(heap, (flow.frames[flow.pos][0], seq, flow))
                seq += 1
            if log and written % 100_000 == 0 and time.perf_counter() - last_report > 5:
                last_report = time.perf_counter()
                print(f"  {written} packets, {writer.bytes_written / 1e6:.0f} MB", file=sys.stderr)
        last_ts = ts if written else start_ts
        file_bytes = writer.bytes_written
    elapsed = time.perf_counter() - t0
    flows_started = Counter(truth.flows)
    doc: dict[str, object] = {
        "capture": out.name,
        "generator": "bench/gen_capture.py",
        "seed": seed,
        "packets": written,
        "bytes": file_bytes,
        "mean_frame_bytes": round((file_bytes - 24) / max(written, 1) - 16, 1),
        "first_ts": start_ts / SECOND,
        "last_ts": last_ts / SECOND,
        "ipv6_packets": truth.ipv6_packets,
        "vlan_packets": truth.vlan_packets,
        "flows_started": dict(sorted(flows_started.items())),
        "tls_client_hellos": sum(truth.tls_sni.values()),
        "quic_client_hellos": sum(truth.quic_sni.values()),
        "dns_queries_total": sum(truth.dns_queries.values()),
        "tls_sni": dict(sorted(truth.tls_sni.items())),
        "quic_sni": dict(sorted(truth.quic_sni.items())),
        "dns_queries": dict(sorted(truth.dns_queries.items())),
        "dns_answers": dict(sorted(truth.dns_answers.items())),
        "vendors": {k.name: k.vendor for k in pools.kits if k.vendor},
        "generate_seconds": round(elapsed, 2),
        "generate_cpu_seconds": round(time.process_time() - c0, 2),
        "frame_seconds": round(time.perf_counter() - t_gen, 2),
    }
    truth_path(out).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    if log:
        print(
            f"{out}: {written} packets, {file_bytes / 1e6:.1f} MB in {elapsed:.1f}s "
            f"(framing {doc['frame_seconds']}s; CPU {doc['generate_cpu_seconds']}s)",
            file=sys.stderr,
        )
    return doc


def truth_path(capture: Path) -> Path:
    """Where the ground truth of ``capture`` lives."""
    return capture.with_name(capture.name + ".truth.json")


def default_out(packets: int | None, size_gb: float | None, seed: int) -> Path:
    tag = f"{size_gb:g}gb" if size_gb is not None else str(packets)
    return CACHE / f"capture-{tag}-s{seed}.pcap"


def iter_names(doc: dict[str, object]) -> Iterator[str]:
    """Every name of a truth document (SNI, QUIC SNI, DNS query names)."""
    for key in ("tls_sni", "quic_sni", "dns_queries"):
        yield from doc[key]  # type: ignore[misc]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--packets", type=int, default=None, help="packets (default 1000000)")
    size.add_argument("--size-gb", type=float, default=None, help="stop at this file size")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quic-names", type=int, default=80, help="names with a QUIC conversation")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    packets = args.packets if args.packets is not None or args.size_gb is not None else 1_000_000
    out = args.out or default_out(packets, args.size_gb, args.seed)
    generate(
        out,
        packets=packets,
        size_bytes=int(args.size_gb * 1e9) if args.size_gb is not None else None,
        seed=args.seed,
        quic_names=args.quic_names,
        log=not args.quiet,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
