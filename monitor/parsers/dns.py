"""DNS messages: queries and responses over UDP and TCP, A/AAAA/CNAME chains with TTLs.

This module owns the DNS dissector. A message is framed here first (header, then every
question and resource record skipped by its declared lengths through
:class:`monitor.wire.Reader`, without following compression pointers), which decides
"truncated", "trailing bytes" and the record caps cheaply and exactly; dnspython
(``dns.message.from_wire``) then decodes names and RDATA, and its exceptions are converted
to :class:`~monitor.errors.ParseError` subclasses at this boundary. Nothing else escapes.

Tolerance decisions (Suricata and Zeek log what they can of a message):

- A response with TC=1 that ends before the records its header declares is parsed for the
  complete records it holds (``partial=True``); without TC that is :class:`Truncated`.
- Bytes after the last declared record are ignored and counted in ``trailing_bytes``
  (``strict=True`` raises :class:`TrailingData` instead). Over TCP the length prefix bounds
  the message, so these are bytes inside that frame.
- A record whose RDATA dnspython cannot decode, inside intact framing, is skipped and
  counted in ``skipped_records`` (dnspython's ``continue_on_error``); damage anywhere else
  (question or owner names, header, misplaced OPT/TSIG) rejects the message.
- TSIG signatures are recorded by dnspython but never validated: a passive monitor has no
  keys.

Names are lower-cased, without the trailing dot (the root is ``"."``), in dnspython's
presentation form: internationalised names stay in A-label (``xn--``) form and bytes that
are not printable ASCII appear as ``\\DDD`` escapes.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from typing import TYPE_CHECKING, Final, TypeAlias

import dns.exception
import dns.rdataclass
import dns.rdatatype
import msgspec

from monitor.errors import BadValue, LimitExceeded, ParseError, TrailingData, Truncated
from monitor.iptext import ip_exploded, ip_text
from monitor.kernels import native
from monitor.wire import Reader

if TYPE_CHECKING:
    import dns.message
    import dns.name
    import dns.rdata
    import dns.rrset

__all__ = [
    "DNS_HEADER_LEN",
    "MAX_ANSWERS",
    "MAX_CNAME_DEPTH",
    "MAX_DNS_MESSAGE",
    "MAX_NAME_WIRE_LEN",
    "MAX_QUESTIONS",
    "MAX_RECORDS",
    "DnsAnswer",
    "DnsMessage",
    "DnsQuestion",
    "EveObject",
    "EveValue",
    "Malformed",
    "ResolvedAddress",
    "answer_addresses",
    "eve_dns_records",
    "maybe_read_tcp_messages",
    "parse_dns_message",
]

#: RFC 1035 §4.1.1: the fixed header is 12 octets.
DNS_HEADER_LEN: Final = 12
#: RFC 1035 §4.2.2 / RFC 7766 §8: the TCP length prefix is 16 bits, so no message is longer.
MAX_DNS_MESSAGE: Final = 65535
#: Answer RRs per message. Real answers carry a handful (CDNs ~8-30, DNSSEC doubles that);
#: 256 is far above any resolver's response and keeps crafted messages cheap.
MAX_ANSWERS: Final = 256
#: Authority + additional RRs per message, same reasoning (referrals carry ~13 NS + glue).
MAX_RECORDS: Final = 512
#: Questions per message. RFC 9619 says QDCOUNT is 1 in practice; mDNS packs several.
MAX_QUESTIONS: Final = 32
#: RFC 1035 §2.3.4: a name is at most 255 octets on the wire.
MAX_NAME_WIRE_LEN: Final = 255
#: CNAME hops followed from a question name (BIND's and Unbound's chain limits are ~11-16).
MAX_CNAME_DEPTH: Final = 16

_FLAG_QR: Final = 0x8000
_FLAG_AA: Final = 0x0400
_FLAG_TC: Final = 0x0200
_FLAG_RD: Final = 0x0100
_FLAG_RA: Final = 0x0080
_FLAG_Z: Final = 0x0040
_FLAG_AD: Final = 0x0020
_FLAG_CD: Final = 0x0010
_OPCODE_UPDATE: Final = 5

#: RFC 1035 §4.1.1 and RFC 2136 §2.2, as Suricata's EVE output spells them.
_RCODE_NAMES: Final[dict[int, str]] = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
    6: "YXDOMAIN",
    7: "YXRRSET",
    8: "NXRRSET",
    9: "NOTAUTH",
    10: "NOTZONE",
}


class Malformed(BadValue):
    """DNS message is malformed."""

    reason = "malformed"


class DnsQuestion(msgspec.Struct, frozen=True):
    #: Name asked for (lower-case, no trailing dot).
    qname: str
    #: Type mnemonic ("A", "AAAA", "HTTPS", or "TYPE65534" when unknown).
    qtype: str
    #: Class mnemonic ("IN"; mDNS sets the top bit, e.g. "CLASS32769").
    qclass: str


class DnsAnswer(msgspec.Struct, frozen=True):
    #: Owner name (lower-case, no trailing dot).
    rrname: str
    #: Type mnemonic ("A", "AAAA", "CNAME", ...; "TYPE<n>" when unknown).
    rrtype: str
    #: TTL in seconds (dnspython maps values above 2**31-1 to 0, RFC 2181 §8).
    ttl: int
    #: A/AAAA: canonical address text (RFC 5952 for IPv6); CNAME/DNAME/NS/PTR: the target
    #: name; MX "pref name"; SRV "prio weight port name"; SOA "mname rname serial refresh
    #: retry expire minimum" (names normalised as above); other types: dnspython's
    #: presentation format.
    rdata: str
    #: Class mnemonic; only "IN" A/AAAA records carry addresses.
    rrclass: str = "IN"


class DnsMessage(msgspec.Struct, frozen=True):
    #: Transaction ID.
    id: int
    #: QR bit.
    is_response: bool
    #: Header opcode (0 QUERY, 4 NOTIFY, 5 UPDATE, ...).
    opcode: int
    #: Header RCODE (the low 4 bits; EDNS extended bits are not merged in).
    rcode: int
    #: The 16-bit header flags word as sent (QR, opcode, AA, TC, RD, RA, Z, AD, CD, RCODE).
    flags: int
    aa: bool
    tc: bool
    rd: bool
    ra: bool
    ad: bool
    cd: bool
    #: Question section, in wire order.
    questions: tuple[DnsQuestion, ...]
    #: Answer section, one entry per RR, in wire order.
    answers: tuple[DnsAnswer, ...]
    #: Authority section, one entry per RR (SOA of a negative answer, NS of a referral).
    authorities: tuple[DnsAnswer, ...]
    #: Authority RRs present on the wire.
    authority_count: int
    #: Additional RRs present on the wire (including OPT and TSIG).
    additional_count: int
    #: TC=1 and the message ended before the records its header declares; the sections
    #: hold the complete records that were present.
    partial: bool
    #: RRs dropped because their RDATA could not be decoded (framing was intact).
    skipped_records: int
    #: Bytes after the last declared record (ignored).
    trailing_bytes: int

    @property
    def rcode_name(self) -> str:
        """RCODE mnemonic ("NOERROR", "NXDOMAIN", ...) or the number as text."""
        name = _RCODE_NAMES.get(self.rcode)
        return str(self.rcode) if name is None else name


class ResolvedAddress(msgspec.Struct, frozen=True):
    #: The name the client asked for (a question name).
    qname: str
    #: The address (canonical text) an A/AAAA record at the end of the chain gave.
    address: str
    #: Smallest TTL along the chain, the address record included: how long the binding of
    #: ``qname`` to ``address`` may be cached.
    ttl: int
    #: Names from ``qname`` through each CNAME target to the owner of the address record.
    chain: tuple[str, ...]


EveValue: TypeAlias = "str | int | bool | list[EveValue] | dict[str, EveValue]"
EveObject: TypeAlias = "dict[str, EveValue]"


class _Frame(msgspec.Struct, frozen=True):
    """What the framing walk found: where the message ends and what each section holds."""

    id: int
    flags: int
    #: Complete questions and RRs per section, in section order (QD, AN, NS, AR).
    counts: tuple[int, int, int, int]
    #: (start, end) of the RDATA of every complete RR, in wire order.
    rdata_spans: tuple[tuple[int, int], ...]
    #: Offset just past the last complete record.
    end: int
    partial: bool


def _skip_name(r: Reader) -> None:
    """Skip a possibly compressed name without following its pointer (RFC 1035 §4.1.4)."""
    total = 1
    while True:
        length = r.u8()
        if length == 0:
            return
        if length >= 0xC0:
            r.skip(1)
            return
        if length >= 0x40:
            # 0x40 and 0x80 are the obsolete extended label types (RFC 6891 §5).
            raise Malformed(f"label type 0x{length & 0xC0:02x}", offset=r.pos - 1)
        total += length + 1
        if total > MAX_NAME_WIRE_LEN:
            raise Malformed("name longer than 255 octets", offset=r.pos - 1)
        r.skip(length)


def _frame(raw: bytes) -> _Frame:
    r = Reader(raw)
    msg_id = r.u16()
    flags = r.u16()
    qdcount, ancount, nscount, arcount = r.u16(), r.u16(), r.u16(), r.u16()
    if qdcount > MAX_QUESTIONS:
        raise LimitExceeded(f"{qdcount} questions (cap {MAX_QUESTIONS})", offset=4)
    if ancount > MAX_ANSWERS:
        raise LimitExceeded(f"{ancount} answers (cap {MAX_ANSWERS})", offset=6)
    if nscount + arcount > MAX_RECORDS:
        raise LimitExceeded(f"{nscount + arcount} authority+additional records", offset=8)
    counts = [0, 0, 0, 0]
    spans: list[tuple[int, int]] = []
    end = r.pos
    partial = False
    try:
        for _ in range(qdcount):
            _skip_name(r)
            r.skip(4)
            counts[0] += 1
            end = r.pos
        for section, declared in ((1, ancount), (2, nscount), (3, arcount)):
            for _ in range(declared):
                _skip_name(r)
                r.skip(8)
                rdlength = r.u16()
                start = r.pos
                r.skip(rdlength)
                spans.append((start, r.pos))
                counts[section] += 1
                end = r.pos
    except Truncated:
        if not flags & _FLAG_TC:
            raise
        partial = True
    return _Frame(msg_id, flags, (counts[0], counts[1], counts[2], counts[3]), tuple(spans),
                  end, partial)


def preload() -> None:
    """Import now what the full path would import at the first message that needs it.
    A live capture calls this before it starts: a tenth of a second spent importing while
    packets arrive is a tenth of a second of packets the ring must hold, or drop."""
    _full_path()


def _full_path() -> None:
    """Import the parts of dnspython only the full path uses: its message decoder and
    record types take a tenth of a second to import, and the common message (the fast
    path) never needs them. Once imported they are attributes of ``dns``."""
    import dns.message  # noqa: F401
    import dns.name  # noqa: F401
    import dns.rdata  # noqa: F401
    import dns.rdtypes.ANY.SOA  # noqa: F401
    import dns.rdtypes.IN.A  # noqa: F401
    import dns.rdtypes.IN.AAAA  # noqa: F401
    import dns.rdtypes.IN.SRV  # noqa: F401
    import dns.rdtypes.mxbase  # noqa: F401
    import dns.rdtypes.nsbase  # noqa: F401
    import dns.rrset  # noqa: F401


def _convert(exc: Exception) -> ParseError:
    """Map a dnspython (or codec) exception to our ParseError family."""
    detail = f"dnspython {type(exc).__name__}: {' '.join(str(exc).split())}"
    if isinstance(exc, (dns.message.ShortHeader, dns.message.Truncated)):
        return Truncated(detail)
    if isinstance(exc, dns.message.TrailingJunk):
        return TrailingData(detail)
    return Malformed(detail)


def _name_text(name: dns.name.Name) -> str:
    if name == dns.name.root:
        return "."
    return name.to_text(omit_final_dot=True).lower()


def _type_text(rdtype: dns.rdatatype.RdataType) -> str:
    return dns.rdatatype.to_text(rdtype)


def _rdata_text(rd: dns.rdata.Rdata) -> str:
    if isinstance(rd, (dns.rdtypes.IN.A.A, dns.rdtypes.IN.AAAA.AAAA)):
        return str(ipaddress.ip_address(str(rd.address)))
    if isinstance(rd, dns.rdtypes.nsbase.NSBase):  # CNAME, DNAME, NS, PTR
        return _name_text(rd.target)
    if isinstance(rd, dns.rdtypes.mxbase.MXBase):
        return f"{rd.preference} {_name_text(rd.exchange)}"
    if isinstance(rd, dns.rdtypes.IN.SRV.SRV):
        return f"{rd.priority} {rd.weight} {rd.port} {_name_text(rd.target)}"
    if isinstance(rd, dns.rdtypes.ANY.SOA.SOA):
        return (f"{_name_text(rd.mname)} {_name_text(rd.rname)} {rd.serial} {rd.refresh} "
                f"{rd.retry} {rd.expire} {rd.minimum}")
    return str(rd.to_text())


def _records(section: list[dns.rrset.RRset]) -> tuple[DnsAnswer, ...]:
    out: list[DnsAnswer] = []
    for rrset in section:
        rrname = _name_text(rrset.name)
        rrtype = _type_text(rrset.rdtype)
        rrclass = dns.rdataclass.to_text(rrset.rdclass)
        for rd in rrset:
            out.append(DnsAnswer(rrname, rrtype, int(rrset.ttl), _rdata_text(rd), rrclass))
    return tuple(out)


def _rdata_error(error: dns.message.MessageError, frame: _Frame) -> bool:
    """Whether a dnspython error lies inside one RR's RDATA (so that RR can be skipped)."""
    if isinstance(error.exception, (dns.message.BadEDNS, dns.message.BadTSIG)):
        return False  # raised from the RR header, whose end coincides with RDATA start
    return any(start <= error.offset <= end for start, end in frame.rdata_spans)


