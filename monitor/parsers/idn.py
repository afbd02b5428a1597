"""Internationalised host names sent as UTF-8: their A-label (``xn--``) form.

TLS server_name and the HTTP Host are ASCII by their specifications (RFC 6066 §3 asks
for A-labels), but a client can send the UTF-8 of a U-label name and servers may well
accept it. Rejecting such a name would let a client hide a vendor's IDN domain from the
signature match, so it is converted to the A-label form the signatures use.
"""

from __future__ import annotations

__all__ = ["a_label"]


def a_label(name: bytes) -> str | None:
    """``name`` (UTF-8, not all ASCII) in lower-case A-label form; None when it is not
    UTF-8 or has no IDNA 2003 encoding (an empty or over-long label). Never raises."""
    try:
        return name.decode("utf-8").encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
