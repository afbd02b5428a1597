"""Alerts: when a classified segment's AV traffic heads to a flagged jurisdiction.

The :class:`AlertEngine` is asked about a flow each time attribution learns something
about it. It finds the client's segment, gathers every jurisdiction basis of the
destination (the vendor's, and from geo data the country of registration, the
geolocation and the ASN registry), asks the policy which rules the flow breaks, and
writes one EVE ``alert`` record per (flow, rule). A rule with an upload threshold keeps
watching the flow and raises a further, escalated alert when the bytes sent to the
server cross it (a sample upload rather than a hash lookup). With ``--evidence DIR`` the
packets of every alerting flow are written to ``DIR/<community-id>.pcap`` beside the
alert JSON, so a responder has the traffic itself.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import msgspec
import numpy as np

from monitor.attribution import Attribution
from monitor.capture.batch import Batch
from monitor.config import SEVERITIES, UNCLASSIFIED, Config
from monitor.eve import flow_header
from monitor.flow.table import Assignment, Flow
from monitor.policy import JurisdictionFact, SegmentMap, Verdict, evaluate

__all__ = ["AlertEngine", "AlertStats", "EvidenceWriter", "GeoLookup"]

ALERT_SCHEMA: Final = 1
CATEGORY: Final = "AV cloud egress to a flagged jurisdiction"
#: Packets kept per flow before it is identified, so its evidence starts at the
#: handshake (a ClientHello split by a small MSS plus the handshake fits easily).
MAX_EVIDENCE_PREBUFFER_PACKETS: Final = 64
#: Bytes of packets written per alerting flow (a large upload is cut here; the cut is
#: recorded in the alert JSON).
MAX_EVIDENCE_BYTES_PER_FLOW: Final = 64 << 20

Emit = Callable[[dict[str, Any]], None]


class GeoFactsLike(Protocol):
    @property
    def country(self) -> str | None: ...
    @property
    def registered_country(self) -> str | None: ...
    @property
    def asn(self) -> int | None: ...
    @property
    def as_org(self) -> str | None: ...
    @property
    def jurisdictions(self) -> tuple[Any, ...]: ...


class GeoLookup(Protocol):
    def lookup(self, ip: str) -> GeoFactsLike: ...


class AlertStats(msgspec.Struct):
    #: (severity, rule id, segment) -> alerts raised.
    alerts: dict[tuple[str, str, str], int] = msgspec.field(default_factory=dict)
    #: exception owner/reason -> flows allowed by it.
    allowed: dict[str, int] = msgspec.field(default_factory=dict)
    escalations: int = 0


class AlertEngine:
    """Evaluates flows against the policy and writes alert records."""

    def __init__(self, config: Config, emit: Emit, geo: GeoLookup | None,
                 evidence: EvidenceWriter | None = None,
                 today: Callable[[], dt.date] = dt.date.today) -> None:
        self.config = config
        self.emit = emit
        self.geo = geo
        self.evidence = evidence
        self.segments = SegmentMap(config.segments)
        self.today = today
        self.stats = AlertStats()
        #: The batch layer being processed (batch, packet index, assignment), so alert
        #: counters can be given as of the alerting frame, not the end of the batch.
        self.context: tuple[Batch, np.ndarray[Any, Any], Assignment] | None = None
        #: The group of each flow in the assignment last asked about (by object id).
        self._groups: tuple[Assignment, dict[int, int]] | None = None
        #: Flows alerted by a rule with an upload threshold, not yet escalated.
        self._watch: dict[int, tuple[Flow, Verdict, dict[str, Any]]] = {}

    def segment_of(self, flow: Flow) -> tuple[str, str]:
        seg = self.segments.lookup(flow.src_addr)
        return (seg.name, seg.classification) if seg else (UNCLASSIFIED, UNCLASSIFIED)

    def check(self, flow: Flow, attr: Attribution, ts_ns: int, frame: int) -> None:
        segment = self.segments.lookup(flow.src_addr)
        if segment is None:
            return
        geo = self.geo.lookup(flow.dest_ip) if self.geo is not None else None
        facts: list[JurisdictionFact] = []
        if attr.vendor is not None:
            facts.append(JurisdictionFact(attr.vendor.jurisdiction, "vendor",
                                          f"signatures:{attr.vendor.vendor_id}"))
        if geo is not None:
            facts.extend(JurisdictionFact(j.code, j.basis, getattr(j, "source", ""))
                         for j in geo.jurisdictions)
        flow.ext["jurisdictions"] = [_fact(f) for f in facts]
        if geo is not None:
            flow.ext["geo"] = {"country": geo.country,
                               "registered_country": geo.registered_country,
                               "asn": geo.asn, "as_org": geo.as_org}
        vendor_id = attr.vendor.vendor_id if attr.vendor else None
        verdicts, allowed = evaluate(self.config.policy, segment, vendor_id, attr.server_name,
                                     tuple(facts), self.today())
        for exc in allowed:
            key = f"{exc.owner}: {exc.reason}"
            self.stats.allowed[key] = self.stats.allowed.get(key, 0) + 1
        done: set[str] = flow.ext.setdefault("alerted_rules", set())
        for verdict in verdicts:
            if verdict.rule.id in done:
                continue
            done.add(verdict.rule.id)
            detail = self._detail(flow, attr, segment.name, segment.classification, facts,
                                  verdict, geo)
            self._raise(flow, verdict, verdict.rule.severity, detail, ts_ns, frame,
                        escalation=False)
            threshold = verdict.rule.upload_threshold_bytes
            crossed = flow.ext.get("crossed", {}).get(threshold) if threshold else None
            if crossed is not None:  # while the flow waited to be judged
                self._escalate(flow, verdict, detail, *crossed)
            elif threshold:
                self._watch[id(flow)] = (flow, verdict, detail)

    def after_batch(self, batch: Batch,
                    assigned: list[tuple[np.ndarray[Any, Any], Assignment]],
                    unjudged: Sequence[Flow] = ()) -> None:
        """Escalate watched flows whose upload crossed their rule's threshold in this
        batch, stamped with the packet that crossed it.

        ``unjudged``: flows that settled but wait to be judged (for other workers' DNS
        answers). Where their upload crossed a threshold is kept, so that the escalation
        raised once they are judged is stamped as if they had been watched all along."""
        thresholds = {r.upload_threshold_bytes for r in self.config.policy.rules} - {0} \
            if unjudged else set()
        if thresholds:
            lowest = min(thresholds)
            for flow in unjudged:
                if flow.bytes_toserver >= lowest and self.segments.lookup(flow.src_addr):
                    self._note_crossings(flow, thresholds, batch, assigned)
        if not self._watch:
            return
        due = {k: w for k, w in self._watch.items()
               if w[0].bytes_toserver >= w[1].rule.upload_threshold_bytes}
        if not due:
            return
        for index, assign in assigned:
            where = {id(f): gi for gi, f in enumerate(assign.flows) if id(f) in due}
            for key, gi in where.items():
                flow, verdict, detail = due.pop(key)
                del self._watch[key]
                ts_ns, frame = _crossing(flow, verdict.rule.upload_threshold_bytes, batch,
                                         index, assign, gi)
                self.context = (batch, index, assign)
                self._escalate(flow, verdict, detail, ts_ns, frame)
                self.context = None
        for key, (flow, verdict, detail) in due.items():  # crossed in an earlier layer
            del self._watch[key]
            self._escalate(flow, verdict, detail, flow.last_ns, flow.first_frame)

    def _note_crossings(self, flow: Flow, thresholds: set[int], batch: Batch,
                        assigned: list[tuple[np.ndarray[Any, Any], Assignment]]) -> None:
        """Keep, for each of the rules' ``thresholds`` that ``flow``'s upload has now
        crossed, the packet :meth:`after_batch` would have stamped an escalation with, and
        the flow's counters there (in ``flow.ext["crossed"]`` and ``["counts_at"]``)."""
        crossed: dict[int, tuple[int, int]] = flow.ext.setdefault("crossed", {})
        for threshold in thresholds:
            if threshold in crossed or flow.bytes_toserver < threshold:
                continue
            stamp = flow.last_ns, flow.first_frame
            for index, assign in assigned:
                gi = self._group_of(flow, assign)
                if gi is not None:
                    stamp = _crossing(flow, threshold, batch, index, assign, gi)
                    self.context = (batch, index, assign)
                    break
            crossed[threshold] = stamp
            flow.ext.setdefault("counts_at", {})[stamp[1]] = self.counts_at(flow, stamp[1])
            self.context = None

    def flow_ended(self, flow: Flow) -> None:
        watched = self._watch.pop(id(flow), None)
        if watched is not None and flow.bytes_toserver >= watched[1].rule.upload_threshold_bytes:
            self._escalate(flow, watched[1], watched[2], flow.last_ns, flow.first_frame)
        if self.evidence is not None:
            self.evidence.flow_ended(flow)

    def _escalate(self, flow: Flow, verdict: Verdict, detail: dict[str, Any], ts_ns: int,
                  frame: int) -> None:
        self.stats.escalations += 1
        detail = dict(detail)
        detail["escalation"] = {"reason": "upload_threshold",
                                "threshold_bytes": verdict.rule.upload_threshold_bytes,
                                "bytes_toserver": self.counts_at(flow, frame)[2]}
        self._raise(flow, verdict, verdict.rule.escalate_to, detail, ts_ns, frame,
                    escalation=True)

    def counts_at(self, flow: Flow, frame: int) -> tuple[int, int, int, int]:
        """The flow's counters (packets/bytes to server/client) up to and including
        ``frame``: the flow table has already counted the whole batch."""
        pinned: dict[int, tuple[int, int, int, int]] | None = flow.ext.get("counts_at")
        if pinned is not None and frame in pinned:
            # taken when the flow settled or crossed a threshold while it waited for a name
            return pinned[frame]
        pts, ptc = flow.pkts_toserver, flow.pkts_toclient
        bts, btc = flow.bytes_toserver, flow.bytes_toclient
        if self.context is None:
            return pts, ptc, bts, btc
        batch, index, assign = self.context
        gi = self._group_of(flow, assign)
        if gi is None:
            return pts, ptc, bts, btc
        sel = np.flatnonzero(assign.group == gi)
        later = index[sel] > frame - batch.first_frame
        if not later.any():
            return pts, ptc, bts, btc
        up = assign.to_server[sel] & later
        down = ~assign.to_server[sel] & later
        wl = batch.wirelens[index[sel]]
        return (pts - int(up.sum()), ptc - int(down.sum()), bts - int(wl[up].sum()),
                btc - int(wl[down].sum()))

    def _group_of(self, flow: Flow, assign: Assignment) -> int | None:
        """The group of ``flow`` in ``assign`` (None: it has no packet there). Many flows
        are asked about in one layer: its groups are indexed once."""
        groups = self._groups
        if groups is None or groups[0] is not assign:
            # the flows stay alive while the assignment is held here: their ids are unique
            groups = self._groups = (assign, {id(f): i for i, f in enumerate(assign.flows)})
        return groups[1].get(id(flow))

    def _detail(self, flow: Flow, attr: Attribution, segment: str, classification: str,
                facts: list[JurisdictionFact], verdict: Verdict,
                geo: GeoFactsLike | None) -> dict[str, Any]:
        d: dict[str, Any] = {"schema": ALERT_SCHEMA, "rule": verdict.rule.id,
                             "segment": segment, "classification": classification}
        v = attr.vendor
        if v is not None:
            d.update(vendor=v.vendor_id, vendor_name=v.vendor_name, purpose=v.purpose,
                     signature_id=v.signature_id, signature_rev=v.rev,
                     match={"basis": v.basis, "pattern": v.pattern,
                            "confidence": v.confidence})
        if attr.server_name:
            d["server_name"] = attr.server_name
        if attr.indicator is not None:
            d["indicator"] = {"type": attr.indicator.type, "value": attr.indicator.value}
        d["jurisdictions"] = [_fact(f) for f in facts]
        d["flagged"] = [_fact(f) for f in verdict.flagged]
        if geo is not None:
            d["geo"] = {"country": geo.country, "registered_country": geo.registered_country,
                        "asn": geo.asn, "as_org": geo.as_org}
        if attr.other_names:
            d["other_names"] = list(attr.other_names)
        return d

    def _raise(self, flow: Flow, verdict: Verdict, severity: str, detail: dict[str, Any],
               ts_ns: int, frame: int, *, escalation: bool) -> None:
        rule = verdict.rule
        rec = flow_header(flow, "alert", ts_ns)
        rec["pcap_cnt"] = frame
        app = flow.ext.get("app_proto")
        if app:
            rec["app_proto"] = app
        codes = sorted({f.code for f in verdict.flagged})
        title = f"AVMON {rule.description}"
        if escalation:
            title += " (upload threshold crossed)"
        rec["alert"] = {
            "action": "allowed",
            "gid": 1,
            "signature_id": rule.sid,
            "rev": 1,
            "signature": f"{title}: {detail.get('vendor_name', 'unknown vendor')} "
                         f"({'/'.join(codes)})",
            "category": CATEGORY,
            "severity": SEVERITIES.index(severity) + 1,
        }
        pts, ptc, bts, btc = self.counts_at(flow, frame)
        rec["flow"] = {"pkts_toserver": pts, "pkts_toclient": ptc, "bytes_toserver": bts,
                       "bytes_toclient": btc, "start": _iso(flow.first_ns)}
        rec["avmon"] = dict(detail, severity=severity)
        flow.ext["alerted"] = True
        key = (severity, rule.id, detail["segment"])
        self.stats.alerts[key] = self.stats.alerts.get(key, 0) + 1
        self.emit(rec)
        if self.evidence is not None:
            self.evidence.alert(flow, rec)


