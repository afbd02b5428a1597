"""Policy: source address -> segment -> classification, and which rules a flow breaks.

Pure functions over data, so policies are table-testable: :class:`SegmentMap` finds the
longest-prefix segment of an address; :func:`evaluate` takes what attribution and geo
concluded about a flow and returns the rules it breaks, each with the bases on which the
destination is under a flagged jurisdiction's control. Allow-list exceptions that are in
force remove a verdict; expired ones no longer apply (``avmon check`` reports them).
"""

from __future__ import annotations

import datetime as dt
from typing import Final

import msgspec

from monitor.config import AlertException, PolicyConfig, Rule, Segment

__all__ = ["JurisdictionFact", "SegmentMap", "Verdict", "evaluate"]

#: Addresses whose segment :class:`SegmentMap` remembers.
MEMO_ENTRIES: Final = 65_536


class SegmentMap:
    """Longest-prefix match of addresses to configured segments.

    One dict per prefix length present in the configuration, probed from the longest:
    O(distinct prefix lengths) per lookup, whatever the number of CIDRs.
    """

    def __init__(self, segments: tuple[Segment, ...]) -> None:
        self.segments = segments
        self._by_len: dict[int, dict[tuple[int, int], Segment]] = {}
        for seg in segments:
            for net in seg.cidrs:
                # IPv4 lives in the IPv4-mapped part of one 128-bit space.
                base = int(net.network_address)
                plen = net.prefixlen
                if net.version == 4:
                    base |= 0xFFFF << 32
                    plen += 96
                self._by_len.setdefault(plen, {})[(plen, base)] = seg
        self._lengths = sorted(self._by_len, reverse=True)
        #: Answers by address: every flow's end asks for its client's segment.
        self._memo: dict[bytes, Segment | None] = {}

    def lookup(self, addr: bytes) -> Segment | None:
        try:
            return self._memo[addr]
        except KeyError:
            pass
        if len(self._memo) >= MEMO_ENTRIES:
            self._memo.clear()
        seg = self._memo[addr] = self._lookup(addr)
        return seg

    def _lookup(self, addr: bytes) -> Segment | None:
        value = int.from_bytes(addr, "big")
        if len(addr) == 4:
            value |= 0xFFFF << 32
        for plen in self._lengths:
            masked = value & (((1 << plen) - 1) << (128 - plen)) if plen else 0
            seg = self._by_len[plen].get((plen, masked))
            if seg is not None:
                return seg
        return None

    def overlaps(self) -> list[tuple[str, str, str, str]]:
        """(segment, cidr, inside segment, inside cidr) for each nested CIDR pair."""
        nets = [(s.name, n) for s in self.segments for n in s.cidrs]
        out = []
        for name_a, a in nets:
            for name_b, b in nets:
                if a is not b and a.version == b.version and a != b and a.subnet_of(b):  # type: ignore[arg-type]
                    out.append((name_a, str(a), name_b, str(b)))
        return out


class JurisdictionFact(msgspec.Struct, frozen=True):
    code: str
    #: vendor | registration | geolocation | asn
    basis: str
    source: str = ""


class Verdict(msgspec.Struct, frozen=True):
    rule: Rule
    #: Bases on which the destination is under one of the rule's jurisdictions.
    flagged: tuple[JurisdictionFact, ...]


def evaluate(policy: PolicyConfig, segment: Segment | None, vendor_id: str | None,
             server_name: str | None, facts: tuple[JurisdictionFact, ...],
             today: dt.date) -> tuple[tuple[Verdict, ...], tuple[AlertException, ...]]:
    """Rules the flow breaks, and the exceptions that allowed it anyway."""
    if segment is None:
        return (), ()
    verdicts: list[Verdict] = []
    allowed: list[AlertException] = []
    for rule in policy.rules:
        if segment.classification not in rule.classifications:
            continue
        if rule.require_vendor and vendor_id is None:
            continue
        flagged = tuple(f for f in facts
                        if f.basis in rule.bases and f.code in rule.jurisdictions)
        if not flagged:
            continue
        exc = _exception_for(policy.exceptions, rule, segment, vendor_id, server_name, today)
        if exc is not None:
            allowed.append(exc)
            continue
        verdicts.append(Verdict(rule, flagged))
    return tuple(verdicts), tuple(allowed)


def _exception_for(exceptions: tuple[AlertException, ...], rule: Rule, segment: Segment,
                   vendor_id: str | None, server_name: str | None,
                   today: dt.date) -> AlertException | None:
    for e in exceptions:
        if e.expired(today):
            continue
        if e.rule is not None and e.rule != rule.id:
            continue
        if e.segment is not None and e.segment != segment.name:
            continue
        if e.vendor is not None and e.vendor != vendor_id:
            continue
        if e.server_name is not None and e.server_name != server_name:
            continue
        return e
    return None
