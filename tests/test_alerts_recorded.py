"""Alerts on captures recorded from real clients on loopback and moved into a classified
network by rewriting their addresses.

The clients (curl, dig, openssl s_client) bind 127.0.0.10; the servers listen on their own
127/8 addresses, one per role, so that ``tcprewrite --pnat`` can later tell the roles
apart:

===============  ===========================  ==================  ==================
loopback         role                         rewritten (secret)  geo data says
===============  ===========================  ==================  ==================
127.0.0.10       client                       10.20.1.10          SECRET segment
127.0.0.20       Kaspersky cloud (TLS)        77.74.176.10        RU (AS200107)
127.0.0.30       ESET cloud (TLS)             91.228.167.21       SK (not flagged)
127.0.0.53       DNS server                   10.20.0.53          private
127.0.0.8        explicit CONNECT proxy       10.99.0.8           private, no segment
===============  ===========================  ==================  ==================

The DNS server already answers with the rewritten server addresses, so after the rewrite
the client connects to exactly the address it was given. A second rewrite moves the
client to 192.168.100.50 (the guest network: no segment) and must raise nothing.

Recorded flows, in order:

1. ``dig ksn-file-geo.kaspersky-labs.com``, then curl POSTs ~300 KB over TLS with that SNI
   to the Kaspersky role: an ``sni`` alert, then an escalation (upload threshold);
2. ``dig dc1.ksn.kaspersky-labs.com``, then ``openssl s_client -noservername`` to the same
   address: no SNI, named by DNS only (``dns`` alert);
3. curl through the CONNECT proxy to ``ds.kaspersky.com`` (``connect`` alert on the
   client-to-proxy flow; the proxy's own connection comes from no segment);
4. ``dig update.eset.com``, then curl with that SNI to the ESET role: no alert.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import re
import socket
import ssl
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from geo import GeoDatabases
from monitor.config import load_config
from monitor.flow.communityid import PROTO_TCP, community_id
from tests.helpers import flows, replay
from tests.recorder import (
    ConnectProxy,
    ThreadedServer,
    dns_server,
    recording,
    self_signed_cert,
)
from tests.test_names_recorded import by_type
from tests.tshark_oracle import require_tool

pytestmark = pytest.mark.slow

# ------------------------------------------------------------------- network plan

CLIENT, KAS, ESET, DNS, PROXY = "127.0.0.10", "127.0.0.20", "127.0.0.30", "127.0.0.53", \
    "127.0.0.8"
SECRET_MAP = {CLIENT: "10.20.1.10", KAS: "77.74.176.10", ESET: "91.228.167.21",
              DNS: "10.20.0.53", PROXY: "10.99.0.8"}
GUEST_MAP = dict(SECRET_MAP, **{CLIENT: "192.168.100.50"})

KSN = "ksn-file-geo.kaspersky-labs.com"
DC1 = "dc1.ksn.kaspersky-labs.com"
DS = "ds.kaspersky.com"
ESET_NAME = "update.eset.com"
DNS_ANSWERS: dict[str, list[tuple[str, str]]] = {
    KSN: [("A", SECRET_MAP[KAS])],
    DC1: [("A", SECRET_MAP[KAS])],
    ESET_NAME: [("A", SECRET_MAP[ESET])],
}
UPLOAD_BYTES = 300_000
UPLOAD_THRESHOLD = 131_072

CONFIG_TOML = f"""
[policy]
flagged_jurisdictions = ["RU"]
bases = ["vendor", "registration", "geolocation", "asn"]
upload_threshold_bytes = {UPLOAD_THRESHOLD}

[[segments]]
name = "secret-enclave"
cidrs = ["10.20.0.0/16"]
classification = "SECRET"

