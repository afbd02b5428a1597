"""Tests for the geo package: bundled data, MaxMind test databases, the ASN builder,
the jurisdiction registry, reload and caching, and the "lookup never raises" property."""

from __future__ import annotations

import csv
import gzip
import io
import ipaddress
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import maxminddb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mmdb_writer import MMDBWriter
from netaddr import IPSet  # type: ignore[import-untyped]

from geo import (
    BUNDLED_ASN_DB,
    BUNDLED_COUNTRY_DB,
    BUNDLED_REGISTRATION_DB,
    BUNDLED_REGISTRY,
    GeoDatabases,
    GeoError,
    GeoFacts,
    JurisdictionBasis,
    format_geo_lines,
    load_registry,
    parse_ip,
)
from geo.build_asn_db import AsnRange, build_asn_db, main, normalise_ranges, read_asn_csv
from geo.reader import asn_of, country_of, record_shape, registered_country_of

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
MAX_BUNDLED_BYTES = 20 * 1024 * 1024


def corpus_file(name: str) -> Path:
    """A MaxMind test database or its manifest, from tests/data/corpus or tests/data/geo."""
    for folder in (DATA / "corpus", DATA / "geo"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(name)


def manifest() -> dict[str, dict[str, Any]]:
    entries = json.loads(corpus_file("MMDB_MANIFEST.json").read_text(encoding="utf-8"))
    return {entry["file"]: entry for entry in entries}


def facts_of(name: str) -> list[tuple[str, Any]]:
    return [(fact["ip"], fact["expected"]) for fact in manifest()[name]["facts"]]


_BUNDLED: GeoDatabases | None = None


def bundled() -> GeoDatabases:
    global _BUNDLED
    if _BUNDLED is None:
        _BUNDLED = GeoDatabases()
    return _BUNDLED


def write_country_db(
    path: Path, networks: dict[str, str], *, ip_version: int = 6, db_type: str = "test-country"
) -> None:
    """Write a flat-shape country database to a temporary name, then rename it over `path`."""
    writer = MMDBWriter(
        ip_version=ip_version,
        database_type=db_type,
        ipv4_compatible=ip_version == 6,
        description="avmon test database",
    )
    for network, code in networks.items():
        writer.insert_network(IPSet([network]), {"country_code": code})
    tmp = path.with_name(path.name + ".tmp")
    writer.to_db_file(str(tmp))
    os.replace(tmp, path)


def replace_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --- bundled data ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "country", "registered"),
    [
        ("77.74.176.1", "RU", "RU"),
        ("185.85.15.1", "NL", "CH"),
        ("81.19.104.1", "DE", "GB"),
    ],
)
def test_bundled_facts_from_geo_readme(ip: str, country: str, registered: str) -> None:
    facts = bundled().lookup(ip)
    assert facts.country == country
    assert facts.registered_country == registered


def test_bundled_kaspersky_asn() -> None:
    facts = bundled().lookup("77.74.176.1")
    assert facts.asn == 200107
    assert facts.as_org == "Kaspersky Lab Switzerland GmbH"
    assert [(b.basis, b.code) for b in facts.jurisdictions] == [
        ("registration", "RU"),
        ("geolocation", "RU"),
        ("asn", "RU"),
    ]


def test_swiss_registered_kaspersky_prefix_is_russia_controlled() -> None:
    facts = bundled().lookup("185.85.15.1")
    by_basis = {b.basis: b for b in facts.jurisdictions}
    assert by_basis["registration"].code == "CH"
    assert by_basis["geolocation"].code == "NL"
    assert by_basis["asn"].code == "RU"
    assert "regulations.justia.com" in by_basis["asn"].source
    assert "subsidiary" in by_basis["asn"].note
    assert "geo-whois-asn-country.mmdb" in by_basis["registration"].source
    assert "dbip-country.mmdb" in by_basis["geolocation"].source
    assert facts.codes() == {"CH", "NL", "RU"}


