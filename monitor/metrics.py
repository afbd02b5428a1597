"""Prometheus metrics: every avmon metric, declared here, against an injected registry.

The packet path keeps plain counters in the stages' stats objects; a custom collector
turns them into metric families when Prometheus scrapes (or when a replay writes its
textfile), so measuring costs nothing per packet. Label values come only from closed
sets: configured segments, signature vendors and their jurisdictions, purposes,
indicator types, protocols, parse-error reasons, rule ids, severities, sink names.
Never an address or a name from the wire. Known label sets are emitted at zero from the
start, so dashboards show 0 rather than "no data".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor.accounting import AvAccounting, SinkStats
from monitor.config import UNCLASSIFIED
from monitor.decode import Undecoded
from monitor.limits import PIPELINE_LIMITS, SINK_LIMITS

if TYPE_CHECKING:
    from monitor.pipeline import Pipeline

__all__ = ["METRIC_NAMES", "AvAccounting", "MergedCollector", "PipelineCollector", "SinkStats",
           "build_registry", "sink_families"]

PROTOCOLS: Final = ("dns", "tls", "quic", "http", "ip")
PARSE_REASONS: Final = ("truncated", "trailing_data", "limit", "bad_value", "malformed",
                        "decrypt", "version")
INDICATORS: Final = ("sni", "quic", "dns", "http", "connect", "ja4", "ip")
PURPOSES: Final = ("lookup", "telemetry", "sample-upload", "update", "console", "unknown")
FLOW_END_REASONS: Final = ("timeout", "closed", "active_timeout", "evicted", "shutdown")

#: Every metric avmon exposes (dashboards and rules may only use these; a test checks).
METRIC_NAMES: Final = (
    "avmon_build_info",
    "avmon_packets_total",
    "avmon_bytes_total",
    "avmon_capture_dropped_packets_total",
    "avmon_capture_damaged_files_total",
    "avmon_decode_failures_total",
    "avmon_tunnelled_packets_total",
    "avmon_last_packet_timestamp_seconds",
    "avmon_processing_lag_seconds",
    "avmon_flows_active",
    "avmon_flows_created_total",
    "avmon_flows_ended_total",
    "avmon_flow_table_evictions_total",
    "avmon_fragments_unattributed_total",
    "avmon_dns_cache_entries",
    "avmon_dns_cache_evictions_total",
    "avmon_protocol_units_total",
    "avmon_parse_errors_total",
    "avmon_dissection_abandoned_total",
    "avmon_internal_errors_total",
    "avmon_reassembly_bytes",
    "avmon_limit_hits_total",
    "avmon_identifications_total",
    "avmon_av_flows_total",
    "avmon_av_egress_bytes_total",
    "avmon_alerts_total",
    "avmon_alert_escalations_total",
    "avmon_alerts_allowed_by_exception_total",
    "avmon_alert_sink_sent_total",
    "avmon_alert_sink_errors_total",
    "avmon_alert_sink_queue_length",
    "avmon_alert_spool_bytes",
    "avmon_alert_sink_limit_hits_total",
    "avmon_signatures_info",
    "avmon_signature_vendors",
    "avmon_geo_database_build_timestamp_seconds",
    "avmon_geo_reload_errors_total",
    "avmon_config_reload_errors_total",
)


class PipelineCollector(Collector):
    """Reads a running pipeline's counters at scrape time."""

    def __init__(self, pipeline: Pipeline, *, source: str = "replay",
                 sinks: Callable[[], dict[str, SinkStats]] = dict,
                 dropped: Callable[[], int] = lambda: 0,
                 damaged: Callable[[], int] = lambda: 0,
                 live: bool = False, version: str = "") -> None:
        self.pipe = pipeline
        self.source = source
        self.sinks = sinks
        self.dropped = dropped
        self.damaged = damaged
        self.live = live
        self.version = version
        self.config_reload_errors = 0

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:  # noqa: C901 - one family after another
        p = self.pipe
        st = p.stats
        src = [self.source]

        m: GaugeMetricFamily | CounterMetricFamily = GaugeMetricFamily(
            "avmon_build_info", "avmon version.", labels=["version"])
        m.add_metric([self.version], 1)
        yield m
        m = CounterMetricFamily("avmon_packets", "Frames read from capture sources.",
                                labels=["source"])
        m.add_metric(src, st.packets)
        yield m
        m = CounterMetricFamily("avmon_bytes", "Frame bytes (on the wire) read.",
                                labels=["source"])
        m.add_metric(src, st.bytes)
        yield m
        m = CounterMetricFamily("avmon_capture_dropped_packets",
                                "Packets the capture source lost (kernel drops on live "
                                "capture).", labels=["source"])
        m.add_metric(src, self.dropped())
        yield m
        m = CounterMetricFamily("avmon_capture_damaged_files",
                                "Capture files read only up to damage.")
        m.add_metric([], self.damaged())
        yield m
        m = CounterMetricFamily("avmon_decode_failures", "Frames without L3/L4 columns.",
                                labels=["reason"])
        undecoded = dict(st.undecoded)
        for r in Undecoded:
            if r != Undecoded.OK:
                m.add_metric([r.label], undecoded.get(r.label, 0))
        yield m
        m = CounterMetricFamily("avmon_tunnelled_packets", "Packets found inside tunnels.")
        m.add_metric([], st.tunnelled_packets)
        yield m
        m = GaugeMetricFamily("avmon_last_packet_timestamp_seconds",
                              "Capture time of the latest packet processed.")
        m.add_metric([], st.last_ns / 1e9)
        yield m
        m = GaugeMetricFamily("avmon_processing_lag_seconds",
                              "Wall-clock time minus the latest packet's capture time "
                              "(live capture; 0 for replays).")
        m.add_metric([], max(time.time() - st.last_ns / 1e9, 0.0)
                     if self.live and st.last_ns else 0.0)
        yield m

        ts = p.table.stats
        m = GaugeMetricFamily("avmon_flows_active", "Flows in the flow table.")
        m.add_metric([], len(p.table))
        yield m
        m = CounterMetricFamily("avmon_flows_created", "Flows created.")
        m.add_metric([], ts.flows_created)
        yield m
        m = CounterMetricFamily("avmon_flows_ended", "Flow records written, by reason.",
                                labels=["reason"])
        ended = dict(getattr(p.stats, "flows_by_reason", {}))
        for reason in FLOW_END_REASONS:
            m.add_metric([reason], ended.get(reason, 0))
        yield m
        m = CounterMetricFamily("avmon_flow_table_evictions",
                                "Flows written out early because the table was full.")
        m.add_metric([], ts.flows_evicted)
        yield m
        m = CounterMetricFamily("avmon_fragments_unattributed",
                                "IP fragments that could not be given to a flow.")
        m.add_metric([], ts.fragments_unattributed)
        yield m
        m = GaugeMetricFamily("avmon_dns_cache_entries",
                              "(client, address) pairs in the DNS naming cache.")
        m.add_metric([], len(p.dns_cache))
        yield m
        m = CounterMetricFamily("avmon_dns_cache_evictions",
                                "DNS cache entries dropped because the cache was full.")
        m.add_metric([], p.dns_cache.evictions)
        yield m

        ds = p.dissector.stats
        m = CounterMetricFamily("avmon_protocol_units", "Protocol units dissected.",
                                labels=["protocol"])
        m.add_metric(["tls"], ds.tls_client_hellos)
        m.add_metric(["quic"], ds.quic_client_hellos)
        m.add_metric(["http"], ds.http_requests)
        m.add_metric(["dns"], ds.dns_messages)
        yield m
        m = CounterMetricFamily("avmon_parse_errors", "Protocol units a parser rejected.",
                                labels=["protocol", "reason"])
        errors = dict(ds.parse_errors)
        for proto in PROTOCOLS:
            for reason in PARSE_REASONS:
                m.add_metric([proto, reason], errors.get((proto, reason), 0))
        yield m
        m = CounterMetricFamily("avmon_dissection_abandoned",
                                "Flows no longer inspected at a cap, nothing found.")
        m.add_metric([], ds.gave_up)
        yield m
        m = CounterMetricFamily("avmon_internal_errors",
                                "Packets whose dissection failed on a bug (see the log); the "
                                "flow was left alone and the rest went on.")
        m.add_metric([], ds.internal_errors)
        yield m
        m = GaugeMetricFamily("avmon_reassembly_bytes",
                              "Bytes flows hold for reassembly (limits.reassembly_bytes_total).")
        m.add_metric([], ds.held_bytes)
        yield m
        m = CounterMetricFamily("avmon_limit_hits",
                                "Times a resource limit acted (docs/limits.md), by limit.",
                                labels=["limit"])
        hits = p.limit_hits()
        for limit in PIPELINE_LIMITS:
            m.add_metric([limit], hits[limit])
        yield m

        av = p.av
        m = CounterMetricFamily("avmon_identifications",
                                "AV flows identified, by the indicator that named them.",
                                labels=["indicator"])
        ids = dict(av.identifications)
        for ind in INDICATORS:
            m.add_metric([ind], ids.get(ind, 0))
        yield m
        flows = CounterMetricFamily("avmon_av_flows", "Flows attributed to an AV vendor.",
                                    labels=["vendor", "jurisdiction", "segment", "purpose"])
        egress = CounterMetricFamily("avmon_av_egress_bytes",
                                     "Bytes sent to AV vendors' endpoints (client to server).",
                                     labels=["vendor", "jurisdiction", "segment", "purpose"])
        f_counts = dict(av.flows)
        b_counts = dict(av.egress_bytes)
        for key in self._av_keys():
            flows.add_metric(list(key), f_counts.get(key, 0))
            egress.add_metric(list(key), b_counts.get(key, 0))
        yield flows
        yield egress

        al = p.alerts.stats
        m = CounterMetricFamily("avmon_alerts", "Alerts raised.",
                                labels=["severity", "rule", "segment"])
        raised = dict(al.alerts)
        for rule in p.config.policy.rules:
            for seg in p.config.segments:
                if seg.classification not in rule.classifications:
                    continue
                for sev in {rule.severity, rule.escalate_to}:
                    m.add_metric([sev, rule.id, seg.name], raised.get((sev, rule.id, seg.name),
                                                                        0))
        for (sev, rid, seg_name), n in raised.items():
            rule_obj = next((r for r in p.config.policy.rules if r.id == rid), None)
            if rule_obj is None or sev not in (rule_obj.severity, rule_obj.escalate_to):
                m.add_metric([sev, rid, seg_name], n)
        yield m
        m = CounterMetricFamily("avmon_alert_escalations", "Escalated (upload) alerts.")
        m.add_metric([], al.escalations)
        yield m
        m = CounterMetricFamily("avmon_alerts_allowed_by_exception",
                                "Flows that broke a rule but matched an exception in force.")
        m.add_metric([], sum(al.allowed.values()))
        yield m

        yield from sink_families(self.sinks())

        sigs = p.signatures
        m = GaugeMetricFamily("avmon_signatures_info", "The loaded signature set.",
                              labels=["version"])
        m.add_metric([sigs.version], 1)
        yield m
        m = GaugeMetricFamily("avmon_signature_vendors", "Vendors in the signature set.")
        m.add_metric([], len(sigs.vendors))
        yield m
        m = GaugeMetricFamily("avmon_geo_database_build_timestamp_seconds",
                              "Build time of each geo database (staleness).",
                              labels=["database"])
        geo = p.alerts.geo
        reload_errors = 0
        if geo is not None and hasattr(geo, "databases"):
            for info in geo.databases():
                m.add_metric([info.name], float(info.build_timestamp))
                reload_errors += 1 if getattr(info, "reload_error", None) else 0
        yield m
        m = CounterMetricFamily("avmon_geo_reload_errors",
                                "Geo database reloads rejected (old data kept).")
        m.add_metric([], reload_errors)
        yield m
        m = CounterMetricFamily("avmon_config_reload_errors",
                                "Configuration/signature reloads rejected (old set kept).")
        m.add_metric([], self.config_reload_errors)
        yield m

    def _av_keys(self) -> Iterator[tuple[str, str, str, str]]:
        """Every (vendor, jurisdiction, segment, purpose) the configuration can produce."""
        segments = [s.name for s in self.pipe.config.segments] + [UNCLASSIFIED]
        seen: set[tuple[str, str, str, str]] = set()
        for vendor in self.pipe.signatures.vendors:
            purposes = sorted({n.purpose for n in vendor.names} | {"unknown"})
            for seg in segments:
                for purpose in purposes:
                    key = (vendor.id, vendor.jurisdiction, seg, purpose)
                    seen.add(key)
                    yield key
        for key in list(self.pipe.av.flows):
            if key not in seen:
                yield key