[[segments]]
name = "official"
cidrs = ["10.30.0.0/16"]
classification = "OFFICIAL"
"""

#: flow -> (indicator type, name, server role, expected escalation)
EXPECTED = {
    "sni": ("sni", KSN, KAS, True),
    "dns": ("dns", DC1, KAS, False),
    "connect": ("connect", DS, PROXY, False),
}


# ------------------------------------------------------------------------ servers


class TlsHttpServer(ThreadedServer):
    """A TLS server on ``host`` (Python's ssl) that reads one HTTP/1.x request, body
    included (Content-Length), answers 200 and closes. Records the body sizes read."""

    def __init__(self, host: str, directory: Path) -> None:
        super().__init__(host)
        cert, key = self_signed_cert(directory)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.bodies: list[int] = []

    def handle(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        with contextlib.suppress(OSError), self.ctx.wrap_socket(raw, server_side=True) as tls:
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = tls.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head, body = buf.split(b"\r\n\r\n", 1)
            m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            want = int(m[1]) if m else 0
            while len(body) < want:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                body += chunk
            self.bodies.append(len(body))
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"
                        b"ok\n")


# ---------------------------------------------------------------------- helpers


def run_client(cmd: list[str], timeout: float = 20,
               stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a client with no proxy settings from the environment."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(cmd, capture_output=True, timeout=timeout, env=env,
                          input=stdin if stdin is not None else b"")


def free_port_at(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def pnat(mapping: dict[str, str]) -> str:
    return ",".join(f"{a}/32:{b}/32" for a, b in mapping.items())


def rewrite(src: Path, dst: Path, mapping: dict[str, str]) -> Path:
    tcprewrite = require_tool("tcprewrite")
    subprocess.run([tcprewrite, f"--pnat={pnat(mapping)}", "--infile", str(src),
                    "--outfile", str(dst), "--fixcsum"], check=True, capture_output=True)
    return dst


def tshark_frames(path: Path, decode_as: list[str]) -> dict[int, dict[str, str]]:
    """Per frame: its IPv4 addresses, TCP/UDP ports, TLS SNI and HTTP method (tshark)."""
    tshark = require_tool("tshark")
    fields = ["frame.number", "frame.time_epoch", "frame.len", "ip.src", "ip.dst",
              "tcp.srcport", "tcp.dstport",
              "udp.srcport", "udp.dstport", "tcp.flags.syn", "tcp.flags.ack",
              "tls.handshake.extensions_server_name", "tls.handshake.type",
              "http.request.method"]
    args = [tshark, "-n", "-r", str(path)]
    for d in decode_as:
        args += ["-d", d]
    args += ["-T", "fields", "-E", "separator=\t", "-E", "occurrence=f"]
    args += [a for f in fields for a in ("-e", f)]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    frames = {}
    for line in out.splitlines():
        row = dict(zip(fields, line.split("\t"), strict=True))
        frames[int(row["frame.number"])] = row
    return frames


def tcp_tuple(row: dict[str, str]) -> tuple[str, int, str, int]:
    return (row["ip.src"], int(row["tcp.srcport"]), row["ip.dst"], int(row["tcp.dstport"]))


def frame_time_us(row: dict[str, str]) -> int:
    return int(Decimal(row["frame.time_epoch"]) * 1_000_000)


def eve_time_us(text: str) -> int:
    t = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z")
    return int(t.timestamp()) * 1_000_000 + t.microsecond


def to_server(frames: dict[int, dict[str, str]],
              tup: tuple[str, int, str, int]) -> list[tuple[int, int]]:
    """(frame number, frame length) of the client-to-server frames of ``tup``, in order."""
    return [(n, int(r["frame.len"])) for n, r in sorted(frames.items())
            if r["tcp.srcport"] and tcp_tuple(r) == tup]


def cid(src: str, sport: int, dst: str, dport: int) -> str:
    return community_id(ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed,
                        PROTO_TCP, sport, dport)


def key(rec: dict[str, Any]) -> tuple[str, int, str, int]:
    return (rec["src_ip"], rec.get("src_port", 0), rec["dest_ip"], rec.get("dest_port", 0))


def capinfos_count(path: Path) -> int:
    capinfos = require_tool("capinfos")
    out = subprocess.run([capinfos, "-M", "-c", str(path)], check=True, capture_output=True,
                         text=True).stdout
    m = re.search(r"Number of packets:\s+(\d+)", out)
    assert m, out
    return int(m[1])


# ------------------------------------------------------------------- recording


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    curl = require_tool("curl")
    openssl = require_tool("openssl")
    dig = require_tool("dig")
    require_tool("tcpdump")
    d = tmp_path_factory.mktemp("rec_alerts")
    body = d / "sample.bin"
    body.write_bytes(os.urandom(UPLOAD_BYTES))
    pcap = d / "loopback.pcap"
    out: dict[str, Any] = {"pcap": pcap}
    with TlsHttpServer(KAS, d) as kas, TlsHttpServer(ESET, d) as eset, \
            ConnectProxy(PROXY, (KAS, kas.port)) as proxy, dns_server(DNS_ANSWERS, DNS) as dns, \
            recording(pcap, [kas.port, eset.port, proxy.port, dns.port]):

        def resolve(name: str) -> str:
            res = run_client([dig, "-b", CLIENT, f"@{DNS}", "-p", str(dns.port), "+short",
                              "+tries=1", "+time=5", name, "A"])
            return res.stdout.decode().strip()

        def curl_https(name: str, server: str, port: int, *extra: str) -> tuple[str, int]:
            res = run_client([curl, "-sk", "--http1.1", "--interface", CLIENT, "--noproxy",
                              "*", "-o", "/dev/null", "-w", "%{http_code} %{local_port}",
                              "--resolve", f"{name}:{port}:{server}", *extra,
                              f"https://{name}:{port}/"])
            code, lport = res.stdout.decode().split()
            return code, int(lport)

        # 1. SNI, with a sample-sized upload
        out["ksn_answer"] = resolve(KSN)
        out["ksn_code"], out["ksn_port"] = curl_https(
            KSN, KAS, kas.port, "-H", "Expect:", "--data-binary", f"@{body}")
        # 2. no SNI: named through DNS only
        out["dc1_answer"] = resolve(DC1)
        out["dc1_port"] = free_port_at(CLIENT)
        sc = run_client([openssl, "s_client", "-connect", f"{KAS}:{kas.port}", "-bind",
                         f"{CLIENT}:{out['dc1_port']}", "-noservername", "-quiet",
                         "-ign_eof"], stdin=b"GET / HTTP/1.0\r\n\r\n")
        out["dc1_reply"] = sc.stdout
        # 3. through the CONNECT proxy
        res = run_client([curl, "-sk", "--http1.1", "--interface", CLIENT, "--proxy",
                          f"http://{PROXY}:{proxy.port}", "-o", "/dev/null", "-w",
                          "%{http_code} %{local_port}", f"https://{DS}:{kas.port}/"])
        code, lport = res.stdout.decode().split()
        out["ds_code"], out["ds_port"] = code, int(lport)
        # 4. non-flagged vendor
        out["eset_answer"] = resolve(ESET_NAME)
        out["eset_code"], out["eset_cport"] = curl_https(ESET_NAME, ESET, eset.port)
    out.update(kas_port=kas.port, eset_port=eset.port, proxy_port=proxy.port,
               dns_port=dns.port, targets=proxy.targets, kas_bodies=sorted(kas.bodies))
    return out


@pytest.fixture(scope="module")
def captures(recorded: dict[str, Any]) -> dict[str, Path]:
    src: Path = recorded["pcap"]
    return {"secret": rewrite(src, src.with_name("secret.pcap"), SECRET_MAP),
            "guest": rewrite(src, src.with_name("guest.pcap"), GUEST_MAP)}


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "avmon.toml"
    path.write_text(CONFIG_TOML)
    return path


@pytest.fixture(scope="module")
def expected_tuples(recorded: dict[str, Any]) -> dict[str, tuple[str, int, str, int]]:
    """The rewritten 5-tuples (client side first) of the recorded flows."""
    client, kas = SECRET_MAP[CLIENT], SECRET_MAP[KAS]
    return {
        "sni": (client, recorded["ksn_port"], kas, recorded["kas_port"]),
        "dns": (client, recorded["dc1_port"], kas, recorded["kas_port"]),
        "connect": (client, recorded["ds_port"], SECRET_MAP[PROXY], recorded["proxy_port"]),
        "eset": (client, recorded["eset_cport"], SECRET_MAP[ESET], recorded["eset_port"]),
    }


@pytest.fixture(scope="module")
def secret_run(captures: dict[str, Path], config_path: Path,
               tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("secret_run")
    evidence = out / "evidence"
    records, pipe = replay([captures["secret"]], out, config=load_config(config_path),
                           geo=GeoDatabases(), evidence_dir=evidence)
    return {"records": records, "pipe": pipe, "evidence": evidence}


@pytest.fixture(scope="module")
def frames(captures: dict[str, Path], recorded: dict[str, Any]) -> dict[int, dict[str, str]]:
    # The direct TLS flows are decoded as TLS by their ports, client ports included: an
    # ephemeral port can be one Wireshark has registered for another protocol (48049 is
    # CBSP's, whose dissector then takes the ClientHello from the TLS dissector). The
    # proxy's port is HTTP, whose CONNECT hands the tunnel on to TLS.
    tls = [recorded[k] for k in ("kas_port", "eset_port", "ksn_port", "dc1_port", "eset_cport")]
    return tshark_frames(captures["secret"], [f"tcp.port=={p},tls" for p in tls]
                         + [f"tcp.port=={recorded['proxy_port']},http"])


# ------------------------------------------------------------------------- tests


def test_clients_really_talked(recorded: dict[str, Any]) -> None:
    assert recorded["ksn_answer"] == recorded["dc1_answer"] == SECRET_MAP[KAS]
    assert recorded["eset_answer"] == SECRET_MAP[ESET]
    assert (recorded["ksn_code"], recorded["ds_code"], recorded["eset_code"]) == \
        ("200", "200", "200")
    assert b"200 OK" in recorded["dc1_reply"]
    assert recorded["targets"] == [f"{DS}:{recorded['kas_port']}"]
    # the upload, the s_client request and the tunnelled request
    assert recorded["kas_bodies"] == [0, 0, UPLOAD_BYTES]


def test_rewrite_moved_every_role(captures: dict[str, Path], frames: dict[int, dict[str, str]],
                                  expected_tuples: dict[str, tuple[str, int, str, int]]) -> None:
    addrs = {row[f] for row in frames.values() for f in ("ip.src", "ip.dst")}
    assert addrs == set(SECRET_MAP.values())
    syns = {tcp_tuple(r) for r in frames.values()
            if r["tcp.flags.syn"] in ("1", "True") and r["tcp.flags.ack"] in ("0", "False")}
    assert set(expected_tuples.values()) <= syns
    # the proxy's own upstream connection
    assert sum(1 for s in syns if s[0] == SECRET_MAP[PROXY]) == 1
    snis = {r["tls.handshake.extensions_server_name"] for r in frames.values()} - {""}
    assert snis == {KSN, DS, ESET_NAME}
    guest = tshark_frames(captures["guest"], [])
    assert {r["ip.src"] for r in guest.values()} == set(GUEST_MAP.values())


def test_geo_data_places_the_servers() -> None:
    geo = GeoDatabases()
    kas = geo.lookup(SECRET_MAP[KAS])
    assert kas.country == "RU" and kas.registered_country == "RU"
    assert {("RU", "geolocation"), ("RU", "registration")} <= {
        (j.code, j.basis) for j in kas.jurisdictions}
    eset = geo.lookup(SECRET_MAP[ESET])
    assert eset.country == "SK" and "RU" not in eset.codes()
    for role in (CLIENT, DNS, PROXY):
        assert geo.lookup(SECRET_MAP[role]).codes() == frozenset()
    assert geo.lookup(GUEST_MAP[CLIENT]).codes() == frozenset()


@pytest.mark.parametrize("name", list(EXPECTED))
def test_expected_alert(name: str, secret_run: dict[str, Any],
                        expected_tuples: dict[str, tuple[str, int, str, int]],
                        frames: dict[int, dict[str, str]]) -> None:
    indicator, server_name, role, _ = EXPECTED[name]
    records = secret_run["records"]
    tup = expected_tuples[name]
    alerts = [r for r in by_type(records, "alert") if key(r) == tup]
    assert alerts, f"no alert for the {name} flow {tup}"
    (flow_rec,) = [f for f in flows(records, "TCP") if key(f) == tup]
    first = alerts[0]
    av = first["avmon"]
    assert av["segment"] == "secret-enclave"
    assert av["classification"] == "SECRET"
    assert av["vendor"] == "kaspersky"
    # A flow is judged once its identification is complete: the upload flow's client
    # had resolved the name just before, but its ClientHello's SNI is the better
    # indicator, and the alert is stamped with that frame.
    alert_indicator = indicator
    assert av["indicator"] == {"type": alert_indicator, "value": server_name}
    assert flow_rec["avmon"]["indicator"] == {"type": indicator, "value": server_name}
    assert av["server_name"] == server_name
    assert av["rule"] == "secret-flagged-jurisdiction"
    assert first["alert"]["severity"] == 1
    bases = {(j["code"], j["basis"]) for j in av["jurisdictions"]}
    assert ("RU", "vendor") in bases
    if role == KAS:
        assert {("RU", "geolocation"), ("RU", "registration")} <= bases
        assert av["geo"]["country"] == "RU"
    else:  # the proxy has a private address: only the vendor places the flow in RU
        assert {b for _, b in bases} == {"vendor"}
    assert {(f["code"], f["basis"]) for f in av["flagged"]} <= bases
    # Community ID: the flow record's, and the spec's over the rewritten 5-tuple
    assert first["community_id"] == flow_rec["community_id"] == cid(*tup)
    assert first["flow_id"] == flow_rec["flow_id"]
    assert flow_rec["flow"]["alerted"] is True
    assert flow_rec["avmon"]["segment"] == "secret-enclave"
    # pcap_cnt is a frame of this flow in the rewritten capture (tshark), and the
    # timestamp is that frame's
    row = frames[first["pcap_cnt"]]
    assert {tcp_tuple(row)[:2], tcp_tuple(row)[2:]} == {tup[:2], tup[2:]}
    assert eve_time_us(first["timestamp"]) == frame_time_us(row)
    if alert_indicator == "sni":
        assert row["tls.handshake.extensions_server_name"] == server_name
    if alert_indicator in ("dns", "connect"):
        # the frame of the (SNI-less, or tunnelled) ClientHello that completed it
        assert row["tls.handshake.type"] == "1", row
    # the alert's counters are the flow's as of the alerting frame
    sent = to_server(frames, tup)
    assert first["flow"]["pkts_toserver"] == sum(1 for f, _ in sent if f <= first["pcap_cnt"])
    assert first["flow"]["bytes_toserver"] == sum(n for f, n in sent if f <= first["pcap_cnt"])


@pytest.mark.parametrize("name", list(EXPECTED))
def test_upload_escalation(name: str, secret_run: dict[str, Any],
                           expected_tuples: dict[str, tuple[str, int, str, int]],
                           frames: dict[int, dict[str, str]]) -> None:
    escalate = EXPECTED[name][3]
    records = secret_run["records"]
    tup = expected_tuples[name]
    escalated = [r for r in by_type(records, "alert")
                 if key(r) == tup and "escalation" in r["avmon"]]
    if not escalate:
        assert escalated == []
        return
    (esc,) = escalated
    (flow_rec,) = [f for f in flows(records, "TCP") if key(f) == tup]
    assert esc["avmon"]["severity"] == "critical"
    assert esc["avmon"]["escalation"]["threshold_bytes"] == UPLOAD_THRESHOLD
    assert UPLOAD_THRESHOLD <= esc["avmon"]["escalation"]["bytes_toserver"] \
        <= flow_rec["flow"]["bytes_toserver"]
    assert flow_rec["flow"]["bytes_toserver"] > UPLOAD_BYTES
    assert esc["community_id"] == flow_rec["community_id"]
    # stamped with the frame that crossed the threshold (tshark's frame lengths)
    sent = to_server(frames, tup)
    assert sum(n for _, n in sent) == flow_rec["flow"]["bytes_toserver"]
    total, crossing = 0, None
    for frame, length in sent:
        total += length
        if total >= UPLOAD_THRESHOLD:
            crossing = frame
            break
    assert esc["pcap_cnt"] == crossing
    assert eve_time_us(esc["timestamp"]) == frame_time_us(frames[crossing])


def test_escalation_bytes_are_those_sent_at_the_crossing(
        secret_run: dict[str, Any], expected_tuples: dict[str, tuple[str, int, str, int]],
        frames: dict[int, dict[str, str]]) -> None:
    tup = expected_tuples["sni"]
    (esc,) = [r for r in by_type(secret_run["records"], "alert")
              if key(r) == tup and "escalation" in r["avmon"]]
    sent_by_then = sum(n for f, n in to_server(frames, tup) if f <= esc["pcap_cnt"])
    assert esc["avmon"]["escalation"]["bytes_toserver"] == sent_by_then


def test_only_the_expected_flows_alert(secret_run: dict[str, Any],
                                       expected_tuples: dict[str, tuple[str, int, str, int]]
                                       ) -> None:
    records = secret_run["records"]
    alerted = {key(r) for r in by_type(records, "alert")}
    assert alerted == {expected_tuples[n] for n in EXPECTED}
    # the ESET flow is recognised, in the secret segment, and not flagged
    (eset,) = [f for f in flows(records, "TCP") if key(f) == expected_tuples["eset"]]
    assert eset["avmon"]["vendor"] == "eset"
    assert eset["avmon"]["indicator"] == {"type": "sni", "value": ESET_NAME}
    assert eset["avmon"]["classification"] == "SECRET"
    assert eset["flow"]["alerted"] is False
    # the proxy's own connection carries a Kaspersky SNI, but comes from no segment
    (upstream,) = [f for f in flows(records, "TCP") if f["src_ip"] == SECRET_MAP[PROXY]]
    assert upstream["avmon"]["vendor"] == "kaspersky"
    assert upstream["avmon"]["classification"] == "unclassified"
    assert upstream["flow"]["alerted"] is False


def test_unclassified_client_raises_nothing(captures: dict[str, Path], config_path: Path,
                                            tmp_path: Path) -> None:
    records, pipe = replay([captures["guest"]], tmp_path, config=load_config(config_path),
                           geo=GeoDatabases())
    assert by_type(records, "alert") == []
    assert not pipe.alerts.stats.alerts and not pipe.alerts.stats.escalations
    client_flows = [f for f in flows(records) if f["src_ip"] == GUEST_MAP[CLIENT]]
    assert client_flows and all(f["flow"]["alerted"] is False for f in client_flows)
    # the same flows are still recognised as Kaspersky traffic
    vendors = {f["avmon"].get("vendor") for f in client_flows if "avmon" in f}
    assert {"kaspersky", "eset"} <= vendors


def test_evidence_files(secret_run: dict[str, Any]) -> None:
    records, evidence = secret_run["records"], secret_run["evidence"]
    by_cid = {f["community_id"]: f for f in flows(records)}
    alerted = {a["community_id"] for a in by_type(records, "alert")}
    pcaps = sorted(evidence.glob("*.pcap"))
    assert len(pcaps) == len(alerted) == len(EXPECTED)
    for pcap in pcaps:
        lines = pcap.with_suffix(".json").read_text().splitlines()
        cids = {json.loads(line)["community_id"] for line in lines}
        assert len(cids) == 1
        rec = by_cid[cids.pop()]
        f = rec["flow"]
        assert capinfos_count(pcap) == f["pkts_toserver"] + f["pkts_toclient"], pcap.name
        # every packet in it belongs to the flow
        ends = {(rec["src_ip"], rec["src_port"]), (rec["dest_ip"], rec["dest_port"])}
        for row in tshark_frames(pcap, []).values():
            assert {tcp_tuple(row)[:2], tcp_tuple(row)[2:]} == ends


def test_cli_replay(captures: dict[str, Path], config_path: Path, tmp_path: Path,
                    secret_run: dict[str, Any]) -> None:
    eve, evidence = tmp_path / "eve.json", tmp_path / "evidence"
    proc = subprocess.run([sys.executable, "-m", "monitor.cli", "replay",
                           str(captures["secret"]), "-c", str(config_path), "--eve", str(eve),
                           "--evidence", str(evidence), "-q"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    records = [json.loads(line) for line in eve.read_text().splitlines()]
    alerts = by_type(records, "alert")

    def summary(recs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return sorted((key(a), a["community_id"], a["pcap_cnt"], a["avmon"]["severity"],
                       a["avmon"]["indicator"]["type"]) for a in recs)

    assert summary(alerts) == summary(by_type(secret_run["records"], "alert"))
    flow_by_cid = {f["community_id"]: f for f in flows(records)}
    names = sorted(p.name for p in evidence.glob("*.pcap"))
    assert len(names) == len({a["community_id"] for a in alerts}) == len(EXPECTED)
    for pcap in evidence.glob("*.pcap"):
        cid_ = json.loads(pcap.with_suffix(".json").read_text().splitlines()[0])[
            "community_id"]
        f = flow_by_cid[cid_]["flow"]
        assert capinfos_count(pcap) == f["pkts_toserver"] + f["pkts_toclient"]
    # an unclassified client: exit 0, no alert, no evidence
    eve2, evidence2 = tmp_path / "guest.json", tmp_path / "evidence-guest"
    proc = subprocess.run([sys.executable, "-m", "monitor.cli", "replay",
                           str(captures["guest"]), "-c", str(config_path), "--eve", str(eve2),
                           "--evidence", str(evidence2), "-q"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not [r for r in map(json.loads, eve2.read_text().splitlines())
                if r["event_type"] == "alert"]
    assert not list(evidence2.glob("*.pcap"))
