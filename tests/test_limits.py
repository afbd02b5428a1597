"""The resource limits of docs/limits.md: configured, acting, counted.

Each limit is driven past its value by a capture built here, and the test checks what
acted (the oldest state went, the newest traffic is still watched) and that the counter
of ``avmon_limit_hits_total`` / ``avmon_alert_sink_limit_hits_total`` says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from monitor import synth
from monitor.config import Config, load_config
from monitor.errors import ConfigError
from monitor.limits import PIPELINE_LIMITS, SINK_LIMITS, Limits
from monitor.metrics import PipelineCollector, SinkStats
from monitor.sinks.alertmanager import AlertmanagerSink
from monitor.sinks.syslog import SyslogSink
from monitor.synth import NetPath, PcapWriter
from tests.helpers import flows, replay
from tests.test_names_edge import KSN, PQ_GROUPS, SERVER, Clock, Tcp, by_type, sigs

CLIENT = "10.20.1.10"


def limited(**limits: int) -> Config:
    return msgspec.structs.replace(load_config(None), limits=Limits(**limits))


def run(frames: list[tuple[int, bytes]], tmp: Path, config: Config
        ) -> tuple[list[dict[str, Any]], Any]:
    path = tmp / "limits.pcap"
    with PcapWriter(path) as w:
        w.write_all(frames)
    return replay([path], tmp, config=config, signatures=sigs())


def hits(pipe: Any) -> dict[str, float]:
    """``avmon_limit_hits_total`` by limit, as exposed."""
    registry = CollectorRegistry()
    registry.register(PipelineCollector(pipe))
    out: dict[str, float] = {}
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("avmon_limit_hits_total{"):
            label = line.split('"')[1]
            out[label] = float(line.rsplit(" ", 1)[1])
    return out


# ----------------------------------------------------------------------- config


def test_defaults_and_config(tmp_path: Path) -> None:
    assert load_config(None).limits == Limits()
    path = tmp_path / "avmon.toml"
    path.write_text("[limits]\nreassembly_bytes_total = 1048576\ndns_cache_entries = 100\n")
    lim = load_config(path).limits
    assert lim.reassembly_bytes_total == 1 << 20 and lim.dns_cache_entries == 100
    assert lim.dns_names_per_address == Limits().dns_names_per_address


@pytest.mark.parametrize(("line", "problem"), [
    ("dns_cache_entrys = 5", "key 'limits.dns_cache_entrys': unknown key (did you mean "
                             "'dns_cache_entries'?)"),
    ("waiting_flows = 0", "key 'limits.waiting_flows': must be an integer >= 1"),
    ("sink_pending_alerts = \"many\"", "key 'limits.sink_pending_alerts': must be an integer"),
])
def test_bad_limit_is_one_line_naming_file_and_key(tmp_path: Path, line: str,
                                                   problem: str) -> None:
    path = tmp_path / "avmon.toml"
    path.write_text(f"[flow]\nmax_flows = 10\n\n[limits]\n{line}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}:5: {problem}")


def test_every_limit_is_exposed_at_zero(tmp_path: Path) -> None:
    clock = Clock()
    frames = Tcp(clock, NetPath(CLIENT, SERVER), 50000).open()
    _, pipe = run(frames, tmp_path, load_config(None))
    assert hits(pipe) == dict.fromkeys(PIPELINE_LIMITS, 0.0)


# ----------------------------------------------------------------- reassembly


def stalled_hellos(clock: Clock, count: int) -> list[tuple[int, bytes]]:
    """``count`` connections that send the first 1,000 bytes of a 1.5 KB hello and stop."""
    hello = synth.client_hello(KSN, groups=PQ_GROUPS, seed=5)
    assert len(hello) > 1400
    frames: list[tuple[int, bytes]] = []
    for i in range(count):
        conn = Tcp(clock, NetPath(f"10.20.2.{i + 1}", SERVER), 40000 + i)
        frames += conn.open() + [conn.client(hello[:1000], 0)]
    return frames


def test_total_limit_gives_up_the_oldest_and_still_finds_a_new_hello(tmp_path: Path) -> None:
    clock = Clock()
    frames = stalled_hellos(clock, 20)
    hello = synth.client_hello(KSN, groups=PQ_GROUPS, seed=6)
    late = Tcp(clock, NetPath(CLIENT, SERVER), 50000)
    frames += late.open() + late.pieces(hello, [1000])
    records, pipe = run(frames, tmp_path, limited(reassembly_bytes_total=5 * 1000))
    # 20 flows of 1,000 bytes held against room for 5: 16 given up (the 21st flow's first
    # segment pushes out one more), and the late hello, split in two, is still read whole.
    assert [r["tls"]["sni"] for r in by_type(records, "tls")] == [KSN]
    assert hits(pipe)["reassembly_bytes_total"] == 16
    assert pipe.dissector.stats.held_bytes == 0  # every flow ended: nothing held
    tls_flow = next(f for f in flows(records) if f["src_ip"] == CLIENT)
    assert tls_flow["avmon"]["server_name"] == KSN


def test_without_the_limit_every_stalled_flow_holds_its_bytes(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "stalled.pcap"
    with PcapWriter(path) as w:
        w.write_all(stalled_hellos(clock, 20))
    from monitor.capture.files import CaptureReader
    from monitor.pipeline import Pipeline
    pipe = Pipeline(load_config(None), signatures=sigs())
    for batch in CaptureReader([str(path)]):
        pipe.process(batch)
    assert pipe.dissector.stats.held_bytes == 20 * 1000
    assert hits(pipe)["reassembly_bytes_total"] == 0
    pipe.finish()
    assert pipe.dissector.stats.held_bytes == 0


def test_per_flow_limit(tmp_path: Path) -> None:
    hello = synth.client_hello(KSN, groups=PQ_GROUPS, seed=7)
    clock = Clock()
    conn = Tcp(clock, NetPath(CLIENT, SERVER), 50000)
    # Three segments: after the second the flow holds 1,400 bytes, still short of a hello.
    frames = conn.open() + conn.pieces(hello, [1000, 1400])
    records, pipe = run(frames, tmp_path, limited(reassembly_bytes_per_flow=1200))
    assert by_type(records, "tls") == []
    assert hits(pipe)["reassembly_bytes_per_flow"] == 1
    assert pipe.dissector.stats.gave_up == 1
    # With room for the whole hello the same flow is named.
    records, pipe = run(frames, tmp_path, limited(reassembly_bytes_per_flow=len(hello)))
    assert [r["tls"]["sni"] for r in by_type(records, "tls")] == [KSN]
    assert hits(pipe)["reassembly_bytes_per_flow"] == 0


# ------------------------------------------------------------------------ DNS


def dns_answers(clock: Clock, names_addrs: list[tuple[str, str]]) -> list[tuple[int, bytes]]:
    path = NetPath(CLIENT, "10.20.0.53")
    frames = []
    for i, (name, addr) in enumerate(names_addrs):
        q = synth.dns_query(name, qid=i)
        frames.append(clock(path.udp(True, 30000 + i, 53, q)))
        frames.append(clock(path.udp(False, 53, 30000 + i,
                                     synth.dns_response(name, qid=i, addresses=[addr]))))
    return frames


def test_dns_cache_entries_limit_drops_least_recent(tmp_path: Path) -> None:
    clock = Clock()
    answers = [(f"h{i}.example.net", f"198.51.100.{i + 1}") for i in range(10)]
    records, pipe = run(dns_answers(clock, answers), tmp_path, limited(dns_cache_entries=4))
    assert len(pipe.dns_cache) == 4
    assert hits(pipe)["dns_cache_entries"] == 6
    client = bytes([10, 20, 1, 10])
    t = clock.now
    assert pipe.dns_cache.lookup(client, bytes([198, 51, 100, 10]), t).qname == "h9.example.net"
    assert pipe.dns_cache.lookup(client, bytes([198, 51, 100, 1]), t) is None


def test_dns_names_per_address_limit_keeps_newest(tmp_path: Path) -> None:
    clock = Clock()
    answers = [(f"alias{i}.example.net", "198.51.100.7") for i in range(6)]
    _, pipe = run(dns_answers(clock, answers), tmp_path, limited(dns_names_per_address=2))
    assert hits(pipe)["dns_names_per_address"] == 4
    got = pipe.dns_cache.lookup(bytes([10, 20, 1, 10]), bytes([198, 51, 100, 7]), clock.now)
    assert got.qname == "alias5.example.net"


# ---------------------------------------------------------------------- sinks


def alert(i: int) -> dict[str, Any]:
    return {"event_type": "alert", "flow_id": i, "community_id": f"1:{i}",
            "src_ip": "10.20.1.10", "dest_ip": "203.0.113.7", "timestamp": "",
            "alert": {"signature_id": 1, "signature": "s", "severity": 1,
                      "category": "c", "metadata": {"rule": ["r"], "severity": ["critical"]}},
            "avmon": {"segment": "s", "classification": "SECRET", "vendor": "v",
                      "server_name": f"n{i}"}}


def test_sink_pending_alerts_limit_counts_what_did_not_fit() -> None:
    sink = SyslogSink("udp://127.0.0.1:9", queue_limit=3)  # never started: nothing drains
    for i in range(5):
        sink.send(alert(i))
    assert sink.stats.queue_length == 3
    assert sink.stats.limit_hits == {"sink_pending_alerts": 2, "spool_bytes": 0}
    assert sink.stats.errors == 2  # dropped: syslog has no spool
    sink.close(0)


def test_alertmanager_overflow_goes_to_the_spool_and_a_full_spool_is_counted(
        tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    sink = AlertmanagerSink("http://127.0.0.1:9", spool_dir=spool, spool_max_bytes=8192,
                            queue_limit=1)
    for i in range(200):
        sink.send(alert(i))
    hits_ = sink.stats.limit_hits
    assert hits_["sink_pending_alerts"] == 199
    assert hits_["spool_bytes"] > 0  # 199 spooled alerts do not fit in 8 KB
    assert sink.spool is not None and sink.spool.bytes <= 8192
    sink.close(0)


def test_sink_limit_families_cover_every_limit() -> None:
    from monitor.metrics import sink_families
    [*_, fam] = sink_families({"syslog": SinkStats()})
    assert fam.name == "avmon_alert_sink_limit_hits"
    assert sorted(s.labels["limit"] for s in fam.samples) == sorted(SINK_LIMITS)


def test_fragments_that_never_complete_count_against_the_total(tmp_path: Path) -> None:
    """First fragments whose datagrams never complete are reassembly bytes like any other:
    the oldest are given up once the total is reached."""
    from tests.mutate import fragment_frame
    hello = synth.client_hello(KSN, seed=8)
    clock = Clock()
    frames: list[tuple[int, bytes]] = []
    for i in range(20):
        conn = Tcp(clock, NetPath(f"10.20.3.{i + 1}", SERVER), 41000 + i)
        frames += conn.open()
        ts, segment = conn.client(hello, 0)
        first, *_rest = fragment_frame(segment, [400])  # the rest never comes
        frames.append((ts, first))
    records, pipe = run(frames, tmp_path, limited(reassembly_bytes_total=5 * 1000))
    assert hits(pipe)["reassembly_bytes_total"] == 20 - 5000 // 400  # 400 bytes each
    assert pipe.dissector.stats.held_bytes == 0
    assert by_type(records, "tls") == []
