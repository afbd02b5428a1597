"""The dissect stage: the few packets that carry names, through the protocol parsers.

Only candidates reach Python here, chosen per batch with numpy: payload-carrying packets
of flows that still want inspection (plus the client's SYN, which fixes where its byte
stream starts). Per flow, the first client bytes decide what the flow is: a TLS
ClientHello (reassembled across segments), an HTTP/1.x request head (and, after
``CONNECT``, the ClientHello inside the tunnel), a QUIC Initial, or DNS on port 53. Once a
flow's name is known, or it is clearly none of these, the flow stops being inspected, so
bulk data never reaches Python. Parsers raise only ParseError; each one is counted by
protocol and reason, and the flow is left alone.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

from monitor.attribution import DnsCache
from monitor.capture.batch import Batch
from monitor.decode import Columns, Proto
from monitor.errors import ParseError
from monitor.eve import flow_header
from monitor.flow.reassembly import StreamPrefix
from monitor.flow.table import TCP_ACK, TCP_SYN, Assignment, Flow
from monitor.iptext import ip_packed
from monitor.limits import Limits
from monitor.parsers import dns as dnsp
from monitor.parsers import http as httpp
from monitor.parsers import quic as quicp
from monitor.parsers import tls as tlsp

__all__ = ["DissectStats", "Dissector"]

#: Client segments of one TCP flow looked at before giving up (a ClientHello split by a
#: tiny MSS takes a few dozen; nDPI's default cap on dissected packets is similar).
MAX_TCP_SEGMENTS: Final = 64
#: Client datagrams of one UDP flow fed to the QUIC assembler (a ClientHello spans one to
#: three Initials; retransmissions add a few).
MAX_QUIC_DATAGRAMS: Final = 12
#: Bytes kept per direction of a DNS-over-TCP flow waiting for a whole message.
MAX_DNS_TCP_BUFFER: Final = 65_537
#: DNS messages parsed per flow; a zone transfer or a tunnel beyond this is not followed.
MAX_DNS_MESSAGES_PER_FLOW: Final = 4096
#: Distinct DNS messages (by their bytes after the ID) whose parse is remembered, and the
#: largest message remembered: at most some 8 KB of records each, 16 MB in all (typical
#: messages take about 1.2 KB).
DNS_MEMO_ENTRIES: Final = 2048
DNS_MEMO_MAX_BYTES: Final = 256
#: Client stream prefix: an HTTP CONNECT head, then a whole ClientHello.
TCP_PREFIX_LIMIT: Final = httpp.MAX_HEAD_BYTES + tlsp.MAX_CLIENT_HELLO_STREAM_LEN

#: Fragmented datagrams reassembled at once per flow (a DNS exchange has one or two).
MAX_FRAGMENT_TRAINS_PER_FLOW: Final = 8
#: Largest IP datagram (IPv4 total length, IPv6 payload without jumbograms).
MAX_DATAGRAM: Final = 65_535
UDP_HEADER: Final = 8

#: Internal errors reported in the log (all are counted).
MAX_INTERNAL_ERROR_REPORTS: Final = 10

DNS_PORTS: Final = frozenset((53, 5353, 5355))
_HTTP_METHOD_START: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")

Emit = Callable[[dict[str, Any]], None]

log = logging.getLogger("avmon.dissect")


class DissectStats(msgspec.Struct):
    tls_client_hellos: int = 0
    quic_client_hellos: int = 0
    http_requests: int = 0
    dns_messages: int = 0
    #: DNS messages whose bytes after the ID had been seen recently (not parsed again).
    dns_memo_hits: int = 0
    #: (protocol, reason) -> count of units a parser rejected.
    parse_errors: dict[tuple[str, str], int] = msgspec.field(default_factory=dict)
    #: Flows that stopped being inspected at a cap before anything was found.
    gave_up: int = 0
    #: Flows that stopped being inspected at a reassembly limit, by limit name.
    limit_hits: dict[str, int] = msgspec.field(default_factory=lambda: {
        "reassembly_bytes_per_flow": 0, "reassembly_bytes_total": 0})
    #: Reassembly bytes held by all flows now.
    held_bytes: int = 0
    #: Packets whose dissection raised something other than ParseError (a bug).
    internal_errors: int = 0

    def error(self, protocol: str, exc: ParseError) -> None:
        key = (protocol, exc.reason)
        self.parse_errors[key] = self.parse_errors.get(key, 0) + 1


class _TcpState:
    __slots__ = ("prefix", "segments", "offset", "mode", "dns_bufs", "dns_count")

    def __init__(self) -> None:
        self.prefix = StreamPrefix(TCP_PREFIX_LIMIT)
        self.segments = 0
        #: Where in the client stream the next unit starts (after a CONNECT head).
        self.offset = 0
        #: None (undecided), "tls", "http", "dns"
        self.mode: str | None = None
        self.dns_bufs: list[bytearray] = [bytearray(), bytearray()]
        self.dns_count = 0


class _Train:
    """The fragments of one IP datagram seen so far."""

    __slots__ = ("first_ns", "pieces", "size", "end")

    def __init__(self, first_ns: int) -> None:
        self.first_ns = first_ns
        self.pieces: dict[int, bytes] = {}
        self.size = 0
        self.end: int | None = None


class _QuicState:
    __slots__ = ("assembler", "datagrams")

    def __init__(self) -> None:
        self.assembler = quicp.QuicInitialAssembler()
        self.datagrams = 0


class Dissector:
    """Per-flow dissection state machine over candidate packets."""

    def __init__(self, emit: Emit, dns_cache: DnsCache, on_facts: Callable[[Flow], None],
                 name_info: Callable[[str], dict[str, Any] | None] = lambda name: None,
                 on_new_flow: Callable[[Flow], None] = lambda flow: None,
                 on_settled: Callable[[Flow, int, int], None] = lambda flow, t, frame: None,
                 hold: Callable[[Flow, dict[str, Any]], bool] = lambda flow, rec: False,
                 limits: Limits | None = None) -> None:
        self.emit = emit
        self.limits = limits or Limits()
        #: Flows holding reassembly bytes -> how many, in the order they began to.
        self._held: dict[Flow, int] = {}
        #: Asked before a flow's record is written: True keeps it back (the pipeline
        #: writes it once the flow's name is settled).
        self.hold = hold
        #: Called with (flow, time, frame) when a flow stops being inspected: what it
        #: carries is known, so policy can judge it once, on its best indicator.
        self.on_settled = on_settled
        #: Called at a flow's first packet, in packet order with the other candidates, so
        #: that DNS answers seen before it (and only those) can name it.
        self.on_new_flow = on_new_flow
        self.dns_cache = dns_cache
        #: The vendor facts of a DNS name (for the ``avmon`` object of dns records).
        self.name_info = name_info
        #: Called when a flow reveals something attribution uses (a name, a JA4).
        self.on_facts = on_facts
        self.stats = DissectStats()
        #: Recent DNS messages by their bytes after the ID (see :meth:`_dns`).
        self._dns_memo: dict[bytes, _DnsSeen] = {}

    def _found(self, flow: Flow, kind: str, name: str | None, t: int, frame: int) -> None:
        if name:
            flow.ext.setdefault("names", {})[kind] = name
        flow.ext["fact_at"] = (t, frame)
        self.on_facts(flow)

    # -- candidate selection (vectorised) --------------------------------------------
    def emit_for(self, flow: Flow, rec: dict[str, Any]) -> None:
        """Write a record about ``flow`` (unless the pipeline holds it back)."""
        if not self.hold(flow, rec):
            self.emit(with_attr(rec, flow))

    def process(self, batch: Batch, cols: Columns, assign: Assignment) -> None:
        flows = assign.flows
        if not flows:
            return
        for g, held in assign.adopted:  # fragments that came before their first one
            flow = flows[g]
            if flow.inspect and flow.proto in (Proto.UDP, Proto.TCP):
                self._add_fragment(flow, held.ipid, held.offset, held.data, held.more,
                                   held.ts_ns)
        inspect = np.fromiter((f.inspect for f in flows), dtype=np.bool_, count=len(flows))
        first = np.fromiter((f.first_frame for f in flows), dtype=np.int64, count=len(flows))
        group = assign.group
        valid = group >= 0
        safe_group = np.where(valid, group, 0)
        opens = valid & (first[safe_group] == batch.first_frame + cols.index)
        if not inspect.any() and not opens.any():
            return
        wanted = valid & inspect[safe_group]
        tcp = cols.proto == Proto.TCP
        dns_port = _on_ports(cols.sport, DNS_PORTS) | _on_ports(cols.dport, DNS_PORTS)
        syn = tcp & ((cols.tcpflags & (TCP_SYN | TCP_ACK)) == TCP_SYN)
        data = cols.paylen > 0
        whole = cols.frag == 0
        cand = wanted & whole & ((data & (assign.to_server | dns_port)) | syn)
        # IP fragments are reassembled: DNS answers with many records and DNSSEC exceed
        # the path MTU, and a client that fragments its TCP segments must not hide its
        # ClientHello that way.
        cand |= wanted & ~whole & ((cols.proto == Proto.UDP) | (cols.proto == Proto.TCP))
        _within_caps(cand & whole & data & ~dns_port, tcp, group, cand)
        idx = np.flatnonzero(cand | opens)
        if idx.shape[0] == 0:
            return
        buf = memoryview(batch.buffer)
        first_frame = batch.first_frame
        pidxs = cols.index[idx]
        for i, is_cand, g, off, n, to_srv, seq, flags, pidx, t, fragment, proto, sport, \
                dport in zip(idx.tolist(), cand[idx].tolist(), group[idx].tolist(),
                             cols.payoff[idx].tolist(), cols.paylen[idx].tolist(),
                             assign.to_server[idx].tolist(), cols.seq[idx].tolist(),
                             cols.tcpflags[idx].tolist(), pidxs.tolist(),
                             batch.ts_ns[pidxs].tolist(), cols.frag[idx].tolist(),
                             cols.proto[idx].tolist(), cols.sport[idx].tolist(),
                             cols.dport[idx].tolist(), strict=True):
            flow = flows[g]
            frame = first_frame + pidx
            if frame == flow.first_frame and not flow.opened:
                flow.opened = True
                self.on_new_flow(flow)
                if not is_cand:
                    continue
            if not flow.inspect:
                continue  # a previous packet of this batch settled the flow
            payload = buf[off:off + n]
            try:
                if fragment:
                    datagram = self._reassemble(flow, cols, i, buf, t)
                    if datagram is None:
                        self._account(flow, t, frame)  # the fragments held so far
                        continue
                    if proto == Proto.TCP:
                        head = _tcp_header_len(datagram)
                        if head is None:
                            continue
                        seq = int.from_bytes(datagram[4:8], "big")
                        flags = datagram[13]
                        payload = memoryview(datagram)[head:]
                    else:
                        payload = memoryview(datagram)[UDP_HEADER:]
                    sport, dport = flow.src_port, flow.dest_port
                    to_srv = int.from_bytes(datagram[0:2], "big") == flow.src_port and \
                        int.from_bytes(datagram[2:4], "big") == flow.dest_port
                if proto == Proto.TCP:
                    self._tcp(flow, payload, to_srv, seq, flags, frame, t,
                              sport in DNS_PORTS or dport in DNS_PORTS)
                elif proto == Proto.UDP:
                    if sport in DNS_PORTS or dport in DNS_PORTS:
                        self._dns(flow, payload, to_srv, frame, t)
                    elif to_srv:
                        self._udp_client(flow, payload, frame, t)
                    else:
                        flow.inspect = False
                else:
                    flow.inspect = False
            except OSError:
                raise  # the output failed (disk full...): not the packet's fault
            except Exception as exc:  # noqa: BLE001 - one packet must not stop the sensor
                self._internal_error(flow, frame, exc)
            if flow.inspect:
                self._account(flow, t, frame)
            else:
                self.release(flow)
                self.on_settled(flow, t, frame)

    def _internal_error(self, flow: Flow, frame: int, exc: Exception) -> None:
        """A bug met a packet: the flow is left alone, the rest goes on, and it is counted
        (``avmon_internal_errors_total``) and reported, so the bug is found and fixed."""
        flow.inspect = False
        self.stats.internal_errors += 1
        if self.stats.internal_errors <= MAX_INTERNAL_ERROR_REPORTS:
            log.error("internal error dissecting frame %d (IP protocol %d, %s:%d -> %s:%d): "
                      "%s: %s; the flow is no longer inspected", frame, flow.proto, flow.src_ip,
                      flow.src_port, flow.dest_ip, flow.dest_port, type(exc).__name__, exc)

    # -- reassembly limits ---------------------------------------------------------
    def _account(self, flow: Flow, t: int, frame: int) -> None:
        """Keep the bytes ``flow`` holds for reassembly within the limits."""
        held = _held_by(flow)
        before = self._held.get(flow, 0)
        if held == before:
            return
        self.stats.held_bytes += held - before
        if held:
            self._held[flow] = held
        else:
            del self._held[flow]
        if held > self.limits.reassembly_bytes_per_flow:
            self._give_up(flow, "reassembly_bytes_per_flow", t, frame)
        total = self.limits.reassembly_bytes_total
        while self.stats.held_bytes > total and self._held:
            oldest = next(iter(self._held))
            if oldest is flow:
                self._give_up(flow, "reassembly_bytes_total", t, frame)
            else:
                self._give_up(oldest, "reassembly_bytes_total", oldest.last_ns,
                              oldest.first_frame)

    def _give_up(self, flow: Flow, limit: str, t: int, frame: int) -> None:
        flow.inspect = False
        self.release(flow)
        self.stats.limit_hits[limit] += 1
        self.stats.gave_up += 1
        self.on_settled(flow, t, frame)

    def release(self, flow: Flow) -> None:
        """Drop ``flow``'s reassembly state (it stopped being inspected, or ended)."""
        self.stats.held_bytes -= self._held.pop(flow, 0)
        ext = flow.ext
        ext.pop("tcp", None)
        ext.pop("isn", None)
        ext.pop("quic", None)
        ext.pop("frags", None)

    # -- IP fragments --------------------------------------------------------------
    def _reassemble(self, flow: Flow, cols: Columns, i: int, buf: memoryview,
                    t: int) -> bytes | None:
        """Collect the fragments of one UDP or TCP datagram; the whole datagram (from its
        transport header on) once complete."""
        if cols.frag[i] == 1:
            # The first fragment's data starts with the transport header.
            head = UDP_HEADER if cols.proto[i] == Proto.UDP else \
                _tcp_header_before(buf, int(cols.payoff[i]), int(cols.sport[i]),
                                   int(cols.dport[i]), int(cols.seq[i]))
            if head is None:
                return None
            start = int(cols.payoff[i]) - head
            length = int(cols.paylen[i]) + head
        else:
            start, length = int(cols.payoff[i]), int(cols.paylen[i])
        return self._add_fragment(flow, int(cols.ipid[i]), int(cols.fragoff[i]),
                                  buf[start:start + length], bool(cols.more[i]), t)

    def _add_fragment(self, flow: Flow, ipid: int, offset: int, data: memoryview | bytes,
                      more: bool, t: int) -> bytes | None:
        """Add one fragment's data at ``offset`` to datagram ``ipid`` of ``flow``; the
        whole datagram once complete."""
        trains: dict[int, _Train] = flow.ext.setdefault("frags", {})
        train = trains.get(ipid)
        if train is None:
            if len(trains) >= MAX_FRAGMENT_TRAINS_PER_FLOW:
                oldest = min(trains, key=lambda k: trains[k].first_ns)
                del trains[oldest]
                self.stats.error("ip", _Overflow("fragment trains per flow"))
            train = trains[ipid] = _Train(t)
        length = len(data)
        if offset + length > MAX_DATAGRAM or train.size + length > 2 * MAX_DATAGRAM:
            del trains[ipid]
            self.stats.error("ip", _Overflow("fragmented datagram too large"))
            return None
        train.pieces.setdefault(offset, bytes(data))
        train.size += length
        if not more:
            train.end = offset + length
        if train.end is None:
            return None
        whole = bytearray()
        for off in sorted(train.pieces):
            piece = train.pieces[off]
            if off > len(whole):
                return None  # a hole: wait for the missing fragment
            whole += piece[len(whole) - off:]
        if len(whole) < train.end:
            return None
        del trains[ipid]
        return bytes(whole[:train.end])

    # -- TCP -----------------------------------------------------------------------
    def _tcp(self, flow: Flow, payload: memoryview, to_server: bool, seq: int, flags: int,
             frame: int, t: int, dns: bool) -> None:
        ext = flow.ext
        st: _TcpState | None = ext.get("tcp")
        if st is None:
            if not payload:
                # A SYN (or a bare segment): no state until data comes, so a flood of
                # handshakes costs a flow record and no more.
                if flags & TCP_SYN and to_server and not dns:
                    ext["isn"] = seq
                return
            st = ext["tcp"] = _TcpState()
            if dns:
                st.mode = "dns"
            elif "isn" in ext:
                st.prefix.set_isn(ext.pop("isn"))
        if st.mode == "dns":
            self._dns_tcp(flow, st, payload, to_server, frame, t)
            return
        if not to_server:
            return
        if flags & TCP_SYN:
            st.prefix.set_isn(seq)
            if not payload:
                return
            seq += 1
        st.segments += 1
        st.prefix.add(seq, payload)
        stream = st.prefix.contiguous()
        self._client_stream(flow, st, stream, frame, t)
        if flow.inspect and (st.segments >= MAX_TCP_SEGMENTS or st.prefix.complete):
            flow.inspect = False
            self.stats.gave_up += 1

    def _client_stream(self, flow: Flow, st: _TcpState, stream: bytes, frame: int,
                       t: int) -> None:
        data = stream[st.offset:]
        if not data:
            return
        if st.mode is None:
            if data[0] == tlsp.ContentType.HANDSHAKE:
                st.mode = "tls"
            elif data[0] in _HTTP_METHOD_START:
                st.mode = "http"
            else:
                flow.inspect = False
                return
        if st.mode == "http":
            try:
                head = httpp.maybe_read_request_head(data)
            except ParseError as exc:
                self.stats.error("http", exc)
                flow.inspect = False
                return
            if head is None:
                return
            self.stats.http_requests += 1
            self._emit_http(flow, head, frame, t)
            if head.method.upper() == "CONNECT" and head.connect_host:
                flow.ext["app_proto"] = "http"
                self._found(flow, "connect", head.connect_host, t, frame)
                # The client speaks TLS through the tunnel once the proxy answers.
                st.offset += head.head_length
                st.mode = None
                self._client_stream(flow, st, stream, frame, t)
                return
            flow.ext.setdefault("app_proto", "http")
            if head.host:
                self._found(flow, "http", head.host, t, frame)
            flow.inspect = False
            return
        if st.mode == "tls":
            try:
                found = tlsp.maybe_read_client_hello_bytes(data)
                if found is None:
                    return
                ch = tlsp.parse_client_hello(found[0])
            except ParseError as exc:
                self.stats.error("tls", exc)
                flow.inspect = False
                return
            self.stats.tls_client_hellos += 1
            flow.inspect = False
            ja3_text, ja3_md5, ja4 = tlsp.fingerprints(ch, "t")
            flow.ext["ja4"] = ja4
            rec = flow_header(flow, "tls", t)
            rec["pcap_cnt"] = frame
            tls: dict[str, Any] = {}
            if ch.sni:
                tls["sni"] = ch.sni
            tls["version"] = _tls_version(ch)
            tls["ja3"] = {"hash": ja3_md5, "string": ja3_text}
            tls["ja4"] = ja4
            if ch.alpn:
                tls["client_alpns"] = list(ch.alpn)
            if ch.ech:
                tls["ech"] = True
            rec["tls"] = tls
            flow.ext["app_proto"] = "tls"
            self._found(flow, "sni", ch.sni, t, frame)
            self.emit_for(flow, rec)

    def _emit_http(self, flow: Flow, head: httpp.HttpRequestHead, frame: int, t: int) -> None:
        rec = flow_header(flow, "http", t)
        rec["pcap_cnt"] = frame
        http: dict[str, Any] = {}
        host = head.connect_host if head.connect_host else head.host
        if host:
            http["hostname"] = host
        port = head.connect_port if head.connect_host else head.port
        if port:
            http["http_port"] = port
        http["url"] = head.target
        http["http_method"] = head.method
        http["protocol"] = head.version
        if head.user_agent:
            http["http_user_agent"] = head.user_agent
        rec["http"] = http
        self.emit(rec)

    # -- UDP -----------------------------------------------------------------------
    def _udp_client(self, flow: Flow, payload: memoryview, frame: int, t: int) -> None:
        st: _QuicState | None = flow.ext.get("quic")
        if st is None:
            if len(payload) < 7:
                flow.inspect = False
                return
            if (payload[0] & 0xC0) != 0xC0:
                # Not an IETF QUIC long header (RFC 9000 §17.2); Google QUIC's public
                # header sends its client hello in the clear.
                self._gquic(flow, payload, frame, t, None)
                return
            version = int.from_bytes(payload[1:5], "big")
            if version not in quicp.SUPPORTED_VERSIONS and (version >> 8) != 0xFF0000:
                # Any UDP protocol can start with two high bits set (NetBIOS, games...):
                # only a known QUIC version makes it a QUIC flow.
                flow.inspect = False
                return
            st = flow.ext["quic"] = _QuicState()
        st.datagrams += 1
        try:
            hello = st.assembler.feed(payload)
        except quicp.UnsupportedVersion as exc:
            self._gquic(flow, payload, frame, t, exc)
            return
        except ParseError as exc:
            # Counted, and the flow stays inspected (up to MAX_QUIC_DATAGRAMS): a server
            # drops a datagram it cannot open and goes on, so one junk Initial sent first
            # must not hide the real one that follows.
            self.stats.error("quic", exc)
            hello = None
        if hello is None:
            if st.datagrams >= MAX_QUIC_DATAGRAMS:
                flow.inspect = False
                self.stats.gave_up += 1
            return
        flow.inspect = False
        self.stats.quic_client_hellos += 1
        ch = hello.client_hello
        ja3_text, ja3_md5, ja4 = tlsp.fingerprints(ch, "q")
        flow.ext["ja4"] = ja4
        rec = flow_header(flow, "quic", t)
        rec["pcap_cnt"] = frame
        quic: dict[str, Any] = {"version": _quic_version(hello.version)}
        if ch.sni:
            quic["sni"] = ch.sni
        quic["ja3"] = {"hash": ja3_md5, "string": ja3_text}
        quic["ja4"] = ja4
        if ch.alpn:
            quic["client_alpns"] = list(ch.alpn)
        rec["quic"] = quic
        flow.ext["app_proto"] = "quic"
        self._found(flow, "quic", ch.sni, t, frame)
        self.emit_for(flow, rec)

    def _gquic(self, flow: Flow, payload: memoryview, frame: int, t: int,
               first_error: ParseError | None) -> None:
        """Google QUIC (Q0xx) carries its client hello in the clear."""
        flow.inspect = False
        if not quicp.may_be_gquic(payload):  # what the parser would refuse at once
            if first_error is not None:
                self.stats.error("quic", first_error)
            return
        try:
            chlo = quicp.parse_gquic_client_hello(payload)
        except ParseError as exc:
            # Not QUIC of any kind is the common case for other UDP: count only what
            # claimed to be QUIC.
            if first_error is not None:
                self.stats.error("quic", first_error)
            del exc
            return
        self.stats.quic_client_hellos += 1
        rec = flow_header(flow, "quic", t)
        rec["pcap_cnt"] = frame
        quic: dict[str, Any] = {"version": chlo.version}
        if chlo.sni:
            quic["sni"] = chlo.sni
        if chlo.user_agent:
            quic["ua"] = chlo.user_agent
        rec["quic"] = quic
        flow.ext["app_proto"] = "quic"
        self._found(flow, "quic", chlo.sni, t, frame)
        self.emit_for(flow, rec)

    # -- DNS -----------------------------------------------------------------------
    def _dns_tcp(self, flow: Flow, st: _TcpState, payload: memoryview, to_server: bool,
                 frame: int, t: int) -> None:
        buf = st.dns_bufs[0 if to_server else 1]
        if len(buf) + len(payload) > MAX_DNS_TCP_BUFFER:
            self.stats.error("dns", _Overflow("DNS over TCP message larger than the buffer"))
            flow.inspect = False
            return
        # Segments are taken in capture order; DNS over TCP is a short exchange where
        # reordering is rare, and a lost segment only costs the messages it cut.
        buf += payload
        messages, used = dnsp.maybe_read_tcp_messages(buf)
        del buf[:used]
        for wire in messages:
            st.dns_count += 1
            self._dns(flow, wire, to_server, frame, t)
        if st.dns_count >= MAX_DNS_MESSAGES_PER_FLOW:
            flow.inspect = False

    def _dns(self, flow: Flow, wire: bytes | memoryview, to_server: bool, frame: int,
             t: int) -> None:
        """One DNS message: its answers go to the DNS cache, its records to EVE.

        Clients repeat their queries and a resolver repeats its answers (until their TTLs
        change), each time with a new ID: a message whose bytes after the ID were seen
        recently is not parsed again (the last :data:`DNS_MEMO_ENTRIES` distinct ones are
        kept, the oldest dropped first; messages over :data:`DNS_MEMO_MAX_BYTES` are
        always parsed).
        """
        raw = bytes(wire)  # the parser copies it anyway; no view of the batch is kept
        key = raw[2:]
        memo = self._dns_memo
        seen = memo.get(key)
        if seen is None:
            try:
                msg = dnsp.parse_dns_message(raw)
            except ParseError as exc:
                self.stats.error("dns", exc)
                return
            seen = _dns_seen(msg)
            if len(raw) <= DNS_MEMO_MAX_BYTES:
                if len(memo) >= DNS_MEMO_ENTRIES:
                    del memo[next(iter(memo))]
                memo[key] = seen
        else:
            self.stats.dns_memo_hits += 1
        self.stats.dns_messages += 1
        flow.ext["app_proto"] = "dns"
        if seen.is_response and not to_server:
            client = flow.src_addr
            add = self.dns_cache.add
            for addr, qname, chain, ttl in seen.addresses:
                add(client, addr, qname, chain, ttl, t)
        msg_id = int.from_bytes(raw[:2], "big")
        for template in seen.records:
            obj = dict(template)
            obj["id"] = msg_id
            rec = flow_header(flow, "dns", t)
            rec["pcap_cnt"] = frame
            rec["dns"] = obj
            rrname = obj.get("rrname")
            info = self.name_info(rrname) if isinstance(rrname, str) else None
            if info is not None:
                rec["avmon"] = info
            self.emit(rec)


