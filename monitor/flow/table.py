"""The flow table: bidirectional flows with counters, TCP state and timeouts.

Packets are grouped per batch, not handled one by one: the canonical 5-tuple of every
packet is hashed with numpy, packets of the same flow are found with one ``np.unique``,
and packet/byte counters, first/last timestamps and TCP flags are summed per flow with
``np.bincount``. Python then touches each *flow* of the batch once. Only flows whose
packets need ordering decisions (a new SYN after the flow closed, an idle gap longer than
the timeout inside one batch, IP fragments) take a per-packet slow path.

Timeouts run on packet time, so a replay gives the same records whatever the machine.
Flows end by idle timeout, by active timeout (a long flow is cut into records), after a
TCP close, by eviction when the table is full (counted), or at end of input. Flows are
queued by the idle timeout they are under (other protocols, open TCP, closed TCP), each
queue in the order its flows were last touched, so an expiry scan reads only the flows
that end and the first one of each queue that does not.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

from monitor.capture.batch import Batch
from monitor.decode import Columns, Proto
from monitor.flow.communityid import community_id
from monitor.iptext import ip_text
from monitor.kernels import native_flows

__all__ = ["Flow", "FlowTable", "FlowTimeouts", "Assignment"]

#: Default cap on live flows. A flow costs about 1.5 KB of memory (measured under a SYN
#: flood of unique tuples: bench/adversarial), so a full table stays near 200 MB;
#: Suricata's default flow memcap (128 MB) is the same order.
MAX_FLOWS: Final = 131_072
#: Fragment trains remembered to attribute later fragments to their flow.
MAX_FRAGMENT_TRAINS: Final = 4096
#: A fragment train is forgotten after this long (RFC 791's 15 s reassembly timer, rounded).
FRAGMENT_TIMEOUT_NS: Final = 30 * 10**9
#: Later fragments (no ports) held, their bytes copied, until the first fragment of their
#: datagram names the flow: some stacks send a datagram's fragments last first, and a
#: client could otherwise hide a ClientHello or DNS answer by doing so. Past either bound
#: the oldest held are dropped (counted as unattributed fragments).
MAX_HELD_FRAGMENTS: Final = 1024
MAX_HELD_FRAGMENT_BYTES: Final = 2 << 20

#: How often (packet time) the table is scanned for flows past the active timeout.
ACTIVE_CHECK_NS: Final = 60 * 10**9

#: Ports below this are taken as server ports when a flow's opening was not captured.
WELL_KNOWN_PORTS: Final = 1024

TCP_FIN: Final = 0x01
TCP_SYN: Final = 0x02
TCP_RST: Final = 0x04
TCP_ACK: Final = 0x10

_NS: Final = 10**9

_ICMP_PROTOS: Final = frozenset((int(Proto.ICMP), int(Proto.ICMPV6)))

#: Timeout classes (queues) of flows: which idle timeout a flow is under. A flow changes
#: class only when a TCP flow closes.
Q_OTHER: Final = 0
Q_TCP_OPEN: Final = 1
Q_TCP_CLOSED: Final = 2

#: What a flow id is hashed from: the canonical key (addresses as four 64-bit halves, the
#: ports, protocol and tunnel depth) and the record's first packet time.
_FLOW_ID_INPUT: Final = struct.Struct("<4Q2HBxHq")


#: Longest packet time between two expiry scans (a quarter of the shortest timeout if
#: that is less).
MAX_EXPIRE_INTERVAL_NS: Final = 5 * 10**9


class FlowTimeouts(msgspec.Struct, frozen=True):
    """Flow timeouts in seconds of packet time (defaults close to Suricata's)."""

    #: Idle timeout of an established TCP flow.
    tcp_idle: float = 600.0
    #: Idle timeout of a UDP flow and of other protocols.
    udp_idle: float = 120.0
    #: How long a closed TCP flow (FIN both ways, or RST) is kept to catch stragglers.
    tcp_closed: float = 30.0
    #: A flow older than this is written out and continued as a new record.
    active: float = 1800.0


class Flow(msgspec.Struct, eq=False):
    """One bidirectional flow. Side A is the lower (address, port) of the canonical key."""

    key: tuple[int, ...]
    ipver: int
    proto: int
    a_addr: bytes
    b_addr: bytes
    a_port: int
    b_port: int
    #: True when side A opened the flow (is the client).
    client_is_a: bool
    first_ns: int
    last_ns: int
    first_frame: int
    #: Tunnel depth the flow was seen at (0: outer).
    depth: int = 0
    vlan: int = 0
    pkts_ab: int = 0
    pkts_ba: int = 0
    bytes_ab: int = 0
    bytes_ba: int = 0
    flags_ab: int = 0
    flags_ba: int = 0
    #: Whether later stages still want this flow's payloads.
    inspect: bool = True
    #: Whether the dissect stage has seen the flow's first packet.
    opened: bool = False
    #: Why the record was written (timeout, closed, active_timeout, evicted, shutdown).
    reason: str = ""
    #: Per-flow state of later stages (dissectors, attribution); owned by them.
    ext: dict[str, Any] = msgspec.field(default_factory=dict)
    #: Community ID seed (configuration; 0 unless tools must agree on another).
    cid_seed: int = 0
    _cid: str | None = None
    _fid: int | None = None
    #: The table's timeout class of the flow (Q_OTHER, Q_TCP_OPEN, Q_TCP_CLOSED).
    tclass: int = Q_OTHER
    #: When the table last touched the flow (a sequence number: least recently used first).
    touched: int = 0

    # -- orientation -----------------------------------------------------------------
    @property
    def src_ip(self) -> str:
        return ip_text(self.a_addr if self.client_is_a else self.b_addr)

    @property
    def dest_ip(self) -> str:
        return ip_text(self.b_addr if self.client_is_a else self.a_addr)

    @property
    def src_addr(self) -> bytes:
        return self.a_addr if self.client_is_a else self.b_addr

    @property
    def dest_addr(self) -> bytes:
        return self.b_addr if self.client_is_a else self.a_addr

    @property
    def src_port(self) -> int:
        return self.a_port if self.client_is_a else self.b_port

    @property
    def dest_port(self) -> int:
        return self.b_port if self.client_is_a else self.a_port

    @property
    def pkts_toserver(self) -> int:
        return self.pkts_ab if self.client_is_a else self.pkts_ba

    @property
    def pkts_toclient(self) -> int:
        return self.pkts_ba if self.client_is_a else self.pkts_ab

    @property
    def bytes_toserver(self) -> int:
        return self.bytes_ab if self.client_is_a else self.bytes_ba

    @property
    def bytes_toclient(self) -> int:
        return self.bytes_ba if self.client_is_a else self.bytes_ab

    @property
    def flags_toserver(self) -> int:
        return self.flags_ab if self.client_is_a else self.flags_ba

    @property
    def flags_toclient(self) -> int:
        return self.flags_ba if self.client_is_a else self.flags_ab

    @property
    def closed(self) -> bool:
        """TCP: RST seen, or FIN seen in both directions."""
        both = self.flags_ab | self.flags_ba
        return bool(both & TCP_RST) or bool(self.flags_ab & self.flags_ba & TCP_FIN)

    @property
    def community_id(self) -> str:
        if self._cid is None:
            if self.client_is_a:
                src, dest, sport, dport = self.a_addr, self.b_addr, self.a_port, self.b_port
            else:
                src, dest, sport, dport = self.b_addr, self.a_addr, self.b_port, self.a_port
            if self.proto in _ICMP_PROTOS:
                sport, dport = self.ext.get("icmp", (0, 0))
            self._cid = community_id(src, dest, self.proto, sport, dport, self.cid_seed)
        return self._cid

    @property
    def flow_id(self) -> int:
        """A stable 51-bit id (safe in JSON doubles) unique per flow record."""
        if self._fid is None:
            h = hashlib.blake2b(_FLOW_ID_INPUT.pack(*self.key, self.first_ns),
                                digest_size=8).digest()
            self._fid = int.from_bytes(h, "big") & ((1 << 51) - 1)
        return self._fid

    def state(self) -> str:
        if self.proto != Proto.TCP:
            return "established" if self.pkts_ab and self.pkts_ba else "new"
        if self.closed:
            return "closed"
        return "established" if self.pkts_ab and self.pkts_ba else "new"


def _addr_bytes(ipver: int, hi: int, lo: int) -> bytes:
    if ipver == 4:
        return (lo & 0xFFFFFFFF).to_bytes(4, "big")
    return hi.to_bytes(8, "big") + lo.to_bytes(8, "big")


class HeldFragment(msgspec.Struct, frozen=True):
    """A later IP fragment that came before the first fragment of its datagram."""

    ts_ns: int
    wirelen: int
    #: The whole captured packet (for an alert's evidence pcap) and its link type.
    packet: bytes
    linktype: int
    ipid: int
    #: Where its data goes in the datagram (bytes from the transport header).
    offset: int
    #: More fragments follow it.
    more: bool
    #: Where its data is in ``packet``, and how long.
    data_at: int
    data_len: int

    @property
    def data(self) -> bytes:
        return self.packet[self.data_at:self.data_at + self.data_len]


class Assignment(msgspec.Struct, eq=False):
    """Which flow each packet of a layer went to, for the dissect stage."""

    #: Flow per group id.
    flows: list[Flow]
    #: Group id per packet of the layer (-1: no flow, e.g. undecodable).
    group: npt.NDArray[np.int64]
    #: True where the packet travels client -> server.
    to_server: npt.NDArray[np.bool_]
    #: Fragments held from before whose first fragment came in this layer, with the group
    #: it joined (already counted in the flow; their data is for reassembly).
    adopted: list[tuple[int, HeldFragment]] = msgspec.field(default_factory=list)


class TableStats(msgspec.Struct):
    flows_created: int = 0
    flows_evicted: int = 0
    fragments_unattributed: int = 0
    fragment_trains_evicted: int = 0


U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
#: What :func:`_group_py` gives: inv, first, last, pkts, bytes, flags, slow.
Grouping = tuple[I64, I64, I64, I64, I64, I64, npt.NDArray[np.bool_]]

_MIX1 = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xBF58476D1CE4E5B9)
_MIX3 = np.uint64(0x94D049BB133111EB)


