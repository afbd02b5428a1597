"""Tests for the signatures package: bundled vendor data, loader validation, matcher.

The cross-check against the research data (``vendors.json``, kept next to this repository
in ``tests/data/vendors``, or wherever ``AVMON_VENDORS_JSON`` points) derives an example
host from every researched pattern and asserts the right vendor comes back; it is skipped
only when that file is absent. The same check over the bundled files always runs.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signatures import (
    MAX_EXPANSION,
    NameMatch,
    NameSignature,
    SignatureError,
    SignatureSet,
    Vendor,
    bundled_directory,
    format_match_lines,
    format_vendor_table,
    load_signature_set,
    load_vendor_file,
)

VENDORS_JSON = Path(
    os.environ.get(
        "AVMON_VENDORS_JSON",
        Path(__file__).resolve().parent / "data" / "vendors" / "vendors.json",
    )
)

#: Research vendor name -> bundled vendor id.
VENDOR_IDS = {
    "Kaspersky (AO Kaspersky Lab)": "kaspersky",
    "Dr.Web (Doctor Web Ltd.)": "drweb",
    "Positive Technologies (JSC Positive Technologies)": "positive-technologies",
    "F6 / F.A.C.C.T. (former Russian business of Group-IB)": "f6",
    "Group-IB (global)": "group-ib",
    "Qihoo 360 (360 Total Security / 360 Safe Guard / 360 Antivirus)": "qihoo-360",
    "Tencent PC Manager (腾讯电脑管家 / QQ PC Manager)": "tencent-pc-manager",
    "Kingsoft Antivirus / Duba (金山毒霸, Cheetah Mobile)": "kingsoft",
    "Huorong (火绒安全, Beijing Huorong Network Technology)": "huorong",
    "Rising (瑞星, Beijing Rising)": "rising",
    "Baidu Antivirus (BAV, discontinued)": "baidu-antivirus",
    "Jiangmin (江民, bonus)": "jiangmin",
    "Antiy (安天, bonus)": "antiy",
    "AhnLab (V3)": "ahnlab",
    "Zillya (ALLIT Service)": "zillya",
    "ESET": "eset",
    "Gen Digital (Avast, AVG, Avira, Norton, CCleaner)": "gen-digital",
    "Symantec Endpoint Security (Broadcom)": "symantec",
    "McAfee (consumer) / Trellix (enterprise, ex-McAfee Enterprise + FireEye)": "mcafee-trellix",
    "Trend Micro (Smart Protection Network)": "trend-micro",
    "Sophos (SophosLabs Intelix / SXL)": "sophos",
    "Bitdefender": "bitdefender",
    "Microsoft Defender (Antivirus / for Endpoint)": "microsoft-defender",
    "CrowdStrike (Falcon)": "crowdstrike",
    "SentinelOne": "sentinelone",
    "Palo Alto Networks (WildFire, Cortex XDR/Cloud)": "palo-alto-networks",
    "Check Point (ThreatCloud)": "check-point",
    "Fortinet (FortiGuard)": "fortinet",
    "WithSecure / F-Secure": "withsecure",
    "G DATA CyberDefense": "g-data",
    "Emsisoft": "emsisoft",
    "Malwarebytes": "malwarebytes",
    "Webroot (OpenText Core Endpoint Protection, BrightCloud)": "webroot",
    "Panda Security / WatchGuard": "panda-security",
    "Cylance (BlackBerry; reported sale to Arctic Wolf)": "cylance",
    "Acronis (Cyber Protect)": "acronis",
    "VirusTotal": "virustotal",
}

#: Deliberate, documented departures from the research data's attribution: a name can
#: belong to one vendor only (symantec.toml keeps the shared LiveUpdate host), and the
#: research notes say group-ib.ru is RU-side (f6.toml).
ATTRIBUTION_CHANGES = {
    ("gen-digital", "liveupdate.symantecliveupdate.com"): "symantec",
    ("group-ib", "*.group-ib.ru"): "f6",
}

#: Research shorthands that do not describe the source's own exact-name list (see the notes
#: in microsoft-defender.toml): examples are derived from the corrected form instead.
PATTERN_CORRECTIONS = {
    "(u)?sseu1(north|west)prod.blob.core.windows.net": (
        "(usseu1|wseu1)(north|west)prod.blob.core.windows.net"
    ),
    "(u|w)ssuk1(south|west)prod.blob.core.windows.net": (
        "(ussuk1|wsuk1)(south|west)prod.blob.core.windows.net"
    ),
}

RU_IDS = ("kaspersky", "drweb", "positive-technologies", "f6")
CN_IDS = (
    "qihoo-360",
    "tencent-pc-manager",
    "kingsoft",
    "huorong",
    "rising",
    "baidu-antivirus",
    "jiangmin",
    "antiy",
)


@pytest.fixture(scope="module")
def sigset() -> SignatureSet:
    return load_signature_set()


def research() -> dict[str, object]:
    if not VENDORS_JSON.is_file():
        pytest.skip(f"research data not found at {VENDORS_JSON}")
    data: dict[str, object] = json.loads(VENDORS_JSON.read_text(encoding="utf-8"))
    return data


def example_hosts(pattern: str) -> list[str]:
    """Concrete host names a pattern must match, derived without the loader's code.

    Alternations take their first and last option (a regex-style ``(x)?`` is taken as
    present), ranges their lower and upper bound; ``*.`` becomes a new leftmost label and
    any other ``*`` a short filler.
    """
    out = []
    for first in (True, False):
        text = re.sub(r"\(([^)]*)\)\?", r"\1", pattern)
        text = re.sub(r"\(([^)|]*)\|[^)]*\)" if first else r"\([^)]*\|([^)|]*)\)", r"\1", text)
        text = re.sub(r"\[(\d+)-(\d+)\]", r"\1" if first else r"\2", text)
        if text.startswith("*."):
            text = "avmon-probe." + text[2:]
        out.append(text.replace("*", "x0"))
    return sorted(set(out))


# --- the bundled data ---------------------------------------------------------------------


def test_bundled_set_loads(sigset: SignatureSet) -> None:
    assert len(sigset.vendors) >= 25
    stems = sorted(p.stem for p in bundled_directory().glob("*.toml"))
    assert [v.id for v in sigset.vendors] == stems
    assert re.fullmatch(r"[0-9a-f]{12}", sigset.version)
    assert load_signature_set().version == sigset.version
    assert sigset.pattern_count >= sum(len(v.names) for v in sigset.vendors)
    for vendor in sigset.vendors:
        assert vendor.jurisdiction_sources, vendor.id
        assert vendor.product_lines, vendor.id
        for sig in vendor.names:
            assert sig.source.strip() and sig.role.strip(), (vendor.id, sig.sid)


def test_every_ru_and_cn_vendor_present(sigset: SignatureSet) -> None:
    for vendor_id in RU_IDS:
        vendor = sigset.vendor(vendor_id)
        assert vendor is not None and vendor.jurisdiction == "RU", vendor_id
    for vendor_id in CN_IDS:
        vendor = sigset.vendor(vendor_id)
        assert vendor is not None and vendor.jurisdiction == "CN", vendor_id
    assert {"RU", "CN", "US", "GB"} <= set(sigset.jurisdictions())
    assert list(sigset.jurisdictions()) == sorted(set(sigset.jurisdictions()))


def test_research_vendors_all_present_with_jurisdiction(sigset: SignatureSet) -> None:
    data = research()
    vendors = data["vendors"]
    assert isinstance(vendors, list)
    for entry in vendors:
        vendor = sigset.vendor(VENDOR_IDS[entry["vendor"]])
        assert vendor is not None, entry["vendor"]
        assert vendor.jurisdiction == entry["jurisdiction"], vendor.id
        assert vendor.jurisdiction_confidence == entry["jurisdiction_confidence"], vendor.id
        for source in entry["jurisdiction_sources"]:
            assert any(source in kept for kept in vendor.jurisdiction_sources), vendor.id
        for asn in entry["asns"]:
            assert [m.vendor_id for m in sigset.match_asn(asn["asn"])] == [vendor.id]


def test_every_research_pattern_matches_its_vendor(sigset: SignatureSet) -> None:
    """Each researched pattern is present as written, with its vendor and purpose.

    Checking the pattern that matched (not only the vendor) matters: every vendor has a
    catch-all ``*.`` suffix that would hide a dropped or mistyped specific entry.
    """
    data = research()
    vendors = data["vendors"]
    assert isinstance(vendors, list)
    checked = 0
    for entry in vendors:
        vendor_id = VENDOR_IDS[entry["vendor"]]
        for domain in entry["domains"]:
            pattern = PATTERN_CORRECTIONS.get(domain["pattern"], domain["pattern"])
            expected = ATTRIBUTION_CHANGES.get((vendor_id, domain["pattern"]), vendor_id)
            for host in example_hosts(pattern):
                match = sigset.match_name(host)
                assert match is not None, (pattern, host)
                assert (match.vendor_id, match.pattern) == (expected, pattern), (host, match)
                assert domain["kind"] in (match.purpose, *match.other_purposes), (host, match)
                checked += 1
    assert checked >= 280


def test_every_bundled_entry_matches_itself(sigset: SignatureSet) -> None:
    for vendor in sigset.vendors:
        for sig in vendor.names:
            for host in example_hosts(sig.pattern):
                match = sigset.match_name(host)
                assert match is not None, (vendor.id, sig.pattern, host)
                assert match.signature_id == f"{vendor.id}:{sig.sid}", (sig.pattern, host, match)
                assert match.pattern == sig.pattern and match.purpose == sig.purpose


# --- matching -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "vendor", "jurisdiction", "purpose", "pattern"),
    [
        (
            "ksn-file-geo.kaspersky-labs.com",
            "kaspersky",
            "RU",
            "lookup",
            "ksn-*-geo.kaspersky-labs.com",
        ),
        ("s07.upd.kaspersky.com", "kaspersky", "RU", "update", "s[00-19].upd.kaspersky.com"),
        ("s00.upd.kaspersky.com", "kaspersky", "RU", "update", "s[00-19].upd.kaspersky.com"),
        ("s19.upd.kaspersky.com", "kaspersky", "RU", "update", "s[00-19].upd.kaspersky.com"),
        ("s20.upd.kaspersky.com", "kaspersky", "RU", "unknown", "*.kaspersky.com"),
        ("s7.upd.kaspersky.com", "kaspersky", "RU", "unknown", "*.kaspersky.com"),
        ("FOO.Kaspersky.COM.", "kaspersky", "RU", "unknown", "*.kaspersky.com"),
        ("dc1-st.ksn.kaspersky-labs.com", "kaspersky", "RU", "telemetry", None),
        ("dc1.ksn.kaspersky-labs.com", "kaspersky", "RU", "lookup", "dc1.ksn.kaspersky-labs.com"),
        ("x.ksn.kaspersky-labs.com", "kaspersky", "RU", "lookup", "*.ksn.kaspersky-labs.com"),
        ("update.drweb.com", "drweb", "RU", "update", "update.drweb.com"),
        ("update.msk3.drweb.com", "drweb", "RU", "update", "update.*.drweb.com"),
        ("a.b.drweb.com", "drweb", "RU", "unknown", "*.drweb.com"),
        ("qup.f.360.cn", "qihoo-360", "CN", "lookup", "qup.f.360.cn"),
        ("falcon.crowdstrike.com", "crowdstrike", "US", "console", "falcon*.crowdstrike.com"),
        ("h3-arsp02-v.eset.com", "eset", "SK", "lookup", "h*-arsp0*-v.eset.com"),
        ("um23.eset.com", "eset", "SK", "update", "um[01-23].eset.com"),
        ("us1.xdr.eu.paloaltonetworks.com", "palo-alto-networks", "US", "console", None),
        ("wsuk1westprod.blob.core.windows.net", "microsoft-defender", "US", "sample-upload", None),
    ],
)
def test_match_name(
    sigset: SignatureSet,
    name: str,
    vendor: str,
    jurisdiction: str,
    purpose: str,
    pattern: str | None,
) -> None:
    match = sigset.match_name(name)
    assert match is not None
    assert (match.vendor_id, match.jurisdiction, match.purpose) == (vendor, jurisdiction, purpose)
    if pattern is not None:
        assert match.pattern == pattern
    assert match.signature_id.startswith(vendor + ":")
    assert match.rev == sigset.vendor(vendor).rev  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "name",
    [
        "kaspersky.com.evil.example",
        "notkaspersky.com",
        "kaspersky.com",  # only names strictly below a "*." suffix match
        "kaspersky.com..",
        ".kaspersky.com",
        "a..kaspersky.com",
        "ksn-file-geo.kaspersky-labs.com.evil.example",
        "example.com",
        "",
        ".",
        "x" * 64 + ".kaspersky.com",  # label over 63 characters
        ("a." * 130) + "kaspersky.com",  # over 127 labels / 253 characters
        "sseu1northprod.blob.core.windows.net",  # not a real Defender name
    ],
)
def test_no_match(sigset: SignatureSet, name: str) -> None:
    assert sigset.match_name(name) is None


def test_name_normalisation(sigset: SignatureSet) -> None:
    plain = sigset.match_name("ksn-url-geo.kaspersky-labs.com")
    assert plain is not None
    for spelling in (
        "KSN-URL-GEO.KASPERSKY-LABS.COM",
        "ksn-url-geo.kaspersky-labs.com.",
        "Ksn-Url-Geo.Kaspersky-Labs.Com.",
    ):
        assert sigset.match_name(spelling) == plain


def write_vendor(directory: Path, vendor_id: str, body: str, **top: str) -> Path:
    header = {
        "id": f'"{vendor_id}"',
        "name": f'"{vendor_id.title()} AV"',
        "product_lines": '["Endpoint"]',
        "jurisdiction": '"RU"',
        "jurisdiction_confidence": '"high"',
        "jurisdiction_sources": '["test fixture"]',
        "rev": "1",
    }
    header.update(top)
    text = "".join(f"{k} = {v}\n" for k, v in header.items() if v) + body
    path = directory / f"{vendor_id}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def names_block(*entries: tuple[str, str]) -> str:
    return "".join(
        f'\n[[names]]\npattern = "{pattern}"\npurpose = "{purpose}"\n'
        'confidence = "high"\nrole = "test"\nsource = "test"\n'
        for pattern, purpose in entries
    )


def test_precedence(tmp_path: Path) -> None:
    write_vendor(
        tmp_path,
        "acme",
        names_block(
            ("*.acme.example", "unknown"),
            ("*.cloud.acme.example", "lookup"),
            ("api-*.cloud.acme.example", "telemetry"),
            ("api-eu*.cloud.acme.example", "sample-upload"),
            ("api-eu1.cloud.acme.example", "update"),
            ("x.*.acme.example", "console"),
            ("*.y.acme.example", "lookup"),
        ),
    )
    sigs = load_signature_set(tmp_path)

    def purpose(name: str) -> str | None:
        match = sigs.match_name(name)
        return None if match is None else match.purpose

    assert purpose("api-eu1.cloud.acme.example") == "update"  # exact name wins
    assert purpose("api-eu2.cloud.acme.example") == "sample-upload"  # longer glob literal
    assert purpose("api-us1.cloud.acme.example") == "telemetry"  # glob beats "*."
    assert purpose("web.cloud.acme.example") == "lookup"  # deeper suffix
    assert purpose("a.b.cloud.acme.example") == "lookup"
    assert purpose("other.acme.example") == "unknown"
    assert purpose("x.z.acme.example") == "console"  # whole-name (lone "*") beats "*."
    assert purpose("x.y.acme.example") == "console"  # whole-name beats deeper-literal "*."
    assert purpose("w.y.acme.example") == "lookup"
    assert purpose("acme.example") is None


def test_precedence_across_vendors(tmp_path: Path) -> None:
    write_vendor(tmp_path, "broad", names_block(("*.shared.example", "unknown")))
    write_vendor(
        tmp_path, "narrow", names_block(("edge.shared.example", "lookup")), jurisdiction='"CN"'
    )
    sigs = load_signature_set(tmp_path)
    assert sigs.match_name("edge.shared.example").vendor_id == "narrow"  # type: ignore[union-attr]
    assert sigs.match_name("core.shared.example").vendor_id == "broad"  # type: ignore[union-attr]
    assert sigs.jurisdictions() == ("CN", "RU")


def test_idn(tmp_path: Path) -> None:
    write_vendor(
        tmp_path,
        "idn",
        names_block(("*.касперский.рф", "lookup"), ("bücher.example", "update")),
    )
    sigs = load_signature_set(tmp_path)
    alabel = "касперский".encode("idna").decode()
    assert alabel.startswith("xn--")
    for name in (
        "ksn.касперский.рф",
        "KSN.КАСПЕРСКИЙ.РФ",
        f"ksn.{alabel}.xn--p1ai",
        f"KSN.{alabel.upper()}.XN--P1AI.",
        "ksn\u3002касперский\u3002рф",  # ideographic full stop separates labels
    ):
        match = sigs.match_name(name)
        assert match is not None and match.vendor_id == "idn", name
        assert match.matched_pattern == f"*.{alabel}.xn--p1ai"
    assert sigs.match_name("BÜCHER.example").purpose == "update"  # type: ignore[union-attr]
    assert sigs.match_name("xn--bcher-kva.example").purpose == "update"  # type: ignore[union-attr]
    assert sigs.match_name("касперский.рф") is None


def test_match_ip_reads_text_as_ipaddress_does(sigset: SignatureSet) -> None:
    """Text is read with inet_pton where it can be, else with ipaddress: every form of an
    address inside each prefix (short, exploded, IPv4-mapped) gives what the address
    object gives, and so do a scope id and text that is no address."""
    rng = random.Random(21)
    checked = 0
    for net in sorted({m.prefix for prefixes in sigset._prefixes.values()
                       for hits in prefixes.values() for m in hits}):
        network = ipaddress.ip_network(net)
        for _ in range(3):
            addr = network[rng.randrange(network.num_addresses)]
            forms = {str(addr), addr.exploded}
            if addr.version == 4:
                forms |= {f"::ffff:{addr}", str(ipaddress.IPv6Address(
                    bytes(10) + b"\xff\xff" + addr.packed))}
            for text in forms:
                assert sigset.match_ip(text) == sigset.match_ip(addr), text
                assert sigset.match_ip(text), text
                checked += 1
    assert checked > 50
    scoped = "fe80::1%eth0"
    assert sigset.match_ip(scoped) == sigset.match_ip(ipaddress.ip_address(scoped))
    for text in ("", "1.2.3", "01.2.3.4", "::g", "1.2.3.4 "):
        assert sigset.match_ip(text) == []


def test_match_ip_asn_ja4(tmp_path: Path, sigset: SignatureSet) -> None:
    assert [m.vendor_id for m in sigset.match_ip("77.74.177.1")] == ["kaspersky"]
    assert sigset.match_ip("77.74.177.1")[0].prefix == "77.74.176.0/21"
    assert sigset.match_ip("::ffff:91.228.165.12")[0].vendor_id == "eset"
    assert sigset.match_ip("2a03:2480:8000::1")[0].jurisdiction == "RU"
    assert sigset.match_ip("192.0.2.1") == []
    assert sigset.match_ip("not an address") == []
    assert [m.vendor_id for m in sigset.match_asn(200107)] == ["kaspersky"]
    assert sigset.match_asn(64512) == []

    body = """
