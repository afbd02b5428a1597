"""Build the demo capture ``monitor/data/demo.pcap`` and its ground truth ``demo.json``.

Run ``python -m monitor.demo.generate [OUT]`` (default: ``monitor/data/demo.pcap``; the
ground truth is written next to it with a ``.json`` suffix). The network plan, the flows
and which of them should alert are described in :mod:`monitor.demo`.

Ports, sequence numbers, connection IDs, timestamps and the order of events come from a
fixed seed, so every run produces the same flows, names and packet count. The TLS and QUIC
handshakes are real (OpenSSL and aioquic, in memory), so their key shares, randoms and
ciphertext differ from run to run.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from monitor import synth
from monitor.synth import Frame, NetPath, TcpSession

__all__ = ["DEFAULT_OUT", "DemoPlan", "DnsTruth", "FlowTruth", "Segment", "build", "main", "write"]

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "data" / "demo.pcap"

SEED = 20171201  # the date of the NCSC letter
#: 2026-03-02T09:00:00Z, a Monday morning.
START_NS = 1_772_442_000 * 1_000_000_000
SECOND = 1_000_000_000
MS = 1_000_000


@dataclass(frozen=True, slots=True)
class Segment:
    """A network segment of the demo site and its classification (None: unclassified)."""

    name: str
    cidrs: tuple[str, ...]
    classification: str | None


SEGMENTS = (
    Segment("secret-enclave", ("10.20.0.0/16", "fd00:20::/48"), "SECRET"),
    Segment("official", ("10.30.0.0/16",), "OFFICIAL"),
    Segment("guest", ("192.168.100.0/24",), None),
)

SECRET_WS1 = "10.20.1.10"
SECRET_WS1_V6 = "fd00:20::10"
SECRET_WS2 = "10.20.1.11"
OFFICIAL_WS = "10.30.5.20"
GUEST = "192.168.100.50"
RESOLVER = "10.0.0.53"
RESOLVER_V6 = "fd00::53"
PROXY = "10.0.0.8"
PROXY_PORT = 3128
NTP_SERVER = "10.0.0.123"
GATEWAYS = {SECRET_WS1: "10.20.0.1", SECRET_WS2: "10.20.0.1", OFFICIAL_WS: "10.30.0.1"}

KASPERSKY = "Kaspersky (AO Kaspersky Lab)"
ESET = "ESET"
DEFENDER = "Microsoft Defender (Antivirus / for Endpoint)"

#: Resolver answers: name -> (CNAME chain, addresses, TTL). Kaspersky addresses are in
#: AS200107 (77.74.176.0/21), which both bundled databases place in RU (geolocation and
#: registration); ESET's are in AS50881 (SK/SK); Defender's in AS8075 (US/US).
ANSWERS: dict[str, tuple[tuple[str, ...], tuple[str, ...], int]] = {
    "ksn-file-geo.kaspersky-labs.com": (
        ("ksn-file-geo-ru.kaspersky-labs.com", "ksn4-12.ksn.kaspersky-labs.com"),
        ("77.74.177.233", "77.74.177.234"),
        300,
    ),
    "s07.upd.kaspersky.com": (("s07.upd.geo.kaspersky.com",), ("77.74.178.20",), 3600),
    "ksn-url-geo.kaspersky-labs.com": ((), ("77.74.179.5",), 300),
    "dc1.ksn.kaspersky-labs.com": (("dc1-ru.ksn.kaspersky-labs.com",), ("77.74.176.61",), 120),
    "ksn-verdict-geo.kaspersky-labs.com": ((), ("77.74.180.10",), 300),
    "update.eset.com": (("update.eset.com.edgesuite.net",), ("91.228.167.21",), 600),
    "wdcp.microsoft.com": (("wdcp.microsoft.com.trafficmanager.net",), ("20.42.65.92",), 60),
    "www.gov.uk": (("www-gov-uk.map.fastly.net",), ("151.101.64.144",), 3600),
    "www.bbc.co.uk": (("www.bbc.co.uk.pri.bbc.co.uk",), ("151.101.0.81",), 300),
    "www.google.com": ((), ("142.250.185.78",), 300),
}
ANSWERS_V6: dict[str, tuple[tuple[str, ...], tuple[str, ...], int]] = {
    "www.gov.uk": (("www-gov-uk.map.fastly.net",), ("2a04:4e42::144",), 3600),
}


@dataclass(slots=True)
class FlowTruth:
    """One expected flow of the demo capture (a row of demo.json)."""

    id: str
    proto: str
    client: str
    client_port: int
    server: str
    server_port: int
    #: The AV or other name the flow is about; None for plain noise.
    name: str | None
    #: How avmon can learn the name: sni | quic | dns (cache only) | connect | none.
    indicator: str
    vendor: str | None
    vendor_jurisdiction: str | None
    purpose: str | None
    segment: str | None
    classification: str | None
    #: Geolocation and registration country of ``server`` in the bundled databases.
    server_country: str | None
    bytes_toserver_min: int
    expected_alert: bool
    why: str


@dataclass(slots=True)
class DnsTruth:
    """One DNS transaction (query and answer) in the demo capture."""

    client: str
    server: str
    qname: str
    qtype: str
    cnames: list[str]
    answers: list[str]
    ttl: int


@dataclass(slots=True)
class DemoPlan:
    """What :func:`build` produced: frames plus the ground truth."""

    frames: list[Frame] = field(default_factory=list)
    flows: list[FlowTruth] = field(default_factory=list)
    dns: list[DnsTruth] = field(default_factory=list)


def _segment(addr: str) -> tuple[str | None, str | None]:
    ip = ipaddress.ip_address(addr)
    for seg in SEGMENTS:
        if any(ip in ipaddress.ip_network(c) for c in seg.cidrs):
            return seg.name, seg.classification
    return None, None


class _Builder:
    def __init__(self) -> None:
        self.rng = random.Random(SEED)
        self.plan = DemoPlan()
        self._ports: dict[str, int] = {}

    def port(self, client: str) -> int:
        base = self._ports.get(client, self.rng.randrange(49152, 60000))
        self._ports[client] = base + self.rng.randrange(1, 40)
        return self._ports[client]

    def path(self, client: str, server: str, vlan: int | None = None) -> NetPath:
        return NetPath(client, server, vlan=vlan, ipid=self.rng.randrange(1 << 16))

    def session(self, client: str, server: str, server_port: int, at_ns: int) -> TcpSession:
        return TcpSession(
            self.path(client, server),
            self.port(client),
            server_port,
            start_ns=at_ns,
            rtt_ns=self.rng.randrange(18, 60) * MS,
            client_isn=self.rng.getrandbits(32),
            server_isn=self.rng.getrandbits(32),
        )

    def dns(self, client: str, qname: str, at_ns: int, *, qtype: str = "A") -> int:
        """A UDP DNS query and answer; returns when the answer arrives."""
        v6 = ":" in client
        server = RESOLVER_V6 if v6 else RESOLVER
        cnames, addrs, ttl = (ANSWERS_V6 if qtype == "AAAA" else ANSWERS)[qname]
        qid = self.rng.randrange(1 << 16)
        frames = synth.udp_exchange(
            self.path(client, server),
            self.port(client),
            53,
            [
                (True, synth.dns_query(qname, qtype, qid=qid, edns=True)),
                (
                    False,
                    synth.dns_response(
                        qname, qtype, qid=qid, cnames=cnames, addresses=addrs, ttl=ttl
                    ),
                ),
            ],
            start_ns=at_ns,
            rtt_ns=self.rng.randrange(1, 4) * MS,
        )
        self.plan.frames += frames
        self.plan.dns.append(DnsTruth(client, server, qname, qtype, list(cnames), list(addrs), ttl))
        return frames[-1][0]

    def flow(self, sess: TcpSession, proto: str = "tcp", **truth: object) -> None:
        seg, cls = _segment(sess.path.client)
        self.plan.flows.append(
            FlowTruth(
                proto=proto,
                client=sess.path.client,
                client_port=sess.client_port,
                server=sess.path.server,
                server_port=sess.server_port,
                segment=seg,
                classification=cls,
                **truth,  # type: ignore[arg-type]
            )
        )

    def tls(
        self,
        sess: TcpSession,
        sni: str | None,
        *,
        upload: int = 0,
        download: int = 0,
        request: int = 600,
        groups: str | None = None,
    ) -> None:
        """A TLS 1.3 session: handshake, a request (or upload), a response, FIN."""
        pair = synth.TlsPair(sni, groups=groups)
        f = self.plan.frames
        f += sess.handshake()
        f += sess.client_send(pair.client_hello)
        f += sess.server_send(pair.server_flight)
        f += sess.client_send(pair.client_finished)
        body = _payload(self.rng, request + upload)
        f += sess.client_send(pair.client_write(body))
        f += sess.server_send(pair.server_tickets + pair.server_write(_payload(self.rng, 400)))
        if download:
            f += sess.server_send(pair.server_write(_payload(self.rng, download)))
        f += sess.close()


def _payload(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def build() -> DemoPlan:
    """Generate every frame of the demo capture and its ground truth."""
    b = _Builder()
    plan = b.plan
    t = START_NS

    # Housekeeping on the SECRET LAN: ARP for the gateway, NTP, a ping.
    ws1_mac = synth.mac_for(SECRET_WS1)
    plan.frames.append((t, synth.arp_frame(1, ws1_mac, SECRET_WS1, b"", GATEWAYS[SECRET_WS1])))
    plan.frames.append(
        (
            t + 300_000,
            synth.arp_frame(2, synth.GATEWAY_MAC, GATEWAYS[SECRET_WS1], ws1_mac, SECRET_WS1),
        )
    )
    ntp = b.path(SECRET_WS1, NTP_SERVER)
    plan.frames += synth.udp_exchange(
        ntp,
        123,
        123,
        [
            (True, synth.ntp_packet(t + MS)),
            (False, synth.ntp_packet(t + 2 * MS, server=True, origin_ns=t + MS)),
        ],
        start_ns=t + MS,
        rtt_ns=MS,
    )
    ping = b.path(SECRET_WS2, GATEWAYS[SECRET_WS2])
    payload = bytes(range(48))
    plan.frames += [
        (t + 5 * MS, ping.icmp_echo(True, 0x4D2, 1, payload)),
        (t + 5 * MS + 400_000, ping.icmp_echo(False, 0x4D2, 1, payload, reply=True)),
    ]

    # 1. SECRET workstation: Kaspersky sample upload to KSN (SNI), after a CNAME chain.
    at = b.dns(SECRET_WS1, "ksn-file-geo.kaspersky-labs.com", t + 2 * SECOND)
    sess = b.session(SECRET_WS1, "77.74.177.233", 443, at + MS)
    b.tls(sess, "ksn-file-geo.kaspersky-labs.com", upload=262_144, request=900)
    b.flow(
        sess,
        id="secret-ksn-file-upload",
        name="ksn-file-geo.kaspersky-labs.com",
        indicator="sni",
        vendor=KASPERSKY,
        vendor_jurisdiction="RU",
        purpose="lookup",
        server_country="RU",
        bytes_toserver_min=262_144,
        expected_alert=True,
        why="SECRET host -> Kaspersky KSN (RU vendor, RU geolocation and registration); "
        "256 KiB client->server upload should escalate severity",
    )

    # 2. SECRET workstation: Kaspersky signature update over TLS.
    at = b.dns(SECRET_WS1, "s07.upd.kaspersky.com", t + 9 * SECOND)
    sess = b.session(SECRET_WS1, "77.74.178.20", 443, at + MS)
    b.tls(sess, "s07.upd.kaspersky.com", download=131_072, request=450)
    b.flow(
        sess,
        id="secret-kaspersky-update",
        name="s07.upd.kaspersky.com",
        indicator="sni",
        vendor=KASPERSKY,
        vendor_jurisdiction="RU",
        purpose="update",
        server_country="RU",
        bytes_toserver_min=450,
        expected_alert=True,
        why="SECRET host -> Kaspersky update server (RU)",
    )

    # 3. SECRET workstation: QUIC v1 to KSN, the hello split over two Initial packets.
    at = b.dns(SECRET_WS1, "ksn-url-geo.kaspersky-labs.com", t + 15 * SECOND)
    conv = synth.quic_conversation(
        "ksn-url-geo.kaspersky-labs.com",
        version=synth.QUIC_V1,
        large=True,
        request=_payload(b.rng, 300),
        response_size=6_000,
    )
    qpath = b.path(SECRET_WS1, "77.74.179.5")
    qport = b.port(SECRET_WS1)
    plan.frames += synth.udp_exchange(
        qpath, qport, 443, conv.rebind(b.rng), start_ns=at + MS, rtt_ns=41 * MS
    )
    plan.flows.append(
        FlowTruth(
            "secret-ksn-quic",
            "udp",
            SECRET_WS1,
            qport,
            "77.74.179.5",
            443,
            "ksn-url-geo.kaspersky-labs.com",
            "quic",
            KASPERSKY,
            "RU",
            "lookup",
            "secret-enclave",
            "SECRET",
            "RU",
            300,
            True,
            "SECRET host -> Kaspersky KSN over QUIC v1 (SNI in the Initial packets)",
        )
    )

    # 4. SECRET workstation: TLS without SNI; only the DNS answer names the address.
    at = b.dns(SECRET_WS1, "dc1.ksn.kaspersky-labs.com", t + 21 * SECOND)
    sess = b.session(SECRET_WS1, "77.74.176.61", 443, at + 2 * MS)
    b.tls(sess, None, request=1_200, download=2_000)
    b.flow(
        sess,
        id="secret-ksn-dc1-no-sni",
        name="dc1.ksn.kaspersky-labs.com",
        indicator="dns",
        vendor=KASPERSKY,
        vendor_jurisdiction="RU",
        purpose="lookup",
        server_country="RU",
        bytes_toserver_min=1_200,
        expected_alert=True,
        why="ClientHello carries no SNI; the DNS answer for dc1.ksn.kaspersky-labs.com "
        "seen 2 ms earlier names 77.74.176.61 for this client",
    )

    # 5. SECRET workstation: through the explicit proxy, CONNECT then TLS in the tunnel.
    sess = b.session(SECRET_WS1, PROXY, PROXY_PORT, t + 27 * SECOND)
    sess.rtt_ns = 400_000
    pair = synth.TlsPair("ds.kaspersky.com")
    f = plan.frames
    f += sess.handshake()
    f += sess.client_send(
        synth.http_connect_request("ds.kaspersky.com", 443, user_agent="KSDE/14.0 (Windows)")
    )
    sess.rtt_ns = 35 * MS  # the proxy answers once it reached the origin
    f += sess.server_send(synth.HTTP_CONNECT_OK)
    f += sess.client_send(pair.client_hello)
    f += sess.server_send(pair.server_flight)
    f += sess.client_send(pair.client_finished)
    f += sess.client_send(pair.client_write(_payload(b.rng, 700)))
    f += sess.server_send(pair.server_tickets + pair.server_write(_payload(b.rng, 24_000)))
    f += sess.close()
    b.flow(
        sess,
        id="secret-proxy-connect-ds",
        name="ds.kaspersky.com",
        indicator="connect",
        vendor=KASPERSKY,
        vendor_jurisdiction="RU",
        purpose="update",
        server_country=None,
        bytes_toserver_min=700,
        expected_alert=True,
        why="CONNECT ds.kaspersky.com:443 via proxy 10.0.0.8:3128 (and SNI ds.kaspersky.com "
        "inside the tunnel); vendor jurisdiction RU, the proxy itself is internal",
    )

    # 6. SECRET workstation 2: ESET (SK) and Microsoft Defender (US): no alert.
    at = b.dns(SECRET_WS2, "update.eset.com", t + 33 * SECOND)
    sess = b.session(SECRET_WS2, "91.228.167.21", 443, at + MS)
    b.tls(sess, "update.eset.com", download=20_000)
    b.flow(
        sess,
        id="secret-eset-update",
        name="update.eset.com",
        indicator="sni",
        vendor=ESET,
        vendor_jurisdiction="SK",
        purpose="update",
        server_country="SK",
        bytes_toserver_min=600,
        expected_alert=False,
        why="ESET is controlled from Slovakia; SK is not a flagged jurisdiction",
    )
    at = b.dns(SECRET_WS2, "wdcp.microsoft.com", t + 38 * SECOND)
    sess = b.session(SECRET_WS2, "20.42.65.92", 443, at + MS)
    b.tls(sess, "wdcp.microsoft.com", request=2_400, download=1_500)
    b.flow(
        sess,
        id="secret-defender-maps",
        name="wdcp.microsoft.com",
        indicator="sni",
        vendor=DEFENDER,
        vendor_jurisdiction="US",
        purpose="lookup",
        server_country="US",
        bytes_toserver_min=2_400,
        expected_alert=False,
        why="Microsoft Defender cloud protection (US); not flagged",
    )

    # 7. OFFICIAL workstation -> Kaspersky: an alert, at a lower severity than SECRET.
    at = b.dns(OFFICIAL_WS, "ksn-verdict-geo.kaspersky-labs.com", t + 44 * SECOND)
    sess = b.session(OFFICIAL_WS, "77.74.180.10", 443, at + MS)
    b.tls(sess, "ksn-verdict-geo.kaspersky-labs.com", request=800, download=900)
    b.flow(
        sess,
        id="official-ksn-verdict",
        name="ksn-verdict-geo.kaspersky-labs.com",
        indicator="sni",
        vendor=KASPERSKY,
        vendor_jurisdiction="RU",
        purpose="lookup",
        server_country="RU",
        bytes_toserver_min=800,
        expected_alert=True,
        why="OFFICIAL host -> Kaspersky KSN (RU); lower severity than from SECRET",
    )

    # 8. Guest network -> Kaspersky: recognised, not alerted (no classification).
    at = b.dns(GUEST, "ksn-url-geo.kaspersky-labs.com", t + 50 * SECOND)
    sess = b.session(GUEST, "77.74.179.5", 443, at + MS)
    b.tls(sess, "ksn-url-geo.kaspersky-labs.com", request=500, download=700)
    b.flow(
        sess,
        id="guest-ksn-url",
        name="ksn-url-geo.kaspersky-labs.com",
        indicator="sni",
        vendor=KASPERSKY,
        vendor_jurisdiction="RU",
        purpose="lookup",
        server_country="RU",
        bytes_toserver_min=500,
        expected_alert=False,
        why="guest network is not a classified segment",
    )

    # 9. Noise: ordinary browsing, DNS over IPv4 and IPv6, QUIC v2.
    b.dns(SECRET_WS2, "www.bbc.co.uk", t + 55 * SECOND)
    b.dns(SECRET_WS1_V6, "www.gov.uk", t + 56 * SECOND, qtype="AAAA")
    at = b.dns(OFFICIAL_WS, "www.gov.uk", t + 57 * SECOND)
    sess = b.session(OFFICIAL_WS, "151.101.64.144", 443, at + MS)
    b.tls(sess, "www.gov.uk", request=700, download=30_000)
    b.flow(
        sess,
        id="official-gov-uk",
        name="www.gov.uk",
        indicator="sni",
        vendor=None,
        vendor_jurisdiction=None,
        purpose=None,
        server_country="CA",
        bytes_toserver_min=700,
        expected_alert=False,
        why="not AV traffic",
    )
    at = b.dns(GUEST, "www.google.com", t + 62 * SECOND)
    conv = synth.quic_conversation(
        "www.google.com", version=synth.QUIC_V2, request=_payload(b.rng, 200), response_size=3_000
    )
    gpath = b.path(GUEST, "142.250.185.78")
    gport = b.port(GUEST)
    plan.frames += synth.udp_exchange(
        gpath, gport, 443, conv.rebind(b.rng), start_ns=at + MS, rtt_ns=14 * MS
    )
    plan.flows.append(
        FlowTruth(
            "guest-google-quic-v2",
            "udp",
            GUEST,
            gport,
            "142.250.185.78",
            443,
            "www.google.com",
            "quic",
            None,
            None,
            None,
            "guest",
            None,
            "US",
            200,
            False,
            "not AV traffic (QUIC version 2)",
        )
    )

    plan.frames.sort(key=lambda fr: fr[0])
    return plan


def truth_document(plan: DemoPlan, capture_name: str) -> dict[str, object]:
    """The demo.json ground truth for ``plan``."""
    return {
        "capture": capture_name,
        "generator": "python -m monitor.demo.generate",
        "packets": len(plan.frames),
        "first_ts": plan.frames[0][0] / SECOND,
        "last_ts": plan.frames[-1][0] / SECOND,
        "segments": [asdict(seg) for seg in SEGMENTS],
        "resolver": [RESOLVER, RESOLVER_V6],
        "proxy": f"{PROXY}:{PROXY_PORT}",
        "flagged_jurisdictions": ["RU"],
        "flows": [asdict(f) for f in plan.flows],
        "dns": [asdict(d) for d in plan.dns],
    }


def write(out: Path) -> DemoPlan:
    """Build the demo and write the capture to ``out`` and the ground truth beside it."""
    plan = build()
    out.parent.mkdir(parents=True, exist_ok=True)
    with synth.PcapWriter(out) as writer:
        writer.write_all(plan.frames)
    doc = truth_document(plan, out.name)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m monitor.demo.generate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    plan = write(args.out)
    size = args.out.stat().st_size
    print(f"{args.out}: {len(plan.frames)} packets, {size} bytes, {len(plan.flows)} flows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
