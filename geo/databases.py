"""Geo facts for one address: where it is, where it is registered, and who controls it.

`GeoDatabases` bundles the three MaxMind-format databases (geolocation, country of
registration, ASN) and the jurisdiction registry, and answers `lookup(ip)` with a
`GeoFacts` record in which every basis is kept apart, each with its provenance, so an
analyst sees why a destination counts as, say, Russia-controlled:

    77.74.176.1  geolocation RU, registration RU, AS200107 -> registry: RU
    185.85.15.1  geolocation NL, registration CH, AS200107 -> registry: RU

Lookups never raise: an invalid or non-global address, or a database without an
answer, gives None ("unknown") for that basis. Results are cached per address (bounded
LRU); the cache is dropped whenever a file is reloaded. Files are opened once (mmap) and
reloaded in place by `reload_if_changed()`, or automatically at most once per
`auto_reload_seconds`.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

import msgspec

from geo.errors import GeoError
from geo.reader import (
    DatabaseInfo,
    IPAddress,
    MmdbDatabase,
    asn_of,
    country_of,
    parse_ip,
    registered_country_of,
)
from geo.registry import JurisdictionRegistry, RegistryEntry, load_registry

__all__ = [
    "BUNDLED_ASN_DB",
    "BUNDLED_COUNTRY_DB",
    "BUNDLED_REGISTRATION_DB",
    "BUNDLED_REGISTRY",
    "DATA_DIR",
    "Basis",
    "GeoDatabases",
    "GeoFacts",
    "JurisdictionBasis",
    "format_geo_lines",
]

log = logging.getLogger(__name__)

#: Data shipped with the package, so a fresh install works offline.
DATA_DIR: Final = Path(__file__).resolve().parent / "data"
BUNDLED_COUNTRY_DB: Final = DATA_DIR / "dbip-country.mmdb"
BUNDLED_REGISTRATION_DB: Final = DATA_DIR / "geo-whois-asn-country.mmdb"
BUNDLED_ASN_DB: Final = DATA_DIR / "asn.mmdb"
BUNDLED_REGISTRY: Final = DATA_DIR / "jurisdictions.toml"

#: Cached lookups. An egress monitor sees a few thousand distinct destinations an hour;
#: 64 Ki entries (a few MB) covers that with room for scans, and bounds memory if not.
MAX_CACHE_ENTRIES: Final = 65536

Basis = Literal["registration", "geolocation", "asn"]


class JurisdictionBasis(msgspec.Struct, frozen=True):
    """One reason to associate an address with a jurisdiction."""

    #: ISO 3166-1 alpha-2 code.
    code: str
    #: registration (whois), geolocation, or asn (the registry knows who controls the AS).
    basis: Basis
    #: Provenance: the database and its build date, or the registry entry's source.
    source: str
    #: The registry entry's note (asn basis only).
    note: str = ""


class GeoFacts(msgspec.Struct, frozen=True):
    """What the geo data says about one address; None means unknown."""

    #: Geolocated country (ISO 3166-1 alpha-2).
    country: str | None
    #: Country the address block is registered in.
    registered_country: str | None
    asn: int | None
    as_org: str | None
    #: One entry per basis that gives a code, in the order registration, geolocation, asn.
    jurisdictions: tuple[JurisdictionBasis, ...] = ()

    def codes(self) -> frozenset[str]:
        """Every jurisdiction code any basis gives."""
        return frozenset(item.code for item in self.jurisdictions)


UNKNOWN: Final = GeoFacts(country=None, registered_country=None, asn=None, as_org=None)


def _routable(addr: IPAddress) -> bool:
    """Whether an address can have a location at all.

    Private, loopback, link-local, shared (CGNAT), documentation, multicast and reserved
    addresses are not looked up: they have no jurisdiction, and the databases carry
    artefacts there (the bundled whois data answers AU for 192.168.1.1).
    """
    return addr.is_global and not (addr.is_multicast or addr.is_reserved)


def _provenance(info: DatabaseInfo) -> str:
    return f"{info.path.name} ({info.database_type}, built {info.build_epoch:%Y-%m-%d})"


def _registry_info(registry: JurisdictionRegistry, error: str | None) -> DatabaseInfo:
    return DatabaseInfo(
        name="registry",
        path=registry.path,
        database_type="avmon-jurisdictions",
        build_epoch=datetime(
            registry.updated.year, registry.updated.month, registry.updated.day, tzinfo=UTC
        ),
        record_shape="toml",
        node_count=len(registry),
        ip_version=None,
        reload_error=error,
    )


class _RegistryFile:
    """The registry file, reloaded the same way as the databases."""

    __slots__ = ("path", "registry", "reload_error", "_identity", "_failed_identity")

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._identity = self._stat()
        self.registry = load_registry(self.path)
        self.reload_error: str | None = None
        self._failed_identity: tuple[int, int, int, int] | None = None

    def _stat(self) -> tuple[int, int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns

    def reload_if_changed(self) -> bool:
        identity = self._stat()
        if identity == self._identity or (
            identity is not None and identity == self._failed_identity
        ):
            return False
        try:
            if identity is None:
                raise GeoError("no such file (or unreadable)", path=self.path)
            fresh = load_registry(self.path)
        except GeoError as exc:
            if str(exc) != self.reload_error:
                log.warning("keeping previous jurisdiction registry: %s", exc)
            self.reload_error = str(exc)
            self._failed_identity = identity
            return False
        self.registry = fresh
        self._identity = identity
        self.reload_error = None
        self._failed_identity = None
        return True


class GeoDatabases:
    """The geo databases and jurisdiction registry behind `lookup()`.

    Each argument is a path, or None for the bundled default. Raises GeoError (naming
    the file and the problem) if any file is missing, unreadable or invalid.
    """

    def __init__(
        self,
        country_db: Path | None = None,
        registration_db: Path | None = None,
        asn_db: Path | None = None,
        registry: Path | None = None,
        *,
        auto_reload_seconds: float | None = None,
        cache_size: int = MAX_CACHE_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._country = MmdbDatabase("country", Path(country_db or BUNDLED_COUNTRY_DB))
        self._registration = MmdbDatabase(
            "registration", Path(registration_db or BUNDLED_REGISTRATION_DB)
        )
        self._asn = MmdbDatabase("asn", Path(asn_db or BUNDLED_ASN_DB))
        self._registry = _RegistryFile(Path(registry or BUNDLED_REGISTRY))
        self._cache_size = max(0, cache_size)
        self._auto_reload = auto_reload_seconds
        self._clock = clock
        self._next_check = clock() + (auto_reload_seconds or 0.0)
        self._reload_lock = threading.Lock()
        self._cached = self._new_cache()

    # -- lookups ---------------------------------------------------------------------

    def lookup(self, ip: str) -> GeoFacts:
        """Everything the data says about `ip`; unknown fields are None. Never raises."""
        if self._auto_reload is not None and self._clock() >= self._next_check:
            self._periodic_check()
        if not isinstance(ip, str):
            return UNKNOWN
        return self._cached(ip)

    def _new_cache(self) -> functools._lru_cache_wrapper[GeoFacts]:
        sources = (_provenance(self._registration.info()), _provenance(self._country.info()))

        def uncached(ip: str) -> GeoFacts:
            return self._facts(parse_ip(ip), sources)

        return functools.lru_cache(maxsize=self._cache_size)(uncached)

    def cache_info(self) -> functools._CacheInfo:
        """Hits, misses and size of the lookup cache since the last reload."""
        return self._cached.cache_info()

    def _facts(self, addr: IPAddress | None, sources: tuple[str, str]) -> GeoFacts:
        if addr is None or not _routable(addr):
            return UNKNOWN
        country = country_of(self._country.get(addr))
        registered = registered_country_of(self._registration.get(addr))
        asn, org = asn_of(self._asn.get(addr))
        registration_source, country_source = sources
        bases: list[JurisdictionBasis] = []
        if registered is not None:
            bases.append(JurisdictionBasis(registered, "registration", registration_source))
        if country is not None:
            bases.append(JurisdictionBasis(country, "geolocation", country_source))
        entry = self._registry.registry.match(asn, org)
        if entry is not None:
            bases.append(JurisdictionBasis(entry.jurisdiction, "asn", entry.source, entry.note))
        return GeoFacts(
            country=country,
            registered_country=registered,
            asn=asn,
            as_org=org,
            jurisdictions=tuple(bases),
        )

    def registry_entry(self, asn: int | None, org: str | None) -> RegistryEntry | None:
        """The registry entry that gives an AS its "asn" jurisdiction basis, if any."""
        return self._registry.registry.match(asn, org)

    # -- provenance and reload ---------------------------------------------------------

    def databases(self) -> tuple[DatabaseInfo, ...]:
        """Metadata of country, registration, asn and registry, in that order."""
        return (
            self._country.info(),
            self._registration.info(),
            self._asn.info(),
            _registry_info(self._registry.registry, self._registry.reload_error),
        )

    def reload_if_changed(self) -> list[str]:
        """Reload every file that changed on disk; return the names reloaded.

        A changed file that does not open or validate keeps the previous data serving;
        the error is logged and reported in `databases()` (`reload_error`).
        """
        with self._reload_lock:
            reloaded: list[str] = [
                db.role
                for db in (self._country, self._registration, self._asn)
                if db.reload_if_changed()
            ]
            if self._registry.reload_if_changed():
                reloaded.append("registry")
            if reloaded:
                self._cached = self._new_cache()
            return reloaded

    def _periodic_check(self) -> None:
        self._next_check = self._clock() + (self._auto_reload or 0.0)
        self.reload_if_changed()

    def close(self) -> None:
        """Release the database files; lookups afterwards answer unknown."""
        for db in (self._country, self._registration, self._asn):
            db.close()
        self._cached = self._new_cache()

    def __enter__(self) -> GeoDatabases:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def reads(self) -> int:
        """Lookups that reached a database file (all three counted), for tests and metrics."""
        return self._country.reads + self._registration.reads + self._asn.reads


def _label(ip: str, what: str, value: str) -> str:
    return f"{ip}  {what:<12} {value}"


def format_geo_lines(geo: GeoDatabases, ips: Iterable[str]) -> list[str]:
    """Lines for `avmon geo IP...`: every basis per address, "unknown" where none.

    An invalid address gets one line saying so.
    """
    country_info, registration_info, asn_info, registry_info = geo.databases()
    country_src = _provenance(country_info)
    registration_src = _provenance(registration_info)
    asn_src = _provenance(asn_info)
    registry_name = registry_info.path.name
    lines: list[str] = []
    for raw in ips:
        shown = raw.strip() if isinstance(raw, str) else repr(raw)
        if parse_ip(raw) is None:
            lines.append(f"{shown!r}: invalid IP address (expected IPv4 or IPv6)")
            continue
        facts = geo.lookup(raw)
        lines.append(_label(shown, "geolocation", f"{facts.country or 'unknown'}  [{country_src}]"))
        lines.append(
            _label(
                shown,
                "registration",
                f"{facts.registered_country or 'unknown'}  [{registration_src}]",
            )
        )
        if facts.asn is None:
            asn_text = "unknown"
        else:
            org = f'"{facts.as_org}"' if facts.as_org else "(no organisation)"
            asn_text = f"AS{facts.asn} {org}"
        lines.append(_label(shown, "asn", f"{asn_text}  [{asn_src}]"))
        control = next((item for item in facts.jurisdictions if item.basis == "asn"), None)
        if control is None:
            lines.append(_label(shown, "control", f"unknown  [no {registry_name} entry]"))
            continue
        entry = geo.registry_entry(facts.asn, facts.as_org)
        via = f"{registry_name} {entry.key}" if entry is not None else registry_name
        lines.append(_label(shown, "control", f"{control.code}  [{via}; source: {control.source}]"))
        if control.note:
            lines.append(_label(shown, "note", control.note))
    return lines
