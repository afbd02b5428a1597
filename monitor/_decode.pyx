# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
# cython: cdivision=True
"""The compiled form of :func:`monitor.decode._decode_layer` (L2-L4 decoding of one layer).

``monitor.decode._decode_layer`` stays the reference: this kernel walks each packet once
in C and fills exactly the columns the numpy code fills, for every input, including
truncated and garbage packets. tests/test_decode_kernel.py compares the two column by
column on the corpus captures (outer and tunnel layers), on generated and on mutated
packets.

Exactness rests on three things copied from the reference:

* every read goes through the same clipping as ``_Bytes.u8`` (``take(mode="clip")``): a
  position before the buffer reads its first byte, one past it its last byte, and an
  empty buffer reads as one zero byte. Reads happen where the numpy code reads, often
  before a bounds check and beyond the packet's own end (so the next packet's bytes can
  land in a column, such as ``seq`` or ``vlan``);
* the order of operations of the vectorised loops, rewritten per packet (the VLAN, MPLS
  and IPv6 extension loops stop after the same number of steps and flag the same depth
  reasons);
* the same integer widths and wraparounds as the numpy dtypes.
"""

import numpy as np

cdef extern from *:
    """
    #ifndef AVMON_KERNELS_SHA256
    #define AVMON_KERNELS_SHA256 "unknown"
    #endif
    """
    const char *AVMON_KERNELS_SHA256

#: SHA-256 of the _decode.pyx this module was built from (a test catches a stale build).
SOURCE_SHA256 = AVMON_KERNELS_SHA256.decode("ascii")

# LINKTYPE_* values (monitor.capture.batch.LinkType)
cdef enum:
    LT_NULL = 0
    LT_ETHERNET = 1
    LT_RAW = 101
    LT_LOOP = 108
    LT_LINUX_SLL = 113
    LT_IPV4 = 228
    LT_IPV6 = 229
    LT_NFLOG = 239
    LT_LINUX_SLL2 = 276
    LT_RAW_DLT12 = 12
    LT_RAW_DLT14 = 14

# Ethertypes (monitor.decode.Ether)
cdef enum:
    ET_IPV4 = 0x0800
    ET_IPV6 = 0x86DD
    ET_VLAN = 0x8100
    ET_QINQ = 0x88A8
    ET_QINQ_OLD = 0x9100
    ET_MPLS = 0x8847
    ET_MPLS_MC = 0x8848
    ET_PPPOE = 0x8864

# IP protocols (monitor.decode.Proto)
cdef enum:
    P_ICMP = 1
    P_TCP = 6
    P_UDP = 17
    P_FRAGMENT = 44
    P_AH = 51
    P_ICMPV6 = 58
    P_SCTP = 132

# Reasons (monitor.decode.Undecoded)
cdef enum:
    R_OK = 0
    R_NON_IP = 1
    R_UNKNOWN_LINKTYPE = 2
    R_TRUNCATED = 3
    R_BAD_IP_HEADER = 4
    R_VLAN_DEPTH = 5
    R_IPV6_EXT_DEPTH = 6
    R_MPLS_DEPTH = 7

# Depth limits (monitor.decode.MAX_*)
cdef enum:
    MAX_VLAN_DEPTH = 8
    MAX_MPLS_DEPTH = 8
    MAX_IPV6_EXT = 8

#: IPv4 addresses are stored IPv4-mapped (``::ffff:a.b.c.d``): the tag of the low half.
cdef unsigned long long V4_MAPPED_LO_TAG = 0xFFFF00000000ULL

cdef unsigned char ZERO_BYTE = 0

