"""The replay/live pipeline: batches in, flows, events and alerts out.

``Pipeline.process`` takes one batch from any source through decode, the flow table, the
dissectors, attribution and policy; ``Pipeline.finish`` ends every open flow. The
pipeline owns no I/O of its own: records go to the sinks it is given.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

from monitor.accounting import AvAccounting
from monitor.alerts import AlertEngine, EvidenceWriter, GeoLookup
from monitor.attribution import Attribution, DnsCache, DnsName, attribute
from monitor.capture.batch import Batch
from monitor.config import Config, load_config
from monitor.decode import Columns, Proto, Undecoded, decode_all
from monitor.dissect import DNS_PORTS, Dissector, with_attr
from monitor.eve import EveWriter, flow_record, prepare_headers
from monitor.flow.table import Assignment, Flow, FlowTable, FlowTimeouts
from signatures import SignatureSet, load_signature_set

__all__ = ["Pipeline", "PipelineStats", "avmon_object"]

_REASONS: Final = [r for r in Undecoded if r != Undecoded.OK]
log = logging.getLogger("avmon.pipeline")
#: Longest a flow waits for other workers' DNS answers before it is judged anyway.
WAIT_SECONDS: Final = 3.0
#: Entries kept by each memo of answers per signature set (name facts, attributions).
MEMO_ENTRIES: Final = 65_536


class PipelineStats(msgspec.Struct):
    packets: int = 0
    bytes: int = 0
    first_ns: int = 0
    last_ns: int = 0
    tunnelled_packets: int = 0
    flows_ended: int = 0
    #: Packets with no L3/L4 columns, by reason label.
    undecoded: dict[str, int] = msgspec.field(
        default_factory=lambda: {r.label: 0 for r in _REASONS})
    #: Flows judged without waiting for other workers' answers: too many waited.
    waiting_full: int = 0
    #: Flow records written, by reason.
    flows_by_reason: dict[str, int] = msgspec.field(default_factory=dict)


class Pipeline:
    """Source-agnostic processing of batches."""

    def __init__(self, config: Config | None = None, *, eve: EveWriter | None = None,
                 listeners: Sequence[Callable[[dict[str, Any]], None]] = (),
                 signatures: SignatureSet | None = None, geo: GeoLookup | None = None,
                 evidence_dir: Path | None = None, dns_cache: DnsCache | None = None,
                 timeouts: FlowTimeouts | None = None, max_flows: int | None = None,
                 community_id_seed: int | None = None,
                 dns_complete: Callable[[Flow], bool] | None = None,
                 partition: tuple[int, int] | None = None) -> None:
        self.config = config if config is not None else load_config(None)
        cfg = self.config
        self.eve = eve or EveWriter(None)
        #: Called with every record written (besides the EVE file), e.g. by `avmon demo`.
        #: Records share values (a flow's header fields, a repeated DNS message's
        #: answers) with other records: listeners read them and never change them.
        self.listeners = tuple(listeners)
        self.signatures = signatures if signatures is not None \
            else load_signature_set(cfg.signatures)
        self.dns_cache = dns_cache if dns_cache is not None else \
            DnsCache(cfg.limits.dns_cache_entries, cfg.limits.dns_names_per_address)
        self._new_flows: list[Flow] = []
        self.table = FlowTable(
            timeouts=timeouts or cfg.timeouts, on_expire=self._flow_ended,
            on_new=self._new_flows.append,
            max_flows=cfg.max_flows if max_flows is None else max_flows,
            community_id_seed=cfg.community_id_seed if community_id_seed is None
            else community_id_seed, on_continue=self._flow_continued)
        self.dissector = Dissector(self.emit, self.dns_cache, self.on_facts, self.name_info,
                                   self._flow_opened, self._flow_settled, self._hold,
                                   cfg.limits)
        self.evidence = EvidenceWriter(evidence_dir) if evidence_dir is not None else None
        self.alerts = AlertEngine(cfg, self.emit, geo, self.evidence)
        self.stats = PipelineStats()
        self.av = AvAccounting()
        #: Live AV flows whose egress bytes are still being counted.
        self._av_flows: dict[int, Flow] = {}
        #: With several workers, another worker may hold the DNS answer that names a flow:
        #: ``dns_complete(flow)`` says whether every answer seen before the flow began has
        #: reached this worker's cache. Flows wait (bounded) until it has.
        self.dns_complete = dns_complete
        #: Longest a flow waits for them (wall-clock seconds); None: until they come (a
        #: replay, where every worker gets there and the result must not depend on speed).
        self.wait_seconds: float | None = WAIT_SECONDS
        #: A flow that carries its own name (SNI, Host) waits for the other workers'
        #: answers too, so the further names its client resolved for the address
        #: (``avmon.other_names``) are complete: a replay's records are then those of one
        #: process. Off (live), such a flow is judged at once and its alert is not delayed
        #: for names that cannot change its vendor.
        self.complete_names = False
        #: Flows waiting to be judged, and flows that ended while waiting (their records
        #: wait too): id -> (flow, settle time, settle frame, wall-clock since).
        self._waiting: dict[int, tuple[Flow, int, int, float]] = {}
        self._ended: dict[int, tuple[Flow, int, int, float]] = {}
        #: (this worker, workers): only packets whose address pair hashes to this worker
        #: are processed (every packet of a flow, fragments and tunnels included, has the
        #: same outer address pair).
        self.partition = partition
        self._name_info: dict[str, dict[str, Any] | None] = {}
        self._name_info_set: SignatureSet | None = None
        self._attr_memo: dict[tuple[Any, ...], tuple[Attribution, dict[str, Any]] | None] = {}
        self._attr_set: SignatureSet | None = None

    def process(self, batch: Batch) -> None:
        """One batch through every stage.

        A bug that raises here costs the rest of this batch, not the run: it is counted
        (``avmon_internal_errors_total``) and logged in one line naming the frames.
        Output failures (OSError) still end the run.
        """
        try:
            self._process(batch)
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - a sensor must outlive one bad batch
            self._batch_failed(batch, exc)

    def _batch_failed(self, batch: Batch, exc: Exception) -> None:
        self.dissector.stats.internal_errors += 1
        log.error("internal error processing frames %d-%d: %s: %s; the rest of the batch "
                  "is skipped", batch.first_frame, batch.first_frame + len(batch) - 1,
                  type(exc).__name__, exc)

    def _process(self, batch: Batch) -> None:
        n = len(batch)
        if n == 0:
            return
        st = self.stats
        layers = decode_all(batch)
        if self.partition is not None:
            owned = _owned(layers[0], *self.partition)
            layers = [cols.take(owned[cols.index]) for cols in layers]
            n = len(layers[0])
            st.bytes += int(batch.wirelens[layers[0].index].sum())
        else:
            st.bytes += int(batch.wirelens.sum())
        st.packets += n
        if not st.first_ns:
            st.first_ns = int(batch.ts_ns[0])
        st.last_ns = max(st.last_ns, int(batch.ts_ns[-1]))
        reasons = np.bincount(layers[0].reason, minlength=len(Undecoded))
        for r in _REASONS:
            st.undecoded[r.label] += int(reasons[r])
        assigned: list[tuple[np.ndarray[Any, Any], Assignment]] = []
        for cols in layers:
            if cols.depth:
                st.tunnelled_packets += len(cols)
            known = len(self._new_flows)
            assign = self.table.update(cols, batch.ts_ns, batch.wirelens, batch.first_frame,
                                       batch)
            prepare_headers(self._new_flows[known:])
            self.alerts.context = (batch, cols.index, assign)
            self.dissector.process(batch, cols, assign)
            assigned.append((cols.index, assign))
        self.alerts.context = None
        if self.evidence is not None:
            for flow in self._new_flows:
                if self.alerts.segments.lookup(flow.src_addr):
                    self.evidence.track(flow)
        self._new_flows.clear()
        if self.evidence is not None:
            for index, assign in assigned:
                self.evidence.process(batch, index, assign)
        self.alerts.after_batch(batch, assigned, [w[0] for w in self._waiting.values()])
        av = self._av_flows
        if av:
            touched = sum(len(a.flows) for _, a in assigned)
            if len(av) <= touched:
                for flow in av.values():
                    self._count_egress(flow)
            else:  # many AV flows, few of them in this batch
                for _, a in assigned:
                    for flow in a.flows:
                        if flow is not None and id(flow) in av:
                            self._count_egress(flow)
        self.settle_waiting()
        # The clock is the batch's, even where this worker owned none of its packets.
        self.table.now_ns = max(self.table.now_ns, int(batch.ts_ns[-1]))
        self.table.expire()
        self.eve.flush()

    def tick(self, now_ns: int) -> None:
        """Time passes without packets (an idle live link): expire flows as of ``now_ns``."""
        self.table.now_ns = max(self.table.now_ns, now_ns)
        self.settle_waiting()
        self.table.expire()
        self.eve.flush()

    def emit(self, record: dict[str, Any]) -> None:
        self.eve.write(record)
        for listener in self.listeners:
            listener(record)

    def _flow_opened(self, flow: Flow) -> None:
        """A flow's first packet: one that carries no name of its own may be named by the
        DNS answers its client received before it."""
        if flow.proto in (Proto.TCP, Proto.UDP) and flow.dest_port not in DNS_PORTS:
            flow.ext["fact_at"] = (flow.first_ns, flow.first_frame)
            self.on_facts(flow)

    def on_facts(self, flow: Flow) -> None:
        """(Re)attribute ``flow`` after it revealed a name or fingerprint; then policy."""
        ext = flow.ext
        dns_name = self.dns_cache.lookup(flow.src_addr, flow.dest_addr, flow.first_ns)
        names = ext.get("names")
        carried = tuple(names.items()) if names else ()
        ja4 = ext.get("ja4")
        # Nothing attribution reads has changed since the last time: the same answer.
        facts = (self.signatures, dns_name, carried, ja4)
        if ext.get("facts") == facts:
            return
        ext["facts"] = facts
        found = self._attribution(carried, dns_name, flow.dest_ip, ja4)
        if found is not None:
            ext["attr"], ext["eve_avmon"] = found

    def _attribution(self, carried: tuple[tuple[str, str], ...], dns_name: DnsName | None,
                     dest_ip: str, ja4: str | None
                     ) -> tuple[Attribution, dict[str, Any]] | None:
        """The attribution of a flow with these facts and its ``avmon`` object; None
        without an indicator. Flows to one service share their facts, so answers are
        kept per signature set (bounded); both are immutable to their users."""
        if self._attr_set is not self.signatures or len(self._attr_memo) >= MEMO_ENTRIES:
            self._attr_set = self.signatures
            self._attr_memo.clear()
        key = (carried, (dns_name.qname, dns_name.chain) if dns_name is not None else None,
               dest_ip, ja4)
        try:
            return self._attr_memo[key]
        except KeyError:
            pass
        attr = attribute(self.signatures, dict(carried), dns_name, dest_ip, ja4)
        found = None if attr.indicator is None else (attr, avmon_object(attr))
        self._attr_memo[key] = found
        return found

    def _flow_continued(self, old: Flow, new: Flow) -> None:
        """A long flow cut by the active timeout goes on as a new record."""
        new.ext.pop("eve_head", None)  # the old record's: its flow id is the old one's
        if "av_key" in new.ext:
            new.ext["av_counted"] = 0
            self._av_flows[id(new)] = new

    def _count_egress(self, flow: Flow) -> None:
        key = flow.ext["av_key"]
        delta = flow.bytes_toserver - flow.ext["av_counted"]
        if delta:
            self.av.egress_bytes[key] = self.av.egress_bytes.get(key, 0) + delta
            flow.ext["av_counted"] = flow.bytes_toserver

    def _flow_settled(self, flow: Flow, ts_ns: int, frame: int, final: bool = False) -> None:
        """Policy judges a flow once its identification is complete (the ClientHello,
        request head or Initial was read, or the flow turned out to be none of these),
        so the alert carries the best indicator, whatever the batch boundaries."""
        if "judged" in flow.ext:
            return
        if self._dns_may_add(flow):
            if not final and self._name_may_come(flow) and (id(flow) in self._waiting
                                                             or self._room(self._waiting)):
                if id(flow) not in self._waiting:
                    if self.alerts.segments.lookup(flow.src_addr):  # else it cannot alert
                        flow.ext.setdefault("counts_at", {})[frame] = \
                            self.alerts.counts_at(flow, frame)
                    self._waiting[id(flow)] = (flow, ts_ns, frame, time.monotonic())
                return
            self.on_facts(flow)  # a DNS answer may have arrived since the flow opened
        for rec in flow.ext.pop("held", ()):
            self.emit(with_attr(rec, flow))
        attr: Attribution | None = flow.ext.get("attr")
        if attr is None:
            return
        flow.ext["judged"] = True
        v = attr.vendor
        if v is not None and attr.indicator is not None:
            key = (v.vendor_id, v.jurisdiction, self.alerts.segment_of(flow)[0], v.purpose)
            self.av.flows[key] = self.av.flows.get(key, 0) + 1
            kind = attr.indicator.type
            self.av.identifications[kind] = self.av.identifications.get(kind, 0) + 1
            flow.ext["av_key"] = key
            flow.ext["av_counted"] = 0
            self._av_flows[id(flow)] = flow
        self.alerts.check(flow, attr, ts_ns, frame)

    def _dns_may_add(self, flow: Flow) -> bool:
        """A DNS answer may still add to what is known of ``flow``: its name if it has
        none, or (with :attr:`complete_names`) further names."""
        return "fact_at" in flow.ext and (self.complete_names or _unnamed(flow))

    def _room(self, waiting: dict[int, tuple[Flow, int, int, float]]) -> bool:
        """Room for one more waiting flow (counted when there is none)."""
        if len(waiting) < self.config.limits.waiting_flows:
            return True
        self.stats.waiting_full += 1
        return False

    def _name_may_come(self, flow: Flow) -> bool:
        """Another worker may still send the DNS answer that names ``flow``."""
        return self.dns_complete is not None and not self.dns_complete(flow)

    def _hold(self, flow: Flow, rec: dict[str, Any]) -> bool:
        """Keep back a record of a flow whose name may still come from another worker;
        it is written, with the name, when the flow is judged."""
        if self.dns_complete is None or "judged" in flow.ext or not self._dns_may_add(flow):
            return False
        if self._name_may_come(flow):
            flow.ext.setdefault("held", []).append(rec)
            return True
        self.on_facts(flow)  # the answer may have come in since the flow opened
        return False

    def name_info(self, name: str) -> dict[str, Any] | None:
        """The ``avmon`` object for a DNS name that matches a vendor signature (names
        recur: answers are cached per signature set)."""
        if self._name_info_set is not self.signatures or len(self._name_info) >= MEMO_ENTRIES:
            self._name_info_set = self.signatures
            self._name_info.clear()
        if name in self._name_info:
            return self._name_info[name]
        m = self.signatures.match_name(name)
        info = None if m is None else {
            "vendor": m.vendor_id, "vendor_name": m.vendor_name, "purpose": m.purpose,
            "signature_id": m.signature_id,
            "jurisdictions": [{"code": m.jurisdiction, "basis": "vendor"}]}
        self._name_info[name] = info
        return info

    def _flow_ended(self, flow: Flow) -> None:
        self.dissector.release(flow)
        waiting = self._waiting.pop(id(flow), None)
        if self._dns_may_add(flow) and self._name_may_come(flow) and self._room(self._ended):
            # Its name may still come from another worker: the record waits with it.
            self._ended[id(flow)] = waiting or (flow, flow.last_ns, flow.first_frame,
                                                time.monotonic())
            return
        self._end(flow, waiting)

    def _end(self, flow: Flow, waiting: tuple[Flow, int, int, float] | None) -> None:
        self.stats.flows_ended += 1
        # A flow that never settled (no payload, or a hello that never completed) is
        # judged on what is known at its end.
        if waiting is not None:
            self._flow_settled(flow, waiting[1], waiting[2], final=True)
        self._flow_settled(flow, flow.last_ns, flow.first_frame, final=True)
        self.alerts.flow_ended(flow)
        if self._av_flows.pop(id(flow), None) is not None:
            self._count_egress(flow)
        self.stats.flows_by_reason[flow.reason] = \
            self.stats.flows_by_reason.get(flow.reason, 0) + 1
        rec = flow_record(flow)
        seg, cls = self.alerts.segment_of(flow)
        if "avmon" in rec or seg != "unclassified":
            avmon = dict(rec.get("avmon", {}))
            avmon["segment"] = seg
            avmon["classification"] = cls
            # A classified flow was checked against the policy: every basis found.
            if "jurisdictions" in flow.ext:
                avmon["jurisdictions"] = flow.ext["jurisdictions"]
            if "geo" in flow.ext:
                avmon["geo"] = flow.ext["geo"]
            rec["avmon"] = avmon
        self.emit(rec)

    def settle_waiting(self, force: bool = False) -> None:
        """Judge the flows that waited for other workers' DNS answers once those answers
        are in (or after ``wait_seconds``), and write the records of those that ended."""
        if self.dns_complete is None or not (self._waiting or self._ended):
            return
        now = time.monotonic()
        limit = self.wait_seconds

        def ready(flow: Flow, since: float) -> bool:
            return force or (limit is not None and now - since > limit) \
                or bool(self.dns_complete and self.dns_complete(flow))

        for key, (flow, ts_ns, frame, since) in list(self._waiting.items()):
            if ready(flow, since):
                del self._waiting[key]
                self._flow_settled(flow, ts_ns, frame, final=True)
        for key, entry in list(self._ended.items()):
            if ready(entry[0], entry[3]):
                del self._ended[key]
                self._end(entry[0], entry)

    def limit_hits(self) -> dict[str, int]:
        """Times each resource limit acted, by name (:data:`monitor.limits.PIPELINE_LIMITS`)."""
        return {"flows": self.table.stats.flows_evicted,
                "dns_cache_entries": self.dns_cache.evictions,
                "dns_names_per_address": self.dns_cache.names_dropped,
                "waiting_flows": self.stats.waiting_full, **self.dissector.stats.limit_hits}

    def end_flows(self, force: bool = False) -> None:
        """Every open flow ends now, and its record is written; without ``force``, those
        whose names may still come from another worker wait for them (a worker at the end
        of its input writes the rest while the others are still at work, then
        :meth:`finish` writes them)."""
        self.table.flush()
        self.settle_waiting(force=force)
        self.eve.flush()

    def finish(self) -> None:
        """End of input: write out every open flow."""
        self.end_flows(force=True)


def _unnamed(flow: Flow) -> bool:
    """No name for the flow yet (at most an address or fingerprint match): a DNS answer
    may still name it."""
    attr: Attribution | None = flow.ext.get("attr")
    return attr is None or attr.server_name is None


def _owned(cols: Columns, index: int, workers: int) -> npt.NDArray[np.bool_]:
    """Per packet of the batch: does its outer address pair hash to worker ``index``?
    Symmetric (XOR of the two addresses), so both directions go to the same worker;
    packets without addresses go to worker 0."""
    key = _mix_pair(cols.src_hi ^ cols.dst_hi, cols.src_lo ^ cols.dst_lo)
    worker = np.where(cols.reason == 0, key % np.uint64(workers), np.uint64(0))
    owned = np.zeros(int(cols.index.max()) + 1 if len(cols) else 0, dtype=np.bool_)
    owned[cols.index] = worker == np.uint64(index)
    return owned


def _mix_pair(a: npt.NDArray[np.uint64], b: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    with np.errstate(over="ignore"):
        h = a * np.uint64(0x9E3779B97F4A7C15) ^ b
        h ^= h >> np.uint64(31)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        return h ^ (h >> np.uint64(29))


def avmon_object(attr: Attribution) -> dict[str, Any]:
    """The ``avmon`` object of EVE records about an attributed flow."""
    obj: dict[str, Any] = {}
    if attr.server_name:
        obj["server_name"] = attr.server_name
    if attr.indicator is not None:
        obj["indicator"] = {"type": attr.indicator.type, "value": attr.indicator.value}
    v = attr.vendor
    if v is not None:
        obj["vendor"] = v.vendor_id
        obj["vendor_name"] = v.vendor_name
        obj["purpose"] = v.purpose
        obj["signature_id"] = v.signature_id
        obj["signature_rev"] = v.rev
        obj["match"] = {"basis": v.basis, "pattern": v.pattern, "confidence": v.confidence}
        obj["jurisdictions"] = [{"code": v.jurisdiction, "basis": "vendor"}]
    if attr.other_names:
        obj["other_names"] = list(attr.other_names)
    return obj