def test_registry_org_pattern_covers_unlisted_kaspersky_as() -> None:
    facts = bundled().lookup("82.202.186.1")
    assert (facts.asn, facts.as_org) == (209030, "Kaspersky Lab AO")
    asn_basis = [b for b in facts.jurisdictions if b.basis == "asn"]
    assert asn_basis == [JurisdictionBasis("RU", "asn", asn_basis[0].source, asn_basis[0].note)]
    assert "theregister" in asn_basis[0].source


def test_foreign_subsidiary_of_chinese_vendor() -> None:
    facts = bundled().lookup("103.116.50.1")
    assert facts.as_org == "Tencent (Thailand) Company Limited"
    assert (facts.country, facts.registered_country) == ("TH", "TH")
    assert [b.code for b in facts.jurisdictions if b.basis == "asn"] == ["CN"]


def test_no_asn_basis_without_registry_entry() -> None:
    facts = bundled().lookup("81.19.104.1")
    assert facts.asn is not None
    assert [b.basis for b in facts.jurisdictions] == ["registration", "geolocation"]


def test_bundled_files_exist_and_are_small() -> None:
    for path in (BUNDLED_COUNTRY_DB, BUNDLED_REGISTRATION_DB, BUNDLED_ASN_DB, BUNDLED_REGISTRY):
        assert path.is_file(), path
        assert path.stat().st_size < MAX_BUNDLED_BYTES, path
    notice = (BUNDLED_ASN_DB.parent / "NOTICE").read_text(encoding="utf-8")
    for attribution in ("IP Geolocation by DB-IP", "CC BY 4.0", "RouteViews", "NRO"):
        assert attribution in notice


def test_bundled_database_metadata() -> None:
    infos = {info.name: info for info in bundled().databases()}
    assert list(infos) == ["country", "registration", "asn", "registry"]
    assert infos["asn"].database_type == "avmon-ASN"
    assert infos["asn"].record_shape == "asn"
    assert infos["country"].record_shape == "flat"
    assert infos["registration"].record_shape == "flat"
    assert infos["registry"].record_shape == "toml"
    for info in infos.values():
        assert info.build_epoch > datetime(2026, 1, 1, tzinfo=UTC)
        assert info.build_timestamp == info.build_epoch.timestamp()
        assert info.node_count > 0
        assert info.reload_error is None
    assert infos["asn"].path == BUNDLED_ASN_DB
    with maxminddb.open_database(BUNDLED_ASN_DB) as reader:
        meta = reader.metadata()
        assert meta.ip_version == 6
        assert "RouteViews" in meta.description["en"]


@pytest.mark.parametrize(
    ("ip", "asn", "registered"),
    [
        ("2a03:2480::1", 41983, "CH"),
        ("[2a03:2480::1]", 41983, "CH"),
        ("2a03:2480::1%eth0", 41983, "CH"),
        ("2001:4860:4860::8888", 15169, None),
    ],
)
def test_bundled_ipv6(ip: str, asn: int, registered: str | None) -> None:
    facts = bundled().lookup(ip)
    assert facts.asn == asn
    if registered is not None:
        assert facts.registered_country == registered


def test_ipv4_mapped_ipv6_is_looked_up_as_ipv4() -> None:
    assert bundled().lookup("::ffff:77.74.176.1") == bundled().lookup("77.74.176.1")
    with maxminddb.open_database(BUNDLED_ASN_DB) as reader:
        record = reader.get("::ffff:77.74.176.1")  # the database itself aliases the block
    assert asn_of(record) == (200107, "Kaspersky Lab Switzerland GmbH")


@pytest.mark.parametrize(
    "ip",
    [
        "10.0.0.1",
        "127.0.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "224.0.0.251",
        "240.0.0.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "0.0.0.0",
        "2001:db8::1",
        "ff02::1",
    ],
)
def test_non_global_addresses_are_unknown_without_a_lookup(ip: str) -> None:
    geo = bundled()
    reads = geo.reads
    assert geo.lookup(ip) == GeoFacts(None, None, None, None, ())
    assert geo.reads == reads