def sink_families(sinks: dict[str, SinkStats]) -> list[Metric]:
    """The alert sinks' metric families."""
    sent = CounterMetricFamily("avmon_alert_sink_sent", "Alerts delivered by a sink.",
                               labels=["sink"])
    errs = CounterMetricFamily("avmon_alert_sink_errors", "Sink delivery failures.",
                               labels=["sink"])
    queue = GaugeMetricFamily("avmon_alert_sink_queue_length",
                              "Alerts waiting in a sink's queue.", labels=["sink"])
    spool = GaugeMetricFamily("avmon_alert_spool_bytes",
                              "Bytes in a sink's on-disk spool.", labels=["sink"])
    limits = CounterMetricFamily("avmon_alert_sink_limit_hits",
                                 "Alerts that met a sink limit (docs/limits.md).",
                                 labels=["sink", "limit"])
    for name, s in sorted(sinks.items()):
        sent.add_metric([name], s.sent)
        errs.add_metric([name], s.errors)
        queue.add_metric([name], s.queue_length)
        spool.add_metric([name], s.spool_bytes)
        for limit in SINK_LIMITS:
            limits.add_metric([name, limit], s.limit_hits.get(limit, 0))
    return [sent, errs, queue, spool, limits]


#: Families that describe the whole sensor rather than add up over workers (every worker
#: loads the same signatures, geo data and configuration): merged with max, not sum.
SHARED_FAMILIES: Final = frozenset({
    "avmon_build_info", "avmon_last_packet_timestamp_seconds",
    "avmon_processing_lag_seconds", "avmon_signatures_info", "avmon_signature_vendors",
    "avmon_geo_database_build_timestamp_seconds", "avmon_geo_reload_errors",
    "avmon_config_reload_errors",
})
_SINK_FAMILIES: Final = frozenset({"avmon_alert_sink_sent", "avmon_alert_sink_errors",
                                   "avmon_alert_sink_queue_length", "avmon_alert_spool_bytes",
                                   "avmon_alert_sink_limit_hits"})


