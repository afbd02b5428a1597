"""Adversarial captures, small: each resource limit acts, is counted, and bounds memory.

The captures of tests/adversarial_captures.py (the ones bench/adversarial replays at full
size, docs/adversarial.md) are made here a few thousand packets large and replayed by
``avmon replay`` in a child process with limits small enough to be reached: at most
5,000 flows, 1 MiB of reassembly in all, 2,000 DNS cache pairs, 4 names per address.
Every replay must exit 0 without a traceback, stay under a peak RSS bound, write valid
EVE JSON lines (with one flow record per flow where the capture fixes that number), and
count the limit it met in ``avmon_limit_hits_total``. One more test checks what the limits
keep: flows given up for the reassembly total are the ones that held bytes longest, so an
AV ClientHello arriving at the end of a flood of never-finished hellos is still named.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from monitor.synth import client_hello
from tests.adversarial_captures import (
    AV_CLIENT,
    AV_SERVER,
    AV_SNI,
    Capture,
    ReplayResult,
    dns_answer_flood,
    hello_flood,
    quic_initial_flood,
    replay,
    syn_flood,
    vlan_bomb,
)

MAX_FLOWS = 5_000
REASSEMBLY_TOTAL = 1 << 20
DNS_CACHE = 2_000
NAMES_PER_ADDRESS = 4
#: Peak RSS bound for these small replays: the demo capture peaks near 55 MiB, these at
#: 65-85 MiB (Python 3.11, x86_64); the hello flood without its limit peaks near 140 MiB.
RSS_LIMIT_KIB = 120 * 1024
#: A replay that takes longer than this has hung (each takes 1-4 s).
TIMEOUT = 120.0

CONFIG = f"""\
[flow]
max_flows = {MAX_FLOWS}

[limits]
reassembly_bytes_total = {REASSEMBLY_TOTAL}
dns_cache_entries = {DNS_CACHE}
dns_names_per_address = {NAMES_PER_ADDRESS}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "limits.toml"
    path.write_text(CONFIG)
    return path


def run(cap: Capture, tmp: Path, config: Path, *, rss_limit_kib: int = RSS_LIMIT_KIB
        ) -> tuple[ReplayResult, list[dict[str, Any]]]:
    """Replay ``cap``; check what every adversarial replay must show; return the result
    and the EVE records."""
    res = replay(cap.path, tmp / "out", config=config, timeout=TIMEOUT)
    assert not res.timed_out, f"{cap.name}: no exit after {TIMEOUT} s"
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.rss_kib < rss_limit_kib, f"{cap.name}: peak RSS {res.rss_kib // 1024} MiB"
    records = [json.loads(line) for line in res.eve.read_text().splitlines()]
    assert all(isinstance(r, dict) and "event_type" in r for r in records)
    if cap.flows is not None:
        assert len(flows(records)) == cap.flows
    return res, records


def flows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["event_type"] == "flow"]


def hits(res: ReplayResult, limit: str) -> float:
    return res.metrics.get_value("avmon_limit_hits_total", limit=limit)


def test_syn_flood_fills_the_flow_table(tmp_path: Path, config: Path) -> None:
    syns = 12_000
    cap = syn_flood(tmp_path / "syn.pcap", syns=syns, seconds=5)
    res, records = run(cap, tmp_path, config)
    assert hits(res, "flows") == syns - MAX_FLOWS
    assert res.metrics.get_value("avmon_flow_table_evictions_total") == syns - MAX_FLOWS
    reasons = [r["flow"]["reason"] for r in flows(records)]
    assert reasons.count("evicted") == syns - MAX_FLOWS


def test_dns_answer_flood_bounds_the_cache(tmp_path: Path, config: Path) -> None:
    names, shared = 5_000, 20
    cap = dns_answer_flood(tmp_path / "dns.pcap", names=names, shared_names=shared, seconds=5)
    res, records = run(cap, tmp_path, config)
    pairs = names + 1  # (client, address) pairs: one per name, one shared
    assert hits(res, "dns_cache_entries") == pairs - DNS_CACHE
    assert res.metrics.get_value("avmon_dns_cache_evictions_total") == pairs - DNS_CACHE
    assert hits(res, "dns_names_per_address") == shared - NAMES_PER_ADDRESS
    # the cache is bounded, the records are not: every answer is still reported
    answered = {r["dns"]["rrname"] for r in records
                if r["event_type"] == "dns" and r["dns"]["type"] == "answer"}
    assert len(answered) == names + shared