def _mix(h: npt.NDArray[np.uint64], v: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    # splitmix64-style finaliser: good avalanche, all in vectorised uint64 arithmetic.
    with np.errstate(over="ignore"):
        x = (h ^ v) * _MIX1
        x ^= x >> np.uint64(31)
        x *= _MIX2
        x ^= x >> np.uint64(29)
        x *= _MIX3
        return x ^ (x >> np.uint64(32))


def _group_py(ah: U64, al: U64, bh: U64, bl: U64, pa: U64, pb: U64, pr: U64, depth: int,
              swap: npt.NDArray[np.bool_], pure_syn: npt.NDArray[np.bool_],
              flags: npt.NDArray[np.uint8], wl: npt.NDArray[np.int64],
              ts: npt.NDArray[np.int64], min_idle: int) -> Grouping:
    """A layer's packets grouped by flow (canonical tuple ``ah al bh bl pa pb pr`` at
    ``depth``): per packet its group; per group, in the order of the tuple hash, the first
    and last packet, packets, bytes and TCP flags each way (column 0: A->B), and whether
    packet order matters in it (a pure SYN after its first packet, or a gap between two
    of its packets longer than ``min_idle``). The reference of the compiled
    ``monitor._flows.group``."""
    h = _mix(_mix(_mix(_mix(_mix(ah, al), bh), bl), (pa << np.uint64(16)) | pb),
             pr | (np.uint64(depth) << np.uint64(8)))
    _, first, inv = np.unique(h, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    # Verify no two different tuples share a hash in this batch (vanishingly rare).
    rep = first[inv]
    same = ((ah == ah[rep]) & (al == al[rep]) & (bh == bh[rep]) & (bl == bl[rep])
            & (pa == pa[rep]) & (pb == pb[rep]) & (pr == pr[rep]))
    if not same.all():
        keys = np.stack([ah, al, bh, bl, (pa << np.uint64(16)) | pb, pr], axis=1)
        _, first, inv = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        inv = inv.reshape(-1)
    g = first.shape[0]
    n = inv.shape[0]
    slot = inv * 2 + swap.astype(np.int64)
    pkts = np.bincount(slot, minlength=2 * g).reshape(g, 2)
    byts = np.bincount(slot, weights=wl, minlength=2 * g).astype(np.int64).reshape(g, 2)
    last = np.full(g, -1, dtype=np.int64)
    np.maximum.at(last, inv, np.arange(n, dtype=np.int64))
    fl = np.zeros(2 * g, dtype=np.int64)
    for bit in (TCP_FIN, TCP_SYN, TCP_RST, 0x08, TCP_ACK, 0x20, 0x40, 0x80):
        has = np.bincount(slot, weights=(flags & bit) != 0, minlength=2 * g) > 0
        fl |= np.where(has, bit, 0)
    slow = np.zeros(g, dtype=np.bool_)
    if pure_syn.any():
        not_first = pure_syn & (np.arange(n) != first[inv])
        slow |= np.bincount(inv, weights=not_first, minlength=g) > 0
    if n and int(ts.max()) - int(ts.min()) > min_idle:
        order = np.argsort(inv, kind="stable")
        gaps = np.diff(ts[order])
        same_g = np.diff(inv[order]) == 0
        big = np.flatnonzero(same_g & (gaps > min_idle))
        slow[inv[order][big]] = True
    return inv, first.astype(np.int64), last, pkts, byts, fl.reshape(g, 2), slow


class FlowTable:
    """Bidirectional flows keyed by the canonical 5-tuple (plus tunnel depth)."""

    def __init__(self, *, timeouts: FlowTimeouts | None = None, max_flows: int = MAX_FLOWS,
                 on_expire: Callable[[Flow], None] | None = None,
                 on_new: Callable[[Flow], None] | None = None,
                 community_id_seed: int = 0,
                 on_continue: Callable[[Flow, Flow], None] | None = None) -> None:
        self.cid_seed = community_id_seed
        #: Called with (old, new) when a flow past the active timeout continues as a new
        #: record.
        self.on_continue = on_continue or (lambda old, new: None)
        self.timeouts = timeouts or FlowTimeouts()
        self.max_flows = max_flows
        self.on_expire = on_expire or (lambda f: None)
        self.on_new = on_new or (lambda f: None)
        self._flows: dict[tuple[int, ...], Flow] = {}
        #: Per timeout class, its flows least recently touched first.
        self._queues: tuple[OrderedDict[tuple[int, ...], Flow], ...] = (
            OrderedDict(), OrderedDict(), OrderedDict())
        self._touches = 0
        self._frags: OrderedDict[tuple[int, ...], tuple[int, int, int]] = OrderedDict()
        #: Later fragments waiting for their first fragment, per fragment train.
        self._held: OrderedDict[tuple[int, ...], list[HeldFragment]] = OrderedDict()
        self._held_count = 0
        self._held_bytes = 0
        self.stats = TableStats()
        self.now_ns = 0
        self._tcp_idle = int(self.timeouts.tcp_idle * _NS)
        self._udp_idle = int(self.timeouts.udp_idle * _NS)
        self._closed = int(self.timeouts.tcp_closed * _NS)
        self._active = int(self.timeouts.active * _NS)
        self._min_idle = min(self._tcp_idle, self._udp_idle, self._closed)
        #: Idle timeout per class.
        self._limits = (self._udp_idle, self._tcp_idle, self._closed)
        self._next_expire_scan = 0
        self._next_active_check = 0

    def __len__(self) -> int:
        return len(self._flows)

    def __iter__(self) -> Iterator[Flow]:
        return iter(self._flows.values())

    # -- per batch -------------------------------------------------------------------
    def update(self, cols: Columns, ts_ns: npt.NDArray[np.int64],
               wirelens: npt.NDArray[np.int64], first_frame: int,
               batch: Batch | None = None) -> Assignment:
        """Account the packets of one decoded layer; returns the per-packet assignment.

        ``ts_ns`` and ``wirelens`` are the batch's columns (indexed by ``cols.index``);
        ``batch`` is the batch itself, from which later fragments that come before their
        first fragment are kept (without it they are counted as unattributed).
        """
        n = len(cols)
        group = np.full(n, -1, dtype=np.int64)
        to_server = np.zeros(n, dtype=np.bool_)
        flows: list[Flow] = []
        ok = cols.reason == 0
        if not ok.any():
            return Assignment(flows, group, to_server)

        sport = cols.sport.astype(np.uint64)
        dport = cols.dport.astype(np.uint64)
        proto = cols.proto
        icmp = (proto == Proto.ICMP) | (proto == Proto.ICMPV6)
        if icmp.any():
            sport = np.where(icmp, np.uint64(0), sport)
            dport = np.where(icmp, np.uint64(0), dport)
        adopt: list[tuple[int, list[HeldFragment]]] = []
        if (cols.frag != 0).any():
            sport, dport, ok = self._fragments(cols, ts_ns, wirelens, batch, sport, dport,
                                               ok, adopt)

        idx = np.flatnonzero(ok)
        if idx.shape[0] == 0:  # only fragments no flow can be found for
            return Assignment(flows, group, to_server)
        # Usually every packet of the layer has a flow, and the layer is the whole batch:
        # then its columns are taken as they are (views), not gathered (copies).
        sel: slice | npt.NDArray[np.int64] = slice(None) if idx.shape[0] == n else idx
        sh, sl, dh, dl = cols.src_hi[sel], cols.src_lo[sel], cols.dst_hi[sel], cols.dst_lo[sel]
        sp, dp = sport[sel], dport[sel]
        swap = (sh > dh) | ((sh == dh) & ((sl > dl) | ((sl == dl) & (sp > dp))))
        ah, al = np.where(swap, dh, sh), np.where(swap, dl, sl)
        bh, bl = np.where(swap, sh, dh), np.where(swap, sl, dl)
        pa, pb = np.where(swap, dp, sp), np.where(swap, sp, dp)
        flags = np.ascontiguousarray(cols.tcpflags[sel])
        proto_sel = proto[sel]
        # Groups that need packet order: a pure SYN that is not the group's first packet,
        # a later fragment, or an idle gap longer than the shortest timeout.
        pure_syn = (proto_sel == Proto.TCP) & ((flags & (TCP_SYN | TCP_ACK)) == TCP_SYN)
        pkt_index = cols.index[sel]
        if pkt_index.shape[0] == ts_ns.shape[0]:  # increasing, so every packet in order
            wl, ts = np.ascontiguousarray(wirelens), np.ascontiguousarray(ts_ns)
        else:
            wl, ts = wirelens[pkt_index], ts_ns[pkt_index]
        pr = proto_sel.astype(np.uint64)
        grouped = None
        if native_flows is not None:
            grouped = native_flows.group(ah, al, bh, bl, pa, pb, pr, cols.depth,
                                         swap.view(np.uint8), pure_syn.view(np.uint8), flags,
                                         wl, ts, self._min_idle)
        if grouped is None:
            grouped = _group_py(ah, al, bh, bl, pa, pb, pr, cols.depth, swap, pure_syn, flags,
                                wl, ts, self._min_idle)
        inv, first, last, pkts, byts, fl, slow = grouped
        dirn = swap.astype(np.int64)  # 0: A->B, 1: B->A

        # Per group, its fields side by side (one list per field, read in step).
        groups = zip(ah[first].tolist(), al[first].tolist(), bh[first].tolist(),
                     bl[first].tolist(), pa[first].tolist(), pb[first].tolist(),
                     pr[first].tolist(), slow.tolist(), ts[first].tolist(),
                     ts[last].tolist(), pkts[:, 0].tolist(), pkts[:, 1].tolist(),
                     byts[:, 0].tolist(), byts[:, 1].tolist(), fl[:, 0].tolist(),
                     fl[:, 1].tolist(), pure_syn[first].tolist(),
                     cols.ipver[sel][first].tolist(), swap[first].tolist(),
                     flags[first].tolist(), (pkt_index[first] + first_frame).tolist(),
                     cols.vlan[sel][first].tolist(), icmp[sel][first].tolist(), strict=True)
        icmp_ports = (cols.sport[sel][first], cols.dport[sel][first])
        depth = cols.depth
        group_of_sel = np.empty(idx.shape[0], dtype=np.int64)
        now = int(ts_ns[-1]) if ts_ns.shape[0] else self.now_ns
        flows_d = self._flows
        queues = self._queues
        touches = self._touches

        slow_groups: list[int] = []
        for gi, (k0, k1, k2, k3, k4, k5, k6, is_slow, t0, t1, p_ab, p_ba, b_ab, b_ba, f_ab,
                 f_ba, syn_first, ipver, swapped, flags0, frame0, vlan, is_icmp) \
                in enumerate(groups):
            key = (k0, k1, k2, k3, k4, k5, k6, depth)
            if is_slow:
                slow_groups.append(gi)
                flows.append(None)  # type: ignore[arg-type]  # filled by the slow path
                continue
            flow = flows_d.get(key)
            if flow is not None and self._ends_before(flow, t0, syn_first):
                self._expire(flow, "closed" if flow.closed else "timeout")
                flow = None
            if flow is None:
                self._touches = touches
                flow = self._new_flow(key, ipver, swapped, flags0, t0, frame0, vlan)
                touches = self._touches
                if is_icmp:
                    flow.ext["icmp"] = (int(icmp_ports[0][gi]), int(icmp_ports[1][gi]))
            else:
                queues[flow.tclass].move_to_end(key)
                flow.touched = touches
                touches += 1
            flow.pkts_ab += p_ab
            flow.pkts_ba += p_ba
            flow.bytes_ab += b_ab
            flow.bytes_ba += b_ba
            flow.flags_ab |= f_ab
            flow.flags_ba |= f_ba
            if t1 > flow.last_ns:
                flow.last_ns = t1
            if (f_ab | f_ba) & (TCP_FIN | TCP_RST) and flow.tclass == Q_TCP_OPEN:
                self._closing(flow)
            flows.append(flow)
        self._touches = touches

        group_of_sel[:] = inv
        if slow_groups:
            self._slow_path(slow_groups, inv, idx, swap, pr, ah, al, bh, bl, pa, pb, flags,
                            ts, wl, cols, pkt_index, first_frame, flows, group_of_sel)

        group[sel] = group_of_sel
        client_is_a = np.array([f.client_is_a for f in flows], dtype=np.bool_)
        to_server[sel] = (dirn == 0) == client_is_a[group_of_sel]
        self.now_ns = max(self.now_ns, now)
        adopted = self._adopt(adopt, idx, group_of_sel, swap, flows) if adopt else []
        return Assignment(flows, group, to_server, adopted)

    def _adopt(self, adopt: list[tuple[int, list[HeldFragment]]], idx: npt.NDArray[np.int64],
               group_of_sel: npt.NDArray[np.int64], swap: npt.NDArray[np.bool_],
               flows: list[Flow]) -> list[tuple[int, HeldFragment]]:
        """Count held fragments in the flow their first fragment (packet ``i`` of the
        layer) went to, in its direction."""
        adopted: list[tuple[int, HeldFragment]] = []
        for i, held in adopt:
            at = int(np.searchsorted(idx, i))  # idx: the layer's packets with a flow
            g = int(group_of_sel[at])
            flow = flows[g]
            for h in held:
                if swap[at]:
                    flow.pkts_ba += 1
                    flow.bytes_ba += h.wirelen
                else:
                    flow.pkts_ab += 1
                    flow.bytes_ab += h.wirelen
                adopted.append((g, h))
        return adopted

    def _touch(self, flow: Flow) -> None:
        """``flow`` is the most recently used, in its class's queue."""
        self._queues[flow.tclass].move_to_end(flow.key)
        flow.touched = self._touches
        self._touches += 1

    def _closing(self, flow: Flow) -> None:
        """An open TCP flow saw FIN or RST: once closed, it is under the closed timeout."""
        if flow.closed:
            del self._queues[Q_TCP_OPEN][flow.key]
            flow.tclass = Q_TCP_CLOSED
            self._queues[Q_TCP_CLOSED][flow.key] = flow

    def _insert(self, flow: Flow) -> None:
        """A new flow (or record of one) in the table, most recently used."""
        flow.tclass = Q_TCP_OPEN if flow.proto == Proto.TCP else Q_OTHER
        flow.touched = self._touches
        self._touches += 1
        self._flows[flow.key] = flow
        self._queues[flow.tclass][flow.key] = flow

    def _ends_before(self, flow: Flow, t: int, pure_syn: bool) -> bool:
        """Whether ``flow`` is over by the time a packet at ``t`` arrives."""
        if flow.proto == Proto.TCP:
            if flow.closed:
                return pure_syn or t - flow.last_ns > self._closed
            return t - flow.last_ns > self._tcp_idle
        return t - flow.last_ns > self._udp_idle

    def _new_flow(self, key: tuple[int, ...], ipver: int, swapped: bool, flags: int, t: int,
                  frame: int, vlan: int) -> Flow:
        ah, al, bh, bl, pa, pb, proto, depth = key
        # The first packet's sender opened the flow, unless the capture began part-way:
        # a SYN-ACK seen first was sent by the server; without a SYN, a sender on a
        # well-known port talking to an ephemeral one is the server's reply.
        sender_is_a = not swapped
        sport, dport = (pb, pa) if swapped else (pa, pb)
        syn = flags & (TCP_SYN | TCP_ACK)
        if proto == Proto.TCP and syn == (TCP_SYN | TCP_ACK):
            sender_is_a = not sender_is_a
        elif (proto in (Proto.UDP, Proto.SCTP) or (proto == Proto.TCP and syn != TCP_SYN)) \
                and sport < WELL_KNOWN_PORTS <= dport:
            sender_is_a = not sender_is_a
        flow = Flow(key=key, ipver=ipver, proto=proto, a_addr=_addr_bytes(ipver, ah, al),
                    b_addr=_addr_bytes(ipver, bh, bl), a_port=pa, b_port=pb,
                    client_is_a=sender_is_a, first_ns=t, last_ns=t, first_frame=frame,
                    depth=depth, vlan=vlan, cid_seed=self.cid_seed)
        self._insert(flow)
        self.stats.flows_created += 1
        if len(self._flows) > self.max_flows:
            # The least recently used: the oldest of the queues' first flows.
            victim = min((next(iter(q.values())) for q in self._queues if q),
                         key=lambda f: f.touched)
            self._remove(victim)
            self.stats.flows_evicted += 1
            victim.reason = "evicted"
            self.on_expire(victim)
        self.on_new(flow)
        return flow

    def _slow_path(self, slow_groups: list[int], inv: npt.NDArray[np.int64],
                   idx: npt.NDArray[np.int64], swap: npt.NDArray[np.bool_],
                   pr: npt.NDArray[np.uint64], ah: npt.NDArray[np.uint64],
                   al: npt.NDArray[np.uint64], bh: npt.NDArray[np.uint64],
                   bl: npt.NDArray[np.uint64], pa: npt.NDArray[np.uint64],
                   pb: npt.NDArray[np.uint64], flags: npt.NDArray[np.uint8],
                   ts: npt.NDArray[np.int64], wl: npt.NDArray[np.int64], cols: Columns,
                   pkt_index: npt.NDArray[np.int64], first_frame: int, flows: list[Flow],
                   group_of_sel: npt.NDArray[np.int64]) -> None:
        """Packet-by-packet accounting for the few groups whose order matters."""
        sel = np.flatnonzero(np.isin(inv, slow_groups))
        extra_groups: dict[int, int] = {}
        for j in sel.tolist():
            gi = int(inv[j])
            key = (int(ah[j]), int(al[j]), int(bh[j]), int(bl[j]), int(pa[j]), int(pb[j]),
                   int(pr[j]), cols.depth)
            t = int(ts[j])
            f = int(flags[j])
            pure_syn = int(pr[j]) == Proto.TCP and (f & (TCP_SYN | TCP_ACK)) == TCP_SYN
            flow = self._flows.get(key)
            if flow is not None and self._ends_before(flow, t, pure_syn):
                self._expire(flow, "closed" if flow.closed else "timeout")
                flow = None
            if flow is None:
                flow = self._new_flow(key, int(cols.ipver[idx[j]]), bool(swap[j]), f, t,
                                      int(pkt_index[j]) + first_frame, int(cols.vlan[idx[j]]))
                if int(pr[j]) in (Proto.ICMP, Proto.ICMPV6):
                    flow.ext["icmp"] = (int(cols.sport[idx[j]]), int(cols.dport[idx[j]]))
            else:
                self._touch(flow)
            if swap[j]:
                flow.pkts_ba += 1
                flow.bytes_ba += int(wl[j])
                flow.flags_ba |= f
            else:
                flow.pkts_ab += 1
                flow.bytes_ab += int(wl[j])
                flow.flags_ab |= f
            flow.last_ns = max(flow.last_ns, t)
            if f & (TCP_FIN | TCP_RST) and flow.tclass == Q_TCP_OPEN:
                self._closing(flow)
            if flows[gi] is None:
                flows[gi] = flow
            if flows[gi] is not flow:
                # The tuple's packets moved to a new flow part-way through the batch.
                extra = extra_groups.get(id(flow))
                if extra is None:
                    flows.append(flow)
                    extra = extra_groups[id(flow)] = len(flows) - 1
                gi = extra
            group_of_sel[j] = gi

    def _fragments(self, cols: Columns, ts_ns: npt.NDArray[np.int64],
                   wirelens: npt.NDArray[np.int64], batch: Batch | None,
                   sport: npt.NDArray[np.uint64], dport: npt.NDArray[np.uint64],
                   ok: npt.NDArray[np.bool_], adopt: list[tuple[int, list[HeldFragment]]],
                   ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64],
                              npt.NDArray[np.bool_]]:
        """Give later IP fragments the ports of their train's first fragment.

        A later fragment whose train is not known (its first fragment has not come yet)
        is held, and goes to ``adopt`` with the first fragment when that comes: (packet
        index in the layer, held fragments). Held fragments that wait longer than
        :data:`FRAGMENT_TIMEOUT_NS`, or past the bounds, are counted in
        ``stats.fragments_unattributed``.
        """
        sport = sport.copy()
        dport = dport.copy()
        ok = ok.copy()
        frags = self._frags
        held = self._held
        for i in np.flatnonzero(ok & (cols.frag != 0)).tolist():
            tkey = (int(cols.src_hi[i]), int(cols.src_lo[i]), int(cols.dst_hi[i]),
                    int(cols.dst_lo[i]), int(cols.proto[i]), int(cols.ipid[i]))
            pkt = int(cols.index[i])
            t = int(ts_ns[pkt])
            if held:
                self._forget_held(t)
            if cols.frag[i] == 1:
                frags[tkey] = (int(sport[i]), int(dport[i]), t)
                frags.move_to_end(tkey)
                if len(frags) > MAX_FRAGMENT_TRAINS:
                    frags.popitem(last=False)
                    self.stats.fragment_trains_evicted += 1
                waiting = held.pop(tkey, None)
                if waiting:
                    self._held_count -= len(waiting)
                    self._held_bytes -= sum(len(h.packet) for h in waiting)
                    adopt.append((i, waiting))
                continue
            known = frags.get(tkey)
            if known is None or t - known[2] > FRAGMENT_TIMEOUT_NS:
                ok[i] = False
                if batch is None:
                    self.stats.fragments_unattributed += 1
                else:
                    at = int(batch.offsets[pkt])
                    self._hold(tkey, HeldFragment(
                        t, int(wirelens[pkt]),
                        bytes(batch.buffer[at:at + int(batch.caplens[pkt])]),
                        int(batch.linktypes[pkt]), int(cols.ipid[i]), int(cols.fragoff[i]),
                        bool(cols.more[i]), int(cols.payoff[i]) - at, int(cols.paylen[i])))
                continue
            sport[i], dport[i] = known[0], known[1]
        return sport, dport, ok

    def _hold(self, tkey: tuple[int, ...], fragment: HeldFragment) -> None:
        self._held.setdefault(tkey, []).append(fragment)
        self._held_count += 1
        self._held_bytes += len(fragment.packet)
        while self._held_count > MAX_HELD_FRAGMENTS or self._held_bytes > MAX_HELD_FRAGMENT_BYTES:
            self._drop_held()

    def _forget_held(self, now_ns: int) -> None:
        """Drop the held fragments of trains that began longer than the fragment timeout
        before ``now_ns`` (trains are held in the order they began)."""
        held = self._held
        while held and now_ns - next(iter(held.values()))[0].ts_ns > FRAGMENT_TIMEOUT_NS:
            self._drop_held()

    def _drop_held(self) -> None:
        """Give up the train held longest: its fragments are unattributed."""
        _, dropped = self._held.popitem(last=False)
        self._held_count -= len(dropped)
        self._held_bytes -= sum(len(h.packet) for h in dropped)
        self.stats.fragments_unattributed += len(dropped)

    # -- expiry ----------------------------------------------------------------------
    def _remove(self, flow: Flow) -> None:
        del self._flows[flow.key]
        del self._queues[flow.tclass][flow.key]

    def _expire(self, flow: Flow, reason: str) -> None:
        self._remove(flow)
        flow.reason = reason
        self.on_expire(flow)

    def expire(self, now_ns: int | None = None, *, full: bool = False) -> int:
        """Write out flows idle past their timeout (and cut flows past the active
        timeout) as of packet time ``now_ns``; returns how many ended. ``full`` scans the
        whole table instead of stopping at the first recently touched flow."""
        now = self.now_ns if now_ns is None else now_ns
        if self._held:  # a train whose first fragment never came is given up on time
            self._forget_held(now)
        if not full:
            # A packet of an expired flow still starts a new one (update checks), so the
            # scan only decides when records are written: a few times per shortest timeout
            # is enough, and scanning the long-lived flows every batch is not.
            if now < self._next_expire_scan:
                return 0
            self._next_expire_scan = now + min(self._min_idle // 4, MAX_EXPIRE_INTERVAL_NS)
        ended: list[Flow] = []
        for queue, limit in zip(self._queues, self._limits, strict=True):
            for flow in queue.values():
                if now - flow.last_ns > limit:
                    ended.append(flow)
                elif not full:
                    break  # the rest of the queue was touched more recently
        ended.sort(key=lambda f: f.touched)  # least recently used first, as one queue
        for flow in ended:
            self._expire(flow, "closed" if flow.tclass == Q_TCP_CLOSED else "timeout")
        if self._active and now >= self._next_active_check:
            # A scan of the whole table, so at most once per minute of packet time.
            self._next_active_check = now + ACTIVE_CHECK_NS
            for flow in [f for f in self._flows.values()
                         if f.last_ns - f.first_ns > self._active]:
                self._cut(flow, now)
        return len(ended)

    def _cut(self, flow: Flow, now: int) -> None:  # noqa: ARG002
        """Active timeout: write the record so far and continue with fresh counters."""
        self._expire(flow, "active_timeout")
        cont = Flow(key=flow.key, ipver=flow.ipver, proto=flow.proto, a_addr=flow.a_addr,
                    b_addr=flow.b_addr, a_port=flow.a_port, b_port=flow.b_port,
                    client_is_a=flow.client_is_a, first_ns=flow.last_ns,
                    last_ns=flow.last_ns, first_frame=flow.first_frame, depth=flow.depth,
                    vlan=flow.vlan, inspect=False, ext=dict(flow.ext),
                    cid_seed=flow.cid_seed)
        cont.flags_ab = flow.flags_ab & ~(TCP_FIN | TCP_RST)
        cont.flags_ba = flow.flags_ba & ~(TCP_FIN | TCP_RST)
        self._insert(cont)
        self.on_continue(flow, cont)

    def flush(self) -> int:
        """End every flow (end of input or shutdown): those already past their timeout
        as of the last packet with that reason, the rest with reason "shutdown"."""
        self.expire(full=True)
        while self._held:  # their first fragments never came
            self._drop_held()
        remaining = sorted(self._flows.values(), key=lambda f: (f.first_ns, f.first_frame))
        self._flows.clear()
        for queue in self._queues:
            queue.clear()
        for flow in remaining:
            flow.reason = "shutdown"
            self.on_expire(flow)
        return len(remaining)