#: Packets ahead whose headers are prefetched: each packet's first read is otherwise a
#: cache miss on a multi-megabyte batch buffer, which dominates the time per packet.
cdef enum:
    PREFETCH_AHEAD = 8

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define avmon_prefetch(p) __builtin_prefetch((p))
    #else
    #define avmon_prefetch(p) ((void)(p))
    #endif
    """
    void avmon_prefetch(const void *p) noexcept nogil


# ----------------------------------------------------------------------- clipped reads

cdef struct Buf:
    const unsigned char *data
    long long n  # at least 1 (an empty buffer reads as one zero byte)


cdef Buf buf_of(const unsigned char[::1] data):
    """Reads over ``data`` (kept alive by the caller); an empty or missing buffer reads as
    one zero byte, as ``_Bytes`` reads it."""
    cdef Buf b
    if data is None or data.shape[0] == 0:
        b.data = &ZERO_BYTE
        b.n = 1
    else:
        b.data = &data[0]
        b.n = data.shape[0]
    return b


cdef inline long long clip(const Buf *b, long long pos) noexcept nogil:
    """``take(mode="clip")``: out-of-range positions read the nearest edge byte."""
    if pos < 0:
        return 0
    if pos >= b.n:
        return b.n - 1
    return pos


cdef inline unsigned int u8(const Buf *b, long long pos) noexcept nogil:
    """``_Bytes.u8``."""
    return b.data[clip(b, pos)]


# u16/u32/u64 read big-endian from the clipped bytes; where every byte is inside the
# buffer (the usual case) without clipping each one.

cdef inline unsigned int u16(const Buf *b, long long pos) noexcept nogil:
    cdef const unsigned char *p
    if 0 <= pos and pos + 2 <= b.n:
        p = b.data + pos
        return (p[0] << 8) | p[1]
    return (u8(b, pos) << 8) | u8(b, pos + 1)


cdef inline unsigned int u32(const Buf *b, long long pos) noexcept nogil:
    cdef const unsigned char *p
    if 0 <= pos and pos + 4 <= b.n:
        p = b.data + pos
        return (<unsigned int>p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]
    return (u8(b, pos) << 24) | (u8(b, pos + 1) << 16) | (u8(b, pos + 2) << 8) \
        | u8(b, pos + 3)


cdef inline unsigned long long u64(const Buf *b, long long pos) noexcept nogil:
    cdef unsigned long long v = 0
    cdef int k
    if 0 <= pos and pos + 8 <= b.n:
        for k in range(8):
            v = (v << 8) | b.data[pos + k]
    else:
        for k in range(8):
            v = (v << 8) | u8(b, pos + k)
    return v


cdef inline long long min64(long long a, long long b) noexcept nogil:
    return a if a < b else b


cdef inline long long max64(long long a, long long b) noexcept nogil:
    return a if a > b else b


# ------------------------------------------------------------------- one packet's row

cdef struct Row:
    unsigned char reason, ipver, proto, tcpflags, frag, more
    unsigned long long src_hi, src_lo, dst_hi, dst_lo
    unsigned short sport, dport, vlan
    unsigned int seq, ipid
    long long payoff, paylen, fragoff


cdef inline void clear(Row *r) noexcept nogil:
    # Field by field: a memset or struct copy here compiles to ``rep stos``/``rep movs``,
    # whose start-up cost was a third of the time per packet.
    r.reason = 0
    r.ipver = 0
    r.proto = 0
    r.tcpflags = 0
    r.frag = 0
    r.more = 0
    r.src_hi = 0
    r.src_lo = 0
    r.dst_hi = 0
    r.dst_lo = 0
    r.sport = 0
    r.dport = 0
    r.vlan = 0
    r.seq = 0
    r.ipid = 0
    r.payoff = 0
    r.paylen = 0
    r.fragoff = 0

cdef inline bint is_vlan(unsigned int e) noexcept nogil:
    return e == ET_VLAN or e == ET_QINQ or e == ET_QINQ_OLD


cdef inline unsigned int ether_of_version(unsigned int b0) noexcept nogil:
    """Ethertype from an IP version nibble (RAW link types, MPLS bottom of stack)."""
    cdef unsigned int v = b0 >> 4
    if v == 4:
        return ET_IPV4
    if v == 6:
        return ET_IPV6
    return 0


cdef inline bint is_v6_ext(unsigned int nh) noexcept nogil:
    """monitor.decode._V6_EXT (which holds neither FRAGMENT nor AH)."""
    return (nh == 0 or nh == 43 or nh == 60 or nh == 135 or nh == 139 or nh == 140
            or nh == 253 or nh == 254)


cdef long long ethernet(const Buf *b, long long off, Row *r, unsigned int *et) noexcept nogil:
    """Ethernet II, 802.1Q/802.1ad stacks and PPPoE session: the L3 offset (``et`` set)."""
    cdef unsigned int e = u16(b, off + 12), ppp
    cdef long long p = off + 14
    cdef int depth
    for depth in range(MAX_VLAN_DEPTH):
        if not is_vlan(e):
            break
        if r.vlan == 0:  # the outermost tag whose id is not 0
            r.vlan = u16(b, p) & 0x0FFF
        e = u16(b, p + 2)
        p += 4
    if is_vlan(e):  # still tagged after MAX_VLAN_DEPTH tags
        r.reason = R_VLAN_DEPTH
        e = 0
    if e == ET_PPPOE:
        ppp = u16(b, p + 6)
        e = ET_IPV4 if ppp == 0x0021 else ET_IPV6 if ppp == 0x0057 else 0
        p += 8
    et[0] = e
    return p


cdef long long null_loop(const Buf *b, long long off, bint loop, unsigned int *et) noexcept nogil:
    """BSD NULL (host byte order, either reading) and OpenBSD LOOP (network order)."""
    cdef unsigned int b0 = u8(b, off), b1 = u8(b, off + 1)
    cdef unsigned int b2 = u8(b, off + 2), b3 = u8(b, off + 3)
    cdef unsigned int be = (b0 << 24) | (b1 << 16) | (b2 << 8) | b3
    cdef unsigned int le = (b3 << 24) | (b2 << 16) | (b1 << 8) | b0
    cdef unsigned int fam = be if loop else (le if le < 256 else be)
    if fam == 2:
        et[0] = ET_IPV4
    elif fam == 10 or fam == 24 or fam == 28 or fam == 30:
        et[0] = ET_IPV6
    else:
        et[0] = 0
    return off + 4


cdef long long mpls(const Buf *b, long long p, Row *r, unsigned int *et) noexcept nogil:
    """Skip MPLS labels to the bottom of stack; the IP version nibble gives the type."""
    cdef bint done = False
    cdef int depth
    for depth in range(MAX_MPLS_DEPTH):
        done = (u8(b, p + 2) & 1) == 1
        p += 4
        if done:
            break
    if done:
        et[0] = ether_of_version(u8(b, p))
    else:
        r.reason = R_MPLS_DEPTH
        et[0] = 0
    return p


cdef void ipv4(const Buf *b, long long p, long long e, Row *r,
               long long *l4, long long *ip_end) noexcept nogil:
    """RFC 791 header: columns, L4 offset and the end of the IP datagram's bytes."""
    cdef unsigned int b0 = u8(b, p)
    cdef long long ihl = (b0 & 0x0F) * 4
    cdef long long tot = u16(b, p + 2)
    cdef bint ok = p + 20 <= e and (b0 >> 4) == 4 and ihl >= 20 and p + ihl <= e
    cdef unsigned int fl = u16(b, p + 6)
    cdef bint mf = (fl & 0x2000) != 0
    cdef unsigned int fo = fl & 0x1FFF
    if not ok:
        r.reason = R_TRUNCATED if p + 20 > e else R_BAD_IP_HEADER
    r.ipver = 4
    r.proto = u8(b, p + 9)
    r.src_lo = V4_MAPPED_LO_TAG | u32(b, p + 12)
    r.dst_lo = V4_MAPPED_LO_TAG | u32(b, p + 16)
    r.frag = 2 if fo > 0 else (1 if mf else 0)
    r.ipid = u16(b, p + 4)
    r.fragoff = <long long>fo * 8
    r.more = mf
    l4[0] = p + ihl
    # A zero total length appears with TSO/GSO captures: trust the captured length.
    ip_end[0] = e if tot == 0 else min64(p + max64(tot, ihl), e)


