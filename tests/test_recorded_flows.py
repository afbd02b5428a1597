"""Flows of real clients recorded on loopback agree with tshark's conversations."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import flows, replay
from tests.recorder import DnsServer, free_port, http_server, recording, run, tls_server
from tests.test_flows import compare_with_tshark
from tests.tshark_oracle import require_tool

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loopback_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One capture with curl (HTTP and HTTPS), openssl s_client and dig over UDP and TCP."""
    curl = require_tool("curl")
    openssl = require_tool("openssl")
    dig = require_tool("dig")
    d = tmp_path_factory.mktemp("rec")
    (d / "www").mkdir()
    (d / "www" / "index.html").write_bytes(b"<html>" + b"a" * 20000 + b"</html>")
    http_port, tls_port, dns_port = free_port(), free_port(), free_port()
    answers = {"ksn-file-geo.kaspersky-labs.com": [("CNAME", "ksn-file.geo.kaspersky.com")],
               "ksn-file.geo.kaspersky.com": [("A", "127.0.0.1")]}
    pcap = d / "lo.pcap"
    with http_server(http_port, d / "www"), tls_server(tls_port, d), \
            DnsServer(dns_port, answers), recording(pcap, [http_port, tls_port, dns_port]):
        for _ in range(2):
            run([curl, "-s", "-o", "/dev/null", f"http://127.0.0.1:{http_port}/index.html"])
        run([curl, "-sk", "-o", "/dev/null", "--resolve",
             f"ksn-file-geo.kaspersky-labs.com:{tls_port}:127.0.0.1",
             f"https://ksn-file-geo.kaspersky-labs.com:{tls_port}/"])
        run([openssl, "s_client", "-connect", f"127.0.0.1:{tls_port}", "-servername",
             "s07.upd.kaspersky.com", "-quiet", "-ign_eof"], timeout=20,
            input=b"GET / HTTP/1.0\r\n\r\n")
        run([dig, "@127.0.0.1", "-p", str(dns_port), "ksn-file-geo.kaspersky-labs.com", "A"])
        run([dig, "+tcp", "@127.0.0.1", "-p", str(dns_port), "ksn-file-geo.kaspersky-labs.com"])
    return pcap


def test_recorded_flows_match_tshark(loopback_capture: Path, tmp_path: Path) -> None:
    records, pipe = replay([loopback_capture], tmp_path)
    tcp = flows(records, "TCP")
    udp = flows(records, "UDP")
    assert len(tcp) >= 5  # 2x curl http, curl https, s_client, dig +tcp
    assert len(udp) >= 1
    assert all(f["flow"]["state"] == "closed" for f in tcp)
    compare_with_tshark(loopback_capture, records)


def test_recorded_any_interface_sll2(tmp_path: Path) -> None:
    """``tcpdump -i any`` writes Linux SLL2; flows agree with tshark there too."""
    curl = require_tool("curl")
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "f").write_bytes(b"z" * 5000)
    port = free_port()
    pcap = tmp_path / "any.pcap"
    with http_server(port, tmp_path / "www"), recording(pcap, [port], iface="any"):
        run([curl, "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/f"])
    assert pcap.read_bytes()[20:24] in (b"\x14\x01\x00\x00", b"\x00\x00\x01\x14")  # 276
    records, _ = replay([pcap], tmp_path)
    assert len(flows(records, "TCP")) == 1
    compare_with_tshark(pcap, records)
