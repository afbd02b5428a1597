"""The counters the packet path and the sinks keep for the metrics (plain objects: the
packet path does not import the Prometheus client, which :mod:`monitor.metrics` reads
them with at scrape time)."""

from __future__ import annotations

import msgspec

from monitor.limits import SINK_LIMITS

__all__ = ["AvAccounting", "SinkStats"]


class SinkStats(msgspec.Struct):
    """Counters a sink keeps; read at scrape time."""

    sent: int = 0
    errors: int = 0
    queue_length: int = 0
    spool_bytes: int = 0
    #: Alerts that met a sink limit, by limit name (:data:`monitor.limits.SINK_LIMITS`).
    limit_hits: dict[str, int] = msgspec.field(
        default_factory=lambda: dict.fromkeys(SINK_LIMITS, 0))


class AvAccounting(msgspec.Struct):
    """AV flows and bytes sent to AV clouds, by (vendor, jurisdiction, segment, purpose)."""

    flows: dict[tuple[str, str, str, str], int] = msgspec.field(default_factory=dict)
    egress_bytes: dict[tuple[str, str, str, str], int] = msgspec.field(default_factory=dict)
    identifications: dict[str, int] = msgspec.field(default_factory=dict)