cdef void ipv6(const Buf *b, long long p, long long e, Row *r,
               long long *l4, long long *ip_end) noexcept nogil:
    """RFC 8200 header and extension headers (fragment header included)."""
    cdef bint ok = p + 40 <= e and (u8(b, p) >> 4) == 6
    cdef long long plen = u16(b, p + 4)
    cdef long long ipe = e if plen == 0 else min64(p + 40 + plen, e)
    cdef unsigned int nh = u8(b, p + 6), fw, fo
    cdef long long q = p + 40, hlen
    cdef int step
    for step in range(MAX_IPV6_EXT):
        if not ((is_v6_ext(nh) or nh == P_FRAGMENT or nh == P_AH) and ok and r.frag != 2):
            break
        if q + 8 > ipe:
            ok = False
            break
        if nh == P_FRAGMENT:
            hlen = 8
            fw = u16(b, q + 2)
            fo = fw >> 3
            r.more = (fw & 1) != 0
            r.frag = 2 if fo > 0 else (1 if r.more else 0)
            r.ipid = u32(b, q + 4)
            r.fragoff = <long long>fo * 8
        elif nh == P_AH:
            hlen = (<long long>u8(b, q + 1) + 2) * 4
        else:
            hlen = (<long long>u8(b, q + 1) + 1) * 8
        nh = u8(b, q)
        q += hlen
    # (The reference flags depth only for _V6_EXT types, not for FRAGMENT or AH.)
    if is_v6_ext(nh) and ok and r.frag != 2:
        r.reason = R_IPV6_EXT_DEPTH
    if not ok:
        r.reason = R_TRUNCATED if p + 40 > e else R_BAD_IP_HEADER
    r.ipver = 6
    r.proto = nh
    r.src_hi = u64(b, p + 8)
    r.src_lo = u64(b, p + 16)
    r.dst_hi = u64(b, p + 24)
    r.dst_lo = u64(b, p + 32)
    l4[0] = min64(q, ipe)
    ip_end[0] = ipe


