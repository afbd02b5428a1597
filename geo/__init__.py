"""Where an IP address is and who controls it.

The `geo` package owns avmon's geo data and its readers: MaxMind-format databases for
geolocation, country of registration and AS number (bundled in `geo/data`, replaceable by
MaxMind GeoLite2/GeoIP2 files), and the jurisdiction registry that says which
jurisdiction controls an AS. `GeoDatabases.lookup(ip)` reports each basis separately with
its provenance; a miss is "unknown", never an exception. It never imports `monitor`.
"""

from geo.databases import (
    BUNDLED_ASN_DB,
    BUNDLED_COUNTRY_DB,
    BUNDLED_REGISTRATION_DB,
    BUNDLED_REGISTRY,
    Basis,
    GeoDatabases,
    GeoFacts,
    JurisdictionBasis,
    format_geo_lines,
)
from geo.errors import GeoError
from geo.reader import DatabaseInfo, parse_ip
from geo.registry import JurisdictionRegistry, RegistryEntry, load_registry

__all__ = [
    "BUNDLED_ASN_DB",
    "BUNDLED_COUNTRY_DB",
    "BUNDLED_REGISTRATION_DB",
    "BUNDLED_REGISTRY",
    "Basis",
    "DatabaseInfo",
    "GeoDatabases",
    "GeoError",
    "GeoFacts",
    "JurisdictionBasis",
    "JurisdictionRegistry",
    "RegistryEntry",
    "format_geo_lines",
    "load_registry",
    "parse_ip",
]