[[asns]]
asn = 644960
confidence = "low"
source = "test"

[[prefixes]]
cidrs = ["10.0.0.0/8", "10.1.0.0/16", "2001:db8::/32"]
confidence = "low"
source = "test"

[[prefixes]]
cidrs = ["10.1.2.0/24"]
confidence = "high"
source = "test"

[[ja4]]
fingerprint = "t13d1516h2_8daaf6152771_02713d6af862"
purpose = "lookup"
source = "test"
"""
    write_vendor(tmp_path, "nets", body)
    sigs = load_signature_set(tmp_path)
    assert [m.prefix for m in sigs.match_ip("10.1.2.3")] == [
        "10.1.2.0/24",
        "10.1.0.0/16",
        "10.0.0.0/8",
    ]
    assert [m.prefix for m in sigs.match_ip("2001:db8:1::1")] == ["2001:db8::/32"]
    assert sigs.match_asn(644960)[0].vendor_id == "nets"
    ja4 = sigs.match_ja4("T13D1516H2_8DAAF6152771_02713D6AF862")
    assert len(ja4) == 1 and ja4[0].confidence == "low" and ja4[0].signature_id == "nets:ja4:1"
    assert sigs.match_ja4("t13d1516h2_000000000000_000000000000") == []


def test_set_is_immutable_and_versioned(tmp_path: Path, sigset: SignatureSet) -> None:
    with pytest.raises(AttributeError):
        sigset._version = "x"
    match = sigset.match_name("s01.upd.kaspersky.com")
    assert isinstance(match, NameMatch)
    with pytest.raises(AttributeError):
        match.purpose = "lookup"  # type: ignore[misc]
    path = write_vendor(tmp_path, "acme", names_block(("*.acme.example", "unknown")))
    first = load_signature_set(tmp_path).version
    path.write_text("# a reviewer's comment\n" + path.read_text(), encoding="utf-8")
    assert load_signature_set(tmp_path).version == first  # content, not layout
    path.write_text(path.read_text().replace('"unknown"', '"lookup"'), encoding="utf-8")
    assert load_signature_set(tmp_path).version != first


# --- loader errors ------------------------------------------------------------------------

GOOD_BODY = names_block(("*.acme.example", "unknown"), ("lookup.acme.example", "lookup"))


def line_of(path: Path, needle: str, occurrence: int = 1) -> int:
    seen = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if needle in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{needle!r} not in {path}")


def expect_error(directory: Path, path: Path, line: int | None, key: str | None, text: str) -> str:
    with pytest.raises(SignatureError) as info:
        load_signature_set(directory)
    message = str(info.value)
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    what = f"key '{key}': " if key is not None else ""
    assert message.startswith(where + what), message
    assert text in message, message
    assert "\n" not in message
    assert info.value.path == str(path) and info.value.line == line and info.value.key == key
    return message


@pytest.mark.parametrize(
    ("top", "body", "needle", "key", "text"),
    [
        ({"colour": '"red"'}, GOOD_BODY, "colour =", "colour", "unknown key"),
        ({"rev": ""}, GOOD_BODY, None, "rev", "missing required key"),
        ({"rev": '"1"'}, GOOD_BODY, "rev =", "rev", "expected an integer, got string"),
        ({"rev": "1.5"}, GOOD_BODY, "rev =", "rev", "expected an integer, got float"),
        ({"rev": "true"}, GOOD_BODY, "rev =", "rev", "expected an integer, got boolean"),
        ({"rev": "0"}, GOOD_BODY, "rev =", "rev", "positive integer"),
        ({"jurisdiction": '"ru"'}, GOOD_BODY, "jurisdiction =", "jurisdiction", "upper-case"),
        ({"jurisdiction": '"RUS"'}, GOOD_BODY, "jurisdiction =", "jurisdiction", "ISO 3166-1"),
        ({"jurisdiction": '"UK"'}, GOOD_BODY, "jurisdiction =", "jurisdiction", "'GB'"),
        ({"jurisdiction": '"XX"'}, GOOD_BODY, "jurisdiction =", "jurisdiction", "not an assigned"),
        ({"id": '"other"'}, GOOD_BODY, "id =", "id", "file name stem"),
        ({"id": '"Acme"'}, GOOD_BODY, "id =", "id", "slug"),
        (
            {"jurisdiction_confidence": '"sure"'},
            GOOD_BODY,
            "jurisdiction_confidence =",
            "jurisdiction_confidence",
            "not one of high, medium, low",
        ),
        (
            {"jurisdiction_sources": "[]"},
            GOOD_BODY,
            "jurisdiction_sources =",
            "jurisdiction_sources",
            "at least one",
        ),
        (
            {"product_lines": '"Endpoint"'},
            GOOD_BODY,
            "product_lines =",
            "product_lines",
            "expected an array of strings, got string",
        ),
        ({"names": "3"}, "", "names =", "names", "expected [[names]] tables, got integer"),
        ({"asns": "[200107]"}, GOOD_BODY, "asns =", "asns", "got an array of integer"),
        ({}, "", None, None, "no [[names]], [[asns]], [[prefixes]] or [[ja4]] entries"),
    ],
)
def test_top_level_errors(
    tmp_path: Path,
    top: dict[str, str],
    body: str,
    needle: str | None,
    key: str | None,
    text: str,
) -> None:
    path = write_vendor(tmp_path, "acme", body, **top)
    line = line_of(path, needle) if needle else None
    expect_error(tmp_path, path, line, key, text)


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        ("*.com", "two labels after '*.'"),
        ("acme", "at least two labels"),
        ("a..acme.example", "empty label"),
        ("foo bar.acme.example", "characters outside"),
        ("x.*.example", "rightmost labels must be literal"),
        ("x.acme.ex*", "rightmost labels must be literal"),
        ("a**b.acme.example", "'**'"),
        ("a*b*c*d*e*f.acme.example", "more than 4 '*'"),
        ("s[00-9].acme.example", "same number of digits"),
        ("s[9-1].acme.example", "empty"),
        ("s[00-19.acme.example", "unclosed '['"),
        ("(a|b.acme.example", "unclosed '('"),
        ("(a).acme.example", "at least two options"),
        ("(a|b.c)x.acme.example", "may hold only"),
        ("a|b.acme.example", "outside a range"),
        ("s[000-999].acme.example", f"more than {MAX_EXPANSION}"),
        ("[0-9][0-9][0-9].acme.example", f"more than {MAX_EXPANSION}"),
        ("*.acme.example.", "already given"),  # same pattern as names[1] after normalising
        ("(x|x).acme.example", "repeats an option"),
        (" lookup.acme.example", "white space"),
        (("a" * 64) + ".acme.example", "longer than 63"),
    ],
)
def test_pattern_errors(tmp_path: Path, pattern: str, text: str) -> None:
    body = names_block(("*.acme.example", "unknown"), (pattern, "lookup"))
    path = write_vendor(tmp_path, "acme", body)
    line = line_of(path, "pattern =", occurrence=2)
    expect_error(tmp_path, path, line, "names[2].pattern", text)


@pytest.mark.parametrize(
    ("field", "value", "key", "text"),
    [
        ("purpose", '"lookups"', "names[2].purpose", "not one of lookup, telemetry"),
        ("confidence", '"certain"', "names[2].confidence", "not one of high, medium, low"),
        ("purpse", '"lookup"', "names[2].purpse", "unknown key"),
        ("role", '""', "names[2].role", "must not be empty"),
        ("source", "3", "names[2].source", "expected a string, got integer"),
        ("other_purposes", '["lookup"]', "names[2].other_purposes", "repeats the main purpose"),
        ("other_purposes", '["exfil"]', "names[2].other_purposes", "'exfil' is not one of"),
        ("other_purposes", '"update"', "names[2].other_purposes", "expected an array"),
    ],
)
def test_names_entry_errors(tmp_path: Path, field: str, value: str, key: str, text: str) -> None:
    fields = {
        "pattern": '"lookup.acme.example"',
        "purpose": '"lookup"',
        "confidence": '"high"',
        "role": '"test"',
        "source": '"test"',
    }
    fields[field] = value
    second = "".join(f"{k} = {v}\n" for k, v in fields.items())
    body = names_block(("*.acme.example", "unknown")) + "\n[[names]]\n" + second
    path = write_vendor(tmp_path, "acme", body)
    needle = f"{field} = {value}"
    expect_error(tmp_path, path, line_of(path, needle), key, text)


def test_missing_key_in_names_entry_points_at_its_header(tmp_path: Path) -> None:
    body = GOOD_BODY + '\n[[names]]\npattern = "third.acme.example"\npurpose = "lookup"\n'
    path = write_vendor(tmp_path, "acme", body)
    expect_error(
        tmp_path, path, line_of(path, "[[names]]", 3), "names[3].confidence", "missing required"
    )


@pytest.mark.parametrize(
    ("block", "needle", "key", "text"),
    [
        ('cidrs = ["10.0.0.1/8"]', "10.0.0.1/8", "prefixes[1].cidrs", "host bits set"),
        ('cidrs = ["300.1.1.1/32"]', "300.1.1.1/32", "prefixes[1].cidrs", "not a CIDR"),
        ('cidrs = [\n  "10.0.0.0/24",\n  "0.0.0.0/1",\n]', "0.0.0.0/1", None, "broader than /8"),
        ('cidrs = ["10.0.0.0/24", "10.0.0.0/24"]', "cidrs", "prefixes[1].cidrs", "repeats"),
    ],
)
def test_prefix_errors(tmp_path: Path, block: str, needle: str, key: str | None, text: str) -> None:
    body = GOOD_BODY + f'\n[[prefixes]]\n{block}\nconfidence = "low"\nsource = "test"\n'
    path = write_vendor(tmp_path, "acme", body)
    expect_error(tmp_path, path, line_of(path, needle), key or "prefixes[1].cidrs", text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("0", "outside"),
        ("4294967295", "outside"),
        ("23456", "AS_TRANS"),
        ("64512", "private-use"),
        ("64500", "documentation"),
        ('"AS200107"', "expected an integer, got string"),
    ],
)
def test_asn_errors(tmp_path: Path, value: str, text: str) -> None:
    body = GOOD_BODY + f'\n[[asns]]\nasn = {value}\nconfidence = "low"\nsource = "test"\n'
    path = write_vendor(tmp_path, "acme", body)
    expect_error(tmp_path, path, line_of(path, "asn ="), "asns[1].asn", text)


def test_ja4_error(tmp_path: Path) -> None:
    body = GOOD_BODY + '\n[[ja4]]\nfingerprint = "t13d_nope"\npurpose = "lookup"\nsource = "x"\n'
    path = write_vendor(tmp_path, "acme", body)
    expect_error(tmp_path, path, line_of(path, "fingerprint"), "ja4[1].fingerprint", "not a JA4")


def test_toml_syntax_error_uses_the_parsers_line(tmp_path: Path) -> None:
    path = write_vendor(tmp_path, "acme", GOOD_BODY + "\n[[names]]\npattern = \n")
    expect_error(tmp_path, path, line_of(path, "pattern = ", 3), None, "invalid TOML")


def test_other_file_level_errors(tmp_path: Path) -> None:
    path = tmp_path / "acme.toml"
    path.write_bytes(b'id = "acme\xff"\n')
    expect_error(tmp_path, path, None, None, "not UTF-8 text")
    path.write_bytes(b"x" * (1 << 21))
    expect_error(tmp_path, path, None, None, "larger than")

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("not a vendor file\n", encoding="utf-8")
    (empty / ".acme.toml").write_text("garbage = \n", encoding="utf-8")  # editor/rename temp
    with pytest.raises(SignatureError, match=r"no \*\.toml vendor files"):
        load_signature_set(empty)
    with pytest.raises(SignatureError, match="not a directory"):
        load_signature_set(tmp_path / "missing")
    with pytest.raises(SignatureError, match="cannot read"):
        load_vendor_file(tmp_path / "missing.toml")


def test_pattern_claimed_by_two_files(tmp_path: Path) -> None:
    write_vendor(tmp_path, "aaa", names_block(("s[00-03].shared.example", "update")))
    second = write_vendor(tmp_path, "bbb", names_block(("S02.Shared.Example.", "lookup")))
    message = expect_error(
        tmp_path, second, line_of(second, "pattern ="), "names[1].pattern", "already claimed"
    )
    assert "aaa:1" in message and "aaa.toml:" in message


def test_bad_file_rejects_whole_set(tmp_path: Path) -> None:
    write_vendor(tmp_path, "good", GOOD_BODY)
    write_vendor(tmp_path, "bad", names_block(("*.bad.example", "exfiltration")))
    with pytest.raises(SignatureError, match="bad.toml"):
        load_signature_set(tmp_path)


def test_duplicate_vendor_id_in_constructor(sigset: SignatureSet) -> None:
    kaspersky = sigset.vendor("kaspersky")
    assert kaspersky is not None
    with pytest.raises(SignatureError, match="duplicate vendor id"):
        SignatureSet([kaspersky, kaspersky])


def test_load_vendor_file(sigset: SignatureSet) -> None:
    vendor = load_vendor_file(bundled_directory() / "kaspersky.toml")
    assert vendor == sigset.vendor("kaspersky")
    assert (
        vendor.asns and vendor.prefixes and vendor.names[7].expanded[7] == "s07.upd.kaspersky.com"
    )


# --- properties and scaling ---------------------------------------------------------------

#: Shared by the property tests (hypothesis forbids function-scoped fixtures there).
_SET = load_signature_set()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_match_name_never_raises(name: str) -> None:
    result = _SET.match_name(name)
    assert result is None or isinstance(result, NameMatch)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(alphabet="ksnupd-*x0.Ü", min_size=0, max_size=12), max_size=8),
    st.sampled_from(["kaspersky.com", "kaspersky-labs.com", "360.cn", "eset.com", ""]),
)
def test_match_name_never_raises_on_name_like_text(labels: list[str], suffix: str) -> None:
    name = ".".join([*labels, suffix])
    result = _SET.match_name(name)
    if result is not None and name.lower().rstrip(".").endswith(".kaspersky.com"):
        assert result.vendor_id == "kaspersky"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["ksn.kaspersky.com", "KSN.Kaspersky.com.", "s07.upd.kaspersky.com",
                                 "example.org", "360.cn", "qup.f.360.cn", "", "."]),
                max_size=12))
def test_remembered_name_answers_are_the_tries(names: list[str]) -> None:
    """match_name remembers its answers, in a bounded memo: each is what the trie says."""
    for name in names:
        hit, _ = _SET._lookup(name)
        assert _SET.match_name(name) == (None if hit is None else hit.match)
        assert _SET.match_name(name) == (None if hit is None else hit.match)
    assert _SET.match_name(["not", "hashable"]) is None  # type: ignore[arg-type]


def test_remembered_names_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import signatures.matcher as matcher
    monkeypatch.setattr(matcher, "_NAME_CACHE_MAX", 3)
    fresh = load_signature_set()
    for i in range(10):
        assert fresh.match_name(f"h{i}.ksn.kaspersky.com") is not None
        assert len(fresh._name_cache) <= 3


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_other_lookups_never_raise(text: str) -> None:
    assert isinstance(_SET.match_ip(text), list)
    assert isinstance(_SET.match_ja4(text), list)


def synthetic_set(count: int) -> SignatureSet:
    names = []
    for n in range(count):
        zone = f"zone{n % 97}.example"
        kind = n % 3
        pattern = (
            f"host{n}.{zone}"
            if kind == 0
            else f"*.sub{n}.{zone}"
            if kind == 1
            else f"api{n}-*.{zone}"
        )
        names.append(
            NameSignature(
                sid=n + 1,
                pattern=pattern,
                expanded=(pattern,),
                purpose="lookup",
                other_purposes=(),
                confidence="low",
                role="synthetic",
                source="test",
            )
        )
    vendor = Vendor(
        id="synthetic",
        name="Synthetic",
        product_lines=("x",),
        jurisdiction="RU",
        jurisdiction_confidence="low",
        jurisdiction_sources=("test",),
        rev=1,
        headquarters="",
        parent="",
        notes="",
        indicators=(),
        asns=(),
        prefixes=(),
        names=tuple(names),
        ja4=(),
    )
    return SignatureSet([vendor])


def test_matching_does_not_scan_patterns() -> None:
    small = synthetic_set(10)
    big = synthetic_set(10_000)
    assert big.pattern_count == 10_000
    queries = ["a.b.c.d.zone5.example", "host3.zone3.example", "nothing.at.all.example", "x.y"]
    for query in queries:
        _, small_visits = small._lookup(query)
        _, big_visits = big._lookup(query)
        labels = query.count(".") + 1
        # one visit per label walked (plus the root); globs add at most one branch per label
        assert big_visits <= 2 * (labels + 1), (query, big_visits)
        assert small_visits <= 2 * (labels + 1)
    # the index still answers correctly at this size (n % 3 picks the kind, n % 97 the zone)
    expected = {
        "host9999.zone8.example": "host9999.zone8.example",
        "host9998.zone7.example": None,  # entry 9998 is a glob, not a host
        "a.sub9997.zone6.example": "*.sub9997.zone6.example",
        "api9998-eu.zone7.example": "api9998-*.zone7.example",
        "sub9997.zone6.example": None,  # "*." matches strictly below only
    }
    for name, pattern in expected.items():
        match = big.match_name(name)
        assert (None if match is None else match.pattern) == pattern, name

    def per_lookup(sigs: SignatureSet) -> float:
        start = time.perf_counter()
        for _ in range(300):
            for query in queries:
                sigs.match_name(query)
        return time.perf_counter() - start

    per_lookup(big)
    ratio = min(per_lookup(big) for _ in range(3)) / min(per_lookup(small) for _ in range(3))
    assert ratio < 10, ratio  # a scan over 1000x more patterns would be far slower


# --- command-line helpers -----------------------------------------------------------------


def test_format_match_lines(sigset: SignatureSet) -> None:
    lines = format_match_lines(
        sigset, ["ksn-file-geo.kaspersky-labs.com", "notkaspersky.com", "www.virustotal.com"]
    )
    assert lines[0] == (
        "ksn-file-geo.kaspersky-labs.com: vendor=kaspersky jurisdiction=RU purpose=lookup "
        "pattern=ksn-*-geo.kaspersky-labs.com signature=kaspersky:1@1 confidence=medium"
    )
    assert lines[1] == "notkaspersky.com: no match"
    assert "purpose=sample-upload,lookup" in lines[2]
    assert format_match_lines(sigset, ["bad\x1bname.com"]) == ["'bad\\x1bname.com': no match"]


def test_format_vendor_table(sigset: SignatureSet) -> None:
    lines = format_vendor_table(sigset)
    assert lines[0].split() == ["VENDOR", "JUR", "PATTERNS", "PURPOSES", "NAME"]
    assert len(lines) == len(sigset.vendors) + 2
    row = next(line for line in lines if line.startswith("kaspersky "))
    assert row.split()[:4] == ["kaspersky", "RU", "24", "lookup,telemetry,update,unknown"]
    assert sigset.version in lines[-1] and f"{len(sigset.vendors)} vendors" in lines[-1]
