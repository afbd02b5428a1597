"""Vectorised L2-L4 decoding of a batch into per-packet columns.

Decode turns a :class:`~monitor.capture.batch.Batch` into numpy columns: IP version,
addresses (as two uint64 halves of an IPv6 address; IPv4 as IPv4-mapped ``::ffff:a.b.c.d``),
L4 protocol, ports, TCP flags and sequence number, and where the L4 payload starts and
how many of its bytes were captured. Every step works on whole columns: the per-packet
Python work is limited to link types that need a walk over TLVs (NFLOG). Packets that
cannot be decoded are marked with a :class:`Undecoded` reason and counted, never dropped
silently. Tunnels (IP-in-IP, GRE, GRE-in-UDP, VXLAN, Teredo) are decapsulated into a
further set of columns for the same packets, so inner and outer flows are both seen.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt

from monitor.capture.batch import Batch, LinkType
from monitor.kernels import native_decode

__all__ = ["Columns", "Undecoded", "decode", "decode_all"]

#: 802.1Q/802.1ad tags followed before giving up; real networks use one or two (QinQ).
MAX_VLAN_DEPTH: Final = 8
#: MPLS labels followed; carrier stacks rarely exceed three or four.
MAX_MPLS_DEPTH: Final = 8
#: IPv6 extension headers followed; RFC 8200 recommends each appear at most once or twice.
MAX_IPV6_EXT: Final = 8
#: Tunnel layers decapsulated (e.g. Teredo inside GRE).
MAX_TUNNEL_DEPTH: Final = 3
#: NFLOG TLVs walked per packet (a real NFLOG record has about ten).
MAX_NFLOG_TLVS: Final = 64

U8 = npt.NDArray[np.uint8]
U16 = npt.NDArray[np.uint16]
U32 = npt.NDArray[np.uint32]
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]


class Undecoded(IntEnum):
    """Why a packet has no L3/L4 columns (0: decoded). Values are metric label sources."""

    OK = 0
    NON_IP = 1
    UNKNOWN_LINKTYPE = 2
    TRUNCATED = 3
    BAD_IP_HEADER = 4
    VLAN_DEPTH = 5
    IPV6_EXT_DEPTH = 6
    MPLS_DEPTH = 7

    @property
    def label(self) -> str:
        return self.name.lower()


class Ether(IntEnum):
    IPV4 = 0x0800
    IPV6 = 0x86DD
    VLAN = 0x8100
    QINQ = 0x88A8
    QINQ_OLD = 0x9100
    MPLS = 0x8847
    MPLS_MC = 0x8848
    PPPOE = 0x8864
    TEB = 0x6558  # transparent Ethernet bridging (GRE carrying Ethernet)


class Proto(IntEnum):
    HOPOPT = 0
    ICMP = 1
    IPIP = 4
    TCP = 6
    UDP = 17
    IPV6 = 41
    ROUTING = 43
    FRAGMENT = 44
    GRE = 47
    ESP = 50
    AH = 51
    ICMPV6 = 58
    NONE = 59
    DSTOPTS = 60
    MOBILITY = 135
    SCTP = 132


_V6_EXT = np.array([0, 43, 60, 135, 139, 140, 253, 254], dtype=np.uint8)
_V4_MAPPED_HI = np.uint64(0)
_V4_MAPPED_LO_TAG = np.uint64(0xFFFF << 32)

#: UDP ports whose payload is a tunnel we decapsulate.
PORT_TEREDO: Final = 3544
PORT_GRE_IN_UDP: Final = 4754
PORT_VXLAN: Final = 4789


class Columns(msgspec.Struct, eq=False):
    """Decoded per-packet columns for one layer (outer, or one tunnel level) of a batch."""

    #: Index of the packet within its batch (the same packet may appear in several layers),
    #: increasing: a layer holds its packets in batch order.
    index: I64
    #: 0 when decoded, else an :class:`Undecoded` value.
    reason: U8
    ipver: U8
    proto: U8
    src_hi: U64
    src_lo: U64
    dst_hi: U64
    dst_lo: U64
    sport: U16
    dport: U16
    #: TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, ...).
    tcpflags: U8
    #: TCP sequence number.
    seq: U32
    #: Absolute offset of the L4 payload in the batch buffer.
    payoff: I64
    #: Captured L4 payload bytes available at ``payoff`` (never beyond the IP length).
    paylen: I64
    #: 0: not a fragment; 1: first fragment (has the L4 header); 2: later fragment.
    frag: U8
    #: IP identification (IPv4 16-bit, IPv6 fragment header 32-bit) for fragments.
    ipid: U32
    #: Fragments: byte offset of this fragment's data in the datagram (0 otherwise).
    fragoff: I64
    #: Fragments: more fragments follow.
    more: B
    #: Outer 802.1Q VLAN id, 0 when untagged.
    vlan: U16
    #: Tunnel depth of this layer (0: outer).
    depth: int = 0

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def take(self, sel: npt.NDArray[np.intp] | B) -> Columns:
        return Columns(
            self.index[sel], self.reason[sel], self.ipver[sel], self.proto[sel],
            self.src_hi[sel], self.src_lo[sel], self.dst_hi[sel], self.dst_lo[sel],
            self.sport[sel], self.dport[sel], self.tcpflags[sel], self.seq[sel],
            self.payoff[sel], self.paylen[sel], self.frag[sel], self.ipid[sel],
            self.fragoff[sel], self.more[sel], self.vlan[sel], self.depth,
        )


class _Bytes:
    """Bounds-safe vectorised reads from the batch buffer."""

    __slots__ = ("buf",)

    def __init__(self, buffer: bytes | bytearray | memoryview) -> None:
        self.buf = np.frombuffer(buffer, dtype=np.uint8)
        if self.buf.shape[0] == 0:
            self.buf = np.zeros(1, dtype=np.uint8)

    def u8(self, pos: I64) -> U8:
        return self.buf.take(pos, mode="clip")  # out-of-range positions read an edge byte

    def u16(self, pos: I64) -> U16:
        hi = self.u8(pos).astype(np.uint16)
        lo = self.u8(pos + 1).astype(np.uint16)
        return (hi << np.uint16(8)) | lo

    def u32(self, pos: I64) -> U32:
        out = np.zeros(pos.shape, dtype=np.uint32)
        for k in range(4):
            out = (out << np.uint32(8)) | self.u8(pos + k).astype(np.uint32)
        return out

    def u64(self, pos: I64) -> U64:
        idx = pos[:, None] + np.arange(8, dtype=np.int64)
        return np.ascontiguousarray(self.buf.take(idx, mode="clip")).view(">u8").reshape(
            -1).astype(np.uint64)


def _empty(n: int) -> dict[str, npt.NDArray[np.generic]]:
    return {
        "reason": np.zeros(n, np.uint8), "ipver": np.zeros(n, np.uint8),
        "proto": np.zeros(n, np.uint8), "src_hi": np.zeros(n, np.uint64),
        "src_lo": np.zeros(n, np.uint64), "dst_hi": np.zeros(n, np.uint64),
        "dst_lo": np.zeros(n, np.uint64), "sport": np.zeros(n, np.uint16),
        "dport": np.zeros(n, np.uint16), "tcpflags": np.zeros(n, np.uint8),
        "seq": np.zeros(n, np.uint32), "payoff": np.zeros(n, np.int64),
        "paylen": np.zeros(n, np.int64), "frag": np.zeros(n, np.uint8),
        "ipid": np.zeros(n, np.uint32), "fragoff": np.zeros(n, np.int64),
        "more": np.zeros(n, np.bool_), "vlan": np.zeros(n, np.uint16),
    }


def _nflog_l3(buffer: bytes | bytearray | memoryview, off: int, end: int) -> tuple[int, int]:
    """Locate the payload TLV of an NFLOG record; returns (l3 offset, ethertype) or (-1, 0)."""
    mv = memoryview(buffer)
    if end - off < 4:
        return -1, 0
    family = mv[off]
    pos = off + 4
    for _ in range(MAX_NFLOG_TLVS):
        if pos + 4 > end:
            break
        # TLV lengths and types are in the capturing host's byte order (little-endian on
        # every platform NFLOG exists on in practice).
        tlv_len = mv[pos] | (mv[pos + 1] << 8)
        tlv_type = (mv[pos + 2] | (mv[pos + 3] << 8)) & 0x7FFF
        if tlv_len < 4:
            break
        if tlv_type == 9:  # NFULA_PAYLOAD
            return pos + 4, (Ether.IPV4 if family == 2 else Ether.IPV6 if family == 10 else 0)
        pos += (tlv_len + 3) & ~3
    return -1, 0


def _link_layer(batch: Batch, rd: _Bytes, off: I64, end: I64, lt: npt.NDArray[np.int32],
                cols: dict[str, npt.NDArray[np.generic]]) -> tuple[I64, U16]:
    """Per packet: offset of the L3 header and its ethertype (0 where not IP/unknown)."""
    n = off.shape[0]
    l3 = np.full(n, -1, dtype=np.int64)
    et = np.zeros(n, dtype=np.uint16)
    reason = cols["reason"]

    m = lt == LinkType.ETHERNET
    if m.any():
        p = off[m]
        e = rd.u16(p + 12)
        p = p + 14
        vlan = np.zeros(p.shape, np.uint16)
        for _ in range(MAX_VLAN_DEPTH):
            tagged = (e == Ether.VLAN) | (e == Ether.QINQ) | (e == Ether.QINQ_OLD)
            if not tagged.any():
                break
            first = tagged & (vlan == 0)
            vlan[first] = rd.u16(p[first]) & np.uint16(0x0FFF)
            e = np.where(tagged, rd.u16(p + 2), e)
            p = np.where(tagged, p + 4, p)
        else:
            deep = (e == Ether.VLAN) | (e == Ether.QINQ) | (e == Ether.QINQ_OLD)
            idx = np.flatnonzero(m)[deep]
            reason[idx] = Undecoded.VLAN_DEPTH
            e = np.where(deep, np.uint16(0), e)
        pppoe = e == Ether.PPPOE
        if pppoe.any():
            ppp = rd.u16(p + 6)
            e = np.where(pppoe, np.where(ppp == 0x0021, np.uint16(Ether.IPV4),
                                         np.where(ppp == 0x0057, np.uint16(Ether.IPV6),
                                                  np.uint16(0))), e)
            p = np.where(pppoe, p + 8, p)
        cols["vlan"][m] = vlan
        l3[m] = p
        et[m] = e

    m = lt == LinkType.LINUX_SLL
    if m.any():
        l3[m] = off[m] + 16
        et[m] = rd.u16(off[m] + 14)
    m = lt == LinkType.LINUX_SLL2
    if m.any():
        l3[m] = off[m] + 20
        et[m] = rd.u16(off[m])
    m = np.isin(lt, (LinkType.RAW, LinkType.RAW_DLT12, LinkType.RAW_DLT14,
                     LinkType.IPV4, LinkType.IPV6))
    if m.any():
        l3[m] = off[m]
        v = rd.u8(off[m]) >> 4
        et[m] = np.where(v == 4, np.uint16(Ether.IPV4),
                         np.where(v == 6, np.uint16(Ether.IPV6), np.uint16(0)))
    for kind in (LinkType.NULL, LinkType.LOOP):
        m = lt == kind
        if not m.any():
            continue
        p = off[m]
        b0, b1, b2, b3 = (rd.u8(p + k).astype(np.uint32) for k in range(4))
        be = (b0 << 24) | (b1 << 16) | (b2 << 8) | b3
        le = (b3 << 24) | (b2 << 16) | (b1 << 8) | b0
        # NULL is in the capturing host's byte order, which the file does not record:
        # take whichever reading is a known address family.
        fam = be if kind == LinkType.LOOP else np.where(le < 256, le, be)
        et[m] = np.where(fam == 2, np.uint16(Ether.IPV4),
                         np.where(np.isin(fam, (10, 24, 28, 30)), np.uint16(Ether.IPV6),
                                  np.uint16(0)))
        l3[m] = p + 4
    m = lt == LinkType.NFLOG
    if m.any():
        for i in np.flatnonzero(m):
            pos, family = _nflog_l3(batch.buffer, int(off[i]), int(end[i]))
            l3[i] = pos
            et[i] = family

    known = np.isin(lt, [int(x) for x in LinkType])
    reason[~known] = Undecoded.UNKNOWN_LINKTYPE

    # MPLS: skip labels to the bottom of stack, then guess IP from the version nibble.
    m = (et == Ether.MPLS) | (et == Ether.MPLS_MC)
    if m.any():
        p = l3[m]
        done = np.zeros(p.shape, bool)
        for _ in range(MAX_MPLS_DEPTH):
            bos = (rd.u8(p + 2) & 1) == 1
            p = np.where(done, p, p + 4)
            done |= bos
            if done.all():
                break
        v = rd.u8(p) >> 4
        e = np.where(v == 4, np.uint16(Ether.IPV4),
                     np.where(v == 6, np.uint16(Ether.IPV6), np.uint16(0)))
        idx = np.flatnonzero(m)
        reason[idx[~done]] = Undecoded.MPLS_DEPTH
        et[m] = np.where(done, e, np.uint16(0))
        l3[m] = p
    return l3, et


def _decode_layer(batch: Batch, rd: _Bytes, index: I64, off: I64, end: I64,
                  lt: npt.NDArray[np.int32], depth: int) -> Columns:
    n = index.shape[0]
    cols = _empty(n)
    reason = cols["reason"]
    l3, et = _link_layer(batch, rd, off, end, lt, cols)

    is4 = (et == Ether.IPV4) & (l3 >= 0)
    is6 = (et == Ether.IPV6) & (l3 >= 0)
    reason[(reason == 0) & ~is4 & ~is6] = Undecoded.NON_IP

    l4 = np.zeros(n, np.int64)
    ip_end = end.copy()
    proto = cols["proto"]

    # IPv4 (RFC 791)
    if is4.any():
        p = l3[is4]
        e = end[is4]
        b0 = rd.u8(p)
        ihl = (b0 & 0x0F).astype(np.int64) * 4
        tot = rd.u16(p + 2).astype(np.int64)
        ok = (p + 20 <= e) & ((b0 >> 4) == 4) & (ihl >= 20) & (p + ihl <= e)
        # A zero total length appears with TSO/GSO captures: trust the captured length.
        ipe = np.where(tot == 0, e, np.minimum(p + np.maximum(tot, ihl), e))
        fl = rd.u16(p + 6)
        mf = (fl & 0x2000) != 0
        fo = fl & 0x1FFF
        idx = np.flatnonzero(is4)
        bad = idx[~ok]
        reason[bad] = np.where(p[~ok] + 20 > e[~ok], np.uint8(Undecoded.TRUNCATED),
                               np.uint8(Undecoded.BAD_IP_HEADER))
        cols["ipver"][idx] = 4
        proto[idx] = rd.u8(p + 9)
        cols["src_lo"][idx] = _V4_MAPPED_LO_TAG | rd.u32(p + 12).astype(np.uint64)
        cols["dst_lo"][idx] = _V4_MAPPED_LO_TAG | rd.u32(p + 16).astype(np.uint64)
        cols["frag"][idx] = np.where(fo > 0, 2, np.where(mf, 1, 0)).astype(np.uint8)
        cols["ipid"][idx] = rd.u16(p + 4).astype(np.uint32)
        cols["fragoff"][idx] = fo.astype(np.int64) * 8
        cols["more"][idx] = mf
        l4[idx] = p + ihl
        ip_end[idx] = ipe

    # IPv6 (RFC 8200) with extension headers
    if is6.any():
        p = l3[is6]
        e = end[is6]
        ok = (p + 40 <= e) & ((rd.u8(p) >> 4) == 6)
        plen = rd.u16(p + 4).astype(np.int64)
        ipe = np.where(plen == 0, e, np.minimum(p + 40 + plen, e))
        nh = rd.u8(p + 6)
        q = p + 40
        frag = np.zeros(p.shape, np.uint8)
        ipid = np.zeros(p.shape, np.uint32)
        fragoff = np.zeros(p.shape, np.int64)
        more6 = np.zeros(p.shape, np.bool_)
        for _ in range(MAX_IPV6_EXT):
            ext = np.isin(nh, _V6_EXT) | (nh == Proto.FRAGMENT) | (nh == Proto.AH)
            ext &= ok & (frag != 2)
            if not ext.any():
                break
            ok &= ~ext | (q + 8 <= ipe)
            ext &= ok
            hlen = np.where(nh == Proto.FRAGMENT, 8,
                            np.where(nh == Proto.AH, (rd.u8(q + 1).astype(np.int64) + 2) * 4,
                                     (rd.u8(q + 1).astype(np.int64) + 1) * 8))
            isfrag = ext & (nh == Proto.FRAGMENT)
            if isfrag.any():
                fw = rd.u16(q + 2)
                fo = fw >> 3
                more = (fw & 1) != 0
                frag = np.where(isfrag, np.where(fo > 0, 2, np.where(more, 1, 0)),
                                frag).astype(np.uint8)
                ipid = np.where(isfrag, rd.u32(q + 4), ipid)
                fragoff = np.where(isfrag, fo.astype(np.int64) * 8, fragoff)
                more6 = np.where(isfrag, more, more6)
            nh = np.where(ext, rd.u8(q), nh)
            q = np.where(ext, q + hlen, q)
        else:
            still = np.isin(nh, _V6_EXT) & ok & (frag != 2)
            idx6 = np.flatnonzero(is6)
            reason[idx6[still]] = Undecoded.IPV6_EXT_DEPTH
        idx = np.flatnonzero(is6)
        bad = idx[~ok]
        reason[bad] = np.where(p[~ok] + 40 > e[~ok], np.uint8(Undecoded.TRUNCATED),
                               np.uint8(Undecoded.BAD_IP_HEADER))
        cols["ipver"][idx] = 6
        proto[idx] = nh
        cols["src_hi"][idx] = rd.u64(p + 8)
        cols["src_lo"][idx] = rd.u64(p + 16)
        cols["dst_hi"][idx] = rd.u64(p + 24)
        cols["dst_lo"][idx] = rd.u64(p + 32)
        cols["frag"][idx] = frag
        cols["ipid"][idx] = ipid
        cols["fragoff"][idx] = fragoff
        cols["more"][idx] = more6
        l4[idx] = np.minimum(q, ipe)
        ip_end[idx] = ipe

    good = reason == 0
    cols["ipver"][~good] = 0
    has_l4 = good & (cols["frag"] != 2)

    # TCP (RFC 9293)
    m = has_l4 & (proto == Proto.TCP)
    if m.any():
        p = l4[m]
        e = ip_end[m]
        doff = (rd.u8(p + 12) >> 4).astype(np.int64) * 4
        ok = (p + 20 <= e) & (doff >= 20)
        idx = np.flatnonzero(m)
        reason[idx[~ok]] = Undecoded.TRUNCATED
        cols["sport"][idx] = np.where(ok, rd.u16(p), 0)
        cols["dport"][idx] = np.where(ok, rd.u16(p + 2), 0)
        cols["seq"][idx] = rd.u32(p + 4)
        cols["tcpflags"][idx] = np.where(ok, rd.u8(p + 13), 0)
        po = np.minimum(p + doff, e)
        cols["payoff"][idx] = po
        cols["paylen"][idx] = np.where(ok, np.maximum(e - po, 0), 0)
    # UDP (RFC 768) and SCTP (same port layout)
    m = has_l4 & ((proto == Proto.UDP) | (proto == Proto.SCTP))
    if m.any():
        p = l4[m]
        e = ip_end[m]
        ok = p + 8 <= e
        idx = np.flatnonzero(m)
        reason[idx[~ok]] = Undecoded.TRUNCATED
        cols["sport"][idx] = np.where(ok, rd.u16(p), 0)
        cols["dport"][idx] = np.where(ok, rd.u16(p + 2), 0)
        hdr = np.where(proto[m] == Proto.SCTP, 12, 8)
        po = np.minimum(p + hdr, e)
        cols["payoff"][idx] = po
        cols["paylen"][idx] = np.where(ok, np.maximum(e - po, 0), 0)
    # ICMP / ICMPv6: type and code in the port columns (as Community ID does).
    m = has_l4 & ((proto == Proto.ICMP) | (proto == Proto.ICMPV6))
    if m.any():
        p = l4[m]
        e = ip_end[m]
        ok = p + 2 <= e
        idx = np.flatnonzero(m)
        cols["sport"][idx] = np.where(ok, rd.u8(p), 0)
        cols["dport"][idx] = np.where(ok, rd.u8(p + 1), 0)
        cols["payoff"][idx] = np.minimum(p + 8, e)
        cols["paylen"][idx] = np.maximum(e - np.minimum(p + 8, e), 0)
    # Other protocols (GRE, ESP, IP-in-IP...): payload is everything after the IP header.
    m = has_l4 & ~np.isin(proto, (Proto.TCP, Proto.UDP, Proto.SCTP, Proto.ICMP, Proto.ICMPV6))
    if m.any():
        cols["payoff"][m] = l4[m]
        cols["paylen"][m] = np.maximum(ip_end[m] - l4[m], 0)
    # Later fragments: their bytes belong to the datagram; no ports.
    m = good & (cols["frag"] == 2)
    if m.any():
        cols["payoff"][m] = l4[m]
        cols["paylen"][m] = np.maximum(ip_end[m] - l4[m], 0)

    bad = reason != 0
    if bad.any():
        for name in ("proto", "sport", "dport", "tcpflags", "paylen"):
            cols[name][bad] = 0
    return Columns(index=index, depth=depth, **cols)  # type: ignore[arg-type]


def _layer(batch: Batch, rd: _Bytes, index: I64, off: I64, end: I64,
           lt: npt.NDArray[np.int32], depth: int) -> Columns:
    """One layer's columns: from the compiled kernel when it was built (one pass per
    packet in C), else from :func:`_decode_layer`, the reference it matches exactly."""
    if native_decode is None:
        return _decode_layer(batch, rd, index, off, end, lt, depth)
    buffer = batch.buffer

    def nflog(o: int, e: int) -> tuple[int, int]:
        return _nflog_l3(buffer, o, e)

    cols = native_decode.decode_layer(buffer, np.ascontiguousarray(off, dtype=np.int64),
                                      np.ascontiguousarray(end, dtype=np.int64),
                                      np.ascontiguousarray(lt, dtype=np.int32), nflog)
    if cols is None:  # not reached: it declines only without an NFLOG helper
        return _decode_layer(batch, rd, index, off, end, lt, depth)
    return Columns(index=index, depth=depth, **cols)


def _find_tunnels(batch: Batch, rd: _Bytes, c: Columns
                  ) -> tuple[I64, I64, I64, npt.NDArray[np.int32]]:
    """:func:`_tunnels`, from the compiled kernel when it was built (one pass over the
    layer in C instead of some forty numpy operations on it, a fixed cost per batch)."""
    if native_decode is None:
        return _tunnels(rd, c)
    found: tuple[I64, I64, I64, npt.NDArray[np.int32]] = native_decode.tunnels(
        batch.buffer, *(np.ascontiguousarray(col) for col in (
            c.index, c.reason, c.frag, c.proto, c.sport, c.dport, c.payoff, c.paylen)))
    return found


def _tunnels(rd: _Bytes, c: Columns) -> tuple[I64, I64, I64, npt.NDArray[np.int32]]:
    """Packets of layer ``c`` that carry a tunnel: (index, inner offset, end, link type)."""
    ok = (c.reason == 0) & (c.frag == 0)
    start = c.payoff
    stop = c.payoff + c.paylen
    inner_lt = np.full(len(c), -1, dtype=np.int32)
    inner_off = start.copy()

    # IP-in-IP and IPv6-in-IP (6in4)
    m = ok & ((c.proto == Proto.IPIP) | (c.proto == Proto.IPV6))
    inner_lt[m] = LinkType.RAW

    # GRE (RFC 2784/2890), directly or in UDP (RFC 8086)
    gre = ok & (c.proto == Proto.GRE)
    gre_udp = ok & (c.proto == Proto.UDP) & ((c.dport == PORT_GRE_IN_UDP)
                                               | (c.sport == PORT_GRE_IN_UDP))
    m = gre | gre_udp
    if m.any():
        p = start[m]
        flags = rd.u16(p)
        ptype = rd.u16(p + 2)
        version = flags & 7
        hl = 4 + 4 * ((flags >> 15) & 1).astype(np.int64) \
            + 4 * ((flags >> 13) & 1).astype(np.int64) + 4 * ((flags >> 12) & 1).astype(np.int64)
        lt = np.where(ptype == Ether.TEB, LinkType.ETHERNET,
                      np.where((ptype == Ether.IPV4) | (ptype == Ether.IPV6),
                               LinkType.RAW, -1)).astype(np.int32)
        lt[(version != 0) | (p + hl > stop[m])] = -1
        inner_lt[m] = lt
        inner_off[m] = p + hl

    # VXLAN (RFC 7348): 8-byte header with the I flag, then Ethernet.
    m = ok & (c.proto == Proto.UDP) & (c.dport == PORT_VXLAN) & (c.paylen >= 8 + 14)
    if m.any():
        p = start[m]
        valid = (rd.u8(p) & 0x08) != 0
        inner_lt[m] = np.where(valid, LinkType.ETHERNET, -1)
        inner_off[m] = p + 8

    # Teredo (RFC 4380): IPv6 in UDP/3544, optionally after authentication and
    # origin-indication headers.
    # Teredo relays and peers use any port (RFC 4380 §5.2): elsewhere, a payload that is
    # exactly one IPv6 packet (version 6, payload length filling the datagram) is taken
    # as Teredo too, as Zeek does.
    teredo_port = (c.dport == PORT_TEREDO) | (c.sport == PORT_TEREDO)
    udp = ok & (c.proto == Proto.UDP) & (c.paylen >= 40)
    exact6 = np.zeros(len(c), np.bool_)
    if udp.any():
        p = start[udp]
        exact6[udp] = ((rd.u8(p) >> 4) == 6) & (
            rd.u16(p + 4).astype(np.int64) + 40 == c.paylen[udp]) & (rd.u8(p + 7) > 0)
    m = ok & (c.proto == Proto.UDP) & (teredo_port | exact6) & (inner_lt < 0)
    if m.any():
        p = start[m].copy()
        first = rd.u16(p)
        auth = first == 0x0001
        if auth.any():
            idlen = rd.u8(p + 2).astype(np.int64)
            aulen = rd.u8(p + 3).astype(np.int64)
            p = np.where(auth, p + 4 + idlen + aulen + 8 + 1, p)
        origin = rd.u16(p) == 0x0000
        p = np.where(origin, p + 8, p)
        is6 = ((rd.u8(p) >> 4) == 6) & (p + 40 <= stop[m])
        inner_lt[m] = np.where(is6, LinkType.RAW, -1)
        inner_off[m] = p

    sel = np.flatnonzero(inner_lt >= 0)
    return c.index[sel], inner_off[sel], stop[sel], inner_lt[sel]


def decode(batch: Batch) -> Columns:
    """Decode the outer layer of every packet of ``batch``."""
    rd = _Bytes(batch.buffer)
    off = batch.offsets.astype(np.int64, copy=False)
    end = off + batch.caplens
    index = np.arange(len(batch), dtype=np.int64)
    return _layer(batch, rd, index, off, end, batch.linktypes, 0)


def decode_all(batch: Batch) -> list[Columns]:
    """Decode ``batch``: the outer layer, then each tunnel layer found inside it."""
    rd = _Bytes(batch.buffer)
    off = batch.offsets.astype(np.int64, copy=False)
    end = off + batch.caplens
    index = np.arange(len(batch), dtype=np.int64)
    layers = [_layer(batch, rd, index, off, end, batch.linktypes, 0)]
    for depth in range(1, MAX_TUNNEL_DEPTH + 1):
        idx, ioff, iend, ilt = _find_tunnels(batch, rd, layers[-1])
        if idx.shape[0] == 0:
            break
        inner = _layer(batch, rd, idx, ioff, iend, ilt, depth)
        keep = inner.reason == 0
        if not keep.any():
            break
        layers.append(inner.take(keep))
    return layers
