"""Configuration validation, segments and the policy decision, as tables."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.config import CLASSIFICATIONS, load_config
from monitor.errors import ConfigError
from monitor.policy import JurisdictionFact, SegmentMap, evaluate

GOOD = """
[policy]
flagged_jurisdictions = ["RU", "CN"]
upload_threshold_bytes = 1000

[[segments]]
name = "secret"
cidrs = ["10.20.0.0/16", "fd00:20::/48"]
classification = "SECRET"

[[segments]]
name = "secret-dmz"
cidrs = ["10.20.99.0/24"]
classification = "OFFICIAL"

[[segments]]
name = "corp"
cidrs = ["10.30.0.0/16"]
classification = "OFFICIAL-SENSITIVE"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "avmon.toml"
    p.write_text(text)
    return p


def packed(ip: str) -> bytes:
    return ipaddress.ip_address(ip).packed


def test_good_config_and_longest_prefix(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    seg = SegmentMap(cfg.segments)
    assert seg.lookup(packed("10.20.1.10")).name == "secret"
    assert seg.lookup(packed("10.20.99.7")).name == "secret-dmz"  # longest prefix wins
    assert seg.lookup(packed("fd00:20::10")).name == "secret"
    assert seg.lookup(packed("fd00:21::10")) is None
    assert seg.lookup(packed("192.168.1.1")) is None
    # an IPv4 segment does not capture the same bits in IPv6
    assert seg.lookup(packed("::a14:10a")) is None
    assert seg.overlaps() == [("secret-dmz", "10.20.99.0/24", "secret", "10.20.0.0/16")]
    assert cfg.policy.flagged_jurisdictions == ("RU", "CN")
    assert all(r.upload_threshold_bytes == 1000 for r in cfg.policy.rules)
    assert {r.severity for r in cfg.policy.rules} == {"critical", "high", "medium"}


BAD = [
    ("[policy]\nflaged_jurisdictions = ['RU']\n", "key 'policy.flaged_jurisdictions': unknown key"
     " (did you mean 'flagged_jurisdictions'?)", 2),
    ("[[segments]]\nname = 'x'\ncidrs = ['10.0.0.0/33']\nclassification = 'SECRET'\n",
     "key 'segments[0].cidrs': bad CIDR '10.0.0.0/33'", 3),
    ("[[segments]]\nname = 'x'\ncidrs = ['10.0.0.1/8']\nclassification = 'SECRET'\n",
     "key 'segments[0].cidrs': bad CIDR '10.0.0.1/8'", 3),
    ("[[segments]]\nname = 'x'\ncidrs = ['10.0.0.0/8']\nclassification = 'RESTRICTED'\n",
     "key 'segments[0].classification': unknown classification 'RESTRICTED'", 4),
    ("[geo]\ncountry_db = 'missing.mmdb'\n", "key 'geo.country_db': file not found", 2),
    ("[policy]\nflagged_jurisdictions = ['Russia']\n",
     "'Russia' is not an ISO 3166-1 alpha-2 code", 2),
    ("[policy]\n[[policy.exceptions]]\nowner = 'soc'\nreason = 'trial'\nvendor = 'eset'\n",
     "missing 'expires'", 0),
    ("speed = 3\n", "key 'speed': unknown key", 1),
    ("[[segments]\n", "invalid TOML", 0),
]


@pytest.mark.parametrize(("text", "message", "line"), BAD)
def test_bad_config_one_line_error(tmp_path: Path, text: str, message: str, line: int) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert message in msg
    assert "\n" not in msg
    assert msg.startswith(str(path) + (f":{line}:" if line else ""))


@pytest.mark.parametrize(("text", "message", "line"), BAD[:5])
def test_bad_config_cli_exit_2(tmp_path: Path, text: str, message: str, line: int) -> None:
    path = write(tmp_path, text)
    proc = subprocess.run([sys.executable, "-m", "monitor.cli", "check", "-c", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and message in err[0] and str(path) in err[0]
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "monitor.cli", "replay", "-q", "-c", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr


FACT_RU_VENDOR = JurisdictionFact("RU", "vendor")
FACT_RU_GEO = JurisdictionFact("RU", "geolocation")
FACT_CH_REG = JurisdictionFact("CH", "registration")
FACT_SK_VENDOR = JurisdictionFact("SK", "vendor")
TODAY = dt.date(2026, 11, 28)

# (segment, vendor, facts, bases, expected rule ids)
TABLE = [
    ("secret", "kaspersky", (FACT_RU_VENDOR, FACT_CH_REG), None,
     {"secret-flagged-jurisdiction"}),
    ("secret", "eset", (FACT_SK_VENDOR, FACT_RU_GEO), None, {"secret-flagged-jurisdiction"}),
    ("secret", "eset", (FACT_SK_VENDOR, FACT_RU_GEO), ["vendor", "registration"], set()),
    ("secret", "eset", (FACT_SK_VENDOR,), None, set()),
    ("secret", None, (FACT_RU_GEO,), None, set()),  # not AV traffic
    ("corp", "kaspersky", (FACT_RU_VENDOR,), None, {"official-sensitive-flagged-jurisdiction"}),
    ("secret-dmz", "kaspersky", (FACT_RU_VENDOR,), None, {"official-flagged-jurisdiction"}),
    (None, "kaspersky", (FACT_RU_VENDOR,), None, set()),  # unclassified host
]


@pytest.mark.parametrize(("segment", "vendor", "facts", "bases", "want"), TABLE)
def test_policy_table(tmp_path: Path, segment, vendor, facts, bases, want) -> None:
    text = GOOD
    if bases is not None:
        text = text.replace("[policy]\n", f"[policy]\nbases = {bases!r}\n")
    cfg = load_config(write(tmp_path, text))
    seg = next((s for s in cfg.segments if s.name == segment), None)
    verdicts, _ = evaluate(cfg.policy, seg, vendor, "x.example", facts, TODAY)
    assert {v.rule.id for v in verdicts} == want
    for v in verdicts:
        assert all(f.code in ("RU", "CN") for f in v.flagged)


def test_exceptions_apply_until_they_expire(tmp_path: Path) -> None:
    text = GOOD + """
[[policy.exceptions]]
owner = "soc-lead@example.gov.uk"
reason = "ESET trial on the secret enclave, change CHG-1234"
expires = 2026-12-31
segment = "secret"
vendor = "kaspersky"
"""
    cfg = load_config(write(tmp_path, text))
    seg = cfg.segments[0]
    verdicts, allowed = evaluate(cfg.policy, seg, "kaspersky", "x", (FACT_RU_VENDOR,), TODAY)
    assert not verdicts and allowed[0].owner == "soc-lead@example.gov.uk"
    verdicts, allowed = evaluate(cfg.policy, seg, "kaspersky", "x", (FACT_RU_VENDOR,),
                                 dt.date(2027, 1, 1))
    assert [v.rule.id for v in verdicts] == ["secret-flagged-jurisdiction"] and not allowed


def test_check_reports_expired_exception_and_overlap(tmp_path: Path) -> None:
    text = GOOD + """
[[policy.exceptions]]
owner = "soc"
reason = "old trial"
expires = 2020-01-01
vendor = "kaspersky"
"""
    path = write(tmp_path, text)
    proc = subprocess.run([sys.executable, "-m", "monitor.cli", "check", "-c", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "EXPIRED, no longer applies" in proc.stdout
    assert "overlap: 10.20.99.0/24 (secret-dmz) lies inside 10.20.0.0/16 (secret)" in proc.stdout
    assert "expired" in proc.stderr


def test_classifications_are_ordered() -> None:
    assert CLASSIFICATIONS.index("SECRET") > CLASSIFICATIONS.index("OFFICIAL-SENSITIVE")
    assert CLASSIFICATIONS[-1] == "TOP SECRET"
