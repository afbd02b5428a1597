"""`avmon live` on loopback: real clients, /metrics served while capturing, and SIGTERM
writing the open flows before a clean exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.recorder import free_port, run, tls_server
from tests.tshark_oracle import require_tool

pytestmark = pytest.mark.slow

NAME = "ksn-file-geo.kaspersky-labs.com"


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exposed")


def _wait_capturing(live: subprocess.Popen[bytes], mport: int, probe_port: int,
                    source: str) -> None:
    """Return once the source is seeing packets: the metrics endpoint answers and a UDP
    probe on ``probe_port`` has been counted. A source may start capturing a little after
    the process is up (dumpcap, scapy's sniffer thread); traffic before that is missed,
    as it would be by any capture tool."""
    import socket

    deadline = time.monotonic() + 30
    while True:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics",
                                          timeout=1).read().decode()
            if _metric(text, f'avmon_packets_total{{source="{source}"}}') > 0:
                return
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"probe", ("127.0.0.1", probe_port))
        except OSError:
            pass
        if time.monotonic() > deadline or live.poll() is not None:
            live.terminate()
            raise AssertionError(live.communicate()[1].decode())
        time.sleep(0.2)


def _wait_settled(mport: int, source: str) -> None:
    """Until avmon's packet count has not moved for a second (at most 15 s)."""
    deadline = time.monotonic() + 15
    last, still = -1.0, 0
    while time.monotonic() < deadline and still < 5:
        text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics",
                                      timeout=5).read().decode()
        count = _metric(text, f'avmon_packets_total{{source="{source}"}}')
        still = still + 1 if count == last else 0
        last = count
        time.sleep(0.2)


@pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs CAP_NET_RAW (root)")
@pytest.mark.parametrize("source", ["ring", "socket", "tshark", "scapy"])
def test_live_capture_serves_metrics_and_flushes_on_sigterm(source: str,
                                                           tmp_path: Path) -> None:
    curl = require_tool("curl")
    if source == "tshark":
        require_tool("tshark")
    tls_port, mport, probe_port = free_port(), free_port(), free_port()
    eve = tmp_path / "eve.json"
    with tls_server(tls_port, tmp_path):
        live = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "live", "-i", "lo", "--source", source,
             "--eve", str(eve), "--metrics-listen", f"127.0.0.1:{mport}",
             "--bpf", f"tcp port {tls_port} or udp port {probe_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_capturing(live, mport, probe_port, source)
            for _ in range(3):
                run([curl, "-sk", "-o", "/dev/null", "--resolve",
                     f"{NAME}:{tls_port}:127.0.0.1", f"https://{NAME}:{tls_port}/"])
            # Sources hand packets on with some latency (tshark's pipe most): wait for
            # the three hellos, up to a bound.
            deadline = time.monotonic() + 15
            while True:
                text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics",
                                              timeout=5).read().decode()
                if _metric(text, 'avmon_protocol_units_total{protocol="tls"}') >= 3 \
                        or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert _metric(text, f'avmon_packets_total{{source="{source}"}}') > 0
            assert _metric(text, 'avmon_protocol_units_total{protocol="tls"}') >= 3, text
            assert _metric(text,
                           f'avmon_capture_dropped_packets_total{{source="{source}"}}') == 0
            # The connections' last segments may still be on their way through the
            # capture source (dumpcap's pipe lags most on a loaded machine): stop once the
            # packet count has settled, so the records below can count every packet.
            _wait_settled(mport, source)
        finally:
            live.send_signal(signal.SIGTERM)
            rc = live.wait(timeout=30)
    assert rc == 0, live.stderr.read().decode()
    records = [json.loads(line) for line in eve.read_text().splitlines()]
    tls = [r for r in records if r["event_type"] == "tls"]
    assert len(tls) == 3 and all(r["tls"]["sni"] == NAME for r in tls)
    assert all(r["avmon"]["vendor"] == "kaspersky" for r in tls)
    flows = [r for r in records if r["event_type"] == "flow" and r.get("dest_port") == tls_port]
    assert len(flows) == 3, flows  # written at SIGTERM if not before
    # Every packet captured before the stop is processed (tshark is stopped with SIGINT,
    # which writes out what dumpcap holds).
    assert all(f["flow"]["pkts_toserver"] > 3 for f in flows), flows


def test_live_refuses_public_metrics_address() -> None:
    proc = subprocess.run([sys.executable, "-m", "monitor.cli", "live", "-i", "lo",
                           "--metrics-listen", "0.0.0.0:9477"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "not a loopback address" in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs CAP_NET_RAW (root)")
def test_idle_link_still_expires_flows_and_reloads(tmp_path: Path) -> None:
    """With no traffic, flows still end at their idle timeout and SIGHUP still applies."""
    import socket

    port, mport = free_port(), free_port()
    config = tmp_path / "avmon.toml"
    config.write_text("[flow]\nudp_idle_seconds = 1\n")
    eve = tmp_path / "eve.json"
    live = subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "live", "-i", "lo", "-c", str(config),
         "--eve", str(eve), "--metrics-listen", f"127.0.0.1:{mport}",
         "--bpf", f"udp port {port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(0.5)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"ping", ("127.0.0.1", port))
        time.sleep(4)  # idle: no packet at all on the filter
        records = [json.loads(line) for line in eve.read_text().splitlines()]
        assert [r["flow"]["reason"] for r in records if r["event_type"] == "flow"] == \
            ["timeout"]
        live.send_signal(signal.SIGHUP)
        time.sleep(3)
    finally:
        live.send_signal(signal.SIGTERM)
        live.wait(timeout=30)
    err = live.stderr.read().decode()
    assert '"event": "reload"' in err