_TYPE_A: Final = 1
_TYPE_NS: Final = 2
_TYPE_CNAME: Final = 5
_TYPE_PTR: Final = 12
_TYPE_AAAA: Final = 28
_TYPE_DNAME: Final = 39
_TYPE_OPT: Final = 41
_CLASS_IN: Final = 1
_NAME_TYPES: Final = frozenset((_TYPE_NS, _TYPE_CNAME, _TYPE_PTR, _TYPE_DNAME))
_RR_HEADER: Final = struct.Struct("!HHIH")
_QUESTION_TAIL: Final = struct.Struct("!HH")
_type_texts: dict[int, str] = {}


def _type_name(rdtype: int) -> str:
    text = _type_texts.get(rdtype)
    if text is None:
        text = _type_texts[rdtype] = dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))
    return text


#: Label bytes whose presentation needs no escape (dnspython escapes the others).
_PLAIN_LABEL: Final = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                b"0123456789-_")
_label_texts: dict[tuple[bytes, ...], str] = {}


class _NotFast(Exception):
    """The fast path declines; the full path decides."""


def _fast_name(wire: bytes, pos: int) -> tuple[str, int]:
    """A name at ``pos``: its text as :func:`_name_text` gives it, and where it ends.

    Decompression follows dnspython's rule (each pointer strictly before the previous
    target, so no loops); labels other than letters, digits, ``-`` and ``_`` get
    dnspython's own escaping."""
    labels: list[bytes] = []
    size = 1
    biggest = pos
    after = -1
    while True:
        count = wire[pos]
        pos += 1
        if count == 0:
            break
        if count < 64:
            label = wire[pos:pos + count]
            if len(label) != count:
                raise _NotFast
            labels.append(label)
            size += count + 1
            pos += count
        elif count >= 192:
            target = (count & 0x3F) << 8 | wire[pos]
            pos += 1
            if target >= biggest:
                raise _NotFast
            biggest = target
            if after < 0:
                after = pos
            pos = target
        else:
            raise _NotFast
    if size > MAX_NAME_WIRE_LEN:
        raise _NotFast
    key = tuple(labels)
    text = _label_texts.get(key)
    if text is None:
        if not labels:
            text = "."
        elif all(_PLAIN_LABEL.issuperset(label) for label in labels):
            text = b".".join(labels).decode("ascii").lower()
        else:
            _full_path()
            text = _name_text(dns.name.Name([*labels, b""]))
        if len(_label_texts) >= 8192:
            _label_texts.clear()
        _label_texts[key] = text
    return text, after if after >= 0 else pos


