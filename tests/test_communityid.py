"""Community ID v1 against the spec's published vectors and Suricata's expected output."""

from __future__ import annotations

import ipaddress

import pytest

from monitor.flow.communityid import community_id
from tests.helpers import CORPUS, flows, replay


def _p(a: str) -> bytes:
    return ipaddress.ip_address(a).packed


V6_A = "fe80:0001:0203:0405:0607:0809:0A0B:0C0D"
V6_B = "fe80:1011:1213:1415:1617:1819:1A1B:1C1D"

# (src, dst, proto, sport, dport, seed, expected): the spec's baseline vectors as
# published with Zeek's community_id_v1 tests and other implementations.
VECTORS = [
    ("1.2.3.4", "5.6.7.8", 6, 1122, 3344, 0, "1:wCb3OG7yAFWelaUydu0D+125CLM="),
    ("1.2.3.4", "5.6.7.8", 17, 1122, 3344, 0, "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg="),
    ("1.2.3.4", "5.6.7.8", 1, 8, 0, 0, "1:crodRHL2FEsHjbv3UkRrfbs4bZ0="),
    ("5.6.7.8", "1.2.3.4", 1, 0, 0, 0, "1:crodRHL2FEsHjbv3UkRrfbs4bZ0="),
    (V6_A, V6_B, 58, 128, 0, 0, "1:0bf7hyMJUwt3fMED7z8LIfRpBeo="),
    ("1.2.3.4", "5.6.7.8", 6, 1122, 3344, 1, "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk="),
    ("1.2.3.4", "5.6.7.8", 17, 1122, 3344, 1, "1:OShq+iKDAMVouh/4bMxB9Sz4amw="),
    ("1.2.3.4", "5.6.7.8", 1, 8, 0, 1, "1:9pr4ZGTICiuZoIh90RRYE2RyXpU="),
    (V6_A, V6_B, 58, 128, 0, 1, "1:IO27GQzPuCtNnwFvjWALMHu5tJE="),
    ("1.2.3.4", "5.6.7.8", 46, 0, 0, 0, "1:ikv3kmf89luf73WPz1jOs49S768="),
]


@pytest.mark.parametrize(("src", "dst", "proto", "sport", "dport", "seed", "want"), VECTORS)
def test_spec_vectors(src: str, dst: str, proto: int, sport: int, dport: int, seed: int,
                      want: str) -> None:
    assert community_id(_p(src), _p(dst), proto, sport, dport, seed) == want


@pytest.mark.parametrize(("src", "dst", "proto", "sport", "dport", "seed", "want"),
                         [v for v in VECTORS if v[2] in (6, 17)])
def test_direction_independent(src: str, dst: str, proto: int, sport: int, dport: int,
                               seed: int, want: str) -> None:
    assert community_id(_p(dst), _p(src), proto, dport, sport, seed) == want


def test_matches_suricata_verify(tmp_path):
    # suricata-verify's community-id-ipv4 test runs Suricata with community-id-seed 7.
    records, _ = replay([CORPUS / "sv_community-id-ipv4.pcap"], tmp_path, community_id_seed=7)
    (flow,) = flows(records, "TCP")
    assert (flow["src_ip"], flow["src_port"], flow["dest_ip"], flow["dest_port"]) == (
        "172.26.0.39", 35958, "172.217.14.206", 443)
    assert flow["community_id"] == "1:IwiTNfuO7aCaamMijl+7/X9uLx0="


def test_icmp_echo_flow(tmp_path):
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    pkts = [Ether() / IP(src="1.2.3.4", dst="5.6.7.8") / ICMP(type=8),
            Ether() / IP(src="5.6.7.8", dst="1.2.3.4") / ICMP(type=0)]
    for i, p in enumerate(pkts):
        p.time = 1_700_000_000 + i
    wrpcap(str(tmp_path / "icmp.pcap"), pkts)
    records, _ = replay([tmp_path / "icmp.pcap"], tmp_path)
    (flow,) = flows(records)
    assert flow["proto"] == "ICMP"
    assert flow["community_id"] == "1:crodRHL2FEsHjbv3UkRrfbs4bZ0="
    assert flow["flow"]["pkts_toserver"] == 1 and flow["flow"]["pkts_toclient"] == 1