def test_misses_are_unknown() -> None:
    geo = GeoDatabases()
    reads = geo.reads
    assert geo.lookup("3ffe::1") == GeoFacts(None, None, None, None, ())  # global, unannounced
    assert geo.reads == reads + 3
    partial = geo.lookup("1.0.1.1")  # located and registered, but in no announced range
    assert (partial.country, partial.registered_country) == ("CN", "CN")
    assert (partial.asn, partial.as_org) == (None, None)
    assert [b.basis for b in partial.jurisdictions] == ["registration", "geolocation"]


@pytest.mark.parametrize("text", ["", "not-an-ip", "300.1.1.1", "1.2.3", "::g", " ", "1.2.3.4/24"])
def test_invalid_addresses_are_unknown(text: str) -> None:
    assert parse_ip(text) is None
    assert bundled().lookup(text) == GeoFacts(None, None, None, None, ())


# --- MaxMind GeoLite2 test databases (GeoLite2/GeoIP2 record shape) -----------------------


@pytest.fixture(scope="module")
def maxmind() -> Iterator[GeoDatabases]:
    with GeoDatabases(
        country_db=corpus_file("GeoLite2-Country-Test.mmdb"),
        registration_db=corpus_file("GeoLite2-Country-Test.mmdb"),
        asn_db=corpus_file("GeoLite2-ASN-Test.mmdb"),
    ) as geo:
        yield geo


@pytest.mark.parametrize(("ip", "expected"), facts_of("GeoLite2-Country-Test.mmdb"))
def test_geolite2_country(maxmind: GeoDatabases, ip: str, expected: Any) -> None:
    facts = maxmind.lookup(ip)
    if isinstance(expected, str):  # "NOT FOUND ..."
        assert (facts.country, facts.registered_country) == (None, None)
    else:
        assert facts.country == expected["country_iso"]
        assert facts.registered_country == expected["registered_country_iso"]


@pytest.mark.parametrize(("ip", "expected"), facts_of("GeoLite2-City-Test.mmdb"))
def test_geolite2_city(ip: str, expected: Any) -> None:
    city = corpus_file("GeoLite2-City-Test.mmdb")
    with GeoDatabases(country_db=city, registration_db=city) as geo:
        facts = geo.lookup(ip)
    if isinstance(expected, str):
        assert (facts.country, facts.registered_country) == (None, None)
    else:
        assert facts.country == expected["country_iso"]
        assert facts.registered_country == expected["registered_country_iso"]


@pytest.mark.parametrize(("ip", "expected"), facts_of("GeoLite2-ASN-Test.mmdb"))
def test_geolite2_asn(maxmind: GeoDatabases, ip: str, expected: Any) -> None:
    facts = maxmind.lookup(ip)
    if isinstance(expected, str):
        assert (facts.asn, facts.as_org) == (None, None)
    else:
        assert facts.asn == expected["autonomous_system_number"]
        assert facts.as_org == expected["autonomous_system_organization"]


def test_geolite2_metadata(maxmind: GeoDatabases) -> None:
    country, registration, asn, _ = maxmind.databases()
    assert country.database_type == "GeoLite2-Country"
    assert country.record_shape == registration.record_shape == "geoip2"
    assert asn.database_type == "GeoLite2-ASN"
    assert asn.record_shape == "asn"
    with maxminddb.open_database(corpus_file("GeoLite2-ASN-Test.mmdb")) as reader:
        meta = reader.metadata()
    assert asn.node_count == meta.node_count
    assert asn.build_epoch == datetime.fromtimestamp(meta.build_epoch, UTC)