cdef void transport(const Buf *b, long long p, long long e, Row *r) noexcept nogil:
    """L4 of a decoded, non-later-fragment packet starting at ``p``, ending at ``e``."""
    cdef long long doff, po
    cdef bint ok
    if r.proto == P_TCP:  # RFC 9293
        doff = (u8(b, p + 12) >> 4) * 4
        ok = p + 20 <= e and doff >= 20
        if not ok:
            r.reason = R_TRUNCATED
        r.sport = u16(b, p) if ok else 0
        r.dport = u16(b, p + 2) if ok else 0
        r.seq = u32(b, p + 4)  # read (and kept) even when truncated
        r.tcpflags = u8(b, p + 13) if ok else 0
        po = min64(p + doff, e)
        r.payoff = po
        r.paylen = max64(e - po, 0) if ok else 0
    elif r.proto == P_UDP or r.proto == P_SCTP:  # RFC 768, RFC 9260
        ok = p + 8 <= e
        if not ok:
            r.reason = R_TRUNCATED
        r.sport = u16(b, p) if ok else 0
        r.dport = u16(b, p + 2) if ok else 0
        po = min64(p + (12 if r.proto == P_SCTP else 8), e)
        r.payoff = po
        r.paylen = max64(e - po, 0) if ok else 0
    elif r.proto == P_ICMP or r.proto == P_ICMPV6:  # type and code as the ports
        ok = p + 2 <= e
        r.sport = u8(b, p) if ok else 0
        r.dport = u8(b, p + 1) if ok else 0
        po = min64(p + 8, e)
        r.payoff = po
        r.paylen = max64(e - po, 0)
    else:  # GRE, ESP, IP-in-IP...: everything after the IP header
        r.payoff = p
        r.paylen = max64(e - p, 0)


cdef void network(const Buf *b, long long l3, unsigned int et, long long end,
                  Row *r) noexcept nogil:
    """Everything after the link layer: IP, L4, and the zeroing of undecodable rows."""
    cdef bint is4 = et == ET_IPV4 and l3 >= 0
    cdef bint is6 = et == ET_IPV6 and l3 >= 0
    cdef long long l4 = 0, ip_end = end
    if r.reason == R_OK and not is4 and not is6:
        r.reason = R_NON_IP
    if is4:
        ipv4(b, l3, end, r, &l4, &ip_end)
    elif is6:
        ipv6(b, l3, end, r, &l4, &ip_end)
    if r.reason != R_OK:
        r.ipver = 0
    elif r.frag != 2:
        transport(b, l4, ip_end, r)
    else:  # later fragments: their bytes belong to the datagram; no ports
        r.payoff = l4
        r.paylen = max64(ip_end - l4, 0)
    if r.reason != R_OK:
        r.proto = 0
        r.sport = 0
        r.dport = 0
        r.tcpflags = 0
        r.paylen = 0


# ------------------------------------------------------------------------- the kernel