def _fast_records(wire: bytes, pos: int, count: int) -> tuple[tuple[DnsAnswer, ...], int]:
    """``count`` RRs of class IN whose RDATA is an address or a name."""
    out: list[DnsAnswer] = []
    for _ in range(count):
        owner, pos = _fast_name(wire, pos)
        rdtype, rdclass, ttl, rdlen = _RR_HEADER.unpack_from(wire, pos)
        pos += 10
        end = pos + rdlen
        if rdclass != _CLASS_IN or end > len(wire):
            raise _NotFast
        if rdtype == _TYPE_A and rdlen == 4:
            text = ip_text(wire[pos:end])
        elif rdtype == _TYPE_AAAA and rdlen == 16:
            text = ip_text(wire[pos:end])
        elif rdtype in _NAME_TYPES:
            text, stop = _fast_name(wire[:end], pos)
            if stop != end:
                raise _NotFast
        else:
            raise _NotFast
        pos = end
        # dnspython's rule (RFC 2181 §8): a TTL with the top bit set counts as 0.
        out.append(DnsAnswer(owner, _type_name(rdtype), 0 if ttl > 0x7FFFFFFF else ttl, text,
                             "IN"))
    return tuple(out), pos


_HEADER: Final = struct.Struct("!6H")
#: An OPT record with no options: the root owner, then type, class, TTL and rdlength 0.
_EMPTY_OPT_LEN: Final = 11