class _DnsSeen(msgspec.Struct, frozen=True):
    """What a DNS message gives, whatever its ID: the addresses its answers resolve and
    its EVE ``dns`` objects (their ``id`` is set per message)."""

    is_response: bool
    #: (packed address, question name, CNAME chain, TTL) per resolved address.
    addresses: tuple[tuple[bytes, str, tuple[str, ...], int], ...]
    records: tuple[dnsp.EveObject, ...]


def _dns_seen(msg: dnsp.DnsMessage) -> _DnsSeen:
    addresses = []
    if msg.is_response:
        for ra in dnsp.answer_addresses(msg):
            try:
                addresses.append((ip_packed(ra.address), ra.qname, ra.chain, ra.ttl))
            except ValueError:
                continue
    return _DnsSeen(msg.is_response, tuple(addresses), dnsp.eve_dns_records(msg))


def _on_ports(ports: npt.NDArray[np.uint16], wanted: frozenset[int]) -> npt.NDArray[np.bool_]:
    """Where ``ports`` is one of the few ``wanted`` (a comparison each: np.isin sorts)."""
    found = np.zeros(ports.shape[0], dtype=np.bool_)
    for port in wanted:
        found |= ports == port
    return found


def _within_caps(capped: npt.NDArray[np.bool_], tcp: npt.NDArray[np.bool_],
                 group: npt.NDArray[np.int64], cand: npt.NDArray[np.bool_]) -> None:
    """Drop from ``cand`` the client payloads a flow can never get to in this batch: a
    TCP flow stops after MAX_TCP_SEGMENTS client segments and a UDP flow after
    MAX_QUIC_DATAGRAMS datagrams, each of which counts, so later ones (an upload's bulk)
    would only be skipped one by one in the loop. ``capped``: those payloads."""
    sel = np.flatnonzero(capped)
    if sel.shape[0] <= MAX_QUIC_DATAGRAMS:
        return
    order = np.argsort(group[sel], kind="stable")
    sel = sel[order]
    groups = group[sel]
    starts = np.flatnonzero(np.concatenate(([True], groups[1:] != groups[:-1])))
    rank = np.arange(sel.shape[0]) - np.repeat(starts, np.diff(np.append(starts, sel.shape[0])))
    cap = np.where(tcp[sel], MAX_TCP_SEGMENTS, MAX_QUIC_DATAGRAMS)
    cand[sel[rank >= cap]] = False