def test_record_shapes() -> None:
    geoip2 = {"country": {"iso_code": "gb"}, "registered_country": {"iso_code": "FR"}}
    assert record_shape(geoip2) == "geoip2"
    assert (country_of(geoip2), registered_country_of(geoip2)) == ("GB", "FR")
    flat = {"country_code": "RU"}
    assert record_shape(flat) == "flat"
    assert (country_of(flat), registered_country_of(flat)) == ("RU", "RU")
    assert registered_country_of({"registered_country_code": "CH", "country_code": "NL"}) == "CH"
    asn = {"autonomous_system_number": 200107, "autonomous_system_organization": "K "}
    assert record_shape(asn) == "asn"
    assert asn_of(asn) == (200107, "K")
    # A GeoIP2 record without registered_country does not fall back to the location.
    assert registered_country_of({"country": {"iso_code": "GB"}}) is None
    bad_records: list[Any] = [
        None,
        5,
        "RU",
        [],
        {"country_code": "ZZ"},
        {"country_code": "RUS"},
        {"country": "RU"},
        {"country": {"iso_code": 7}},
    ]
    for bad in bad_records:
        assert country_of(bad) is None
    assert asn_of({"autonomous_system_number": True}) == (None, None)
    assert asn_of({"autonomous_system_number": "15169"}) == (None, None)


# --- opening errors -----------------------------------------------------------------------


def test_missing_database_is_geo_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mmdb"
    with pytest.raises(GeoError) as info:
        GeoDatabases(country_db=missing)
    assert str(info.value) == f"{missing}: no such file"


def test_corrupt_database_is_geo_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(b"\x00not a database\n" * 100)
    with pytest.raises(GeoError) as info:
        GeoDatabases(asn_db=bad)
    message = str(info.value)
    assert message.startswith(f"{bad}: not a valid MaxMind DB")
    assert "\n" not in message


def test_database_of_the_wrong_kind_is_geo_error() -> None:
    with pytest.raises(GeoError, match=r"GeoLite2-Country-Test\.mmdb: .*'geoip2'.*asn database"):
        GeoDatabases(asn_db=corpus_file("GeoLite2-Country-Test.mmdb"))
    with pytest.raises(GeoError, match=r"records of shape 'asn' cannot serve as a country"):
        GeoDatabases(country_db=corpus_file("GeoLite2-ASN-Test.mmdb"))


def test_ipv6_lookup_in_ipv4_only_database(tmp_path: Path) -> None:
    db = tmp_path / "v4.mmdb"
    write_country_db(db, {"5.5.5.0/24": "FR"}, ip_version=4)
    with GeoDatabases(country_db=db) as geo:
        assert geo.lookup("5.5.5.9").country == "FR"
        assert geo.lookup("2a00:1450::1").country is None
        assert geo.databases()[0].ip_version == 4


# --- ASN database builder -----------------------------------------------------------------

TINY_ROWS = [
    # Not CIDR-aligned, crossing /24 and /16 boundaries, one single address.
    ("5.0.0.3", "5.0.1.17", 64500, "Org A"),
    ("5.0.1.18", "5.0.1.18", 64501, 'Org "B", Ltd.'),
    ("5.0.1.19", "5.0.2.0", 64500, "Org A"),
    ("5.255.255.250", "6.0.0.6", 64502, "Crossing Networks"),
    ("255.255.255.254", "255.255.255.255", 64503, "Top Of Space"),
]
TINY_ROWS_V6 = [
    ("2a00:db8::5", "2a00:db8:0:1::3", 64510, "Six One"),
    ("2a00:db8:0:1::4", "2a00:db8:0:1::4", 64511, "Six Two"),
    ("2a00:db8:ffff:ffff:ffff:ffff:ffff:fffe", "2a00:db9::1", 4200000000, "Four Octet AS"),
    (
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        64512,
        "Top Of Six",
    ),
]