def _fast_message(raw: bytes, strict: bool) -> DnsMessage | None:
    """The common message decoded straight from the wire, without building a dnspython
    Message: a QUERY of class IN, within the record caps, whose answer and authority
    records are addresses and names and whose additional section is at most one OPT
    record without options. None for anything else (damage included), which the full
    path takes. Gives what the full path gives (a property test compares them)."""
    msg_id, flags, qd, an, ns, ar = _HEADER.unpack_from(raw)
    if (flags >> 11) & 0xF or ar > 1 or qd > MAX_QUESTIONS or an > MAX_ANSWERS \
            or ns + ar > MAX_RECORDS:
        return None
    try:
        pos = DNS_HEADER_LEN
        questions = []
        for _ in range(qd):
            qname, pos = _fast_name(raw, pos)
            qtype, qclass = _QUESTION_TAIL.unpack_from(raw, pos)
            pos += 4
            if qclass != _CLASS_IN:
                return None
            questions.append(DnsQuestion(qname, _type_name(qtype), "IN"))
        answers, pos = _fast_records(raw, pos, an)
        authorities, pos = _fast_records(raw, pos, ns)
        if ar:
            # OPT: the root as owner, type 41, no options (dnspython checks those).
            if raw[pos] != 0 or raw[pos + 1 : pos + 3] != b"\x00\x29" \
                    or raw[pos + 9 : pos + 11] != b"\x00\x00":
                return None
            pos += _EMPTY_OPT_LEN
    except (_NotFast, IndexError, struct.error):
        return None
    trailing = len(raw) - pos
    if trailing < 0 or (trailing and strict):
        return None
    return DnsMessage(
        id=msg_id, is_response=bool(flags & _FLAG_QR), opcode=0, rcode=flags & 0xF,
        flags=flags, aa=bool(flags & _FLAG_AA), tc=bool(flags & _FLAG_TC),
        rd=bool(flags & _FLAG_RD), ra=bool(flags & _FLAG_RA), ad=bool(flags & _FLAG_AD),
        cd=bool(flags & _FLAG_CD), questions=tuple(questions), answers=answers,
        authorities=authorities, authority_count=ns, additional_count=ar, partial=False,
        skipped_records=0, trailing_bytes=trailing)


