"""`avmon live` and a replay of the same traffic agree: real clients on loopback are
captured by avmon live and, at the same time, by tcpdump; replaying tcpdump's file gives
the same flow records, names and alerts. Also SIGHUP with a broken and a fixed
signature set, and SIGTERM mid-traffic writing the final flow records."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import replay
from tests.recorder import dns_server, free_port, recording, run, tls_server
from tests.tshark_oracle import require_tool

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root")]

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("ksn-file-geo.kaspersky-labs.com", "s07.upd.kaspersky.com", "update.eset.com")


def _config(tmp: Path, sigdir: Path) -> Path:
    cfg = tmp / "avmon.toml"
    cfg.write_text(f'[signatures]\ndirectory = "{sigdir}"\n\n[policy]\n'
                   'flagged_jurisdictions = ["RU"]\n\n[[segments]]\nname = "loopback-secret"\n'
                   'cidrs = ["127.0.0.0/8"]\nclassification = "SECRET"\n')
    return cfg


class Live:
    def __init__(self, tmp: Path, config: Path, source: str, workers: int = 1) -> None:
        self.eve = tmp / f"live-{source}.json"
        self.mport = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "live", "-i", "lo", "--source", source,
             "-c", str(config), "--eve", str(self.eve), "--metrics-listen",
             f"127.0.0.1:{self.mport}", "--workers", str(workers)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.metrics()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise AssertionError(self.proc.stderr.read().decode()) from None
                time.sleep(0.1)
        time.sleep(0.5)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.mport}/metrics",
                                    timeout=2) as r:
            return r.read().decode()

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        return rc, self.proc.stderr.read().decode()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.eve.read_text().splitlines()]


def _drive(tls_port: int, dns_port: int) -> None:
    curl, dig = require_tool("curl"), require_tool("dig")
    for name in NAMES:
        run([dig, "@127.0.0.1", "-p", str(dns_port), name, "A"])
        run([curl, "-sk", "-o", "/dev/null", "--resolve", f"{name}:{tls_port}:127.0.0.1",
             f"https://{name}:{tls_port}/"])


def _summary(records: list[dict[str, Any]], ports: set[int]) -> dict[str, Any]:
    def mine(r: dict[str, Any]) -> bool:
        return r.get("dest_port") in ports or r.get("src_port") in ports

    flows = sorted((r["community_id"], r["flow"]["pkts_toserver"], r["flow"]["pkts_toclient"],
                    r["flow"]["bytes_toserver"], r["flow"]["bytes_toclient"])
                   for r in records if r["event_type"] == "flow" and mine(r))
    names = sorted((r["event_type"], r["tls"]["sni"] if r["event_type"] == "tls"
                    else r["dns"].get("rrname", "")) for r in records
                   if r["event_type"] in ("tls", "dns") and mine(r))
    alerts = sorted((r["community_id"], r["avmon"]["rule"], r["avmon"]["indicator"]["type"],
                     r["avmon"]["server_name"]) for r in records
                    if r["event_type"] == "alert" and mine(r))
    return {"flows": flows, "names": names, "alerts": alerts}


#: Names resolved by DNS, each to its own loopback address, then reached by a plain TCP
#: connection that carries no name of its own: only the DNS answer names the flow.
DNS_ONLY = {f"ds{k}.kaspersky-labs.com": f"127.0.0.{10 + k}" for k in range(8)}


def _drive_dns_only(dns_port: int, tcp_port: int) -> None:
    import socket

    dig = require_tool("dig")
    for name, addr in DNS_ONLY.items():
        run([dig, "@127.0.0.1", "-p", str(dns_port), name, "A"])
        with socket.create_connection((addr, tcp_port), timeout=5) as conn:
            conn.sendall(b"avmon test payload, no name in it\n")
            conn.recv(100)


class _Echo:
    """Plain TCP servers on each DNS_ONLY address: read a line, answer, close."""

    def __init__(self, port: int) -> None:
        import socket
        import threading

        self.socks = []
        for addr in DNS_ONLY.values():
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, port))
            s.listen(4)
            self.socks.append(s)
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    @staticmethod
    def _serve(s: Any) -> None:
        while True:
            try:
                conn, _ = s.accept()
            except OSError:
                return
            with conn:
                conn.recv(100)
                conn.sendall(b"ok\n")

    def close(self) -> None:
        for s in self.socks:
            s.close()


@pytest.mark.parametrize(("source", "workers"), [("ring", 1), ("socket", 1), ("ring", 2)])
def test_live_equals_replay(source: str, workers: int, tmp_path: Path) -> None:
    """The same records live and replayed; with two workers too, where a flow and the
    DNS answer that names it often reach different workers."""
    sigdir = tmp_path / "sigs"
    shutil.copytree(ROOT / "signatures" / "vendors", sigdir)
    config = _config(tmp_path, sigdir)
    tls_port, tcp_port = free_port(), free_port()
    answers = {n: [("A", "127.0.0.1")] for n in NAMES}
    answers.update({n: [("A", a)] for n, a in DNS_ONLY.items()})
    echo = _Echo(tcp_port)
    try:
        with tls_server(tls_port, tmp_path), dns_server(answers) as dns:
            live = Live(tmp_path, config, source, workers)
            pcap = tmp_path / "same.pcap"
            with recording(pcap, [tls_port, dns.port, tcp_port]):
                _drive(tls_port, dns.port)
                _drive_dns_only(dns.port, tcp_port)
                time.sleep(1.0)
            rc, err = live.stop()
    finally:
        echo.close()
    assert rc == 0, err
    from monitor.config import load_config

    replayed, _ = replay([pcap], tmp_path, config=load_config(config))
    ports = {tls_port, dns.port, tcp_port}
    got, want = _summary(live.records(), ports), _summary(replayed, ports)
    assert want["flows"] and want["alerts"] and want["names"]
    dns_named = [a for a in want["alerts"] if a[2] == "dns"]
    assert sorted(a[3] for a in dns_named) == sorted(DNS_ONLY)
    assert got == want


def test_sighup_reload_and_sigterm_flush(tmp_path: Path) -> None:
    sigdir = tmp_path / "sigs"
    shutil.copytree(ROOT / "signatures" / "vendors", sigdir)
    config = _config(tmp_path, sigdir)
    tls_port = free_port()
    curl = require_tool("curl")
    name = "ksn-file-geo.kaspersky-labs.com"

    def hit() -> None:
        run([curl, "-sk", "-o", "/dev/null", "--resolve", f"{name}:{tls_port}:127.0.0.1",
             f"https://{name}:{tls_port}/"])
        time.sleep(0.6)

    with tls_server(tls_port, tmp_path):
        live = Live(tmp_path, config, "ring")
        hit()
        # a broken signature file: rejected, old set kept, error counted
        kas = sigdir / "kaspersky.toml"
        good = kas.read_text()
        kas.write_text(good.replace("jurisdiction = ", "jurisdiction_typo = ", 1))
        live.proc.send_signal(signal.SIGHUP)
        hit()
        assert 'avmon_config_reload_errors_total 1.0' in live.metrics()
        # a fixed set without Kaspersky: the new set is used
        kas.unlink()
        live.proc.send_signal(signal.SIGHUP)
        hit()
        hit()
        rc, err = live.stop()
    assert rc == 0, err
    assert '"event": "reload_rejected"' in err and "kaspersky.toml" in err
    assert '"event": "reload"' in err
    tls = [r for r in live.records() if r["event_type"] == "tls"]
    vendors = [r.get("avmon", {}).get("vendor") for r in tls]
    assert vendors[:2] == ["kaspersky", "kaspersky"]
    assert vendors[-1] is None
    flows = [r for r in live.records() if r["event_type"] == "flow"
             and r.get("dest_port") == tls_port]
    assert len(flows) == len(tls)  # SIGTERM wrote every flow
