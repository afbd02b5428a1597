"""What AV cloud traffic looks like: vendor data files plus their loader and matcher.

``signatures/vendors/*.toml`` holds one reviewed, sourced file per vendor (names, purposes,
jurisdiction of control, ASNs, prefixes). :func:`load_signature_set` validates them into
an immutable :class:`SignatureSet` whose ``match_name`` / ``match_ip`` / ``match_asn`` /
``match_ja4`` attribute an indicator to a vendor. This package never imports ``monitor``;
its only exception is :class:`SignatureError`.
"""

from signatures.errors import SignatureError
from signatures.loader import bundled_directory, load_signature_set, load_vendor_file
from signatures.matcher import (
    CONFIDENCES,
    PURPOSES,
    AsnMatch,
    AsnRecord,
    IpMatch,
    Ja4Match,
    Ja4Signature,
    NameMatch,
    NameSignature,
    PrefixRecord,
    SignatureSet,
    Vendor,
)
from signatures.patterns import MAX_EXPANSION
from signatures.report import format_match_lines, format_vendor_table

__all__ = [
    "CONFIDENCES",
    "MAX_EXPANSION",
    "PURPOSES",
    "AsnMatch",
    "AsnRecord",
    "IpMatch",
    "Ja4Match",
    "Ja4Signature",
    "NameMatch",
    "NameSignature",
    "PrefixRecord",
    "SignatureError",
    "SignatureSet",
    "Vendor",
    "bundled_directory",
    "format_match_lines",
    "format_vendor_table",
    "load_signature_set",
    "load_vendor_file",
]