def _crossing(flow: Flow, threshold: int, batch: Batch, index: np.ndarray[Any, Any],
              assign: Assignment, gi: int) -> tuple[int, int]:
    """Time and frame of the packet of group ``gi`` (``flow``) in this layer with which its
    bytes to the server reached ``threshold`` (they have: the table counted the batch);
    its first packet to the server here if they had before it."""
    sel = np.flatnonzero((assign.group == gi) & assign.to_server)
    pkt = index[sel]
    sent = np.cumsum(batch.wirelens[pkt])
    before = flow.bytes_toserver - int(sent[-1]) if sent.shape[0] else 0
    crossing = np.searchsorted(sent, threshold - before)
    j = int(pkt[min(int(crossing), pkt.shape[0] - 1)]) if pkt.shape[0] else 0
    return int(batch.ts_ns[j]), batch.first_frame + j


def _fact(f: JurisdictionFact) -> dict[str, str]:
    out = {"code": f.code, "basis": f.basis}
    if f.source:
        out["source"] = f.source
    return out


def _iso(ns: int) -> str:
    from monitor.eve import eve_time

    return eve_time(ns)


class EvidenceWriter:
    """Per alerting flow: a pcap of its packets and its alert records, by Community ID."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.files_written = 0

    def track(self, flow: Flow) -> None:
        """Start keeping ``flow``'s packets (until it is identified or gives up)."""
        flow.ext.setdefault("evidence", _Evidence())

    def process(self, batch: Batch, index: np.ndarray[Any, Any], assign: Assignment) -> None:
        """Record the packets of tracked flows from one decoded layer.

        ``index`` maps the layer's packets to the batch's (tunnel layers hold a subset).
        A tracked flow that has been identified without alerting stops being tracked.
        """
        flows = assign.flows
        if not flows:
            return
        tracked = np.fromiter(("evidence" in f.ext for f in flows), dtype=np.bool_,
                              count=len(flows))
        if not tracked.any():
            return
        for gi, held in assign.adopted:  # fragments that came before their first one
            if tracked[gi]:
                flows[gi].ext["evidence"].add(held.ts_ns, held.wirelen, held.packet,
                                              held.linktype)
        g = assign.group
        sel = np.flatnonzero((g >= 0) & tracked[np.where(g >= 0, g, 0)])
        buf = memoryview(batch.buffer)
        for j in sel.tolist():
            flow = flows[int(g[j])]
            ev: _Evidence = flow.ext["evidence"]
            pidx = int(index[j])
            off = int(batch.offsets[pidx])
            ev.add(int(batch.ts_ns[pidx]), int(batch.wirelens[pidx]),
                   bytes(buf[off:off + int(batch.caplens[pidx])]), int(batch.linktypes[pidx]))
        for gi in np.flatnonzero(tracked).tolist():
            flow = flows[gi]
            kept: _Evidence | None = flow.ext.get("evidence")
            if kept is not None and not kept.alerted and not flow.inspect:
                del flow.ext["evidence"]

    def alert(self, flow: Flow, record: dict[str, Any]) -> None:
        ev: _Evidence = flow.ext.setdefault("evidence", _Evidence())
        if not ev.alerted:
            ev.open(self._base(flow))
            self.files_written += 1
        ev.alerted = True
        ev.flush()
        with open(ev.base.with_suffix(".json"), "a", encoding="utf-8") as fh:  # type: ignore[union-attr]
            fh.write(json.dumps(record, sort_keys=True) + "\n")

    def flow_ended(self, flow: Flow) -> None:
        ev: _Evidence | None = flow.ext.pop("evidence", None)
        if ev is not None:
            ev.close()

    def _base(self, flow: Flow) -> Path:
        safe = flow.community_id.replace("/", "_").replace("+", "-").replace(":", "_")
        base = self.directory / safe
        if base.with_suffix(".pcap").exists():
            base = self.directory / f"{safe}-{flow.flow_id}"
        return base