def decode_layer(const unsigned char[::1] buf, const long long[::1] off not None,
                 const long long[::1] end not None, const int[::1] lt not None, nflog):
    """Reference: ``monitor.decode._decode_layer``. The columns of one layer (L2-L4) as a
    dict shaped like ``monitor.decode._empty(n)``: packet ``i`` starts at ``off[i]`` and
    ends at ``end[i]`` in ``buf`` and has link type ``lt[i]``.

    ``nflog(off_i, end_i)`` locates an NFLOG packet's L3 header: ``(offset, ethertype)``,
    as ``monitor.decode._nflog_l3`` does. When ``nflog`` is None, a layer holding NFLOG
    packets is not decoded: the result is None (and the reference decides).
    """
    cdef Py_ssize_t n = off.shape[0], i
    if end.shape[0] != n or lt.shape[0] != n:
        raise ValueError("off, end and lt must have the same length")
    cdef Buf b = buf_of(buf)
    if nflog is None:
        for i in range(n):
            if lt[i] == LT_NFLOG:
                return None

    # The reference's own empty columns: the same keys and dtypes by construction (a
    # dtype changed there fails loudly here, at the typed views). Imported here, not at
    # the top: monitor.decode imports this module.
    from monitor.decode import _empty
    cols = _empty(n)
    cdef unsigned char[::1] reason = cols["reason"], ipver = cols["ipver"]
    cdef unsigned char[::1] proto = cols["proto"], tcpflags = cols["tcpflags"]
    cdef unsigned char[::1] frag = cols["frag"], more = cols["more"].view(np.uint8)
    cdef unsigned long long[::1] src_hi = cols["src_hi"], src_lo = cols["src_lo"]
    cdef unsigned long long[::1] dst_hi = cols["dst_hi"], dst_lo = cols["dst_lo"]
    cdef unsigned short[::1] sport = cols["sport"], dport = cols["dport"]
    cdef unsigned short[::1] vlan = cols["vlan"]
    cdef unsigned int[::1] seq = cols["seq"], ipid = cols["ipid"]
    cdef long long[::1] payoff = cols["payoff"], paylen = cols["paylen"]
    cdef long long[::1] fragoff = cols["fragoff"]

    cdef Row r
    cdef long long o, l3
    cdef unsigned int et
    cdef int t
    for i in range(n):
        if i + PREFETCH_AHEAD < n:
            # (Here rather than in a helper function: GCC finds such a function free of
            # side effects and drops the calls.)
            o = clip(&b, off[i + PREFETCH_AHEAD])
            avmon_prefetch(b.data + o)
            avmon_prefetch(b.data + clip(&b, o + 64))
        clear(&r)
        o = off[i]
        t = lt[i]
        l3 = -1
        et = 0
        if t == LT_ETHERNET:
            l3 = ethernet(&b, o, &r, &et)
        elif t == LT_LINUX_SLL:
            l3 = o + 16
            et = u16(&b, o + 14)
        elif t == LT_LINUX_SLL2:
            l3 = o + 20
            et = u16(&b, o)
        elif (t == LT_RAW or t == LT_RAW_DLT12 or t == LT_RAW_DLT14 or t == LT_IPV4
              or t == LT_IPV6):
            l3 = o
            et = ether_of_version(u8(&b, o))
        elif t == LT_NULL or t == LT_LOOP:
            l3 = null_loop(&b, o, t == LT_LOOP, &et)
        elif t == LT_NFLOG:
            pos, family = nflog(o, end[i])
            l3 = pos
            et = <unsigned short>family
        else:
            r.reason = R_UNKNOWN_LINKTYPE
        if et == ET_MPLS or et == ET_MPLS_MC:
            l3 = mpls(&b, l3, &r, &et)
        network(&b, l3, et, end[i], &r)

        reason[i] = r.reason
        ipver[i] = r.ipver
        proto[i] = r.proto
        src_hi[i] = r.src_hi
        src_lo[i] = r.src_lo
        dst_hi[i] = r.dst_hi
        dst_lo[i] = r.dst_lo
        sport[i] = r.sport
        dport[i] = r.dport
        tcpflags[i] = r.tcpflags
        seq[i] = r.seq
        payoff[i] = r.payoff
        paylen[i] = r.paylen
        frag[i] = r.frag
        ipid[i] = r.ipid
        fragoff[i] = r.fragoff
        more[i] = r.more
        vlan[i] = r.vlan
    return cols