def parse_dns_message(data: bytes | bytearray | memoryview, *, strict: bool = False
                      ) -> DnsMessage:
    """Parse one DNS message (RFC 1035 §4.1), as carried in a UDP payload or one TCP frame.

    Raises :class:`Truncated` when the data is shorter than the 12-octet header or than
    the records the header declares (unless TC=1, see the module docstring);
    :class:`TrailingData` for bytes after the last record, only with ``strict=True``;
    :class:`LimitExceeded` over :data:`MAX_DNS_MESSAGE` bytes, :data:`MAX_QUESTIONS`,
    :data:`MAX_ANSWERS` or :data:`MAX_RECORDS`; :class:`Malformed` for a label type other
    than 0 or 3, a name over 255 octets, a compression pointer that does not point
    backwards (which rules out loops) or a chain of more than 16 of them, a question or
    owner name or RR header dnspython rejects, an OPT or TSIG record out of place, or any
    bad record in an UPDATE message. Nothing else escapes.
    """
    # One copy up front: dnspython wants bytes, and no view of the caller's buffer (which
    # a live capture reuses) may outlive this call, not even in a raised error's frames.
    raw = data if isinstance(data, bytes) else bytes(data)
    del data
    if len(raw) > MAX_DNS_MESSAGE:
        raise LimitExceeded(f"{len(raw)} bytes (cap {MAX_DNS_MESSAGE})")
    if len(raw) < DNS_HEADER_LEN:
        raise Truncated(f"{len(raw)} bytes, the DNS header is {DNS_HEADER_LEN}")
    fast = None
    if native is not None:  # the compiled fast path; what it declines goes on below
        fast = native.dns_message(raw, strict, DnsMessage, DnsQuestion, DnsAnswer,
                                  _type_name, ip_text, MAX_QUESTIONS, MAX_ANSWERS,
                                  MAX_RECORDS)
    if fast is None:
        fast = _fast_message(raw, strict)
    if fast is not None:
        return fast
    frame = _frame(raw)
    trailing = 0 if frame.partial else len(raw) - frame.end
    if trailing and strict:
        raise TrailingData(f"{trailing} bytes after the last record", offset=frame.end)
    if frame.partial:
        qd, an, ns, ar = frame.counts
        header = raw[0:4] + b"".join(c.to_bytes(2, "big") for c in (qd, an, ns, ar))
        wire = header + raw[DNS_HEADER_LEN : frame.end]
    else:
        wire = raw[: frame.end]
    _full_path()
    try:
        m = dns.message.from_wire(
            wire,
            keyring=False,  # record TSIG, never validate it
            one_rr_per_rrset=True,  # keep every RR, its own TTL and the wire order
            continue_on_error=True,
        )
        questions = tuple(
            DnsQuestion(_name_text(q.name), _type_text(q.rdtype),
                        dns.rdataclass.to_text(q.rdclass))
            for q in m.question
        )
        answers = _records(m.answer)
        authorities = _records(m.authority)
    except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
        raise _convert(exc) from exc
    skipped = 0
    opcode = (frame.flags >> 11) & 0xF
    for error in m.errors:
        if opcode == _OPCODE_UPDATE or not _rdata_error(error, frame):
            raise _convert(error.exception) from error.exception
        skipped += 1
    parsed_rrs = (len(m.answer) + len(m.authority) + len(m.additional)
                  + (m.opt is not None) + (m.tsig is not None))
    _, an, ns, ar = frame.counts
    if len(m.question) != frame.counts[0] or parsed_rrs + skipped != an + ns + ar:
        # Every RR was framed; one neither decoded nor skipped means dnspython stopped early.
        raise Malformed("records lost while decoding")
    f = frame.flags
    return DnsMessage(
        id=frame.id,
        is_response=bool(f & _FLAG_QR),
        opcode=opcode,
        rcode=f & 0xF,
        flags=f,
        aa=bool(f & _FLAG_AA),
        tc=bool(f & _FLAG_TC),
        rd=bool(f & _FLAG_RD),
        ra=bool(f & _FLAG_RA),
        ad=bool(f & _FLAG_AD),
        cd=bool(f & _FLAG_CD),
        questions=questions,
        answers=answers,
        authorities=authorities,
        authority_count=ns,
        additional_count=ar,
        partial=frame.partial,
        skipped_records=skipped,
        trailing_bytes=trailing,
    )