def write_csv(path: Path, rows: list[tuple[str, str, int, str]], *, gz: bool = False) -> Path:
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows(rows)
    data = buffer.getvalue().encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _neighbours(first: str, last: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    lo, hi = ipaddress.ip_address(first), ipaddress.ip_address(last)
    out: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    if int(lo) > 0:
        out.append(lo - 1)
    if int(hi) < (2**32 - 1 if lo.version == 4 else 2**128 - 1):
        out.append(hi + 1)
    return out


def test_builder_round_trips_every_range_boundary(tmp_path: Path) -> None:
    v4 = write_csv(tmp_path / "asn-ipv4.csv.gz", TINY_ROWS, gz=True)
    v6 = write_csv(tmp_path / "asn-ipv6.csv", TINY_ROWS_V6)
    out = tmp_path / "asn.mmdb"
    summary = build_asn_db([v4, v6], out, build_epoch=1780272000, description="tiny")
    assert summary.rows == summary.ranges == len(TINY_ROWS) + len(TINY_ROWS_V6)
    assert summary.overlaps == 0
    assert summary.networks > summary.ranges  # unaligned ranges need several CIDRs
    rows = TINY_ROWS + TINY_ROWS_V6
    owner = {}
    for first, last, asn, org in rows:
        for addr in (first, last):
            owner[ipaddress.ip_address(addr)] = (asn, org)
    with maxminddb.open_database(out) as reader:
        meta = reader.metadata()
        assert meta.database_type == "avmon-ASN"
        assert meta.build_epoch == 1780272000
        assert meta.description == {"en": "tiny"}
        assert meta.ip_version == 6
        for first, last, asn, org in rows:
            for addr in (first, last):
                assert asn_of(reader.get(addr)) == (asn, org), addr
                if ipaddress.ip_address(addr).version == 4:
                    assert asn_of(reader.get(f"::ffff:{addr}")) == (asn, org), addr
            for outside in _neighbours(first, last):
                assert asn_of(reader.get(outside)) == owner.get(outside, (None, None)), outside
    with GeoDatabases(asn_db=out) as geo:
        facts = geo.lookup("5.0.1.18")
        assert (facts.asn, facts.as_org) == (64501, 'Org "B", Ltd.')
        assert geo.lookup("2a00:db9::1").asn == 4200000000
        info = geo.databases()[2]
        assert (info.database_type, info.build_timestamp) == ("avmon-ASN", 1780272000.0)


def test_builder_command_line(tmp_path: Path) -> None:
    v4 = write_csv(tmp_path / "v4.csv", TINY_ROWS[:2])
    v6 = write_csv(tmp_path / "v6.csv", TINY_ROWS_V6[:1])
    out = tmp_path / "sub" / "asn.mmdb"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "geo.build_asn_db",
            "--ipv4",
            str(v4),
            "--ipv6",
            str(v6),
            "--out",
            str(out),
            "--build-epoch",
            "1700000000",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "3 rows" in result.stdout
    with maxminddb.open_database(out) as reader:
        assert reader.metadata().build_epoch == 1700000000
        assert asn_of(reader.get("2a00:db8::5")) == (64510, "Six One")
    assert list(out.parent.iterdir()) == [out]  # no temporary file left behind


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("1.2.3.4,1.2.3.0,5,x", ":2: key 'end': end 1.2.3.0 is before start 1.2.3.4"),
        ("1.2.3.4,1.2.3.9,AS0,x", ":2: key 'asn': not an AS number"),
        ("1.2.3.4,1.2.3.9,ten,x", ":2: key 'asn': not an AS number"),
        ("1.2.3.x,1.2.3.9,5,x", ":2: key 'start': not an IP address"),
        ("1.2.3.4,::1,5,x", ":2: start and end are different IP versions"),
        ("1.2.3.4,1.2.3.9,5", ":2: expected 4 fields"),
        ("::,::ff,5,x", ":2: IPv6 range overlaps ::/96"),
    ],
)
def test_builder_rejects_bad_rows_with_file_and_line(
    tmp_path: Path, row: str, expected: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"1.0.0.0,1.0.0.255,13335,Cloudflare\n{row}\n", encoding="utf-8")
    with pytest.raises(GeoError) as info:
        list(read_asn_csv(path))
    assert str(info.value).startswith(f"{path}{expected}")
    assert main(["--ipv4", str(path), "--out", str(tmp_path / "x.mmdb")]) == 2
    assert not (tmp_path / "x.mmdb").exists()


