"""The pieces `avmon live --workers` is built from: DNS names shared between workers
with watermarks, an order-independent DNS cache, and metrics summed over workers.
(The whole, against the kernel's fan-out, is in test_live_vs_replay and test_ring.)"""

from __future__ import annotations

import itertools
import multiprocessing
import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from monitor.attribution import DnsCache
from monitor.limits import Limits
from monitor.metrics import MergedCollector, SinkStats
from monitor.workers import END, DnsExchange, SharedDnsCache, WorkerDns

CLIENT, ADDR = bytes([10, 0, 0, 5]), bytes([192, 0, 2, 7])
ANSWERS = [("a.example", 100), ("b.example", 200), ("a.example", 300), ("c.example", 50)]


def test_dns_cache_answers_do_not_depend_on_arrival_order() -> None:
    results = set()
    for order in itertools.permutations(ANSWERS):
        cache = DnsCache()
        for name, seen in order:
            cache.add(CLIENT, ADDR, name, (name,), 60, seen * 10**9)
        results.add(tuple(
            (e.qname, e.seen_ns) if (e := cache.lookup(CLIENT, ADDR, t * 10**9)) else None
            for t in (40, 60, 150, 250, 350)))
    # One entry per name: the later answer for a.example replaces the earlier one, so at
    # 150 s nothing is valid, in whatever order the answers arrived.
    assert results == {(None, ("c.example", 50 * 10**9), None, ("b.example", 200 * 10**9),
                        ("a.example", 300 * 10**9))}


def _wait(predicate: object, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_names_reach_the_other_worker_before_its_watermark_says_so() -> None:
    exchange = DnsExchange(2, multiprocessing.get_context("fork"))
    caches = [SharedDnsCache(Limits()), SharedDnsCache(Limits())]
    ends = [WorkerDns(exchange, i, caches[i]) for i in range(2)]
    try:
        # Worker 1 has published nothing: worker 0 may not judge anything yet.
        assert not ends[0].complete(1)
        caches[0].add(CLIENT, ADDR, "ds.kaspersky-labs.com", ("ds.kaspersky-labs.com",), 30,
                      5 * 10**9)
        assert caches[0].outbox
        ends[0].publish(6 * 10**9)
        ends[1].publish(6 * 10**9)
        assert not caches[0].outbox
        # Worker 1 knows worker 0 has passed t=6 s; once it says complete, the name is in.
        assert _wait(lambda: ends[1].complete(6 * 10**9))
        hit = caches[1].lookup(CLIENT, ADDR, 6 * 10**9)
        assert hit is not None and hit.qname == "ds.kaspersky-labs.com"
        assert not caches[1].outbox  # a shared entry is not sent back
        assert not ends[1].complete(7 * 10**9)  # worker 0 has not got that far
        ends[0].publish(END)  # done
        assert ends[1].complete(10**18)
    finally:
        for end in ends:
            end.close()


def _snapshot(packets: int, version: str, lag: float) -> list[object]:
    build = GaugeMetricFamily("avmon_build_info", "v", labels=["version"])
    build.add_metric([version], 1)
    pk = CounterMetricFamily("avmon_packets", "p", labels=["source"])
    pk.add_metric(["ring"], packets)
    lag_m = GaugeMetricFamily("avmon_processing_lag_seconds", "l")
    lag_m.add_metric([], lag)
    sink = CounterMetricFamily("avmon_alert_sink_sent", "s", labels=["sink"])
    return [build, pk, lag_m, sink]


def test_merged_metrics_add_up_counters_and_keep_shared_ones() -> None:
    snaps = [_snapshot(10, "0.1.0", 0.5), _snapshot(32, "0.1.0", 2.0)]
    merged = MergedCollector(lambda: snaps,  # type: ignore[arg-type, return-value]
                             sinks=lambda: {"syslog": SinkStats(sent=3)})
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for m in merged.collect() for s in m.samples}
    assert values[("avmon_packets_total", (("source", "ring"),))] == 42
    assert values[("avmon_build_info", (("version", "0.1.0"),))] == 1
    assert values[("avmon_processing_lag_seconds", ())] == 2.0
    # sinks live in the parent: its numbers, not the workers' (empty) ones
    assert values[("avmon_alert_sink_sent_total", (("sink", "syslog"),))] == 3
