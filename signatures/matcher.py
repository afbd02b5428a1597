"""Vendor records and the immutable, indexed :class:`SignatureSet` that matches against them.

A set is built once from :class:`Vendor` records (normally by :mod:`signatures.loader`)
and then only read, so a new set can replace an old one with a single reference swap.

Name matching walks a trie keyed by labels from the root (``com`` -> ``kaspersky`` ->
``upd``): each node has a dict of literal labels and a short tuple of single-label globs,
so the cost grows with the number of labels in the name, not the number of patterns.
Among all patterns that match, the most specific wins:

1. a pattern for the whole name beats any ``*.`` ("strictly below") pattern;
2. then the deeper pattern wins (more labels, the ``*.`` counting as one);
3. then, comparing labels from the root, a literal label beats a partial glob
   (``ksn-*-geo``), which beats a lone ``*`` label, which beats the ``*.`` itself;
   between two partial globs the one with more literal characters wins;
4. remaining ties go to the lower (vendor id, signature number), so results are stable.

IP prefixes are indexed per prefix length (one dict probe per distinct length), ASNs and
JA4 fingerprints by exact value. Lookups never raise: a miss or malformed input returns
None or an empty list.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import socket
from collections.abc import Iterable
from typing import Final

import msgspec

from signatures.errors import SignatureError
from signatures.patterns import (
    CompiledPattern,
    PatternError,
    compile_pattern,
    glob_match,
    name_labels,
)

__all__ = [
    "CONFIDENCES",
    "MAX_GLOBS_PER_NODE",
    "PURPOSES",
    "AsnMatch",
    "AsnRecord",
    "IpMatch",
    "Ja4Match",
    "Ja4Signature",
    "NameMatch",
    "NameSignature",
    "PrefixRecord",
    "SignatureSet",
    "Vendor",
]

#: What a vendor endpoint is for (closed set; becomes a metric label value).
PURPOSES: Final = ("lookup", "telemetry", "sample-upload", "update", "console", "unknown")
#: How well a fact is sourced: high = vendor documentation, medium = third-party list or
#: code with a clear role, low = inferred from a hostname or one weak source.
CONFIDENCES: Final = ("high", "medium", "low")
#: Globs under one trie node are tried one by one; past this the "small list" becomes a
#: scan. Real data has at most 3 per node (``*.traps.paloaltonetworks.com`` siblings).
MAX_GLOBS_PER_NODE: Final = 64
#: Characters of the version hash exported as ``avmon_signatures_info{version}``.
VERSION_LEN: Final = 12

_RANK_BELOW: Final = (0, 0)
# (whole-name pattern?, depth, per-label (kind, literal characters) from the root, -order)
_Rank = tuple[bool, int, tuple[tuple[int, int], ...], int]
_RANK_ANY_LABEL: Final = 1
_RANK_GLOB: Final = 2
_RANK_LITERAL: Final = 3


class NameSignature(msgspec.Struct, frozen=True):
    """One ``[[names]]`` entry of a vendor file."""

    #: 1-based position of the entry in its file; the signature id is ``<vendor>:<sid>``.
    sid: int
    #: The pattern as written (may hold ``[00-19]`` ranges and ``(a|b)`` alternations).
    pattern: str
    #: The plain, normalised patterns it expands to, in written order.
    expanded: tuple[str, ...]
    #: One of PURPOSES: the main thing this endpoint is used for.
    purpose: str
    #: Further PURPOSES served by the same name (e.g. lookups and uploads on one host).
    other_purposes: tuple[str, ...]
    #: One of CONFIDENCES.
    confidence: str
    #: Short human description of the endpoint's role and the evidence for it.
    role: str
    #: Source id and/or full citation.
    source: str


class AsnRecord(msgspec.Struct, frozen=True):
    """An autonomous system attributed to a vendor (weaker evidence than a name)."""

    asn: int
    #: Organisation name as registered, "" if not given.
    org: str
    confidence: str
    source: str


class PrefixRecord(msgspec.Struct, frozen=True):
    """A group of IP prefixes attributed to a vendor, with one source."""

    #: Normalised CIDR strings (``ipaddress`` canonical form).
    cidrs: tuple[str, ...]
    confidence: str
    source: str
    #: Free text qualifying the attribution, "" if none.
    note: str


class Ja4Signature(msgspec.Struct, frozen=True):
    """A JA4 TLS ClientHello fingerprint attributed to a vendor's client."""

    #: 1-based position of the entry in its file; the signature id is ``<vendor>:ja4:<sid>``.
    sid: int
    #: Lower-case JA4 string ``a_b_c``.
    fingerprint: str
    purpose: str
    confidence: str
    role: str
    source: str