def test_normalise_ranges_merges_and_resolves_overlaps() -> None:
    def r(first: int, last: int, asn: int) -> AsnRange:
        return AsnRange(first, last, 4, asn, f"AS{asn}")

    ranges, overlaps = normalise_ranges(
        [r(20, 29, 2), r(0, 9, 1), r(10, 19, 1), r(25, 40, 3), r(50, 60, 4), r(52, 53, 5)]
    )
    assert overlaps == 2
    assert [(x.first, x.last, x.asn) for x in ranges] == [
        (0, 19, 1),  # adjacent ranges of one AS merged
        (20, 24, 2),  # clipped by the later range
        (25, 40, 3),
        (50, 51, 4),  # split around the nested range
        (52, 53, 5),
        (54, 60, 4),
    ]


# --- jurisdiction registry ----------------------------------------------------------------


def test_bundled_registry_entries() -> None:
    registry = load_registry(BUNDLED_REGISTRY)
    assert {asn: e.jurisdiction for asn, e in registry.by_asn.items()} == {
        200107: "RU",
        41983: "RU",
        45090: "CN",
        132203: "CN",
        132591: "CN",
        133478: "CN",
        137876: "CN",
        198605: "US",
    }
    for entry in registry.entries():
        assert entry.source and entry.note and entry.line > 0
    assert registry.match(None, "KASPERSKY LAB AO") is not None
    by_number = registry.match(200107, "anything")
    assert by_number is not None and by_number.asn == 200107
    assert registry.match(64500, "Example Networks") is None
    assert registry.match(None, None) is None


VALID_REGISTRY = """\
schema = 1
updated = 2026-06-20

[[asn]]
asn = 200107
jurisdiction = "RU"
source = "VENDORS.md Kaspersky"
note = "Swiss-registered subsidiary"

[[as_org]]
pattern = "Example*"
jurisdiction = "CN"
source = "test"
note = "test"
"""


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("schema = 1", "schema = 1\nversion = 3"), ":2: key 'version': unknown key"),
        (('jurisdiction = "RU"', 'jurisdiction = "ru"'), ":6: key 'jurisdiction': 'ru' is not"),
        (('jurisdiction = "RU"', 'jurisdiction = "RUS"'), ":6: key 'jurisdiction': 'RUS' is not"),
        (('jurisdiction = "CN"', "jurisdiction = 7"), ":12: key 'jurisdiction': 7 is not"),
        (("asn = 200107", "asn = 200107\nrir = 'RIPE'"), ":6: key 'rir': unknown key"),
        (("asn = 200107", 'asn = "200107"'), ":5: key 'asn': '200107' is not an AS number"),
        (("asn = 200107", "asn = 0"), ":5: key 'asn': 0 is not an AS number"),
        (('source = "test"', 'source = ""'), ":13: key 'source': must be a non-empty string"),
        (('note = "test"\n', ""), ":10: key 'note': [[as_org]] entry lacks 'note'"),
        (('pattern = "Example*"', 'pattern = "*"'), ":11: key 'pattern': pattern '*' is too"),
        (("updated = 2026-06-20", 'updated = "June"'), ":2: key 'updated': must be a date"),
        (("schema = 1", "schema = 2"), ":1: key 'schema': unsupported schema 2"),
        (("[[as_org]]", "[as_org]"), ":10: key 'as_org': must be an array of tables"),
        (('note = "test"', 'note = "test'), ":14: invalid TOML"),
    ],
)
def test_registry_validation_errors_name_file_and_line(
    tmp_path: Path, edit: tuple[str, str], expected: str
) -> None:
    old, new = edit
    assert old in VALID_REGISTRY
    path = tmp_path / "jurisdictions.toml"
    path.write_text(VALID_REGISTRY.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(GeoError) as info:
        load_registry(path)
    message = str(info.value)
    assert message.startswith(f"{path}{expected}"), message
    assert "\n" not in message


def test_registry_duplicates_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "jurisdictions.toml"
    duplicate_asn = (
        VALID_REGISTRY + "\n[[asn]]\nasn = 200107\njurisdiction = 'CH'\nsource = 's'\nnote = 'n'\n"
    )
    path.write_text(duplicate_asn, encoding="utf-8")
    with pytest.raises(
        GeoError,
        match=re.escape(f"{path}:17: key 'asn': duplicate AS number 200107 (first at line 4)"),
    ):
        load_registry(path)
    duplicate_pattern = (
        VALID_REGISTRY + "\n[[as_org]]\npattern = 'EXAMPLE*'\n"
        "jurisdiction = 'CH'\nsource = 's'\nnote = 'n'\n"
    )
    path.write_text(duplicate_pattern, encoding="utf-8")
    with pytest.raises(GeoError, match=re.escape(f"{path}:17: key 'pattern': duplicate pattern")):
        load_registry(path)


def test_registry_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GeoError, match=re.escape(f"{tmp_path / 'r.toml'}: no such file")):
        GeoDatabases(registry=tmp_path / "r.toml")