#: The answer records a chain walk looks at (only in class IN).
_CHAIN_TYPES: Final = frozenset({"A", "AAAA", "CNAME"})


def answer_addresses(msg: DnsMessage) -> tuple[ResolvedAddress, ...]:
    """Addresses the answer section gives for each question name, through CNAME chains.

    From every question name, follow CNAME records of the answer section (at most
    :data:`MAX_CNAME_DEPTH` hops; a name seen twice ends the chain, so loops terminate)
    and collect the A/AAAA records owned by any name on the chain. Records that no chain
    reaches are ignored: they do not answer what the client asked. Never raises.
    """
    if not msg.answers:
        return ()
    # Only IN A/AAAA/CNAME records can be on a chain; the others are dropped up front.
    by_owner: dict[str, list[DnsAnswer]] = {}
    for rr in msg.answers:
        if rr.rrclass == "IN" and rr.rrtype in _CHAIN_TYPES:
            owned = by_owner.get(rr.rrname)
            if owned is None:
                by_owner[rr.rrname] = [rr]
            else:
                owned.append(rr)
    out: list[ResolvedAddress] = []
    seen_results: set[tuple[str, str]] = set()
    for question in msg.questions:
        qname = name = question.qname
        # A tuple (at most MAX_CNAME_DEPTH + 1 names), shared by the results it ends in.
        chain: tuple[str, ...] = (name,)
        ttl: int | None = None
        for _ in range(MAX_CNAME_DEPTH + 1):
            target: str | None = None
            target_ttl = 0
            for rr in by_owner.get(name, ()):
                if rr.rrtype != "CNAME":
                    key = (qname, rr.rdata)
                    if key not in seen_results:
                        seen_results.add(key)
                        addr_ttl = rr.ttl if ttl is None else min(ttl, rr.ttl)
                        out.append(ResolvedAddress(qname, rr.rdata, addr_ttl, chain))
                elif target is None:
                    target, target_ttl = rr.rdata, rr.ttl
            if target is None or target in chain or len(chain) > MAX_CNAME_DEPTH:
                break
            ttl = target_ttl if ttl is None else min(ttl, target_ttl)
            chain += (target,)
            name = target
    return tuple(out)