def _tcp_header_before(buf: memoryview, payoff: int, sport: int, dport: int,
                       seq: int) -> int | None:
    """Length of the TCP header that ends at ``payoff`` (decode keeps only where the
    payload starts): the one whose ports, sequence number and data offset agree."""
    for length in range(20, 61, 4):
        s = payoff - length
        if s < 0:
            break
        if buf[s + 12] >> 4 == length // 4 \
                and int.from_bytes(buf[s:s + 2], "big") == sport \
                and int.from_bytes(buf[s + 2:s + 4], "big") == dport \
                and int.from_bytes(buf[s + 4:s + 8], "big") == seq:
            return length
    return None


def _tcp_header_len(segment: bytes) -> int | None:
    """Length of the TCP header at the start of a reassembled segment, if well-formed."""
    if len(segment) < 20:
        return None
    length = (segment[12] >> 4) * 4
    return length if 20 <= length <= len(segment) else None


def _held_by(flow: Flow) -> int:
    """Bytes ``flow`` holds for reassembly."""
    ext = flow.ext
    held = 0
    tcp: _TcpState | None = ext.get("tcp")
    if tcp is not None:
        held += tcp.prefix.buffered + len(tcp.dns_bufs[0]) + len(tcp.dns_bufs[1])
    quic: _QuicState | None = ext.get("quic")
    if quic is not None:
        held += quic.assembler.buffered
    trains: dict[int, _Train] | None = ext.get("frags")
    if trains:
        held += sum(train.size for train in trains.values())
    return held