# --- reload and caching -------------------------------------------------------------------


def test_reload_swaps_database_and_keeps_old_on_corrupt_file(tmp_path: Path) -> None:
    db = tmp_path / "country.mmdb"
    write_country_db(db, {"5.5.5.0/24": "FR", "2a00:1450::/32": "FR"})
    with GeoDatabases(country_db=db) as geo:
        assert geo.lookup("5.5.5.5").country == "FR"
        assert geo.reload_if_changed() == []

        write_country_db(db, {"5.5.5.0/24": "DE", "2a00:1450::/32": "DE"})
        assert geo.lookup("5.5.5.5").country == "FR"  # not reloaded yet
        assert geo.reload_if_changed() == ["country"]
        assert geo.lookup("5.5.5.5").country == "DE"
        assert geo.lookup("2a00:1450::7").country == "DE"
        assert geo.databases()[0].reload_error is None

        replace_bytes(db, b"garbage, not a MaxMind database" * 10)
        assert geo.reload_if_changed() == []
        assert geo.lookup("5.5.5.5").country == "DE"
        error = geo.databases()[0].reload_error
        assert error is not None and error.startswith(f"{db}: not a valid MaxMind DB")
        assert geo.reload_if_changed() == []  # the same bad file is not retried

        db.unlink()
        assert geo.reload_if_changed() == []
        assert geo.lookup("5.5.5.6").country == "DE"
        assert "no such file" in (geo.databases()[0].reload_error or "")

        write_country_db(db, {"5.5.5.0/24": "JP"})
        assert geo.reload_if_changed() == ["country"]
        assert geo.lookup("5.5.5.5").country == "JP"
        assert geo.databases()[0].reload_error is None


def test_reload_rejects_database_of_wrong_kind(tmp_path: Path) -> None:
    db = tmp_path / "asn.mmdb"
    replace_bytes(db, corpus_file("GeoLite2-ASN-Test.mmdb").read_bytes())
    with GeoDatabases(asn_db=db) as geo:
        assert geo.lookup("1.0.0.1").asn == 15169
        replace_bytes(db, corpus_file("GeoLite2-Country-Test.mmdb").read_bytes())
        assert geo.reload_if_changed() == []
        assert geo.lookup("1.0.0.1").asn == 15169
        assert "cannot serve as a asn database" in (geo.databases()[2].reload_error or "")


def test_registry_reload(tmp_path: Path) -> None:
    path = tmp_path / "jurisdictions.toml"
    path.write_text(VALID_REGISTRY, encoding="utf-8")
    with GeoDatabases(registry=path) as geo:
        assert [b.code for b in geo.lookup("185.85.15.1").jurisdictions if b.basis == "asn"] == [
            "RU"
        ]
        path.write_text(VALID_REGISTRY.replace('"RU"', '"XX"').replace("2026", "2027"))
        assert geo.reload_if_changed() == ["registry"]
        assert [b.code for b in geo.lookup("185.85.15.1").jurisdictions if b.basis == "asn"] == [
            "XX"
        ]
        path.write_text(VALID_REGISTRY.replace('"RU"', '"bad"'))
        assert geo.reload_if_changed() == []
        registry_info = geo.databases()[3]
        assert registry_info.reload_error is not None
        assert registry_info.reload_error.startswith(f"{path}:6: key 'jurisdiction'")
        assert [b.code for b in geo.lookup("185.85.15.1").jurisdictions if b.basis == "asn"] == [
            "XX"
        ]


