"""Address text: the C library's fast form must be exactly what ipaddress writes."""

from __future__ import annotations

import ipaddress
import random

import pytest

from monitor import iptext


def _reference(packed: bytes) -> str:
    return str(ipaddress.ip_address(packed))


def _v6_with_zero_runs(rng: random.Random) -> bytes:
    """Random IPv6 addresses rich in zero groups, runs of equal length, and the prefixes
    (IPv4-mapped, IPv4-compatible, unspecified, loopback) that text forms disagree on."""
    words = [rng.getrandbits(16) if rng.random() < 0.5 else 0 for _ in range(8)]
    roll = rng.random()
    if roll < 0.1:
        words[:5] = [0] * 5
        words[5] = 0xFFFF
    elif roll < 0.2:
        words[:6] = [0] * 6
    elif roll < 0.25:
        words = [0] * 7 + [rng.choice((0, 1))]
    return b"".join(w.to_bytes(2, "big") for w in words)


def test_every_form_matches_ipaddress() -> None:
    rng = random.Random(5952)
    for _ in range(20_000):
        v4 = rng.getrandbits(32).to_bytes(4, "big")
        assert iptext.ip_text.__wrapped__(v4) == _reference(v4)
        v6 = _v6_with_zero_runs(rng)
        assert iptext.ip_text.__wrapped__(v6) == _reference(v6), v6.hex()


@pytest.mark.parametrize("text", [
    "::", "::1", "::ffff:1.2.3.4", "::1.2.3.4", "::ffff:0:0", "0.0.0.0", "255.255.255.255",
    "2001:db8::", "2001:db8:0:0:1:0:0:1", "2001:0:0:1:0:0:0:1", "fe80::1:2", "1:0:0:2:0:0:3:4",
])
def test_edge_addresses(text: str) -> None:
    packed = ipaddress.ip_address(text).packed
    assert iptext.ip_text.__wrapped__(packed) == _reference(packed)


def test_a_c_library_that_writes_ipv6_otherwise_is_not_used(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Where inet_ntop's IPv6 text differs from Python's, every IPv6 address goes through
    ipaddress (the agreement is checked once, at import)."""
    monkeypatch.setattr(iptext.socket, "inet_ntop", lambda family, packed: "wrong")
    assert not iptext._ntop6_agrees()
    monkeypatch.setattr(iptext, "_NTOP6", False)
    packed = ipaddress.ip_address("2001:db8::7").packed
    assert iptext.ip_text.__wrapped__(packed) == "2001:db8::7"


def test_this_c_library_agrees() -> None:
    """The fast form is in use here (glibc); if it were not, replays would be slower but
    the same, and this test says why."""
    assert iptext._NTOP6


def test_packed_and_exploded_match_ipaddress() -> None:
    rng = random.Random(4291)
    for _ in range(5_000):
        v4 = rng.getrandbits(32).to_bytes(4, "big")
        v6 = _v6_with_zero_runs(rng)
        for packed in (v4, v6):
            for text in {_reference(packed), ipaddress.ip_address(packed).exploded}:
                assert iptext.ip_packed.__wrapped__(text) == ipaddress.ip_address(text).packed
        assert iptext.ip_exploded.__wrapped__(_reference(v6)) \
            == ipaddress.IPv6Address(v6).exploded


@pytest.mark.parametrize("text", ["", "1.2.3", "1.2.3.4 ", "01.2.3.4", "1.2.3.256", "::g",
                                  "1:2:3:4:5:6:7:8:9", "x\x00", "fe80::1%eth0/64"])
def test_what_is_not_an_address_is_refused_as_ipaddress_refuses_it(text: str) -> None:
    with pytest.raises(ValueError):
        ipaddress.ip_address(text)
    with pytest.raises(ValueError):
        iptext.ip_packed.__wrapped__(text)


def test_a_scope_id_is_read_as_ipaddress_reads_it() -> None:
    assert iptext.ip_packed.__wrapped__("fe80::1%eth0") == ipaddress.ip_address("fe80::1").packed
    with pytest.raises(ValueError):
        iptext.ip_exploded.__wrapped__("10.0.0.1")
