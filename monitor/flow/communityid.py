"""Community ID v1 flow hashing (corelight/community-id-spec).

``1:`` + base64(SHA-1(seed, addresses, protocol, ports)) over the flow tuple put in a
canonical order, so both directions of a flow (and every tool that implements the spec:
Zeek, Suricata, Arkime) give the same string. ICMP and ICMPv6 use the type in place of
the source port and the code, or the type of the matching reply, in place of the
destination port.
"""

from __future__ import annotations

import binascii
import hashlib
import struct
from typing import Final

__all__ = ["community_id"]

PROTO_ICMP: Final = 1
PROTO_TCP: Final = 6
PROTO_UDP: Final = 17
PROTO_ICMPV6: Final = 58
PROTO_SCTP: Final = 132

#: ICMP message type -> the type of its counterpart (request <-> reply).
_ICMP4_PAIRS: Final = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
_ICMP6_PAIRS: Final = {128: 129, 129: 128, 133: 134, 134: 133, 135: 136, 136: 135,
                       130: 131, 131: 130, 144: 145, 145: 144}
_PORTS: Final = frozenset((PROTO_TCP, PROTO_UDP, PROTO_SCTP, PROTO_ICMP, PROTO_ICMPV6))


def community_id(src: bytes, dst: bytes, proto: int, sport: int = 0, dport: int = 0,
                 seed: int = 0) -> str:
    """Community ID v1 of a flow given packed addresses (4 or 16 bytes each).

    For ICMP/ICMPv6 pass the type as ``sport`` and the code as ``dport``.
    """
    one_way = False
    if proto == PROTO_ICMP or proto == PROTO_ICMPV6:
        pairs = _ICMP4_PAIRS if proto == PROTO_ICMP else _ICMP6_PAIRS
        icmp_type = sport
        if icmp_type in pairs:
            dport = pairs[icmp_type]
        else:
            one_way = True
    if not one_way and (src, sport) > (dst, dport):
        src, dst, sport, dport = dst, src, dport, sport
    if proto in _PORTS:
        tail = _WITH_PORTS.pack(proto, 0, sport & 0xFFFF, dport & 0xFFFF)
    else:
        tail = _NO_PORTS.pack(proto, 0)
    digest = hashlib.sha1(_SEED.pack(seed) + src + dst + tail, usedforsecurity=False).digest()
    return "1:" + binascii.b2a_base64(digest, newline=False).decode()


_SEED: Final = struct.Struct("!H")
_WITH_PORTS: Final = struct.Struct("!BBHH")
_NO_PORTS: Final = struct.Struct("!BB")