class _Overflow(ParseError):
    """A stream buffer's cap was hit."""

    reason = "limit"


_TLS_VERSIONS: Final = {0x0304: "TLS 1.3", 0x0303: "TLS 1.2", 0x0302: "TLS 1.1",
                        0x0301: "TLS 1.0", 0x0300: "SSLv3"}


def _tls_version(ch: tlsp.ClientHello) -> str:
    """The highest version the client offers (the server's choice is not seen here)."""
    return _best_version(ch.versions, ch.legacy_version)


@functools.lru_cache(maxsize=1024)
def _best_version(versions: tuple[int, ...], legacy_version: int) -> str:
    """(Clients offer few distinct version lists: cached.)"""
    offered = [v for v in versions if not tlsp.is_grease(v)] or [legacy_version]
    best = max(offered)
    return _TLS_VERSIONS.get(best, f"0x{best:04x}")


def _quic_version(version: int) -> str:
    return {1: "1", 0x6B3343CF: "2"}.get(version, f"{version:08x}")


def with_attr(rec: dict[str, Any], flow: Flow) -> dict[str, Any]:
    """``rec`` with the flow's ``avmon`` attribution, if it has one."""
    attr = flow.ext.get("eve_avmon")
    if attr:
        rec["avmon"] = attr
    return rec
