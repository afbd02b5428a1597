"""Build avmon's ASN database (MaxMind DB format) from IP-range CSV files.

Input is the ip-location-db ASN table: CSV rows `start,end,asn,org` with inclusive address
ranges, no header, optionally gzip-compressed (`.gz`). Output is one IPv6 MaxMind DB whose
records have the GeoLite2-ASN shape (`autonomous_system_number`, uint32, and
`autonomous_system_organization`), with IPv4 stored in the IPv4-compatible `::/96` subtree
and aliased at `::ffff:0:0/96` (IPv4-mapped), as MaxMind's own databases do, so one file
answers IPv4 and IPv6 lookups.

Ranges are sorted, overlaps resolved (the range that starts later, or the nested one,
keeps the shared addresses), adjacent ranges with the same AS merged, and only then cut
into CIDR blocks with `ipaddress.summarize_address_range`; that keeps the search tree and
the file small. The file is written next to the target, checked by opening it with
maxminddb, and renamed over the target, so a reader never sees a half-written database.

    python -m geo.build_asn_db --ipv4 asn-ipv4.csv.gz --ipv6 asn-ipv6.csv.gz \
        --out geo/data/asn.mmdb
"""

from __future__ import annotations

import argparse
import csv
import gzip
import heapq
import io
import ipaddress
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, TextIO

import maxminddb
from mmdb_writer import MmdbU32, MMDBWriter, SearchTreeNode, TreeWriter
from netaddr import IPNetwork, IPSet

from geo.errors import GeoError

__all__ = [
    "DATABASE_TYPE",
    "AsnRange",
    "BuildSummary",
    "build_asn_db",
    "main",
    "normalise_ranges",
    "read_asn_csv",
]

#: `database_type` in the metadata of the databases this module writes.
DATABASE_TYPE: Final = "avmon-ASN"
DEFAULT_DESCRIPTION: Final = (
    "avmon ASN database: IP range to autonomous system number and organisation. "
    "Data: ip-location-db ASN table (RouteViews, DB-IP, NRO/RIR data; CC BY 4.0)."
)
#: Largest AS number (RFC 6793 four-octet AS numbers).
MAX_ASN: Final = 2**32 - 1
#: Longest organisation name accepted; real names are well under 200 characters.
MAX_ORG_LEN: Final = 1024
#: The IPv4-mapped prefix ::ffff:0:0/96 as tree bits: 80 zero bits, then 16 one bits.
_IPV4_MAPPED_BITS: Final = (0,) * 80 + (1,) * 16
#: IPv6 blocks that hold IPv4 in the tree (::/96 and ::ffff:0:0/96), as (first, last).
_IPV4_SUBTREES: Final = ((0, 2**32 - 1), (0xFFFF << 32, (0xFFFF << 32) + 2**32 - 1))


@dataclass(frozen=True, slots=True)
class AsnRange:
    """One inclusive address range announced by one autonomous system."""

    #: First and last address of the range, as integers.
    first: int
    last: int
    #: IP version of both ends: 4 or 6.
    version: int
    asn: int
    org: str


@dataclass(frozen=True, slots=True)
class BuildSummary:
    """What `build_asn_db` read and wrote."""

    out: Path
    rows: int
    #: Ranges that overlapped an earlier one and were clipped.
    overlaps: int
    #: Ranges left after clipping overlaps and merging adjacent ranges of one AS.
    ranges: int
    #: CIDR blocks inserted into the search tree.
    networks: int
    node_count: int
    size_bytes: int
    build_epoch: int
    seconds: float


def _open_text(path: Path) -> TextIO:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def read_asn_csv(path: Path) -> Iterator[AsnRange]:
    """Yield the ranges of one `start,end,asn,org` CSV file (plain or `.gz`).

    Raises GeoError naming the file and line for an unreadable file or a bad row.
    """
    try:
        handle = _open_text(path)
    except OSError as exc:
        raise GeoError(f"cannot open ASN CSV: {exc.strerror or exc}", path=path) from exc
    with handle:
        reader = csv.reader(handle)
        try:
            for row in reader:
                if not row:
                    continue
                yield _parse_row(row, path, reader.line_num)
        except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
            raise GeoError(f"cannot read ASN CSV: {exc}", path=path, line=reader.line_num) from exc