class Vendor(msgspec.Struct, frozen=True):
    """Everything one vendor file says: identity, jurisdiction of control, indicators."""

    #: Slug, equal to the file stem; used as a metric label value.
    id: str
    #: Display name.
    name: str
    product_lines: tuple[str, ...]
    #: ISO 3166-1 alpha-2 code of the controlling parent (not of R&D or data centres).
    jurisdiction: str
    jurisdiction_confidence: str
    jurisdiction_sources: tuple[str, ...]
    #: Revision of the file's content; bump it on every change.
    rev: int
    #: Headquarters as researched, "" if not given.
    headquarters: str
    #: Controlling parent / ownership as researched, "" if not given.
    parent: str
    notes: str
    #: Informational indicators the matcher does not use (ports, headers, TLS roots).
    indicators: tuple[str, ...]
    asns: tuple[AsnRecord, ...]
    prefixes: tuple[PrefixRecord, ...]
    names: tuple[NameSignature, ...]
    ja4: tuple[Ja4Signature, ...]


class NameMatch(msgspec.Struct, frozen=True):
    """The result of matching a DNS name / SNI / Host against the set."""

    vendor_id: str
    vendor_name: str
    jurisdiction: str
    purpose: str
    #: The pattern as written in the vendor file.
    pattern: str
    #: The plain pattern (after range/alternation expansion) that matched.
    matched_pattern: str
    confidence: str
    #: ``<vendor-id>:<n>``, stable while the file's entries keep their order.
    signature_id: str
    #: The vendor file's ``rev``.
    rev: int
    role: str
    other_purposes: tuple[str, ...]


class IpMatch(msgspec.Struct, frozen=True):
    """An address inside a prefix attributed to a vendor."""

    vendor_id: str
    vendor_name: str
    jurisdiction: str
    #: The matching prefix, CIDR notation.
    prefix: str
    confidence: str
    source: str
    rev: int


class AsnMatch(msgspec.Struct, frozen=True):
    """An ASN attributed to a vendor."""

    vendor_id: str
    vendor_name: str
    jurisdiction: str
    asn: int
    org: str
    confidence: str
    source: str
    rev: int


class Ja4Match(msgspec.Struct, frozen=True):
    """A JA4 fingerprint attributed to a vendor's client."""

    vendor_id: str
    vendor_name: str
    jurisdiction: str
    purpose: str
    fingerprint: str
    confidence: str
    #: ``<vendor-id>:ja4:<n>``.
    signature_id: str
    rev: int


class _Hit(msgspec.Struct, frozen=True):
    """A pattern stored at a trie node, with its precomputed precedence."""

    #: Larger wins; see the module docstring for the order.
    rank: _Rank
    match: NameMatch


class _Node:
    """A trie node. Mutable only while the set is being built."""

    __slots__ = ("below", "exact", "full", "globs")

    def __init__(self) -> None:
        self.exact: dict[str, _Node] = {}
        #: (glob text, glob split on '*', child), in insertion order.
        self.globs: tuple[tuple[str, tuple[str, ...], _Node], ...] = ()
        #: Pattern ending exactly here.
        self.full: _Hit | None = None
        #: ``*.`` pattern: matches any name strictly below this node.
        self.below: _Hit | None = None


def _label_rank(label: str) -> tuple[int, int]:
    if "*" not in label:
        return (_RANK_LITERAL, len(label))
    if label == "*":
        return (_RANK_ANY_LABEL, 0)
    return (_RANK_GLOB, len(label) - label.count("*"))


def _pattern_rank(compiled: CompiledPattern, order: int) -> _Rank:
    ranks = tuple(_label_rank(label) for label in compiled.labels)
    if compiled.below:
        ranks += (_RANK_BELOW,)
    return (not compiled.below, len(ranks), ranks, -order)