def maybe_read_tcp_messages(buffer: bytes | bytearray | memoryview
                            ) -> tuple[tuple[bytes, ...], int]:
    """Split DNS-over-TCP bytes into messages (RFC 1035 §4.2.2, RFC 7766 §8).

    Each message is preceded by a two-octet big-endian length. Returns the complete
    messages at the start of ``buffer`` (copied) and how many bytes they used; the caller
    keeps the rest and calls again with more data. A frame too short to be DNS is returned
    as is, for :func:`parse_dns_message` to reject. Never raises.
    """
    r = Reader(buffer)
    messages: list[bytes] = []
    consumed = 0
    while r.remaining() >= 2:
        length = r.u16()
        if r.remaining() < length:
            break
        messages.append(r.take_bytes(length))
        consumed = r.pos
    return tuple(messages), consumed


# --- Suricata EVE ``dns`` objects -------------------------------------------------------

_EVE_STRING_TYPES: Final = frozenset({"A", "AAAA", "CNAME", "MX", "NS", "PTR", "TXT", "NULL"})
_EVE_NAME_TYPES: Final = frozenset({"CNAME", "NS", "PTR"})
#: The header flags EVE writes as ``true`` keys when set, in Suricata's order.
_EVE_FLAG_KEYS: Final = (("qr", _FLAG_QR), ("aa", _FLAG_AA), ("tc", _FLAG_TC),
                         ("rd", _FLAG_RD), ("ra", _FLAG_RA), ("z", _FLAG_Z))


def _eve_name(name: str) -> str:
    return "<root>" if name == "." else name


@functools.lru_cache(maxsize=1024)
def _eve_type(rrtype: str) -> str:
    """Cached: a handful of type names make up nearly every record."""
    # dnspython writes unknown types as "TYPE<n>"; Suricata writes the number.
    return rrtype[4:] if rrtype.startswith("TYPE") and rrtype[4:].isdigit() else rrtype


@functools.lru_cache(maxsize=1024)
def _eve_flags(flags: int) -> tuple[str, tuple[str, ...]]:
    """The flags word in hex and the flag keys it sets (a few words recur in all traffic)."""
    return format(flags, "x"), tuple(key for key, bit in _EVE_FLAG_KEYS if flags & bit)


def _eve_rdata(rr: DnsAnswer) -> tuple[str, EveValue] | None:
    """The (key, value) Suricata logs for an RR's data, or None when it logs none."""
    rrtype, rdata = rr.rrtype, rr.rdata
    if rdata.startswith("\\#"):
        # RFC 3597 generic text: dnspython could not interpret this type in this class.
        return ("rdata", rdata) if rrtype in _EVE_STRING_TYPES else None
    if rrtype in _EVE_NAME_TYPES:
        return "rdata", _eve_name(rdata)
    if rrtype == "AAAA":
        # Suricata prints IPv6 as eight zero-padded groups, not RFC 5952 text.
        return "rdata", ip_exploded(rdata)
    if rrtype == "MX":
        return "rdata", _eve_name(rdata.rpartition(" ")[2])
    if rrtype in _EVE_STRING_TYPES:  # A, TXT, NULL
        return "rdata", rdata
    fields = rdata.split(" ")
    if rrtype == "SOA" and len(fields) == 7:
        soa: dict[str, EveValue] = {"mname": _eve_name(fields[0]),
                                    "rname": _eve_name(fields[1])}
        for key, value in zip(("serial", "refresh", "retry", "expire", "minimum"),
                              fields[2:], strict=True):
            soa[key] = int(value)
        return "soa", soa
    if rrtype == "SRV" and len(fields) == 4:
        return "srv", {"priority": int(fields[0]), "weight": int(fields[1]),
                       "port": int(fields[2]), "name": _eve_name(fields[3])}
    if rrtype == "SSHFP" and len(fields) >= 3:
        hexfp = "".join(fields[2:]).lower()
        return "sshfp", {"fingerprint": ":".join(hexfp[i : i + 2]
                                                 for i in range(0, len(hexfp), 2)),
                         "algo": int(fields[0]), "type": int(fields[1])}
    return None


