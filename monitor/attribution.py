"""Attribution: which name a flow carries, where the name came from, and which AV vendor
and purpose it belongs to.

A flow's name comes, in order of preference, from what the flow itself carries (TLS SNI,
QUIC SNI, the target of an HTTP ``CONNECT``, the HTTP ``Host``) or, when it carries none
(IP-only connections, Encrypted Client Hello), from DNS: a bounded, TTL-aware cache maps
(client, answer address) to the names that client asked for, following CNAME chains back
to the question. Each flow gets one ``server_name`` and the indicator it came from.
Signatures then map the name (or the destination address, or the JA4 fingerprint) to a
vendor, product and purpose.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from typing import Final

import msgspec

from signatures import NameMatch, SignatureSet

__all__ = ["Attribution", "DnsCache", "Indicator", "attribute"]

#: (client, address) pairs remembered. A busy resolver answers a few thousand distinct
#: addresses per minute; 65,536 entries cover several TTLs of that at ~200 B each.
MAX_DNS_CACHE: Final = 65_536
#: Names kept per (client, address): CDNs put many names on one address, and an attacker
#: can answer one address for 100k names; the most recent few are what a flow needs.
MAX_NAMES_PER_ADDRESS: Final = 8
#: Answers are kept at least this long even with TTL 0 (clients connect right after the
#: answer, and TTL 0 is a known way to dodge passive DNS).
MIN_TTL_NS: Final = 60 * 10**9
#: ... and at most this long (a day), so a huge TTL cannot pin entries.
MAX_TTL_NS: Final = 86_400 * 10**9

#: Indicator types, most direct first (DESIGN.md: sni|quic|dns|http|connect|ja4|ip).
INDICATOR_PRIORITY: Final = {"connect": 0, "sni": 1, "quic": 1, "http": 2, "dns": 3,
                             "ja4": 4, "ip": 5}


class Indicator(msgspec.Struct, frozen=True):
    #: sni | quic | http | connect | dns | ja4 | ip
    type: str
    value: str


class DnsName(msgspec.Struct, frozen=True):
    #: The name the client asked for.
    qname: str
    #: qname, then each CNAME target, to the owner of the address record.
    chain: tuple[str, ...]
    #: Packet time the answer was seen, and until when it stays valid.
    seen_ns: int
    expires_ns: int


class VendorMatch(msgspec.Struct, frozen=True):
    """A signature that matched the flow: by name, destination prefix or JA4."""

    vendor_id: str
    vendor_name: str
    jurisdiction: str
    purpose: str
    #: "name", "ip" or "ja4": what matched.
    basis: str
    #: The pattern, prefix or fingerprint that matched.
    pattern: str
    signature_id: str
    rev: int
    confidence: str


class Attribution(msgspec.Struct, frozen=True):
    """What avmon concluded about one flow's destination."""

    server_name: str | None
    indicator: Indicator | None
    vendor: VendorMatch | None
    #: Other names seen on the flow (e.g. the SNI inside a CONNECT tunnel, DNS names).
    other_names: tuple[str, ...] = ()


class DnsCache:
    """(client address, answer address) -> the names the client resolved to it."""

    def __init__(self, max_entries: int = MAX_DNS_CACHE,
                 max_names: int = MAX_NAMES_PER_ADDRESS) -> None:
        self.max_entries = max_entries
        self.max_names = max_names
        self._entries: OrderedDict[tuple[bytes, bytes], list[DnsName]] = OrderedDict()
        self.evictions = 0
        self.names_dropped = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, client: bytes, address: bytes, qname: str, chain: tuple[str, ...], ttl: int,
            now_ns: int) -> None:
        ttl_ns = min(max(ttl * 10**9, MIN_TTL_NS), MAX_TTL_NS)
        key = (client, address)
        names = self._entries.get(key)
        if names is None:
            names = self._entries[key] = []
            if len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self.evictions += 1
        else:
            self._entries.move_to_end(key)
            for old in names:
                if old.qname == qname:
                    if old.seen_ns > now_ns:
                        return  # a later answer for the name is already here
                    names.remove(old)
                    break
        # Kept in the order the answers were seen, whatever order they arrive in (other
        # workers' answers may come late): the result never depends on who parsed what.
        entry = DnsName(qname, chain, now_ns, now_ns + ttl_ns)
        if not names or names[-1].seen_ns <= now_ns:
            names.append(entry)
        else:
            names.insert(bisect.bisect_right([n.seen_ns for n in names], now_ns), entry)
        if len(names) > self.max_names:
            del names[0]
            self.names_dropped += 1

    def lookup(self, client: bytes, address: bytes, at_ns: int) -> DnsName | None:
        """The most recent name ``client`` resolved to ``address`` valid at ``at_ns``."""
        names = self._entries.get((client, address))
        if not names:
            return None
        for entry in reversed(names):
            if entry.seen_ns <= at_ns <= entry.expires_ns:
                return entry
        return None


def _from_name(m: NameMatch) -> VendorMatch:
    return VendorMatch(m.vendor_id, m.vendor_name, m.jurisdiction, m.purpose, "name",
                       m.pattern, m.signature_id, m.rev, m.confidence)


def attribute(sigs: SignatureSet, names: dict[str, str], dns_name: DnsName | None,
              dest_ip: str, ja4: str | None) -> Attribution:
    """Choose the flow's name and match it against the signatures.

    ``names`` maps indicator type (sni, quic, http, connect) to the name the flow carried.
    The most direct indicator that matches a signature decides the vendor (a proxy CONNECT
    target and the SNI inside the tunnel normally agree); without any name match, the
    destination prefix and then the client's JA4 fingerprint are tried.
    """
    candidates = sorted(names.items(), key=lambda kv: INDICATOR_PRIORITY[kv[0]]) \
        if names else []
    if dns_name is not None:
        candidates.append(("dns", dns_name.qname))
    chosen: tuple[str, str] | None = candidates[0] if candidates else None
    vendor: VendorMatch | None = None
    for kind, name in candidates:
        m = sigs.match_name(name)
        if m is not None:
            vendor, chosen = _from_name(m), (kind, name)
            break
    if vendor is None and dns_name is not None:
        # A CNAME target can be the only vendor name (a CDN alias in front of it).
        for name in dns_name.chain[1:]:
            m = sigs.match_name(name)
            if m is not None:
                vendor = _from_name(m)
                break
    if vendor is None:
        ip = sigs.match_ip(dest_ip)
        if ip:
            best = ip[0]
            vendor = VendorMatch(best.vendor_id, best.vendor_name, best.jurisdiction,
                                 "unknown", "ip", best.prefix, f"{best.vendor_id}:ip",
                                 best.rev, best.confidence)
            if chosen is None:
                chosen = ("ip", dest_ip)
    if vendor is None and ja4:
        j = sigs.match_ja4(ja4)
        if j:
            vendor = VendorMatch(j[0].vendor_id, j[0].vendor_name, j[0].jurisdiction,
                                 j[0].purpose, "ja4", j[0].fingerprint, j[0].signature_id,
                                 j[0].rev, j[0].confidence)
            if chosen is None:
                chosen = ("ja4", ja4)
    server_name = chosen[1] if chosen and chosen[0] not in ("ip", "ja4") else None
    indicator = Indicator(*chosen) if chosen else None
    others = tuple(dict.fromkeys(n for _, n in candidates if n != server_name)) \
        if candidates else ()
    return Attribution(server_name, indicator, vendor, others)