def _canonical_json(vendors: tuple[Vendor, ...]) -> bytes:
    payload = msgspec.to_builtins(vendors)
    return json.dumps(payload, sort_keys=True, ensure_ascii=True, separators=(",", ":")).encode()


_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


#: Addresses whose match_ip answer is remembered (destinations recur).
_IP_CACHE_MAX: Final = 65536
#: Names whose match_name answer is remembered (a client names the same hosts again).
_NAME_CACHE_MAX: Final = 65536


class SignatureSet:
    """An immutable, indexed set of vendor signatures.

    Build it with ``SignatureSet(vendors)``; raises SignatureError when two vendors share
    an id, or two entries (of one vendor or of two) claim the same plain pattern, or a
    pattern is invalid. Normally obtained from :func:`signatures.load_signature_set`.
    """

    __slots__ = (
        "_asn",
        "_ip_cache",
        "_ja4",
        "_name_cache",
        "_pattern_count",
        "_prefix_lens",
        "_prefixes",
        "_root",
        "_vendor_by_id",
        "_vendors",
        "_version",
    )

    _vendors: tuple[Vendor, ...]
    _vendor_by_id: dict[str, Vendor]
    _root: _Node
    _pattern_count: int
    _prefixes: dict[tuple[int, int], dict[int, tuple[IpMatch, ...]]]
    _prefix_lens: dict[int, tuple[int, ...]]
    _asn: dict[int, tuple[AsnMatch, ...]]
    _ja4: dict[str, tuple[Ja4Match, ...]]
    _version: str | None
    _ip_cache: dict[str, tuple[IpMatch, ...]]
    _name_cache: dict[str, NameMatch | None]

    def __init__(self, vendors: Iterable[Vendor]) -> None:
        ordered = tuple(sorted(vendors, key=lambda v: v.id))
        by_id: dict[str, Vendor] = {}
        for vendor in ordered:
            if vendor.id in by_id:
                raise SignatureError(f"duplicate vendor id {vendor.id!r}")
            by_id[vendor.id] = vendor
        root, count = _build_trie(ordered)
        prefixes, prefix_lens = _build_prefixes(ordered)
        init = object.__setattr__
        init(self, "_vendors", ordered)
        init(self, "_vendor_by_id", by_id)
        init(self, "_root", root)
        init(self, "_pattern_count", count)
        init(self, "_prefixes", prefixes)
        init(self, "_prefix_lens", prefix_lens)
        init(self, "_asn", _build_asns(ordered))
        init(self, "_ja4", _build_ja4(ordered))
        # The version is a digest of every vendor's content: made when first asked for
        # (it is a fair part of loading the set, and a replay may never ask).
        init(self, "_version", None)
        #: Answers of match_ip by address text (an internal memo; the set is unchanged).
        init(self, "_ip_cache", {})
        #: Answers of match_name by name (the same).
        init(self, "_name_cache", {})

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"SignatureSet is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"SignatureSet is immutable (cannot delete {name!r})")

    def __repr__(self) -> str:
        return (
            f"<SignatureSet {len(self._vendors)} vendors, {self._pattern_count} patterns, "
            f"version {self.version}>"
        )

    @property
    def vendors(self) -> tuple[Vendor, ...]:
        """All vendor records, sorted by id."""
        return self._vendors

    @property
    def version(self) -> str:
        """Short hash of the set's content (not of file layout or comments)."""
        version = self._version
        if version is None:
            version = hashlib.sha256(_canonical_json(self._vendors)).hexdigest()[:VERSION_LEN]
            object.__setattr__(self, "_version", version)
        return version

    @property
    def pattern_count(self) -> int:
        """Number of plain name patterns after expansion."""
        return self._pattern_count

    def vendor(self, vendor_id: str) -> Vendor | None:
        """The vendor with this id, or None."""
        return self._vendor_by_id.get(vendor_id)

    def jurisdictions(self) -> tuple[str, ...]:
        """The closed, sorted set of jurisdiction codes the vendors use."""
        return tuple(sorted({v.jurisdiction for v in self._vendors}))

    def match_name(self, name: str) -> NameMatch | None:
        """The most specific signature matching a DNS name, SNI or Host, or None.

        Case-insensitive, a trailing dot ignored, IDN compared in A-label form. Never
        raises: text that is not a usable DNS name does not match.
        """
        cache = self._name_cache
        try:
            return cache[name]
        except KeyError:
            pass
        except TypeError:  # not hashable: not a name
            return None
        hit, _ = self._lookup(name)
        found = None if hit is None else hit.match
        if len(cache) >= _NAME_CACHE_MAX:
            cache.clear()
        cache[name] = found
        return found

    def _lookup(self, name: str) -> tuple[_Hit | None, int]:
        """Return the best hit and the number of trie nodes visited (for tests)."""
        labels = name_labels(name) if isinstance(name, str) else None
        if labels is None:
            return None, 0
        n = len(labels)
        best: _Hit | None = None
        visits = 0
        stack: list[tuple[_Node, int]] = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            visits += 1
            below = node.below
            if below is not None and depth < n and (best is None or below.rank > best.rank):
                best = below
            if depth == n:
                full = node.full
                if full is not None and (best is None or full.rank > best.rank):
                    best = full
                continue
            label = labels[n - 1 - depth]
            child = node.exact.get(label)
            if child is not None:
                stack.append((child, depth + 1))
            for _, pieces, glob_child in node.globs:
                if glob_match(pieces, label):
                    stack.append((glob_child, depth + 1))
        return best, visits

    def match_ip(self, ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[IpMatch]:
        """Prefixes containing ``ip``, most specific first; [] for a miss or a bad address.

        An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) is looked up as IPv4.
        """
        if isinstance(ip, str):
            cached: tuple[IpMatch, ...] | None = self._ip_cache.get(ip)
            if cached is None:
                if len(self._ip_cache) >= _IP_CACHE_MAX:
                    self._ip_cache.clear()
                cached = self._ip_cache[ip] = tuple(self._match_ip(ip))
            return list(cached)
        return self._match_ip(ip)

    def _match_ip(self, ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address
                  ) -> list[IpMatch]:
        packed = _pton(ip) if isinstance(ip, str) else None
        if packed is not None:  # the usual text forms, without parsing them in Python
            if len(packed) == 16 and packed[:12] == _V4_MAPPED:
                packed = packed[12:]
            version, bits = (4, 32) if len(packed) == 4 else (6, 128)
            value = int.from_bytes(packed, "big")
        else:
            try:
                address: _Address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
            except ValueError:
                return []
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            version = address.version
            bits = address.max_prefixlen
            value = int(address)
        found: list[IpMatch] = []
        for length in self._prefix_lens.get(version, ()):
            hits = self._prefixes[(version, length)].get(value >> (bits - length))
            if hits is not None:
                found.extend(hits)
        return found

    def match_asn(self, asn: int) -> list[AsnMatch]:
        """Vendors that claim this autonomous system number; [] if none."""
        return list(self._asn.get(asn, ()))

    def match_ja4(self, fp: str) -> list[Ja4Match]:
        """Vendors whose client has this JA4 fingerprint; [] if none. Case-insensitive."""
        if not isinstance(fp, str):
            return []
        return list(self._ja4.get(fp.strip().lower(), ()))


def _insert(root: _Node, compiled: CompiledPattern, hit: _Hit) -> _Hit | None:
    """Insert a pattern; return the hit already stored for the same pattern, if any."""
    node = root
    for label in compiled.labels:
        if "*" in label:
            for text, _, child in node.globs:
                if text == label:
                    node = child
                    break
            else:
                if len(node.globs) >= MAX_GLOBS_PER_NODE:
                    raise SignatureError(
                        f"pattern {compiled.text!r}: more than {MAX_GLOBS_PER_NODE} glob "
                        "labels under one parent name"
                    )
                child = _Node()
                node.globs += ((label, tuple(label.split("*")), child),)
                node = child
        else:
            nxt = node.exact.get(label)
            if nxt is None:
                nxt = node.exact[label] = _Node()
            node = nxt
    existing = node.below if compiled.below else node.full
    if existing is not None:
        return existing
    if compiled.below:
        node.below = hit
    else:
        node.full = hit
    return None


def _build_trie(vendors: tuple[Vendor, ...]) -> tuple[_Node, int]:
    root = _Node()
    count = 0
    order = 0
    for vendor in vendors:
        for sig in vendor.names:
            for plain in sig.expanded:
                try:
                    compiled = compile_pattern(plain)
                except PatternError as exc:
                    raise SignatureError(
                        f"vendor {vendor.id!r} signature {sig.sid}: {exc}"
                    ) from None
                match = NameMatch(
                    vendor_id=vendor.id,
                    vendor_name=vendor.name,
                    jurisdiction=vendor.jurisdiction,
                    purpose=sig.purpose,
                    pattern=sig.pattern,
                    matched_pattern=compiled.text,
                    confidence=sig.confidence,
                    signature_id=f"{vendor.id}:{sig.sid}",
                    rev=vendor.rev,
                    role=sig.role,
                    other_purposes=sig.other_purposes,
                )
                hit = _Hit(rank=_pattern_rank(compiled, order), match=match)
                order += 1
                clash = _insert(root, compiled, hit)
                if clash is not None:
                    raise SignatureError(
                        f"pattern {compiled.text!r} is claimed twice: "
                        f"{clash.match.signature_id} and {match.signature_id}"
                    )
                count += 1
    return root, count


def _build_prefixes(
    vendors: tuple[Vendor, ...],
) -> tuple[dict[tuple[int, int], dict[int, tuple[IpMatch, ...]]], dict[int, tuple[int, ...]]]:
    table: dict[tuple[int, int], dict[int, tuple[IpMatch, ...]]] = {}
    for vendor in vendors:
        for record in vendor.prefixes:
            for cidr in record.cidrs:
                try:
                    network: _Network = ipaddress.ip_network(cidr, strict=True)
                except ValueError as exc:
                    raise SignatureError(f"vendor {vendor.id!r} prefix {cidr!r}: {exc}") from None
                match = IpMatch(
                    vendor_id=vendor.id,
                    vendor_name=vendor.name,
                    jurisdiction=vendor.jurisdiction,
                    prefix=str(network),
                    confidence=record.confidence,
                    source=record.source,
                    rev=vendor.rev,
                )
                key = (network.version, network.prefixlen)
                shift = network.max_prefixlen - network.prefixlen
                bucket = table.setdefault(key, {})
                value = int(network.network_address) >> shift
                bucket[value] = bucket.get(value, ()) + (match,)
    lens: dict[int, tuple[int, ...]] = {}
    for version in (4, 6):
        lens[version] = tuple(sorted((n for v, n in table if v == version), reverse=True))
    return table, lens


def _build_asns(vendors: tuple[Vendor, ...]) -> dict[int, tuple[AsnMatch, ...]]:
    table: dict[int, tuple[AsnMatch, ...]] = {}
    for vendor in vendors:
        for record in vendor.asns:
            match = AsnMatch(
                vendor_id=vendor.id,
                vendor_name=vendor.name,
                jurisdiction=vendor.jurisdiction,
                asn=record.asn,
                org=record.org,
                confidence=record.confidence,
                source=record.source,
                rev=vendor.rev,
            )
            table[record.asn] = table.get(record.asn, ()) + (match,)
    return table


def _build_ja4(vendors: tuple[Vendor, ...]) -> dict[str, tuple[Ja4Match, ...]]:
    table: dict[str, tuple[Ja4Match, ...]] = {}
    for vendor in vendors:
        for sig in vendor.ja4:
            key = sig.fingerprint.lower()
            match = Ja4Match(
                vendor_id=vendor.id,
                vendor_name=vendor.name,
                jurisdiction=vendor.jurisdiction,
                purpose=sig.purpose,
                fingerprint=key,
                confidence=sig.confidence,
                signature_id=f"{vendor.id}:ja4:{sig.sid}",
                rev=vendor.rev,
            )
            table[key] = table.get(key, ()) + (match,)
    return table


_V4_MAPPED: Final = bytes(10) + b"\xff\xff"


def _pton(text: str) -> bytes | None:
    """The packed address of ``text`` if ``inet_pton`` reads it (the canonical forms);
    None for anything else, which :mod:`ipaddress` then decides on."""
    try:
        return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
    except (OSError, ValueError):
        return None
