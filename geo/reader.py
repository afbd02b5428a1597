"""Reloadable readers for MaxMind-format (mmdb) databases and the record shapes they hold.

A `MmdbDatabase` opens one file with maxminddb (MODE_AUTO: the C extension over mmap when
available), checks that its records have a shape usable for its role, and answers
lookups without raising: an address the database does not cover, or one it cannot hold
(IPv6 in an IPv4-only file), is `None`, which callers report as "unknown".

Two record shapes are read, so MaxMind GeoLite2/GeoIP2 files can replace the bundled ones:

- GeoLite2/GeoIP2 (`geoip2`): `country.iso_code`, `registered_country.iso_code`;
  GeoLite2-ASN (`asn`): `autonomous_system_number`, `autonomous_system_organization`.
- flat (`flat`), as published by ip-location-db: `{"country_code": "RU"}`, used both for
  geolocation and for country of registration.

Reload follows the intel-file discipline: replace a file by renaming a complete new one
over it. `reload_if_changed()` compares the file's identity (device, inode, size, mtime),
opens and checks the new file fully, and only then swaps one reference; a new file that
does not open keeps the old reader serving and records the error.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

import maxminddb
import msgspec
from maxminddb.types import Record

from geo.errors import GeoError

__all__ = [
    "DatabaseInfo",
    "IPAddress",
    "MmdbDatabase",
    "Role",
    "Shape",
    "asn_of",
    "country_of",
    "parse_ip",
    "record_shape",
    "registered_country_of",
]

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: What a database is used for; the names appear in DatabaseInfo and metric labels.
Role = Literal["country", "registration", "asn"]
#: Record layout: GeoLite2/GeoIP2 country or city, flat `country_code`, or GeoLite2-ASN.
Shape = Literal["geoip2", "flat", "asn", "unknown"]

_USABLE_SHAPES: Final[Mapping[Role, frozenset[Shape]]] = {
    "country": frozenset({"geoip2", "flat"}),
    "registration": frozenset({"geoip2", "flat"}),
    "asn": frozenset({"asn"}),
}
#: Records examined to tell a file's shape; the first record of a real database already
#: has one, but some GeoIP2-City records carry only a continent.
MAX_SHAPE_PROBE: Final = 256
#: Longest input accepted as an address; the longest IPv6 text form with a zone is ~60.
MAX_IP_TEXT: Final = 100
#: Country codes that data sets use for "no country": ZZ (DB-IP, CLDR) and XX.
_NO_COUNTRY: Final = frozenset({"ZZ", "XX"})
_COUNTRY_RE: Final = re.compile(r"[A-Z]{2}")


class DatabaseInfo(msgspec.Struct, frozen=True):
    """Provenance of one data source behind the geo facts."""

    #: country | registration | asn | registry
    name: str
    path: Path
    #: The file's own `database_type` (e.g. "GeoLite2-Country", "avmon-ASN").
    database_type: str
    #: When the data was built (mmdb metadata build_epoch), UTC.
    build_epoch: datetime
    #: geoip2 | flat | asn for databases; "toml" for the jurisdiction registry.
    record_shape: str
    #: Search-tree nodes (mmdb) or entries (registry).
    node_count: int
    #: 4 or 6 for databases, None for the registry.
    ip_version: int | None = None
    #: Why the last reload attempt failed (the old data is still served), or None.
    reload_error: str | None = None

    @property
    def build_timestamp(self) -> float:
        """`build_epoch` as Unix seconds, e.g. for avmon_geo_database_build_timestamp_seconds."""
        return self.build_epoch.timestamp()


def parse_ip(text: object) -> IPAddress | None:
    """Return the address `text` names, or None if it names none.

    Accepts dotted IPv4 and any IPv6 text form, with surrounding spaces, `[...]` brackets
    or a `%zone` suffix; an IPv4-mapped IPv6 address (::ffff:a.b.c.d) becomes IPv4.
    """
    if isinstance(text, ipaddress.IPv4Address):
        return text
    if isinstance(text, ipaddress.IPv6Address):
        addr6 = text
    else:
        if not isinstance(text, str) or len(text) > MAX_IP_TEXT:
            return None
        candidate = text.strip()
        if candidate.startswith("[") and candidate.endswith("]"):
            candidate = candidate[1:-1]
        candidate = candidate.split("%", 1)[0]
        try:
            addr = ipaddress.ip_address(candidate)
        except ValueError:
            return None
        if isinstance(addr, ipaddress.IPv4Address):
            return addr
        addr6 = addr
    if addr6.ipv4_mapped is not None:
        return addr6.ipv4_mapped
    if addr6.scope_id is not None:
        return ipaddress.IPv6Address(int(addr6))
    return addr6


def _code(value: Record | None) -> str | None:
    if not isinstance(value, str):
        return None
    code = value.strip().upper()
    if not _COUNTRY_RE.fullmatch(code) or code in _NO_COUNTRY:
        return None
    return code


def _nested_code(record: Mapping[str, Record], key: str) -> str | None:
    value = record.get(key)
    if isinstance(value, dict):
        return _code(value.get("iso_code"))
    return None


def country_of(record: Record | None) -> str | None:
    """Geolocated country (ISO 3166-1 alpha-2) of a country/city record, else None."""
    if not isinstance(record, dict):
        return None
    if "country" in record:
        return _nested_code(record, "country")
    return _code(record.get("country_code"))


def registered_country_of(record: Record | None) -> str | None:
    """Country of registration of a record, else None.

    GeoLite2/GeoIP2 records carry it as `registered_country.iso_code`; flat registration
    databases (ip-location-db geo-whois-asn-country) as `country_code`.
    """
    if not isinstance(record, dict):
        return None
    if "registered_country" in record:
        return _nested_code(record, "registered_country")
    if "registered_country_code" in record:
        return _code(record.get("registered_country_code"))
    if "country" in record:
        return None  # a GeoIP2 record without registered_country: do not guess
    return _code(record.get("country_code"))


def asn_of(record: Record | None) -> tuple[int | None, str | None]:
    """(AS number, AS organisation) of a GeoLite2-ASN-shaped record; None where absent."""
    if not isinstance(record, dict):
        return None, None
    number = record.get("autonomous_system_number")
    org = record.get("autonomous_system_organization")
    asn = number if isinstance(number, int) and not isinstance(number, bool) else None
    if asn is not None and asn <= 0:
        asn = None
    return asn, org.strip() if isinstance(org, str) and org.strip() else None


def record_shape(record: Record | None) -> Shape:
    """Tell which of the supported layouts a record has."""
    if not isinstance(record, dict):
        return "unknown"
    if "autonomous_system_number" in record:
        return "asn"
    if isinstance(record.get("country"), dict) or isinstance(
        record.get("registered_country"), dict
    ):
        return "geoip2"
    if "country_code" in record:
        return "flat"
    return "unknown"


class _Opened(msgspec.Struct, frozen=True):
    """One open file: replaced as a whole on reload."""

    reader: maxminddb.Reader
    info: DatabaseInfo
    #: (st_dev, st_ino, st_size, st_mtime_ns) when opened.
    identity: tuple[int, int, int, int]


def _identity(path: Path) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _open(role: Role, path: Path) -> _Opened:
    """Open and check one database file; raise GeoError naming the file and problem."""
    try:
        identity = _identity(path)
        reader = maxminddb.open_database(path, maxminddb.MODE_AUTO)
    except FileNotFoundError as exc:
        raise GeoError("no such file", path=path) from exc
    except OSError as exc:
        raise GeoError(f"cannot read MaxMind DB: {exc.strerror or exc}", path=path) from exc
    except (maxminddb.InvalidDatabaseError, ValueError, TypeError) as exc:
        raise GeoError(f"not a valid MaxMind DB: {exc}", path=path) from exc
    try:
        meta = reader.metadata()
        shape = _probe_shape(reader)
        if shape not in _USABLE_SHAPES[role]:
            raise GeoError(
                f"records of shape '{shape}' cannot serve as a {role} database "
                f"(database_type {meta.database_type!r})",
                path=path,
            )
        info = DatabaseInfo(
            name=role,
            path=path,
            database_type=str(meta.database_type),
            build_epoch=datetime.fromtimestamp(int(meta.build_epoch), UTC),
            record_shape=shape,
            node_count=int(meta.node_count),
            ip_version=int(meta.ip_version),
        )
    except GeoError:
        reader.close()
        raise
    except (maxminddb.InvalidDatabaseError, ValueError, TypeError, OverflowError) as exc:
        reader.close()
        raise GeoError(f"not a valid MaxMind DB: {exc}", path=path) from exc
    return _Opened(reader=reader, info=info, identity=identity)


def _probe_shape(reader: maxminddb.Reader) -> Shape:
    seen = 0
    for _network, record in reader:
        shape = record_shape(record)
        if shape != "unknown":
            return shape
        seen += 1
        if seen >= MAX_SHAPE_PROBE:
            break
    return "unknown"


class MmdbDatabase:
    """One MaxMind DB file in one role, reloadable in place."""

    __slots__ = ("role", "path", "reads", "_current", "_reload_error", "_failed_identity")

    def __init__(self, role: Role, path: Path) -> None:
        """Open `path`; raise GeoError if it is missing, unreadable or of the wrong shape."""
        self.role: Role = role
        self.path = Path(path)
        #: Lookups that reached the file (cache misses), for tests and metrics.
        self.reads = 0
        self._current = _open(role, self.path)
        self._reload_error: str | None = None
        self._failed_identity: tuple[int, int, int, int] | None = None

    def get(self, addr: IPAddress) -> Record | None:
        """The record for `addr`, or None if the database has none. Never raises."""
        self.reads += 1
        reader = self._current.reader
        try:
            return reader.get(addr)
        except (ValueError, TypeError, maxminddb.InvalidDatabaseError):
            # ValueError: IPv6 address in an IPv4-only database, or a closed reader.
            return None

    def info(self) -> DatabaseInfo:
        """Metadata of the file being served, with the last reload error if any."""
        info = self._current.info
        if self._reload_error is None:
            return info
        return DatabaseInfo(
            name=info.name,
            path=info.path,
            database_type=info.database_type,
            build_epoch=info.build_epoch,
            record_shape=info.record_shape,
            node_count=info.node_count,
            ip_version=info.ip_version,
            reload_error=self._reload_error,
        )

    @property
    def reload_error(self) -> str | None:
        """Why the last reload failed (the previous file is still served), or None."""
        return self._reload_error

    def changed(self) -> bool:
        """Whether the file on disk is not the one being served (missing counts)."""
        try:
            return _identity(self.path) != self._current.identity
        except OSError:
            return True

    def reload_if_changed(self) -> bool:
        """Swap in the file on disk if it changed; True if a new file is now served.

        A file that vanished or does not open keeps the current reader; the problem is
        logged once and kept in `reload_error` (and DatabaseInfo) until a reload succeeds.
        The same bad file is not opened again until it changes.
        """
        try:
            identity: tuple[int, int, int, int] | None = _identity(self.path)
        except OSError:
            identity = None
        if identity == self._current.identity:
            return False
        if identity is not None and identity == self._failed_identity:
            return False
        try:
            if identity is None:
                raise GeoError("no such file (or unreadable)", path=self.path)
            fresh = _open(self.role, self.path)
        except GeoError as exc:
            message = str(exc)
            if message != self._reload_error:
                log.warning("keeping previous %s database: %s", self.role, message)
            self._reload_error = message
            self._failed_identity = identity
            return False
        # The old reader is not closed here: a lookup in another thread may still hold
        # it. It is released (and its mmap unmapped) when the last reference goes.
        self._current = fresh
        self._reload_error = None
        self._failed_identity = None
        log.info(
            "reloaded %s database %s (built %s)",
            self.role,
            self.path,
            fresh.info.build_epoch.isoformat(),
        )
        return True

    def close(self) -> None:
        """Close the file being served; later lookups answer None."""
        self._current.reader.close()
