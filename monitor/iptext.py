"""Address text from packed bytes, as ``str(ipaddress.ip_address(packed))`` gives it, and
back.

Every record carries its flow's two addresses, and DNS answers carry more. The C library's
``inet_ntop`` writes the same text in a fraction of the time (RFC 5952 form: lower case,
the longest run of two or more zero groups compressed, the first of equal runs), except
for addresses whose first 80 bits are zero, which it may write with a dotted IPv4 tail
(``::ffff:1.2.3.4``, as Python does only from 3.13): those, and every IPv6 address on a
C library whose text differs from Python's, go through :mod:`ipaddress`.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from typing import Final

__all__ = ["ip_exploded", "ip_packed", "ip_text"]

_ZERO80: Final = bytes(10)


def _ntop6_agrees() -> bool:
    """Whether this C library writes IPv6 text as :mod:`ipaddress` does, on the cases
    where implementations have differed."""
    samples = ("2001:db8::1", "2001:db8:0:1:1:1:1:1", "2001:0:0:1::1", "1::", "::1:2:3:4:5:6",
               "2001:db8::1:0:0:1", "fe80::", "ff02::1:ff00:1", "1:2:3:4:5:6:7:8",
               "1:0:2:0:3:0:4:0", "abcd:ef01::", "0:1:0:0:1::")
    for text in samples:
        packed = ipaddress.IPv6Address(text).packed
        if socket.inet_ntop(socket.AF_INET6, packed) != str(ipaddress.IPv6Address(packed)):
            return False
    return True


_NTOP6: Final = _ntop6_agrees()


@functools.lru_cache(maxsize=65536)
def ip_text(packed: bytes) -> str:
    """The text of a 4- or 16-byte address (addresses recur: cached)."""
    if len(packed) == 4:
        return socket.inet_ntop(socket.AF_INET, packed)
    if _NTOP6 and len(packed) == 16 and packed[:10] != _ZERO80:
        return socket.inet_ntop(socket.AF_INET6, packed)
    return str(ipaddress.ip_address(packed))


@functools.lru_cache(maxsize=65536)
def ip_packed(text: str) -> bytes:
    """The packed form of an address in text, as ``ipaddress.ip_address(text).packed``
    gives it; ValueError if it is not an address. ``inet_pton`` reads the usual forms;
    what it refuses (a scope id, say) is left to :mod:`ipaddress`."""
    try:
        return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return ipaddress.ip_address(text).packed


@functools.lru_cache(maxsize=16384)
def ip_exploded(text: str) -> str:
    """An IPv6 address in full (eight groups of four hex digits), as
    ``ipaddress.IPv6Address(text).exploded`` gives it; ValueError if it is not one."""
    packed = ip_packed(text)
    if len(packed) != 16:
        raise ValueError(f"not an IPv6 address: {text!r}")
    return packed.hex(":", 2)
