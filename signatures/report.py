"""Plain-text output for ``avmon signatures match`` and ``avmon signatures list``.

Pure functions from a :class:`~signatures.matcher.SignatureSet` to lines of text (no
printing, no argument parsing), so the command line only has to print them. Lines are
``key=value`` pairs after the name, which keeps them readable and easy to grep or split.
"""

from __future__ import annotations

from collections.abc import Iterable

from signatures.matcher import PURPOSES, SignatureSet

__all__ = ["format_match_lines", "format_vendor_table"]


def _shown(name: str) -> str:
    """The name as typed, escaped if it holds characters a terminal would act on."""
    return name if name.isprintable() else ascii(name)


def format_match_lines(sigset: SignatureSet, names: Iterable[str]) -> list[str]:
    """One line per name: vendor, jurisdiction, purpose and pattern, or ``NAME: no match``."""
    lines: list[str] = []
    for name in names:
        match = sigset.match_name(name)
        if match is None:
            lines.append(f"{_shown(name)}: no match")
            continue
        purpose = match.purpose
        if match.other_purposes:
            purpose += "," + ",".join(match.other_purposes)
        lines.append(
            f"{_shown(name)}: vendor={match.vendor_id} jurisdiction={match.jurisdiction} "
            f"purpose={purpose} pattern={match.pattern} "
            f"signature={match.signature_id}@{match.rev} confidence={match.confidence}"
        )
    return lines


def format_vendor_table(sigset: SignatureSet) -> list[str]:
    """A fixed-width table, one row per vendor, then a summary line with the set version.

    Columns: vendor id, jurisdiction, ``[[names]]`` entries, distinct purposes (in the
    canonical order of PURPOSES) and the display name.
    """
    header = ("VENDOR", "JUR", "PATTERNS", "PURPOSES", "NAME")
    rows: list[tuple[str, str, str, str, str]] = []
    entries = 0
    for vendor in sigset.vendors:
        used = {sig.purpose for sig in vendor.names}
        used.update(p for sig in vendor.names for p in sig.other_purposes)
        purposes = ",".join(p for p in PURPOSES if p in used) or "-"
        entries += len(vendor.names)
        rows.append((vendor.id, vendor.jurisdiction, str(len(vendor.names)), purposes, vendor.name))
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(4)]

    def line(row: tuple[str, str, str, str, str]) -> str:
        cells = [
            row[0].ljust(widths[0]),
            row[1].ljust(widths[1]),
            row[2].rjust(widths[2]),
            row[3].ljust(widths[3]),
            row[4],
        ]
        return "  ".join(cells)

    codes = sigset.jurisdictions()
    summary = (
        f"{len(rows)} vendors, {entries} patterns ({sigset.pattern_count} after expansion), "
        f"{len(codes)} jurisdictions ({', '.join(codes)}), version {sigset.version}"
    )
    return [line(header), *(line(row) for row in rows), summary]
