# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Compiled kernels for the loops that run once per packet or per byte.

Each kernel has a pure-Python reference beside the code that calls it (named in its
docstring) and gives exactly what that reference gives; tests/test_kernels.py compares
the two on every corpus capture and on generated and mutated input. A kernel that meets
anything unusual (damage, an evasion, a form it does not know) returns ``None`` and the
reference decides, so rare inputs keep one implementation and its exact errors.

Built by the package's own build (setup.py, Cython); ``monitor.kernels`` falls back to
the references when the module was not built.
"""

from cpython.ref cimport Py_INCREF
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_DecodeASCII, PyUnicode_FromFormat

import numpy as np

cdef extern from *:
    """
    #ifndef AVMON_KERNELS_SHA256
    #define AVMON_KERNELS_SHA256 "unknown"
    #endif
    """
    const char *AVMON_KERNELS_SHA256

#: SHA-256 of the _kernels.pyx this module was built from (a test catches a stale build).
SOURCE_SHA256 = AVMON_KERNELS_SHA256.decode("ascii")

ctypedef const unsigned char *bytes_p


cdef inline unsigned int _u16(bytes_p p, Py_ssize_t at) noexcept nogil:
    return (p[at] << 8) | p[at + 1]


cdef inline unsigned int _u32(bytes_p p, Py_ssize_t at, bint big) noexcept nogil:
    if big:
        return (<unsigned int>p[at] << 24) | (p[at + 1] << 16) | (p[at + 2] << 8) | p[at + 3]
    return (<unsigned int>p[at + 3] << 24) | (p[at + 2] << 16) | (p[at + 1] << 8) | p[at]


# ------------------------------------------------------------------------ classic pcap

cdef struct PcapRecord:
    long long start
    long long caplen
    long long wirelen
    long long ts_ns


def walk_pcap(const unsigned char[::1] buf not None, Py_ssize_t pos, bint big_endian,
              Py_ssize_t cap_max, long long frac_ns):
    """Reference: ``monitor.capture.pcap._walk_pcap_py`` then ``_pcap_headers_py``. The
    complete records from ``pos`` on, in one pass over their headers (each header is read
    once, while its cache line is at hand): starts, captured lengths, original lengths
    and times in ns (int64 arrays), and where the walk stopped."""
    cdef bytes_p p = &buf[0] if buf.shape[0] else NULL
    cdef Py_ssize_t end = buf.shape[0]
    cdef Py_ssize_t last = end - 16
    cdef Py_ssize_t at = pos, n = 0, room = 1024, i
    cdef unsigned int caplen
    cdef PcapRecord *found = <PcapRecord *>malloc(room * sizeof(PcapRecord))
    cdef PcapRecord *grown
    cdef long long[::1] s, c, w, t
    if pos < 0:
        free(found)
        raise ValueError(f"walk_pcap: position {pos} before the buffer")
    if found == NULL:
        raise MemoryError()
    try:
        while at <= last:
            caplen = _u32(p, at + 8, big_endian)
            if caplen > cap_max:
                break
            if n == room:
                room *= 2
                grown = <PcapRecord *>realloc(found, room * sizeof(PcapRecord))
                if grown == NULL:
                    raise MemoryError()
                found = grown
            found[n].start = at
            found[n].caplen = caplen
            found[n].wirelen = _u32(p, at + 12, big_endian)
            found[n].ts_ns = <long long>_u32(p, at, big_endian) * 1000000000 \
                + <long long>_u32(p, at + 4, big_endian) * frac_ns
            n += 1
            at += 16 + caplen
        if at > end and n:  # the last record is cut by the end of the buffer
            n -= 1
            at = found[n].start
        starts = np.empty(n, dtype=np.int64)
        caplens = np.empty(n, dtype=np.int64)
        wirelens = np.empty(n, dtype=np.int64)
        ts_ns = np.empty(n, dtype=np.int64)
        s, c, w, t = starts, caplens, wirelens, ts_ns
        for i in range(n):
            s[i] = found[i].start
            c[i] = found[i].caplen
            w[i] = found[i].wirelen
            t[i] = found[i].ts_ns
    finally:
        free(found)
    return starts, caplens, wirelens, ts_ns, at


# ------------------------------------------------------------------- TLS ClientHello

cdef Py_ssize_t MAX_CLIENT_HELLO_LEN = 1 << 14
cdef Py_ssize_t MAX_EXTENSIONS = 128
cdef Py_ssize_t MAX_SNI_LEN = 253


cdef inline bint _grease(unsigned int v) noexcept nogil:
    return (v & 0x0F0F) == 0x0A0A and (v >> 12) == ((v >> 4) & 0x0F)


cdef tuple _u16_tuple(bytes_p p, Py_ssize_t at, Py_ssize_t n):
    """n/2 big-endian uint16 values (n even, checked by the caller)."""
    cdef Py_ssize_t i, k = n >> 1
    cdef tuple out = PyTuple_New(k)
    cdef object v
    for i in range(k):
        v = _u16(p, at + 2 * i)
        Py_INCREF(v)
        PyTuple_SET_ITEM(out, i, v)
    return out


cdef tuple _u8_tuple(bytes_p p, Py_ssize_t at, Py_ssize_t n):
    cdef Py_ssize_t i
    cdef tuple out = PyTuple_New(n)
    cdef object v
    for i in range(n):
        v = p[at + i]
        Py_INCREF(v)
        PyTuple_SET_ITEM(out, i, v)
    return out


cdef inline Py_ssize_t _filled(bytes_p p, Py_ssize_t start, Py_ssize_t stop,
                               int size) noexcept nogil:
    """Where the body of a vector with a ``size``-byte length (1 or 2) at ``start``
    begins, if its length fills exactly up to ``stop``; else -1."""
    if stop - start < size:
        return -1
    cdef Py_ssize_t n = p[start] if size == 1 else _u16(p, start)
    return start + size if start + size + n == stop else -1


cdef inline bint _host_char(unsigned char c) noexcept nogil:
    return (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or c == 45 or c == 95


cdef object _host_name(bytes_p p, Py_ssize_t at, Py_ssize_t n):
    """The host_name as ``_decode_host_name`` gives it for plain ASCII names; None for
    anything else (empty, non-ASCII, a bad label: the reference decides)."""
    cdef Py_ssize_t i, label = 0, size = n
    cdef unsigned char c
    if n == 0:
        return None
    for i in range(n):
        c = p[at + i]
        if c == 46:  # '.'
            if label == 0:
                return None
            label = 0
        elif _host_char(c):
            label += 1
            if label > 63:
                return None
        else:
            return None
    if label == 0:  # a trailing dot: allowed once, after a label
        if n < 2 or p[at + n - 2] == 46:
            return None
        size = n - 1
    if size > MAX_SNI_LEN:
        return None
    return (<bytes>p[at:at + size]).decode("ascii").lower()


def client_hello(data, cls):
    """Reference: ``monitor.parsers.tls._parse_client_hello_py``. ``cls(...)`` with the
    fields of a well-formed ClientHello Handshake message, else None."""
    cdef const unsigned char[::1] view = data
    cdef Py_ssize_t end = view.shape[0]
    if end < 4:
        return None
    cdef bytes_p p = &view[0]
    if p[0] != 1:
        return None
    cdef Py_ssize_t length = (p[1] << 16) | (p[2] << 8) | p[3]
    if length > MAX_CLIENT_HELLO_LEN or length != end - 4:
        return None
    cdef Py_ssize_t at = 4, n
    if end - at < 2 + 32 + 1:
        return None
    cdef unsigned int legacy_version = _u16(p, at)
    random = <bytes>p[at + 2:at + 34]
    at += 34
    n = p[at]
    at += 1
    if n > 32 or at + n > end:
        return None
    session_id = <bytes>p[at:at + n]
    at += n
    if end - at < 2:
        return None
    n = _u16(p, at)
    at += 2
    if n == 0 or n & 1 or at + n > end:
        return None
    cipher_suites = _u16_tuple(p, at, n)
    at += n
    if end - at < 1:
        return None
    n = p[at]
    at += 1
    if n == 0 or at + n > end:
        return None
    compression_methods = _u8_tuple(p, at, n)
    at += n

    cdef list ext_types = []
    cdef unsigned int seen[128]
    cdef Py_ssize_t nseen = 0, i, start, stop, e, k
    cdef unsigned int ext_type, ext_len, t
    cdef bint psk = False, early_data = False, ech = False
    sni = None
    alpn = ()
    supported_versions = None
    groups = point_formats = sig_algs = key_share_groups = ()
    cdef list other = []
    cdef list names

    if at < end:
        if end - at < 2:
            return None
        n = _u16(p, at)
        at += 2
        if at + n != end:  # overruns, or bytes after the extensions
            return None
        while at < end:
            if nseen >= MAX_EXTENSIONS or end - at < 4 or psk:
                return None
            ext_type = _u16(p, at)
            ext_len = _u16(p, at + 2)
            if not _grease(ext_type):
                for i in range(nseen):
                    if seen[i] == ext_type:
                        return None
            seen[nseen] = ext_type
            nseen += 1
            start = at + 4
            stop = start + ext_len
            if stop > end:
                return None
            at = stop
            ext_types.append(ext_type)
            if ext_type == 0x0029:
                psk = True
            elif ext_type == 0x002A:
                early_data = True
            elif ext_type == 0xFE0D:
                ech = True
            elif ext_type == 0x0000:  # server_name
                if start == stop:
                    continue
                e = _filled(p, start, stop, 2)
                if e < 0 or e == stop:  # bad, or an empty server_name_list
                    return None
                while e < stop:
                    if stop - e < 3:
                        return None
                    t = p[e]
                    k = _u16(p, e + 1)
                    e += 3
                    if e + k > stop:
                        return None
                    if t == 0 and sni is None:
                        sni = _host_name(p, e, k)
                        if sni is None:
                            return None
                    e += k
            elif ext_type == 0x0010:  # ALPN
                e = _filled(p, start, stop, 2)
                if e < 0:
                    return None
                names = []
                while e < stop:
                    k = p[e]
                    e += 1
                    if k == 0 or e + k > stop:
                        return None
                    names.append((<bytes>p[e:e + k]).decode("latin-1"))
                    e += k
                alpn = tuple(names)
            elif ext_type == 0x002B:  # supported_versions
                e = _filled(p, start, stop, 1)
                if e < 0 or (stop - e) & 1:
                    return None
                supported_versions = _u16_tuple(p, e, stop - e)
            elif ext_type == 0x000A or ext_type == 0x000D:  # groups, signature_algorithms
                e = _filled(p, start, stop, 2)
                if e < 0 or (stop - e) & 1:
                    return None
                if ext_type == 0x000A:
                    groups = _u16_tuple(p, e, stop - e)
                else:
                    sig_algs = _u16_tuple(p, e, stop - e)
            elif ext_type == 0x000B:  # ec_point_formats
                e = _filled(p, start, stop, 1)
                if e < 0:
                    return None
                point_formats = _u8_tuple(p, e, stop - e)
            elif ext_type == 0x0033:  # key_share
                e = _filled(p, start, stop, 2)
                if e < 0:
                    return None
                names = []
                while e < stop:
                    if stop - e < 4:
                        return None
                    names.append(_u16(p, e))
                    k = _u16(p, e + 2)
                    e += 4 + k
                    if e > stop:
                        return None
                key_share_groups = tuple(names)
            else:
                other.append((ext_type, <bytes>p[start:stop]))

    # Positional, in the order of ClientHello's fields.
    return cls(legacy_version, random, session_id, cipher_suites, compression_methods,
               tuple(ext_types), sni, alpn,
               supported_versions if supported_versions is not None else (legacy_version,),
               groups, point_formats, sig_algs, key_share_groups, ech, psk, early_data,
               tuple(other))


# ----------------------------------------------------------------------- DNS messages

cdef inline bint _plain_label_char(unsigned char c) noexcept nogil:
    return (48 <= c <= 57) or (97 <= c <= 122) or c == 45 or c == 95


cdef object _dns_name(bytes_p p, Py_ssize_t limit, Py_ssize_t pos, Py_ssize_t *stop):
    """A name at ``pos`` as ``_fast_name`` gives it when every label is plain (letters,
    digits, ``-``, ``_``); None for anything else. ``stop[0]``: where the name ends."""
    cdef char text[256]
    cdef Py_ssize_t n = 0, size = 1, biggest = pos, after = -1, count, target, i
    cdef unsigned char c
    while True:
        if pos >= limit:
            return None
        count = p[pos]
        pos += 1
        if count == 0:
            break
        if count < 64:
            size += count + 1
            if pos + count > limit or size > 255:
                return None
            if n:
                text[n] = 46
                n += 1
            for i in range(count):
                c = p[pos + i]
                if 65 <= c <= 90:
                    c += 32
                elif not _plain_label_char(c):
                    return None
                text[n] = c
                n += 1
            pos += count
        elif count >= 192:
            if pos >= limit:
                return None
            target = ((count & 0x3F) << 8) | p[pos]
            pos += 1
            if target >= biggest:
                return None
            biggest = target
            if after < 0:
                after = pos
            pos = target
        else:
            return None
    stop[0] = after if after >= 0 else pos
    if n == 0:
        return "."
    return PyUnicode_DecodeASCII(text, n, NULL)


cdef Py_ssize_t _dns_records(bytes_p p, Py_ssize_t end, Py_ssize_t pos, Py_ssize_t count,
                             list out, object answer_cls, object type_name,
                             object address_text) except -2:
    """``count`` records as ``_fast_records`` reads them, appended to ``out``; the
    position after them, or -1 to decline."""
    cdef Py_ssize_t k, stop = 0, rdend
    cdef unsigned int rdtype, rdclass, rdlen
    cdef unsigned long ttl
    for k in range(count):
        owner = _dns_name(p, end, pos, &stop)
        if owner is None:
            return -1
        pos = stop
        if end - pos < 10:
            return -1
        rdtype = _u16(p, pos)
        rdclass = _u16(p, pos + 2)
        ttl = _u32(p, pos + 4, True)
        rdlen = _u16(p, pos + 8)
        pos += 10
        rdend = pos + rdlen
        if rdclass != 1 or rdend > end:
            return -1
        if rdtype == 1 and rdlen == 4:
            text = PyUnicode_FromFormat("%u.%u.%u.%u", <unsigned int>p[pos],
                                        <unsigned int>p[pos + 1], <unsigned int>p[pos + 2],
                                        <unsigned int>p[pos + 3])
        elif rdtype == 28 and rdlen == 16:
            text = address_text(<bytes>p[pos:rdend])
        elif rdtype == 2 or rdtype == 5 or rdtype == 12 or rdtype == 39:
            text = _dns_name(p, rdend, pos, &stop)
            if text is None or stop != rdend:
                return -1
        else:
            return -1
        pos = rdend
        out.append(answer_cls(owner, type_name(rdtype), 0 if ttl > 0x7FFFFFFF else ttl,
                              text, "IN"))
    return pos


def dns_message(bytes raw not None, bint strict, message_cls, question_cls, answer_cls,
                type_name, address_text, Py_ssize_t max_questions, Py_ssize_t max_answers,
                Py_ssize_t max_records):
    """Reference: ``monitor.parsers.dns._fast_message`` (for names of plain labels).
    ``message_cls(...)`` for the common message, else None."""
    cdef Py_ssize_t end = len(raw)
    if end < 12:
        return None
    cdef bytes_p p = <bytes_p><char *>raw
    cdef unsigned int msg_id = _u16(p, 0), flags = _u16(p, 2)
    cdef Py_ssize_t qd = _u16(p, 4), an = _u16(p, 6), ns = _u16(p, 8), ar = _u16(p, 10)
    if (flags >> 11) & 0xF or ar > 1 or qd > max_questions or an > max_answers \
            or ns + ar > max_records:
        return None
    cdef Py_ssize_t pos = 12, k, stop = 0
    cdef list questions = []
    cdef list answers = []
    cdef list authorities = []
    for k in range(qd):
        qname = _dns_name(p, end, pos, &stop)
        if qname is None:
            return None
        pos = stop
        if end - pos < 4 or _u16(p, pos + 2) != 1:
            return None
        questions.append(question_cls(qname, type_name(_u16(p, pos)), "IN"))
        pos += 4
    pos = _dns_records(p, end, pos, an, answers, answer_cls, type_name, address_text)
    if pos < 0:
        return None
    pos = _dns_records(p, end, pos, ns, authorities, answer_cls, type_name, address_text)
    if pos < 0:
        return None
    if ar:
        # OPT: the root as owner, type 41, no options.
        if end - pos < 11 or p[pos] != 0 or _u16(p, pos + 1) != 41 or _u16(p, pos + 9) != 0:
            return None
        pos += 11
    cdef Py_ssize_t trailing = end - pos
    if trailing and strict:
        return None
    # Positional, in the order of DnsMessage's fields.
    return message_cls(msg_id, bool(flags & 0x8000), 0, flags & 0xF, flags,
                       bool(flags & 0x0400), bool(flags & 0x0200),
                       bool(flags & 0x0100), bool(flags & 0x0080),
                       bool(flags & 0x0020), bool(flags & 0x0010), tuple(questions),
                       tuple(answers), tuple(authorities), ns, ar, False, 0, trailing)


# ------------------------------------------------------------------ QUIC Initial packets

cdef inline Py_ssize_t _varint(bytes_p p, Py_ssize_t at, Py_ssize_t end,
                               unsigned long long *value) noexcept nogil:
    """A QUIC variable-length integer (RFC 9000 §16) at ``at``: where it ends, or -1 when
    it runs past ``end``."""
    cdef Py_ssize_t size, i
    cdef unsigned long long v
    if at >= end:
        return -1
    size = 1 << (p[at] >> 6)
    if at + size > end:
        return -1
    v = p[at] & 0x3F
    for i in range(1, size):
        v = (v << 8) | p[at + i]
    value[0] = v
    return at + size


def quic_long_headers(const unsigned char[::1] data not None, dict versions, object cls,
                      object initial, object retry, Py_ssize_t max_packets,
                      Py_ssize_t max_cid):
    """Reference: ``monitor.parsers.quic._walk``. The ``cls`` (LongHeader) of each
    long-header packet of a datagram whose packets are all Initial, 0-RTT or Handshake
    packets of a version in ``versions`` (version -> packet type by the two type bits),
    up to a short header or a packet with another DCID; None for anything else (an empty
    datagram, Retry, Version Negotiation, another version, a truncated or oversized
    field, more than ``max_packets``), which the reference decides."""
    cdef Py_ssize_t end = data.shape[0], at = 0, start, dcid_len, scid_len, pn_offset
    cdef unsigned long long token_len, length
    cdef unsigned int version
    cdef unsigned char first
    if end == 0:
        return None
    cdef bytes_p p = &data[0]
    cdef list out = []
    first_dcid = None
    while at < end:
        if len(out) >= max_packets:
            return None
        start = at
        first = p[at]
        if not first & 0x80:
            break  # a short header runs to the end of the datagram
        if end - at < 6:
            return None
        version = _u32(p, at + 1, True)
        types = versions.get(version)
        if types is None:
            return None
        dcid_len = p[at + 5]
        at += 6
        if dcid_len > max_cid or end - at < dcid_len:
            return None
        dcid = p[at:at + dcid_len]
        if first_dcid is not None and dcid != first_dcid:
            break  # RFC 9000 §12.2: ignored
        at += dcid_len
        if at >= end:
            return None
        scid_len = p[at]
        at += 1
        if scid_len > max_cid or end - at < scid_len:
            return None
        scid = p[at:at + scid_len]
        at += scid_len
        ptype = (<tuple?>types)[(first >> 4) & 0x03]
        if ptype is retry:
            return None
        token = b""
        if ptype is initial:
            at = _varint(p, at, end, &token_len)
            if at < 0 or token_len > <unsigned long long>(end - at):
                return None
            token = p[at:at + <Py_ssize_t>token_len]
            at += <Py_ssize_t>token_len
        at = _varint(p, at, end, &length)
        if at < 0 or length > <unsigned long long>(end - at):
            return None
        pn_offset = at
        at += <Py_ssize_t>length
        out.append(cls(version, ptype, dcid, scid, token, start, at - start, pn_offset))
        first_dcid = dcid
    return out


cdef inline Py_ssize_t _varints(bytes_p p, Py_ssize_t at, Py_ssize_t end, int count,
                                unsigned long long *out) noexcept nogil:
    """``count`` varints in a row into ``out``: where they end, or -1."""
    cdef int i
    for i in range(count):
        at = _varint(p, at, end, &out[i])
        if at < 0:
            return -1
    return at


def quic_frames(const unsigned char[::1] payload not None, object padding_cls,
                object ping_cls, object ack_cls, object crypto_cls, object close_cls,
                Py_ssize_t max_frames, Py_ssize_t max_ack_ranges):
    """Reference: ``monitor.parsers.quic._parse_frames_py``. The frames of a decrypted
    Initial payload as a tuple, when each is PADDING, PING, ACK, CRYPTO or
    CONNECTION_CLOSE with a one-byte type and every field fits; None for anything else
    (an empty payload, another frame type, a field past the end, an ACK range below 0, a
    CRYPTO frame beyond 2^62-1, more than ``max_frames`` frames or ``max_ack_ranges``
    ranges), which the reference decides."""
    cdef Py_ssize_t end = payload.shape[0], at = 0, run, k
    # Each frame's varints: ACK (largest, delay, range count, first range), a range
    # (gap, length), ECN counts, CRYPTO (offset, length), CONNECTION_CLOSE (error code,
    # frame type, reason length).
    cdef unsigned long long f[4]
    cdef long long smallest
    cdef unsigned char t
    if end == 0:
        return None
    cdef bytes_p p = &payload[0]
    cdef list frames = []
    while at < end:
        t = p[at]
        at += 1
        if t == 0x00:
            # The whole run of zero bytes, so the next frame's type is never 0x00: the
            # reference's joining of adjacent PADDING frames only happens after a type
            # written in more than one byte, which is declined below.
            run = 1
            while at < end and p[at] == 0:
                run += 1
                at += 1
            frame = padding_cls(run)
        elif t == 0x01:
            frame = ping_cls()
        elif t == 0x02 or t == 0x03:
            at = _varints(p, at, end, 4, f)
            if at < 0 or f[2] > <unsigned long long>max_ack_ranges or f[3] > f[0]:
                return None
            largest, delay, first_range = f[0], f[1], f[3]
            smallest = <long long>(f[0] - f[3])
            ranges = PyTuple_New(<Py_ssize_t>f[2])
            for k in range(<Py_ssize_t>f[2]):
                at = _varints(p, at, end, 2, f)
                if at < 0:
                    return None
                smallest = smallest - <long long>f[0] - 2 - <long long>f[1]
                if smallest < 0:
                    return None
                pair = (f[0], f[1])
                Py_INCREF(pair)
                PyTuple_SET_ITEM(ranges, k, pair)
            ecn = None
            if t == 0x03:
                at = _varints(p, at, end, 3, f)
                if at < 0:
                    return None
                ecn = (f[0], f[1], f[2])
            frame = ack_cls(largest, delay, first_range, ranges, ecn)
        elif t == 0x06:
            at = _varints(p, at, end, 2, f)
            if at < 0 or f[1] > <unsigned long long>(end - at) \
                    or f[0] + f[1] > 0x3FFFFFFFFFFFFFFF:
                return None
            frame = crypto_cls(f[0], p[at:at + <Py_ssize_t>f[1]])
            at += <Py_ssize_t>f[1]
        elif t == 0x1C:
            at = _varints(p, at, end, 3, f)
            if at < 0 or f[2] > <unsigned long long>(end - at):
                return None
            frame = close_cls(f[0], f[1], p[at:at + <Py_ssize_t>f[2]])
            at += <Py_ssize_t>f[2]
        else:
            return None
        if len(frames) >= max_frames:
            return None
        frames.append(frame)
    return tuple(frames)


# ---------------------------------------------------------------------- EVE timestamps

cdef inline void _digits(char *out, long long value, int width) noexcept nogil:
    """``value`` (non-negative) as ``width`` decimal digits, zero-padded, at ``out``."""
    cdef int i
    for i in range(width - 1, -1, -1):
        out[i] = <char>(48 + value % 10)
        value //= 10


def eve_time(ns):
    """Reference: ``monitor.eve._eve_time_py``. ``ns`` (nanoseconds since 1970, UTC) as
    Suricata writes a timestamp, ``2026-11-28T00:13:50.123456+0000``: the date by the
    days-to-civil arithmetic of the proleptic Gregorian calendar (as ``datetime`` uses),
    with no Python object made on the way but the result. Every record carries one or
    two. An integer outside int64 (no packet time is) goes to the reference."""
    cdef long long v, secs, rem, days, sod, z, era, doe, yoe, y, doy, mp, d, m
    cdef char out[31]
    try:
        v = ns
    except OverflowError:
        from monitor.eve import _eve_time_py
        return _eve_time_py(ns)
    # Floor division and modulo (Python's, as the reference's divmod): times before 1970
    # count back from the start of their second and day.
    secs = v // 1000000000
    rem = v % 1000000000
    days = secs // 86400
    sod = secs % 86400
    # Days since 1970-01-01 to (year, month, day) (H. Hinnant's civil_from_days).
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    if m <= 2:
        y += 1
    _digits(out, y, 4)  # int64 nanoseconds span the years 1677-2262: four digits
    out[4] = b'-'
    _digits(out + 5, m, 2)
    out[7] = b'-'
    _digits(out + 8, d, 2)
    out[10] = b'T'
    _digits(out + 11, sod // 3600, 2)
    out[13] = b':'
    _digits(out + 14, sod // 60 % 60, 2)
    out[16] = b':'
    _digits(out + 17, sod % 60, 2)
    out[19] = b'.'
    _digits(out + 20, rem // 1000, 6)
    memcpy(out + 26, b"+0000", 5)
    return PyUnicode_DecodeASCII(out, 31, NULL)