def _eve_answer(rr: DnsAnswer) -> EveObject:
    out: EveObject = {"rrname": _eve_name(rr.rrname), "rrtype": _eve_type(rr.rrtype),
                      "ttl": rr.ttl}
    data = _eve_rdata(rr)
    if data is not None:
        out[data[0]] = data[1]
    return out


def _eve_header(msg: DnsMessage, out: EveObject) -> None:
    hex_flags, flag_keys = _eve_flags(msg.flags)
    out["id"] = msg.id
    out["flags"] = hex_flags
    for key in flag_keys:
        out[key] = True
    out["opcode"] = msg.opcode


def _eve_sections(msg: DnsMessage, out: EveObject, *, detailed: bool, grouped: bool) -> None:
    if msg.answers and detailed:
        out["answers"] = [_eve_answer(rr) for rr in msg.answers]
    if msg.answers and grouped:
        groups: dict[str, EveValue] = {}
        for rr in msg.answers:
            data = _eve_rdata(rr)
            if data is not None:
                group = groups.setdefault(_eve_type(rr.rrtype), [])
                if isinstance(group, list):
                    group.append(data[1])
        if groups:
            out["grouped"] = groups
    if msg.authorities:
        out["authorities"] = [_eve_answer(rr) for rr in msg.authorities]


def eve_dns_records(msg: DnsMessage, *, version: int = 2, tx_id: int | None = None,
                    detailed: bool = True, grouped: bool = False) -> tuple[EveObject, ...]:
    """The ``dns`` object(s) Suricata's EVE JSON output would write for ``msg``.

    ``version=2`` (Suricata 5-7): a query gives one ``{"type": "query", ...}`` object per
    question; a response gives one ``{"version": 2, "type": "answer", ...}`` object with
    the first question's ``rrname``/``rrtype``, the ``answers`` list (``detailed``), the
    ``grouped`` map (``grouped``) and ``authorities``. ``version=3`` (Suricata 8): one
    ``{"version": 3, "type": "request"|"response", ...}`` object with a ``queries`` list.
    Flags are lower-case hex without ``0x``; the qr/aa/tc/rd/ra/z keys appear only when
    set; ``tx_id`` is written when given. Names follow this module (lower-cased; the root
    is Suricata's ``"<root>"``); AAAA data uses Suricata's zero-padded IPv6 text.
    Pure: returns plain dicts for the caller to serialise.
    """
    if version not in (2, 3):
        raise ValueError(f"EVE dns version {version} (supported: 2, 3)")
    if version == 3:
        out: EveObject = {"version": 3, "type": "response" if msg.is_response else "request"}
        if tx_id is not None:
            out["tx_id"] = tx_id
        _eve_header(msg, out)
        out["rcode"] = msg.rcode_name
        out["queries"] = [{"rrname": _eve_name(q.qname), "rrtype": _eve_type(q.qtype)}
                          for q in msg.questions]
        _eve_sections(msg, out, detailed=detailed, grouped=grouped)
        return (out,)
    if not msg.is_response:
        records: list[EveObject] = []
        for q in msg.questions:
            query: EveObject = {"type": "query", "id": msg.id, "rrname": _eve_name(q.qname),
                                "rrtype": _eve_type(q.qtype)}
            if tx_id is not None:
                query["tx_id"] = tx_id
            if msg.flags & _FLAG_Z:
                query["z"] = True
            query["opcode"] = msg.opcode
            records.append(query)
        return tuple(records)
    answer: EveObject = {"version": 2, "type": "answer"}
    _eve_header(msg, answer)
    if msg.questions:
        answer["rrname"] = _eve_name(msg.questions[0].qname)
        answer["rrtype"] = _eve_type(msg.questions[0].qtype)
    answer["rcode"] = msg.rcode_name
    _eve_sections(msg, answer, detailed=detailed, grouped=grouped)
    return (answer,)
