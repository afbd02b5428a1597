"""Names of real clients recorded on loopback: TLS SNI, QUIC SNI, HTTP Host and CONNECT,
DNS answers naming later flows.

Each group records one capture with tcpdump while real clients (curl, openssl s_client,
gnutls-cli, dig, kdig, Python's ssl, aioquic) talk to servers on 127.0.0.1, replays it
through the pipeline and checks that every name is found with the right indicator and,
for AV names, the right vendor. tshark is the oracle for the set of names: the TLS (and
QUIC) SNIs and DNS query names avmon reports equal the ones tshark dissects.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import flows, replay
from tests.recorder import (
    ConnectProxy,
    dns_server,
    free_port,
    http_server,
    recording,
    run,
    self_signed_cert,
    tls_server,
)
from tests.tshark_oracle import require_tool

pytestmark = pytest.mark.slow

KSN = "ksn-file-geo.kaspersky-labs.com"
UPD = "s07.upd.kaspersky.com"
GNUTLS_SNI = "dnl-01.geo.kaspersky.com"
SPLIT_SNI = "nimbus.bitdefender.net"
DS = "ds.kaspersky.com"
DRWEB = "update.drweb.com"
QUIC_NAMES = {"v1": KSN, "v2": "update.eset.com", "large": "nimbus.bitdefender.net"}
REQUEST = b"GET / HTTP/1.0\r\n\r\n"


# --------------------------------------------------------------------------- helpers


def by_type(records: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [r for r in records if r["event_type"] == event_type]


def flow_of(records: list[dict[str, Any]], rec: dict[str, Any]) -> dict[str, Any]:
    """The flow record with the same flow_id as ``rec``."""
    found = [f for f in flows(records) if f["flow_id"] == rec["flow_id"]]
    assert len(found) == 1, rec
    return found[0]


def tshark_values(path: Path, display_filter: str, field: str,
                  decode_as: Sequence[str] = ()) -> set[str]:
    """The non-empty values of ``field`` over the frames matching ``display_filter``."""
    tshark = require_tool("tshark")
    args = [tshark, "-n", "-r", str(path)]
    for d in decode_as:
        args += ["-d", d]
    args += ["-Y", display_filter, "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,",
             "-e", field]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return {v.lower().rstrip(".") for line in out.splitlines() for v in line.split(",") if v}


def tshark_snis(path: Path, decode_as: Sequence[str] = ()) -> set[str]:
    return tshark_values(path, "tls.handshake.type==1", "tls.handshake.extensions_server_name",
                         decode_as)


def avmon_snis(records: list[dict[str, Any]]) -> set[str]:
    return ({r["tls"]["sni"] for r in by_type(records, "tls") if "sni" in r["tls"]}
            | {r["quic"]["sni"] for r in by_type(records, "quic") if "sni" in r["quic"]})


def split_hello_client(port: int, sni: str, chunk: int = 48) -> int:
    """A TLS client (Python's ssl over MemoryBIO) that writes its ClientHello to the socket
    in ``chunk``-byte pieces with TCP_NODELAY and short pauses, so the hello spans many TCP
    segments even on loopback; then completes the handshake and fetches ``/``. Returns
    the hello's length."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 88)
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.do_handshake()
        hello = outgoing.read()
        for i in range(0, len(hello), chunk):
            sock.sendall(hello[i:i + chunk])
            time.sleep(0.004)
        while True:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("server closed during the handshake")
            incoming.write(data)
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                continue
            sock.sendall(outgoing.read())
            break
        tls.write(REQUEST)
        sock.sendall(outgoing.read())
        with contextlib.suppress(OSError):
            while data := sock.recv(65536):
                incoming.write(data)
        return len(hello)


# ------------------------------------------------------------------- TLS clients


@pytest.fixture(scope="module")
def tls_capture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """curl, openssl s_client, gnutls-cli and a hello written in small pieces, one
    openssl s_server."""
    curl = require_tool("curl")
    openssl = require_tool("openssl")
    gnutls = require_tool("gnutls-cli")
    d = tmp_path_factory.mktemp("rec_tls")
    port = free_port()
    pcap = d / "tls.pcap"
    with tls_server(port, d), recording(pcap, [port]):
        curl_out = run([curl, "-sk", "-o", "/dev/null", "-w", "%{local_port}", "--resolve",
                        f"{KSN}:{port}:127.0.0.1", f"https://{KSN}:{port}/"])
        run([openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", UPD,
             "-quiet", "-ign_eof"], timeout=20, input=REQUEST)
        run([gnutls, "--insecure", f"--sni-hostname={GNUTLS_SNI}", "-p", str(port),
             "127.0.0.1"], timeout=20, input=REQUEST)
        hello_len = split_hello_client(port, SPLIT_SNI)
    return {"pcap": pcap, "port": port, "hello_len": hello_len,
            "curl_port": int(curl_out.stdout or 0)}


def test_tls_clients_names_and_vendors(tls_capture: dict[str, Any], tmp_path: Path) -> None:
    records, pipe = replay([tls_capture["pcap"]], tmp_path)
    tls = by_type(records, "tls")
    snis = sorted(r["tls"].get("sni", "") for r in tls)
    assert snis == sorted([KSN, UPD, GNUTLS_SNI, SPLIT_SNI])
    expected_vendor = {KSN: "kaspersky", UPD: "kaspersky", GNUTLS_SNI: "kaspersky",
                       SPLIT_SNI: "bitdefender"}
    for rec in tls:
        sni = rec["tls"]["sni"]
        assert rec["tls"]["ja4"].startswith("t13d"), rec
        assert rec["avmon"]["indicator"] == {"type": "sni", "value": sni}
        assert rec["avmon"]["server_name"] == sni
        assert rec["avmon"]["vendor"] == expected_vendor[sni]
        flow = flow_of(records, rec)
        assert flow["avmon"]["vendor"] == expected_vendor[sni]
        assert flow["app_proto"] == "tls"
    curl_rec = next(r for r in tls if r["tls"]["sni"] == KSN)
    assert curl_rec["avmon"]["purpose"] == "lookup"
    if tls_capture["curl_port"]:
        assert curl_rec["src_port"] == tls_capture["curl_port"]
    assert next(r for r in tls if r["tls"]["sni"] == UPD)["avmon"]["purpose"] == "update"
    assert pipe.dissector.stats.tls_client_hellos == 4
    assert not pipe.dissector.stats.parse_errors
    assert len(flows(records, "TCP")) == 4


def test_tls_snis_equal_tsharks(tls_capture: dict[str, Any], tmp_path: Path) -> None:
    records, _ = replay([tls_capture["pcap"]], tmp_path)
    assert avmon_snis(records) == tshark_snis(tls_capture["pcap"])


def test_split_hello_spanned_many_segments(tls_capture: dict[str, Any],
                                           tmp_path: Path) -> None:
    """The hello written in pieces really crossed the wire in several TCP segments, and
    avmon still found its SNI."""
    pcap = tls_capture["pcap"]
    tshark = require_tool("tshark")
    out = subprocess.run(
        [tshark, "-n", "-r", str(pcap), "-Y",
         f'tls.handshake.extensions_server_name == "{SPLIT_SNI}"', "-T", "fields",
         "-e", "tcp.srcport", "-e", "tcp.segment.count"],
        check=True, capture_output=True, text=True).stdout.split()
    assert len(out) == 2, out
    client_port, segments = int(out[0]), int(out[1])
    assert segments > 1
    # Count client payload segments before the server's first byte with scapy, too.
    from scapy.all import TCP, rdpcap

    sizes: list[int] = []
    for pkt in rdpcap(str(pcap)):
        if TCP not in pkt:
            continue
        seg = pkt[TCP]
        if seg.dport == client_port and len(seg.payload):
            break
        if seg.sport == client_port and len(seg.payload):
            sizes.append(len(seg.payload))
    assert len(sizes) > 1 and sum(sizes) == tls_capture["hello_len"], sizes
    records, _ = replay([pcap], tmp_path)
    rec = next(r for r in by_type(records, "tls") if r["src_port"] == client_port)
    assert rec["tls"]["sni"] == SPLIT_SNI
    assert rec["avmon"]["vendor"] == "bitdefender"


def one_byte_records(records: bytes) -> bytes:
    """The handshake message of ``records`` re-sent as one TLS record per byte."""
    hs = b""
    pos = 0
    while pos < len(records):
        n = int.from_bytes(records[pos + 3:pos + 5], "big")
        hs += records[pos + 5:pos + 5 + n]
        pos += 5 + n
    return b"".join(b"\x16\x03\x01\x00\x01" + hs[i:i + 1] for i in range(len(hs)))


@pytest.fixture(scope="module")
def tiny_records_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A post-quantum sized hello sent one byte per TLS record to openssl s_server, which
    accepts it (answers with a ServerHello); tshark reads its SNI."""
    from monitor import synth

    d = tmp_path_factory.mktemp("rec_tiny")
    port = free_port()
    pcap = d / "tiny.pcap"
    hello = one_byte_records(synth.client_hello(SPLIT_SNI, groups="X25519MLKEM768:X25519"))
    assert len(hello) > 6 * 1500
    with tls_server(port, d), recording(pcap, [port]):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(hello)
            answer = sock.recv(5)
    if answer[:3] != b"\x16\x03\x03":
        raise RuntimeError(f"s_server did not answer with a ServerHello: {answer!r}")
    if tshark_snis(pcap) != {SPLIT_SNI}:
        raise RuntimeError("tshark does not read the SNI of the one-byte-record hello")
    return pcap


def test_pq_hello_in_one_byte_records(tiny_records_capture: Path, tmp_path: Path) -> None:
    records, pipe = replay([tiny_records_capture], tmp_path)
    assert avmon_snis(records) == {SPLIT_SNI}, pipe.dissector.stats.parse_errors


# --------------------------------------------------------------- DNS then no SNI

DNS_CHAINS: dict[str, list[tuple[str, str]]] = {
    # name asked -> CNAME -> ... -> A 127.0.0.1; one name per client run
    "ksn-file-geo.kaspersky-labs.com": [("CNAME", "ksn-file.geo.kaspersky.com")],
    "ksn-file.geo.kaspersky.com": [("CNAME", "edge.cdn-avmon.example")],
    "edge.cdn-avmon.example": [("A", "127.0.0.1")],
    "update.eset.com": [("CNAME", "update.eset.cdn-avmon.example")],
    "update.eset.cdn-avmon.example": [("A", "127.0.0.1")],
    "upd.bitdefender.net": [("CNAME", "upd.bd.cdn-avmon.example")],
    "upd.bd.cdn-avmon.example": [("A", "127.0.0.1")],
    "dnl-01.geo.kaspersky.com": [("CNAME", "dnl.cdn-avmon.example")],
    "dnl.cdn-avmon.example": [("A", "127.0.0.1")],
}
#: (tool, use TCP, name asked); the last name asked is the one the later flow gets.
DNS_RUNS = [("dig", False, "update.eset.com"), ("dig", True, "upd.bitdefender.net"),
            ("kdig", True, "dnl-01.geo.kaspersky.com"),
            ("kdig", False, "ksn-file-geo.kaspersky-labs.com")]


@pytest.fixture(scope="module")
def dns_capture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """dig and kdig over UDP and TCP, then openssl s_client without SNI to the answer."""
    tools = {"dig": require_tool("dig"), "kdig": require_tool("kdig")}
    openssl = require_tool("openssl")
    d = tmp_path_factory.mktemp("rec_dns")
    tls_port = free_port()
    pcap = d / "dns.pcap"
    outputs: list[str] = []
    with tls_server(tls_port, d), dns_server(DNS_CHAINS) as dns:
        with recording(pcap, [dns.port, tls_port]):
            for tool, tcp, name in DNS_RUNS:
                cmd = [tools[tool], "@127.0.0.1", "-p", str(dns.port), name, "A"]
                if tcp:
                    cmd.insert(1, "+tcp")
                outputs.append(run(cmd, timeout=15).stdout.decode())
            run([openssl, "s_client", "-connect", f"127.0.0.1:{tls_port}", "-noservername",
                 "-quiet", "-ign_eof"], timeout=20, input=REQUEST)
    return {"pcap": pcap, "dns_port": dns.port, "tls_port": tls_port, "outputs": outputs}


def test_dig_kdig_answers(dns_capture: dict[str, Any], tmp_path: Path) -> None:
    for out in dns_capture["outputs"]:
        assert "127.0.0.1" in out  # the clients themselves got the answer
    records, pipe = replay([dns_capture["pcap"]], tmp_path)
    dns = by_type(records, "dns")
    assert not pipe.dissector.stats.parse_errors
    for tool, tcp, name in DNS_RUNS:
        proto = "TCP" if tcp else "UDP"
        queries = [r for r in dns if r["proto"] == proto and r["dns"]["type"] == "query"
                   and r["dns"]["rrname"] == name]
        answers = [r for r in dns if r["proto"] == proto and r["dns"]["type"] == "answer"
                   and r["dns"]["rrname"] == name]
        assert len(queries) == 1 and len(answers) == 1, (tool, proto, name)
        assert queries[0]["dest_port"] == dns_capture["dns_port"]
        rrs = answers[0]["dns"]["answers"]
        chain = [name]
        while DNS_CHAINS[chain[-1]][0][0] == "CNAME":
            chain.append(DNS_CHAINS[chain[-1]][0][1])
        assert [(a["rrname"], a["rrtype"], a["rdata"]) for a in rrs] == (
            [(a, "CNAME", b) for a, b in zip(chain, chain[1:], strict=False)]
            + [(chain[-1], "A", "127.0.0.1")])
        assert answers[0]["dns"]["rcode"] == "NOERROR"


def test_flow_without_sni_named_by_dns(dns_capture: dict[str, Any], tmp_path: Path) -> None:
    records, _ = replay([dns_capture["pcap"]], tmp_path)
    tls = by_type(records, "tls")
    assert len(tls) == 1 and "sni" not in tls[0]["tls"]
    assert tls[0]["dest_port"] == dns_capture["tls_port"]
    last = DNS_RUNS[-1][2]
    assert tls[0]["avmon"]["indicator"] == {"type": "dns", "value": last}
    assert tls[0]["avmon"]["server_name"] == last
    assert tls[0]["avmon"]["vendor"] == "kaspersky"
    flow = flow_of(records, tls[0])
    assert flow["avmon"]["indicator"] == {"type": "dns", "value": last}
    # DNS flows themselves are not named by their own answers
    for f in flows(records):
        if dns_capture["dns_port"] in (f["src_port"], f["dest_port"]):
            assert "avmon" not in f or f["avmon"]["indicator"]["type"] != "dns"


def test_dns_names_equal_tsharks(dns_capture: dict[str, Any], tmp_path: Path) -> None:
    records, _ = replay([dns_capture["pcap"]], tmp_path)
    port = dns_capture["dns_port"]
    decode = [f"udp.port=={port},dns", f"tcp.port=={port},dns"] if port != 53 else []
    ours = {r["dns"]["rrname"] for r in by_type(records, "dns")}
    assert ours == tshark_values(dns_capture["pcap"], "dns", "dns.qry.name", decode)
    # (the port filter could also catch a system resolver's stub on another 127/8 address)
    assert {r["dns"]["rrname"] for r in by_type(records, "dns")
            if r["src_ip"] == r["dest_ip"] == "127.0.0.1"} == {n for _, _, n in DNS_RUNS}
    assert avmon_snis(records) == tshark_snis(dns_capture["pcap"]) == set()


# ------------------------------------------------------- HTTP Host and CONNECT


@pytest.fixture(scope="module")
def http_capture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """curl through an explicit CONNECT proxy to s_server, and plain HTTP with a Host."""
    curl = require_tool("curl")
    d = tmp_path_factory.mktemp("rec_http")
    (d / "www").mkdir()
    (d / "www" / "index.html").write_bytes(b"<html>ok</html>")
    tls_port, http_port = free_port(), free_port()
    pcap = d / "http.pcap"
    with tls_server(tls_port, d), http_server(http_port, d / "www"), \
            ConnectProxy("127.0.0.1", ("127.0.0.1", tls_port)) as proxy, \
            recording(pcap, [tls_port, http_port, proxy.port]):
        tunnelled = run([curl, "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--proxy",
                         f"http://127.0.0.1:{proxy.port}", "--resolve",
                         f"{DS}:{tls_port}:127.0.0.1", f"https://{DS}:{tls_port}/"])
        plain = run([curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                     f"Host: {DRWEB}", f"http://127.0.0.1:{http_port}/index.html"])
    return {"pcap": pcap, "tls_port": tls_port, "http_port": http_port,
            "proxy_port": proxy.port, "targets": proxy.targets,
            "codes": (tunnelled.stdout, plain.stdout)}


def test_connect_through_proxy(http_capture: dict[str, Any], tmp_path: Path) -> None:
    assert http_capture["targets"] == [f"{DS}:{http_capture['tls_port']}"]
    assert http_capture["codes"] == (b"200", b"200")
    records, _ = replay([http_capture["pcap"]], tmp_path)
    proxy_port = http_capture["proxy_port"]
    connect = [r for r in by_type(records, "http") if r["http"]["http_method"] == "CONNECT"]
    assert len(connect) == 1
    assert connect[0]["dest_port"] == proxy_port
    assert connect[0]["http"]["hostname"] == DS
    assert connect[0]["http"]["http_port"] == http_capture["tls_port"]
    proxy_flow = flow_of(records, connect[0])
    assert proxy_flow["avmon"]["indicator"] == {"type": "connect", "value": DS}
    assert proxy_flow["avmon"]["vendor"] == "kaspersky"
    # the ClientHello inside the tunnel is found on the proxy flow, and again on the
    # proxy's own connection to the server
    tls = by_type(records, "tls")
    assert sorted(r["dest_port"] for r in tls) == sorted([proxy_port,
                                                          http_capture["tls_port"]])
    assert all(r["tls"]["sni"] == DS for r in tls)
    inner = next(r for r in tls if r["dest_port"] == proxy_port)
    assert inner["flow_id"] == connect[0]["flow_id"]
    assert inner["avmon"]["vendor"] == "kaspersky"
    direct = next(r for r in tls if r["dest_port"] == http_capture["tls_port"])
    assert direct["avmon"]["indicator"] == {"type": "sni", "value": DS}


def test_plain_http_host(http_capture: dict[str, Any], tmp_path: Path) -> None:
    records, _ = replay([http_capture["pcap"]], tmp_path)
    gets = [r for r in by_type(records, "http") if r["http"]["http_method"] == "GET"]
    assert len(gets) == 1
    assert gets[0]["dest_port"] == http_capture["http_port"]
    assert gets[0]["http"]["hostname"] == DRWEB
    assert gets[0]["http"]["url"] == "/index.html"
    flow = flow_of(records, gets[0])
    assert flow["avmon"]["indicator"] == {"type": "http", "value": DRWEB}
    assert flow["avmon"]["vendor"] == "drweb"
    assert flow["app_proto"] == "http"


def test_http_capture_snis_equal_tsharks(http_capture: dict[str, Any],
                                         tmp_path: Path) -> None:
    records, _ = replay([http_capture["pcap"]], tmp_path)
    decode = [f"tcp.port=={http_capture['proxy_port']},http"]
    assert avmon_snis(records) == tshark_snis(http_capture["pcap"], decode) == {DS}


# ----------------------------------------------------------------------- QUIC


async def _quic_handshakes(port: int, cert: Path, key: Path) -> list[int]:
    """aioquic server and clients in this process over real UDP sockets on 127.0.0.1."""
    from aioquic.asyncio import QuicConnectionProtocol, serve
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection
    from aioquic.quic.packet import QuicProtocolVersion

    server_cfg = QuicConfiguration(is_client=False, alpn_protocols=["h3"])
    server_cfg.load_cert_chain(str(cert), str(key))
    server = await serve("127.0.0.1", port, configuration=server_cfg)
    loop = asyncio.get_running_loop()
    client_ports: list[int] = []
    try:
        for kind, name in QUIC_NAMES.items():
            version = QuicProtocolVersion.VERSION_2 if kind == "v2" else \
                QuicProtocolVersion.VERSION_1
            cfg = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name=name,
                                    verify_mode=ssl.CERT_NONE, supported_versions=[version],
                                    quantum_readiness_test=kind == "large")
            conn = QuicConnection(configuration=cfg)
            transport, protocol = await loop.create_datagram_endpoint(
                lambda conn=conn: QuicConnectionProtocol(conn),
                local_addr=("127.0.0.1", 0))
            client_ports.append(int(transport.get_extra_info("sockname")[1]))
            try:
                protocol.connect(("127.0.0.1", port))
                await asyncio.wait_for(protocol.wait_connected(), 10)
                await asyncio.wait_for(protocol.ping(), 10)
                protocol.close()
                await asyncio.wait_for(protocol.wait_closed(), 10)
            finally:
                transport.close()
    finally:
        server.close()
    return client_ports


@pytest.fixture(scope="module")
def quic_capture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("rec_quic")
    cert, key = self_signed_cert(d)
    port = free_port(socket.AF_INET)
    pcap = d / "quic.pcap"
    with recording(pcap, [port]):
        client_ports = asyncio.run(_quic_handshakes(port, cert, key))
    return {"pcap": pcap, "port": port, "client_ports": client_ports}


def test_quic_handshakes_named(quic_capture: dict[str, Any], tmp_path: Path) -> None:
    records, pipe = replay([quic_capture["pcap"]], tmp_path)
    quic = {r["src_port"]: r for r in by_type(records, "quic")}
    assert sorted(quic) == sorted(quic_capture["client_ports"])
    expected_vendor = {KSN: "kaspersky", "update.eset.com": "eset",
                       "nimbus.bitdefender.net": "bitdefender"}
    for (kind, name), cport in zip(QUIC_NAMES.items(), quic_capture["client_ports"],
                                   strict=True):
        rec = quic[cport]
        assert rec["quic"]["sni"] == name
        assert rec["quic"]["version"] == ("2" if kind == "v2" else "1")
        assert rec["quic"]["ja4"].startswith("q13d")
        assert rec["avmon"]["indicator"] == {"type": "quic", "value": name}
        assert rec["avmon"]["vendor"] == expected_vendor[name]
        flow = flow_of(records, rec)
        assert flow["proto"] == "UDP" and flow["app_proto"] == "quic"
        assert flow["avmon"]["vendor"] == expected_vendor[name]
    assert not pipe.dissector.stats.parse_errors


def test_quic_large_hello_spans_two_initials(quic_capture: dict[str, Any]) -> None:
    """The quantum-readiness client's hello really took more than one Initial packet."""
    port = quic_capture["client_ports"][list(QUIC_NAMES).index("large")]
    offsets = tshark_values(quic_capture["pcap"], f"udp.srcport=={port} && quic.crypto.offset",
                            "quic.crypto.offset", [f"udp.port=={quic_capture['port']},quic"])
    assert "0" in offsets and len(offsets) >= 2, offsets


def test_quic_snis_equal_tsharks(quic_capture: dict[str, Any], tmp_path: Path) -> None:
    records, _ = replay([quic_capture["pcap"]], tmp_path)
    decode = [f"udp.port=={quic_capture['port']},quic"]
    assert avmon_snis(records) == tshark_snis(quic_capture["pcap"], decode) == set(
        QUIC_NAMES.values())