class _Evidence:
    __slots__ = ("pending", "alerted", "base", "fh", "written", "cut", "linktype")

    def __init__(self) -> None:
        self.pending: list[tuple[int, int, bytes]] = []
        self.alerted = False
        self.base: Path | None = None
        self.fh: Any = None
        self.written = 0
        self.cut = False
        self.linktype = 1

    def add(self, ts_ns: int, wirelen: int, data: bytes, linktype: int) -> None:
        if not self.pending and self.fh is None:
            self.linktype = linktype
        if self.fh is not None:
            self._write(ts_ns, wirelen, data)
        elif len(self.pending) < MAX_EVIDENCE_PREBUFFER_PACKETS:
            self.pending.append((ts_ns, wirelen, data))

    def open(self, base: Path) -> None:
        self.base = base
        fd = os.open(base.with_suffix(".pcap"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        self.fh = os.fdopen(fd, "wb")
        # Classic pcap, nanosecond resolution, the flow's link type.
        self.fh.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, self.linktype))

    def flush(self) -> None:
        for ts, wl, data in self.pending:
            self._write(ts, wl, data)
        self.pending.clear()
        if self.fh is not None:
            self.fh.flush()

    def _write(self, ts_ns: int, wirelen: int, data: bytes) -> None:
        if self.written + len(data) > MAX_EVIDENCE_BYTES_PER_FLOW:
            self.cut = True
            return
        sec, nsec = divmod(ts_ns, 10**9)
        self.fh.write(struct.pack("<IIII", sec, nsec, len(data), wirelen) + data)
        self.written += len(data)

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None