class MergedCollector(Collector):
    """The metrics of several worker processes as one sensor's: each worker's latest
    snapshot (its collector's families) summed per series, or the max for
    :data:`SHARED_FAMILIES`; the sinks' families come from this process."""

    def __init__(self, snapshots: Callable[[], list[list[Metric]]],
                 sinks: Callable[[], dict[str, SinkStats]] = dict,
                 damaged: Callable[[], int] | None = None) -> None:
        self.snapshots = snapshots
        self.sinks = sinks
        #: Damaged capture files, when this process reads the input for the workers.
        self.damaged = damaged

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, tuple[Metric, dict[tuple[str, tuple[tuple[str, str], ...]],
                                              float]]] = {}
        for families in self.snapshots():
            for fam in families:
                if fam.name in _SINK_FAMILIES:
                    continue
                if fam.name not in merged:
                    merged[fam.name] = (Metric(fam.name, fam.documentation, fam.type), {})
                values = merged[fam.name][1]
                shared = fam.name in SHARED_FAMILIES
                for sample in fam.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    if key not in values:
                        values[key] = sample.value
                    elif shared:
                        values[key] = max(values[key], sample.value)
                    else:
                        values[key] += sample.value
        for metric, values in merged.values():
            if metric.name == "avmon_capture_damaged_files" and self.damaged is not None:
                values = {("avmon_capture_damaged_files_total", ()): self.damaged()}
            for (name, labels), value in values.items():
                metric.add_sample(name, dict(labels), value)
            yield metric
        yield from sink_families(self.sinks())


def build_registry(collector: Collector) -> CollectorRegistry:
    """A registry holding avmon's collector (and nothing global)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