# --------------------------------------------------------------------------- tunnels

# Tunnel ports (monitor.decode.PORT_*), IP protocols carrying IP, GRE's payload types.
cdef enum:
    PORT_TEREDO = 3544
    PORT_GRE_IN_UDP = 4754
    PORT_VXLAN = 4789
    P_IPIP = 4
    P_IPV6 = 41
    P_GRE = 47
    ET_TEB = 0x6558


def tunnels(const unsigned char[::1] buf, const long long[::1] index not None,
            const unsigned char[::1] reason not None, const unsigned char[::1] frag not None,
            const unsigned char[::1] proto not None,
            const unsigned short[::1] sport not None, const unsigned short[::1] dport not None,
            const long long[::1] payoff not None, const long long[::1] paylen not None):
    """Reference: ``monitor.decode._tunnels``. The packets of a decoded layer that carry a
    tunnel: their index, inner offset, end and inner link type (int64, int64, int64,
    int32 arrays), reading the buffer as the reference reads it (clipped)."""
    cdef Py_ssize_t n = index.shape[0], i, k = 0
    if not (reason.shape[0] == frag.shape[0] == proto.shape[0] == sport.shape[0]
            == dport.shape[0] == payoff.shape[0] == paylen.shape[0] == n):
        raise ValueError("the columns must have the same length")
    cdef Buf b = buf_of(buf)
    out_index = np.empty(n, dtype=np.int64)
    out_off = np.empty(n, dtype=np.int64)
    out_end = np.empty(n, dtype=np.int64)
    out_lt = np.empty(n, dtype=np.int32)
    cdef long long[::1] oi = out_index, oo = out_off, oe = out_end
    cdef int[::1] ol = out_lt
    cdef long long start, stop, p, hl, io
    cdef unsigned int pr, flags, ptype
    cdef int ilt
    cdef bint exact6
    for i in range(n):
        if reason[i] != R_OK or frag[i] != 0:
            continue
        start = payoff[i]
        stop = start + paylen[i]
        pr = proto[i]
        ilt = -1
        io = start
        if pr == P_IPIP or pr == P_IPV6:  # IP-in-IP, 6in4
            ilt = LT_RAW
        if pr == P_GRE or (pr == P_UDP and (dport[i] == PORT_GRE_IN_UDP
                                            or sport[i] == PORT_GRE_IN_UDP)):
            p = start
            flags = u16(&b, p)
            ptype = u16(&b, p + 2)
            hl = 4 + 4 * ((flags >> 15) & 1) + 4 * ((flags >> 13) & 1) \
                + 4 * ((flags >> 12) & 1)
            if ptype == ET_TEB:
                ilt = LT_ETHERNET
            elif ptype == ET_IPV4 or ptype == ET_IPV6:
                ilt = LT_RAW
            else:
                ilt = -1
            if (flags & 7) != 0 or p + hl > stop:
                ilt = -1
            io = p + hl
        if pr == P_UDP and dport[i] == PORT_VXLAN and paylen[i] >= 8 + 14:
            ilt = LT_ETHERNET if (u8(&b, start) & 0x08) != 0 else -1
            io = start + 8
        if pr == P_UDP and ilt < 0:
            exact6 = paylen[i] >= 40 and (u8(&b, start) >> 4) == 6 \
                and <long long>u16(&b, start + 4) + 40 == paylen[i] and u8(&b, start + 7) > 0
            if dport[i] == PORT_TEREDO or sport[i] == PORT_TEREDO or exact6:
                p = start
                if u16(&b, p) == 0x0001:  # authentication header
                    p = p + 4 + <long long>u8(&b, p + 2) + <long long>u8(&b, p + 3) + 8 + 1
                if u16(&b, p) == 0x0000:  # origin indication
                    p = p + 8
                ilt = LT_RAW if (u8(&b, p) >> 4) == 6 and p + 40 <= stop else -1
                io = p
        if ilt >= 0:
            oi[k] = index[i]
            oo[k] = io
            oe[k] = stop
            ol[k] = ilt
            k += 1
    return out_index[:k], out_off[:k], out_end[:k], out_lt[:k]
