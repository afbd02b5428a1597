"""The resource limits: every bound on state that traffic can make grow.

An adversary shapes the traffic avmon reads, so every structure that grows with it has a
limit here, set in the ``[limits]`` table of the config (the flow table's in
``flow.max_flows``, the Alertmanager spool's in ``alertmanager.spool_max_bytes``). What
happens when a limit is reached is chosen so that the newest traffic keeps being watched
(the oldest state goes first) and every time it happens is counted, by limit name, in
``avmon_limit_hits_total`` (pipeline limits) or ``avmon_alert_sink_limit_hits_total``
(sink limits). docs/limits.md describes each one.
"""

from __future__ import annotations

from typing import Final

import msgspec

__all__ = ["PIPELINE_LIMITS", "SINK_LIMITS", "Limits"]

#: Label values of ``avmon_limit_hits_total``.
PIPELINE_LIMITS: Final = ("flows", "reassembly_bytes_per_flow", "reassembly_bytes_total",
                          "dns_cache_entries", "dns_names_per_address", "waiting_flows")
#: Label values of ``avmon_alert_sink_limit_hits_total``.
SINK_LIMITS: Final = ("sink_pending_alerts", "spool_bytes")


class Limits(msgspec.Struct, frozen=True):
    """The ``[limits]`` table (defaults fit a sensor with a few hundred MB to spare)."""

    #: Bytes one flow may hold for reassembly (its TCP client-stream prefix, DNS-over-TCP
    #: buffers, QUIC CRYPTO data and IP fragments together); past it the flow stops being
    #: inspected. The default holds the largest ClientHello and DNS message both ways.
    reassembly_bytes_per_flow: int = 256 * 1024
    #: Bytes all flows together may hold for reassembly; past it the flows that have held
    #: bytes longest stop being inspected, until the total is under the limit again.
    reassembly_bytes_total: int = 64 * 1024 * 1024
    #: (client, answer address) pairs in the DNS cache; the least recently answered go.
    dns_cache_entries: int = 65_536
    #: Names kept for one (client, answer address) pair; the oldest answer goes.
    dns_names_per_address: int = 8
    #: Flows waiting for another worker's DNS answers (``--workers``); past it a flow is
    #: judged at once on what this worker knows.
    waiting_flows: int = 100_000
    #: Alerts queued in memory for one sink; past it they go to the spool (Alertmanager)
    #: or are dropped (syslog).
    sink_pending_alerts: int = 10_000