def _parse_row(row: list[str], path: Path, line: int) -> AsnRange:
    if len(row) != 4:
        raise GeoError(f"expected 4 fields start,end,asn,org, got {len(row)}", path=path, line=line)
    start_text, end_text, asn_text, org = row
    try:
        start = ipaddress.ip_address(start_text.strip())
    except ValueError:
        raise GeoError(
            f"not an IP address: {start_text!r}", path=path, line=line, key="start"
        ) from None
    try:
        end = ipaddress.ip_address(end_text.strip())
    except ValueError:
        raise GeoError(
            f"not an IP address: {end_text!r}", path=path, line=line, key="end"
        ) from None
    if start.version != end.version:
        raise GeoError("start and end are different IP versions", path=path, line=line)
    if int(end) < int(start):
        raise GeoError(f"end {end} is before start {start}", path=path, line=line, key="end")
    if start.version == 6 and any(
        int(start) <= last and int(end) >= first for first, last in _IPV4_SUBTREES
    ):
        raise GeoError(
            "IPv6 range overlaps ::/96 or ::ffff:0:0/96, which hold IPv4 in the database",
            path=path,
            line=line,
        )
    asn_text = asn_text.strip().removeprefix("AS")
    if not asn_text.isdigit() or not 0 < int(asn_text) <= MAX_ASN:
        raise GeoError(f"not an AS number: {row[2]!r}", path=path, line=line, key="asn")
    if len(org) > MAX_ORG_LEN:
        raise GeoError(f"organisation longer than {MAX_ORG_LEN}", path=path, line=line, key="org")
    return AsnRange(int(start), int(end), start.version, int(asn_text), org.strip())


def normalise_ranges(ranges: Iterable[AsnRange]) -> tuple[list[AsnRange], int]:
    """Sort ranges, resolve overlaps and merge adjacent ranges of the same AS.

    Where two ranges overlap, the one that starts later (or, for equal starts, the shorter
    one) keeps the shared addresses; what is left of the other range on either side is
    kept. Returns the non-overlapping ranges in address order (IPv4 first) and the number
    of overlaps resolved.
    """
    heap: list[tuple[int, int, int, int, AsnRange]] = []
    for seq, item in enumerate(ranges):
        heap.append((item.version, item.first, -item.last, seq, item))
    heapq.heapify(heap)
    seq = len(heap)
    out: list[AsnRange] = []
    overlaps = 0
    while heap:
        *_, item = heapq.heappop(heap)
        if out and out[-1].version == item.version and out[-1].last >= item.first:
            overlaps += 1
            prev = out.pop()
            if prev.first < item.first:
                out.append(replace(prev, last=item.first - 1))
            if prev.last > item.last:
                tail = replace(prev, first=item.last + 1)
                heapq.heappush(heap, (tail.version, tail.first, -tail.last, seq, tail))
                seq += 1
        if (
            out
            and out[-1].version == item.version
            and out[-1].last + 1 == item.first
            and (out[-1].asn, out[-1].org) == (item.asn, item.org)
        ):
            out[-1] = replace(out[-1], last=item.last)
        else:
            out.append(item)
    return out, overlaps


def _networks(item: AsnRange) -> Iterator[IPNetwork]:
    make = ipaddress.IPv4Address if item.version == 4 else ipaddress.IPv6Address
    for net in ipaddress.summarize_address_range(make(item.first), make(item.last)):
        yield IPNetwork(str(net))


def _alias_ipv4_mapped(tree: SearchTreeNode) -> None:
    """Point ::ffff:0:0/96 at the IPv4 subtree stored under ::/96."""
    node: SearchTreeNode = tree
    for _ in range(96):
        child = node[0]
        if not isinstance(child, SearchTreeNode):
            return
        node = child
    ipv4_root = node
    node = tree
    for bit in _IPV4_MAPPED_BITS[:-1]:
        child = node[bit]
        if child is None:
            child = SearchTreeNode()
            node[bit] = child
        if not isinstance(child, SearchTreeNode):
            return  # the mapped prefix already carries data of its own: leave it
        node = child
    if node[_IPV4_MAPPED_BITS[-1]] is None:
        node[_IPV4_MAPPED_BITS[-1]] = ipv4_root