def test_auto_reload_checks_at_most_once_per_interval(tmp_path: Path) -> None:
    db = tmp_path / "country.mmdb"
    write_country_db(db, {"5.5.5.0/24": "FR"})
    now = [1000.0]
    with GeoDatabases(country_db=db, auto_reload_seconds=30, clock=lambda: now[0]) as geo:
        assert geo.lookup("5.5.5.5").country == "FR"
        write_country_db(db, {"5.5.5.0/24": "DE"})
        now[0] += 29
        assert geo.lookup("5.5.5.5").country == "FR"
        now[0] += 2
        assert geo.lookup("5.5.5.5").country == "DE"


def test_lookups_are_cached_and_cache_is_cleared_on_reload(tmp_path: Path) -> None:
    db = tmp_path / "country.mmdb"
    write_country_db(db, {"5.5.5.0/24": "FR"})
    with GeoDatabases(country_db=db) as geo:
        before = geo.reads
        first = geo.lookup("5.5.5.5")
        assert geo.reads == before + 3  # one read in each of the three databases
        for _ in range(5):
            assert geo.lookup("5.5.5.5") is first
        assert geo.reads == before + 3
        assert geo.cache_info().hits == 5
        write_country_db(db, {"5.5.5.0/24": "DE"})
        geo.reload_if_changed()
        assert geo.cache_info().currsize == 0
        assert geo.lookup("5.5.5.5").country == "DE"
        assert geo.reads == before + 6


def test_cache_is_bounded(tmp_path: Path) -> None:
    with GeoDatabases(cache_size=8) as geo:
        for n in range(20):
            geo.lookup(f"77.74.176.{n}")
        assert geo.cache_info().currsize == 8


# --- properties, output, package boundaries ----------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=80), st.ip_addresses().map(str)))
def test_lookup_never_raises(text: str) -> None:
    facts = bundled().lookup(text)
    assert isinstance(facts, GeoFacts)
    for basis in facts.jurisdictions:
        assert re.fullmatch(r"[A-Z]{2}", basis.code)
        assert basis.basis in ("registration", "geolocation", "asn")
    if facts.asn is not None:
        assert facts.asn > 0


@settings(max_examples=100, deadline=None)
@given(st.ip_addresses(v=4))
def test_ipv4_and_mapped_ipv6_agree(addr: ipaddress.IPv4Address) -> None:
    assert bundled().lookup(f"::ffff:{addr}") == bundled().lookup(str(addr))


def test_format_geo_lines() -> None:
    lines = format_geo_lines(bundled(), ["185.85.15.1", "10.0.0.1", "bogus"])
    text = "\n".join(lines)
    assert re.search(r"^185\.85\.15\.1 +geolocation +NL +\[dbip-country\.mmdb", text, re.M)
    assert re.search(r"^185\.85\.15\.1 +registration +CH +\[geo-whois-asn-country", text, re.M)
    assert re.search(r'^185\.85\.15\.1 +asn +AS200107 "Kaspersky Lab Switzerland GmbH"', text, re.M)
    assert re.search(
        r"^185\.85\.15\.1 +control +RU +\[jurisdictions\.toml AS200107; source: ", text, re.M
    )
    for basis in ("geolocation", "registration", "asn", "control"):
        assert re.search(rf"^10\.0\.0\.1 +{basis} +unknown", text, re.M), basis
    assert lines[-1] == "'bogus': invalid IP address (expected IPv4 or IPv6)"


def test_geo_never_imports_monitor() -> None:
    code = (
        "import sys, geo, geo.build_asn_db, geo.reader, geo.registry, geo.databases\n"
        "bad = [m for m in sys.modules if m == 'monitor' or m.startswith('monitor.')]\n"
        "raise SystemExit(1 if bad else 0)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0
    for source in (ROOT / "geo").glob("*.py"):
        assert not re.search(r"^\s*(from|import)\s+monitor\b", source.read_text(), re.M), source