def test_hello_flood_bounds_reassembly(tmp_path: Path, config: Path) -> None:
    """5,000 flows each holding 12 KiB of a ClientHello: 61 MB without a total limit,
    1 MiB with it; the peak RSS must show the difference."""
    n, sent = 5_000, 12_288
    cap = hello_flood(tmp_path / "hello.pcap", flows=n, sent=sent, seconds=20)
    res, _ = run(cap, tmp_path, config)
    gave_up = hits(res, "reassembly_bytes_total")
    # at most REASSEMBLY_TOTAL // sent flows hold their bytes at once
    assert n - REASSEMBLY_TOTAL // sent - 1 <= gave_up <= n
    assert res.metrics.get_value("avmon_dissection_abandoned_total") >= gave_up
    assert hits(res, "reassembly_bytes_per_flow") == 0

    unlimited = tmp_path / "unlimited.toml"
    unlimited.write_text("[limits]\nreassembly_bytes_total = 1073741824\n")
    held, _ = run(cap, tmp_path, unlimited, rss_limit_kib=1 << 30)
    assert hits(held, "reassembly_bytes_total") == 0
    assert held.rss_kib - res.rss_kib > (n * sent // 2) // 1024, (held.rss_kib, res.rss_kib)


@pytest.mark.parametrize(("newer", "named"), [(10, True), (100, False)])
def test_hello_flood_gives_up_the_oldest_first(tmp_path: Path, newer: int,
                                               named: bool) -> None:
    """256 KiB in all holds 21 partial hellos of 12 KiB: an AV hello whose first half came
    10 flood flows before the end is kept and named when its second half comes; one that
    began 100 flood flows before the end was given up (and counted) to make room."""
    cfg = tmp_path / "tiny.toml"
    cfg.write_text("[limits]\nreassembly_bytes_total = 262144\n")
    hello = client_hello(AV_SNI, groups="X25519MLKEM768:X25519", seed=7)
    assert len(hello) > 1500  # two segments: the first is held while the flood goes on
    cap = hello_flood(tmp_path / "hello-av.pcap", flows=600, seconds=6, av_hello=hello,
                      av_newer=newer)
    res, records = run(cap, tmp_path, cfg)
    assert hits(res, "reassembly_bytes_total") >= 600 - 262144 // 12_288 - 1
    av = [r for r in records if r.get("src_ip") == AV_CLIENT and r.get("dest_ip") == AV_SERVER]
    assert len(flows(av)) == 1
    snis = [r["tls"].get("sni") for r in av if r["event_type"] == "tls"]
    assert (snis == [AV_SNI]) is named, snis


def test_quic_initial_flood(tmp_path: Path, config: Path) -> None:
    datagrams, clients, ports = 10_000, 4, 500  # 2,000 flows, 5 Initials each
    cap = quic_initial_flood(tmp_path / "quic.pcap", datagrams=datagrams, clients=clients,
                             ports_per_client=ports, seconds=5)
    res, records = run(cap, tmp_path, config)
    assert res.metrics.get_value("avmon_parse_errors_total", protocol="quic") >= clients * ports
    assert not [r for r in records if r["event_type"] == "quic"]
    assert res.metrics.get_value("avmon_reassembly_bytes") == 0


def test_vlan_bomb_is_counted_and_normal_traffic_processed(tmp_path: Path,
                                                           config: Path) -> None:
    deep, normal = 300, 300
    cap = vlan_bomb(tmp_path / "vlan.pcap", frames=deep, depth=10_000, normal=normal,
                    seconds=3)
    res, records = run(cap, tmp_path, config)
    assert res.metrics.get_value("avmon_decode_failures_total", reason="vlan_depth") == deep
    queried = {r["dns"]["rrname"] for r in records
               if r["event_type"] == "dns" and r["dns"]["type"] == "query"}
    assert queried == {f"ok{i}.normal.example" for i in range(normal)}
    assert not [r for r in records if r.get("src_ip") == "10.66.6.6"]