def build_asn_db(
    csv_paths: Sequence[Path],
    out: Path,
    *,
    build_epoch: int | None = None,
    description: str = DEFAULT_DESCRIPTION,
    database_type: str = DATABASE_TYPE,
) -> BuildSummary:
    """Read the CSV files and write `out` atomically; return what was done.

    `build_epoch` defaults to $SOURCE_DATE_EPOCH if set (reproducible builds), else now.
    Raises GeoError for a bad input file or if the written database does not open.
    """
    started = time.monotonic()
    if build_epoch is None:
        env_epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
        build_epoch = int(env_epoch) if env_epoch.isdigit() else int(time.time())
    rows: list[AsnRange] = []
    for path in csv_paths:
        rows.extend(read_asn_csv(path))
    ranges, overlaps = normalise_ranges(rows)

    groups: dict[tuple[int, str], list[IPNetwork]] = {}
    for item in ranges:
        groups.setdefault((item.asn, item.org), []).extend(_networks(item))
    writer = MMDBWriter(
        ip_version=6,
        database_type=database_type,
        languages=["en"],
        description={"en": description},
        ipv4_compatible=True,
    )
    networks = 0
    for (asn, org), nets in groups.items():
        networks += len(nets)
        record = {
            "autonomous_system_number": MmdbU32(asn),
            "autonomous_system_organization": org,
        }
        writer.insert_network(IPSet(nets), record)
    _alias_ipv4_mapped(writer.tree)

    meta = {
        "ip_version": 6,
        "database_type": database_type,
        "languages": ["en"],
        "binary_format_major_version": 2,
        "binary_format_minor_version": 0,
        "description": {"en": description},
        "build_epoch": build_epoch,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        TreeWriter(writer.tree, meta).write(str(tmp))
        node_count = _verify(tmp, ranges)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return BuildSummary(
        out=out,
        rows=len(rows),
        overlaps=overlaps,
        ranges=len(ranges),
        networks=networks,
        node_count=node_count,
        size_bytes=out.stat().st_size,
        build_epoch=build_epoch,
        seconds=time.monotonic() - started,
    )


def _verify(path: Path, ranges: Sequence[AsnRange]) -> int:
    """Open the new file and look up both ends of a sample of ranges."""
    try:
        with maxminddb.open_database(str(path), maxminddb.MODE_MMAP) as reader:
            step = max(1, len(ranges) // 1000)
            for item in ranges[::step]:
                for addr in (item.first, item.last):
                    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = (
                        ipaddress.IPv6Address(addr)
                        if item.version == 6
                        else ipaddress.IPv4Address(addr)
                    )
                    record = reader.get(ip)
                    if not isinstance(record, dict) or (
                        record.get("autonomous_system_number") != item.asn
                    ):
                        raise GeoError(f"built database answers {record!r} for {ip}", path=path)
            return int(reader.metadata().node_count)
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        raise GeoError(f"built database does not open: {exc}", path=path) from exc


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m geo.build_asn_db",
        description="Build a GeoLite2-ASN-shaped MaxMind DB from start,end,asn,org CSV files.",
    )
    parser.add_argument("--ipv4", type=Path, action="append", default=[], help="IPv4 CSV (.gz)")
    parser.add_argument("--ipv6", type=Path, action="append", default=[], help="IPv6 CSV (.gz)")
    parser.add_argument("--out", type=Path, required=True, help="database to write")
    parser.add_argument(
        "--build-epoch",
        type=int,
        default=None,
        help="metadata build_epoch (default: $SOURCE_DATE_EPOCH, else now)",
    )
    parser.add_argument("--description", default=DEFAULT_DESCRIPTION)
    args = parser.parse_args(argv)
    if not args.ipv4 and not args.ipv6:
        parser.error("give at least one of --ipv4 and --ipv6")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for a bad input file)."""
    args = _parse_args(argv)
    try:
        summary = build_asn_db(
            [*args.ipv4, *args.ipv6],
            args.out,
            build_epoch=args.build_epoch,
            description=args.description,
        )
    except GeoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{summary.out}: {summary.rows} rows, {summary.overlaps} overlaps resolved, "
        f"{summary.ranges} ranges, {summary.networks} networks, {summary.node_count} nodes, "
        f"{summary.size_bytes} bytes, build_epoch {summary.build_epoch}, "
        f"{summary.seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
