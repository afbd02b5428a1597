"""Flow records: counters against tshark, decoding of link types and IP variants, and the
flow table's lifecycle (TCP close and port reuse, timeouts, the hard cap)."""

from __future__ import annotations

import datetime as dt
import gzip
import random
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import CookedLinux, Dot1AD, Dot1Q, Ether, Loopback
from scapy.packet import Raw
from scapy.utils import PcapWriter, wrpcap

from monitor.capture.files import CaptureReader
from monitor.eve import eve_time
from monitor.flow.table import Flow, FlowTimeouts
from monitor.pipeline import Pipeline
from tests.helpers import CORPUS, flows, replay
from tests.tshark_oracle import conv_table, require_tool, tshark_conversations

CORPUS_FILES = sorted(p.name for p in CORPUS.iterdir() if p.suffix in (".pcap", ".pcapng"))
T0 = 1_700_000_000.0


def compare_with_tshark(path: Path, records: list[dict]) -> None:
    """Same flows, same packet and byte counts each way, as tshark's conversations."""
    convs = tshark_conversations(str(path))
    expected = Counter()
    for conv in convs:
        expected[(conv.proto.upper(), frozenset((conv.a, conv.b)))] += 1
    got = Counter()
    checked = []
    for r in flows(records):
        if r["proto"] not in ("TCP", "UDP"):
            continue
        key = (r["proto"], frozenset(((r["src_ip"], r["src_port"]),
                                      (r["dest_ip"], r["dest_port"]))))
        if r["flow"].get("tunnel_depth") and key not in expected:
            # Teredo on a relay's own port, which tshark only decodes when told to.
            continue
        got[key] += 1
        checked.append(r)
    assert got == expected, f"flow sets differ: avmon-only {got - expected}, " \
                            f"tshark-only {expected - got}"
    by_key: dict = {}
    for conv in convs:
        by_key.setdefault((conv.proto.upper(), frozenset((conv.a, conv.b))), []).append(conv)
    for r in checked:
        src = (r["src_ip"], r["src_port"])
        key = (r["proto"], frozenset((src, (r["dest_ip"], r["dest_port"]))))
        f = r["flow"]
        mine = (f["pkts_toserver"], f["pkts_toclient"], f["bytes_toserver"], f["bytes_toclient"])
        candidates = [c.oriented(src) for c in by_key[key]]
        assert mine in candidates, f"{path.name}: {key} avmon {mine}, tshark {candidates}"
        candidates.remove(mine)


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_corpus_flows_match_tshark(name: str, tmp_path: Path) -> None:
    records, pipe = replay([CORPUS / name], tmp_path)
    compare_with_tshark(CORPUS / name, records)


def test_oracle_agrees_with_tsharks_own_table() -> None:
    """The frame-level oracle reproduces ``tshark -z conv`` frame counts (tunnels included)."""
    for name in ("zeek_tunnels_Teredo.pcap", "zeek_wikipedia.pcap", "ndpi_KakaoTalk_chat.pcap"):
        path = str(CORPUS / name)
        convs = tshark_conversations(path)
        for proto in ("tcp", "udp"):
            table = {(frozenset((a, b))): (f_ba, f_ab, a) for a, b, f_ba, f_ab
                     in conv_table(path, proto)}
            mine = [c for c in convs if c.proto == proto]
            assert len(mine) == len(table)
            for c in mine:
                f_ba, f_ab, a = table[frozenset((c.a, c.b))]
                ab = c.oriented(a)
                assert (ab[0], ab[1]) == (f_ab, f_ba)


# -- formats give identical output ------------------------------------------------------

def _canonical(records: list[dict]) -> list[str]:
    import json

    return sorted(json.dumps(r, sort_keys=True) for r in records)


@pytest.mark.parametrize("name", ["zeek_wikipedia.pcap", "ndpi_dns_fragmented.pcap",
                                  "zeek_tunnels_Teredo.pcap"])
def test_pcap_pcapng_gzip_identical(name: str, tmp_path: Path) -> None:
    editcap = require_tool("editcap")
    src = CORPUS / name
    ng = tmp_path / "x.pcapng"
    subprocess.run([editcap, "-F", "pcapng", str(src), str(ng)], check=True)
    nsec = tmp_path / "x.nsec.pcap"
    subprocess.run([editcap, "-F", "nsecpcap", str(src), str(nsec)], check=True)
    gz = tmp_path / "x.pcap.gz"
    with open(src, "rb") as fi, gzip.open(gz, "wb") as fo:
        shutil.copyfileobj(fi, fo)
    outs = []
    for i, p in enumerate((src, ng, nsec, gz)):
        d = tmp_path / str(i)
        d.mkdir()
        outs.append(_canonical(replay([p], d)[0]))
    assert outs[0] == outs[1] == outs[2] == outs[3]
    assert outs[0]


# -- link types and IP variants ---------------------------------------------------------

def _session(client: str, server: str, sport: int = 40000, dport: int = 443,
             v6: bool = False, isn: int = 100) -> list:
    """A whole TCP connection: handshake, 300 bytes up, 1000 down, FIN both ways."""
    ip = IPv6 if v6 else IP
    c, s = isn, 500  # client and server initial sequence numbers

    def up(flags: str, seq: int, ack: int, data: bytes = b"") -> object:
        p = ip(src=client, dst=server) / TCP(sport=sport, dport=dport, flags=flags,
                                             seq=seq, ack=ack)
        return p / Raw(data) if data else p

    def down(flags: str, seq: int, ack: int, data: bytes = b"") -> object:
        p = ip(src=server, dst=client) / TCP(sport=dport, dport=sport, flags=flags,
                                             seq=seq, ack=ack)
        return p / Raw(data) if data else p

    return [
        up("S", c, 0),
        down("SA", s, c + 1),
        up("A", c + 1, s + 1),
        up("PA", c + 1, s + 1, b"x" * 300),
        down("PA", s + 1, c + 301, b"y" * 1000),
        up("FA", c + 301, s + 1001),
        down("FA", s + 1001, c + 302),
        up("A", c + 302, s + 1002),
    ]


def _write(path: Path, pkts: list, linktype: int | None = None, t0: float = T0) -> Path:
    for i, p in enumerate(pkts):
        p.time = t0 + i * 0.01
    if linktype is None:
        wrpcap(str(path), pkts)
    else:
        wrpcap(str(path), pkts, linktype=linktype)
    return path


def _one_tcp_flow(records: list[dict], client: str, server: str) -> dict:
    fl = flows(records, "TCP")
    assert len(fl) == 1, fl
    f = fl[0]
    assert (f["src_ip"], f["dest_ip"]) == (client, server)
    assert f["flow"]["pkts_toserver"] == 5 and f["flow"]["pkts_toclient"] == 3
    return f


@pytest.mark.parametrize("kind", ["ether", "vlan", "qinq", "sll", "raw", "null", "loop"])
def test_link_types(kind: str, tmp_path: Path) -> None:
    pkts = _session("10.20.1.10", "77.74.176.10")
    linktype = None
    if kind == "ether":
        pkts = [Ether() / p for p in pkts]
    elif kind == "vlan":
        pkts = [Ether() / Dot1Q(vlan=42) / p for p in pkts]
    elif kind == "qinq":
        pkts = [Ether() / Dot1AD(vlan=7) / Dot1Q(vlan=42) / p for p in pkts]
    elif kind == "sll":
        pkts = [CookedLinux(proto=0x0800) / p for p in pkts]
    elif kind == "raw":
        linktype = 101
    elif kind == "null":
        pkts = [Loopback(type=2) / p for p in pkts]
    elif kind == "loop":
        linktype = 108
        pkts = [Raw(b"\x00\x00\x00\x02" + bytes(p)) for p in pkts]
    path = _write(tmp_path / f"{kind}.pcap", pkts, linktype)
    records, pipe = replay([path], tmp_path)
    f = _one_tcp_flow(records, "10.20.1.10", "77.74.176.10")
    if kind in ("vlan", "qinq"):
        assert f["vlan"] == [42] if kind == "vlan" else [7]
    assert sum(pipe.stats.undecoded.values()) == 0
    compare_with_tshark(path, records)


def test_sll2(tmp_path: Path) -> None:
    # `tcpdump -i any` writes SLL2; scapy has no SLL2 layer, so build the 20-byte header.
    import struct

    pkts = []
    for p in _session("10.20.1.10", "77.74.176.10"):
        hdr = struct.pack("!HHIHBB8s", 0x0800, 0, 1, 1, 4, 6, b"\x02\x42\xac\x11\x00\x02\0\0")
        pkts.append(Raw(hdr + bytes(p)))
    path = _write(tmp_path / "sll2.pcap", pkts, linktype=276)
    records, _ = replay([path], tmp_path)
    _one_tcp_flow(records, "10.20.1.10", "77.74.176.10")
    compare_with_tshark(path, records)


def test_ipv6_extension_headers(tmp_path: Path) -> None:
    base = _session("2001:db8::10", "2a03:2480::1", v6=True)
    pkts = []
    for p in base:
        tcp = p[TCP]
        pkts.append(Ether() / IPv6(src=p.src, dst=p.dst) / IPv6ExtHdrHopByHop()
                    / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt() / tcp)
    path = _write(tmp_path / "ext.pcap", pkts)
    records, pipe = replay([path], tmp_path)
    _one_tcp_flow(records, "2001:db8::10", "2a03:2480::1")
    compare_with_tshark(path, records)


def test_ip_fragments_counted_in_their_flow(tmp_path: Path) -> None:
    big = IP(src="10.20.1.10", dst="10.0.0.53", id=77) / UDP(sport=5353, dport=53) \
        / Raw(b"q" * 3000)
    frags = fragment(big, fragsize=1000)
    assert len(frags) >= 3
    v6 = IPv6(src="2001:db8::10", dst="2001:db8::53") / IPv6ExtHdrFragment(id=9) \
        / UDP(sport=6000, dport=53) / Raw(b"r" * 2500)
    from scapy.layers.inet6 import fragment6

    frags6 = fragment6(v6, 1280)
    reply = IP(src="10.0.0.53", dst="10.20.1.10") / UDP(sport=53, dport=5353) / Raw(b"a" * 50)
    pkts = [Ether() / p for p in frags + [reply] + frags6]
    path = _write(tmp_path / "frag.pcap", pkts)
    records, pipe = replay([path], tmp_path)
    udp = {(f["src_port"]): f["flow"] for f in flows(records, "UDP")}
    assert udp[5353]["pkts_toserver"] == len(frags)
    assert udp[5353]["bytes_toserver"] == sum(len(Ether() / f) for f in frags)
    assert udp[6000]["pkts_toserver"] == len(frags6)
    compare_with_tshark(path, records)


def _udp_fragments(ident: int, sport: int) -> list[Any]:
    big = IP(src="10.20.1.10", dst="10.0.0.53", id=ident) / UDP(sport=sport, dport=53) \
        / Raw(b"q" * 3000)
    frags = fragment(big, fragsize=1000)
    assert len(frags) == 4
    return list(frags)


def test_later_fragment_before_first_is_held_and_counted(tmp_path: Path) -> None:
    frags = _udp_fragments(78, 5354)
    pkts = [Ether() / p for p in [frags[1], frags[0], frags[3], frags[2]]]
    path = _write(tmp_path / "ooo.pcap", pkts)
    records, pipe = replay([path], tmp_path)
    assert pipe.table.stats.fragments_unattributed == 0
    (f,) = flows(records, "UDP")
    assert f["flow"]["pkts_toserver"] == 4
    assert f["flow"]["bytes_toserver"] == sum(len(p) for p in pkts)


def test_held_fragments_whose_first_never_comes_are_unattributed(tmp_path: Path) -> None:
    frags = _udp_fragments(79, 5355)
    other = IP(src="10.20.1.10", dst="10.0.0.53") / UDP(sport=5356, dport=53) / Raw(b"x")
    pkts = [Ether() / p for p in [frags[2], frags[1], other]]
    path = _write(tmp_path / "orphans.pcap", pkts)
    records, pipe = replay([path], tmp_path)
    assert pipe.table.stats.fragments_unattributed == 2
    assert [f["src_port"] for f in flows(records, "UDP")] == [5356]


def test_held_fragments_expire_with_the_fragment_timeout(tmp_path: Path) -> None:
    from monitor.flow.table import FRAGMENT_TIMEOUT_NS

    frags = _udp_fragments(80, 5357)
    pkts = [Ether() / p for p in [frags[1], frags[0]]]
    path = _write(tmp_path / "late.pcap", pkts)
    pkts[1].time = pkts[0].time + FRAGMENT_TIMEOUT_NS / 1e9 + 1
    wrpcap(str(path), pkts)
    records, pipe = replay([path], tmp_path)
    assert pipe.table.stats.fragments_unattributed == 1
    (f,) = flows(records, "UDP")
    assert f["flow"]["pkts_toserver"] == 1


def test_held_fragments_are_given_up_on_time_without_further_fragments(
        tmp_path: Path) -> None:
    """The fragment timeout acts as time passes, not only when another fragment comes:
    the unattributed count (a metric) shows it before the capture ends."""
    from monitor.decode import decode
    from monitor.flow.table import FRAGMENT_TIMEOUT_NS, FlowTable

    frags = _udp_fragments(81, 5358)
    later = Ether() / IP(src="10.20.1.10", dst="10.0.0.53") / UDP(sport=5359, dport=53) \
        / Raw(b"x")
    pkts = [Ether() / frags[1], later]
    path = _write(tmp_path / "lone.pcap", pkts)
    later.time = pkts[0].time + FRAGMENT_TIMEOUT_NS / 1e9 + 1
    wrpcap(str(path), pkts)
    table = FlowTable()
    for batch in CaptureReader([str(path)]):
        table.update(decode(batch), batch.ts_ns, batch.wirelens, batch.first_frame, batch)
    table.expire()
    assert table.stats.fragments_unattributed == 1
    assert table._held_count == 0


def test_held_fragments_are_bounded(tmp_path: Path) -> None:
    from monitor.decode import decode
    from monitor.flow.table import MAX_HELD_FRAGMENTS, FlowTable

    extra = 10
    pkts = []
    for ident in range(MAX_HELD_FRAGMENTS + extra):
        big = IP(src="10.20.1.10", dst="10.0.0.53", id=ident) / UDP(sport=7000, dport=53) \
            / Raw(b"q" * 100)
        pkts.append(Ether() / fragment(big, fragsize=64)[1])
    path = _write(tmp_path / "many.pcap", pkts)
    table = FlowTable()
    for batch in CaptureReader([str(path)]):
        table.update(decode(batch), batch.ts_ns, batch.wirelens, batch.first_frame, batch)
    assert table.stats.fragments_unattributed == extra
    assert table._held_count == MAX_HELD_FRAGMENTS
    table.flush()
    assert table.stats.fragments_unattributed == MAX_HELD_FRAGMENTS + extra


# -- the flow table's lifecycle ---------------------------------------------------------

def test_port_reuse_after_close_is_a_new_flow(tmp_path: Path) -> None:
    one = _session("10.20.1.10", "77.74.176.10", sport=41000)
    two = _session("10.20.1.10", "77.74.176.10", sport=41000, isn=900_000)
    pkts = [Ether() / p for p in one + two]
    path = _write(tmp_path / "reuse.pcap", pkts)
    records, _ = replay([path], tmp_path)
    fl = flows(records, "TCP")
    assert len(fl) == 2
    assert all(f["flow"]["pkts_toserver"] == 5 for f in fl)
    assert fl[0]["flow_id"] != fl[1]["flow_id"]
    assert fl[0]["community_id"] == fl[1]["community_id"]
    compare_with_tshark(path, records)


def test_flow_id_is_fixed_by_key_and_start() -> None:
    """The id is a function of the canonical key and the record's first packet time only:
    the same in every run, on every machine and in every worker, and 51 bits (exact in a
    JSON double). Pinned, so a change of the hash shows here, not in users' joins."""
    key = (0, 0x0A14010A, 0, 0x4D4AB00A, 41000, 443, 6, 0)

    def flow(first_ns: int, vlan: int = 0, first_frame: int = 1) -> Flow:
        return Flow(key=key, ipver=4, proto=6, a_addr=bytes(4), b_addr=bytes(4), a_port=41000,
                    b_port=443, client_is_a=True, first_ns=first_ns, last_ns=first_ns,
                    first_frame=first_frame, vlan=vlan)

    one = flow(1_772_442_000_123_456_789)
    assert one.flow_id == 1_213_451_439_521_804
    assert flow(1_772_442_000_123_456_789, vlan=7, first_frame=9).flow_id == one.flow_id
    assert flow(1_772_442_000_123_456_790).flow_id != one.flow_id
    assert 0 <= one.flow_id < 1 << 51


def test_syn_ack_seen_first_orients_the_flow(tmp_path: Path) -> None:
    pkts = [Ether() / p for p in _session("10.20.1.10", "77.74.176.10")[1:]]
    path = _write(tmp_path / "midstream.pcap", pkts)
    records, _ = replay([path], tmp_path)
    (f,) = flows(records, "TCP")
    assert (f["src_ip"], f["src_port"]) == ("10.20.1.10", 40000)
    assert f["flow"]["pkts_toserver"] == 4 and f["flow"]["pkts_toclient"] == 3


def test_idle_timeout_splits_flow(tmp_path: Path) -> None:
    q = Ether() / IP(src="10.20.1.10", dst="10.0.0.53") / UDP(sport=7000, dport=53) / Raw(b"a")
    path = tmp_path / "idle.pcap"
    w = PcapWriter(str(path))
    for t in (T0, T0 + 1, T0 + 500, T0 + 501):
        p = q.copy()
        p.time = t
        w.write(p)
    w.close()
    records, _ = replay([path], tmp_path, timeouts=FlowTimeouts(udp_idle=120))
    fl = flows(records, "UDP")
    assert [f["flow"]["pkts_toserver"] for f in fl] == [2, 2]
    assert fl[0]["flow"]["reason"] == "timeout"


def test_active_timeout_continues_as_records_of_their_own(tmp_path: Path) -> None:
    """A flow longer than the active timeout is written in parts: each part is a record
    with a flow id of its own, and the same addresses and Community ID."""
    q = Ether() / IP(src="10.20.1.10", dst="10.0.0.9") / UDP(sport=7000, dport=9999) / Raw(b"a")
    path = tmp_path / "long.pcap"
    w = PcapWriter(str(path))
    for t in range(0, 400, 50):
        p = q.copy()
        p.time = T0 + t
        w.write(p)
    w.close()
    records, _ = replay([path], tmp_path, timeouts=FlowTimeouts(udp_idle=120, active=100))
    parts = flows(records, "UDP")
    assert len(parts) >= 2
    assert [f["flow"]["reason"] for f in parts][:-1] == ["active_timeout"] * (len(parts) - 1)
    assert len({f["flow_id"] for f in parts}) == len(parts)
    assert len({(f["src_ip"], f["src_port"], f["dest_ip"], f["dest_port"], f["community_id"])
                for f in parts}) == 1
    assert sum(f["flow"]["pkts_toserver"] for f in parts) == 8


def test_flow_table_cap_evicts_and_counts(tmp_path: Path) -> None:
    pkts = [Ether() / IP(src="10.20.1.10", dst="77.74.176.10")
            / TCP(sport=20000 + i, dport=443, flags="S") for i in range(300)]
    path = _write(tmp_path / "flood.pcap", pkts)
    records, pipe = replay([path], tmp_path, max_flows=100)
    assert pipe.table.stats.flows_evicted == 200
    assert len(flows(records)) == 300
    assert sum(1 for f in flows(records) if f["flow"]["reason"] == "evicted") == 200
    assert len(pipe.table) == 0


def _timed(path: Path, timed: list[tuple[float, object]]) -> Path:
    """A capture of ``(seconds after T0, packet)``."""
    w = PcapWriter(str(path))
    for t, p in timed:
        p = Ether() / p  # type: ignore[operator]
        p.time = T0 + t
        w.write(p)
    w.close()
    return path


def _records_per_packet(path: Path, **kwargs: object) -> list[dict]:
    """Replay one packet per batch, so that an expiry scan can run between any two packets;
    the flow records in the order they were written."""
    out: list[dict] = []
    pipe = Pipeline(listeners=[out.append], **kwargs)  # type: ignore[arg-type]
    for batch in CaptureReader([str(path)], batch_packets=1):
        pipe.process(batch)
    pipe.finish()
    return flows(out)


def _udp(sport: int, t: float) -> tuple[float, object]:
    return t, IP(src="10.20.1.10", dst="10.0.0.9") / UDP(sport=sport, dport=123) / Raw(b"u")


def _ends(rec: dict) -> tuple[str, int, str]:
    return rec["proto"], rec["src_port"], rec["flow"]["reason"]


def test_expiry_writes_least_recently_used_first_across_timeouts(tmp_path: Path) -> None:
    """Flows under different idle timeouts that end in one scan are written in the order
    they were last used, as if the table were one queue."""
    session = [(1 + i * 0.01, p) for i, p in enumerate(_session("10.20.1.10", "77.74.176.10"))]
    timed = [_udp(7000, 0), *session, _udp(7001, 5), _udp(7002, 200)]
    recs = _records_per_packet(_timed(tmp_path / "mix.pcap", timed),
                               timeouts=FlowTimeouts(udp_idle=120, tcp_closed=30))
    assert [_ends(r) for r in recs] == [("UDP", 7000, "timeout"), ("TCP", 40000, "closed"),
                                        ("UDP", 7001, "timeout"), ("UDP", 7002, "shutdown")]


def test_a_closed_tcp_flow_ends_on_the_closed_timeout(tmp_path: Path) -> None:
    """Once FIN went both ways the flow is under the closed timeout (30 s here), although
    the open flows used before it are not yet due (120 s)."""
    session = [(1 + i * 0.01, p) for i, p in enumerate(_session("10.20.1.10", "77.74.176.10"))]
    timed = [_udp(7000, 0), *session, _udp(7001, 40), _udp(7002, 50)]
    recs = _records_per_packet(_timed(tmp_path / "closed.pcap", timed),
                               timeouts=FlowTimeouts(udp_idle=120, tcp_closed=30))
    assert _ends(recs[0]) == ("TCP", 40000, "closed")
    assert [r["flow"]["reason"] for r in recs[1:]] == ["shutdown"] * 3


def test_eviction_takes_the_least_recently_used_of_any_timeout(tmp_path: Path) -> None:
    """A full table evicts the flow used longest ago, whichever timeout it is under: here
    the TCP flow, not the UDP flow that was created before it but used after it."""
    syn = IP(src="10.20.1.10", dst="77.74.176.10") / TCP(sport=40000, dport=443, flags="S")
    timed = [_udp(7000, 0), (1, syn), _udp(7000, 2), _udp(7001, 3)]
    recs = _records_per_packet(_timed(tmp_path / "evict.pcap", timed), max_flows=2)
    assert _ends(recs[0]) == ("TCP", 40000, "evicted")
    assert sorted(_ends(r) for r in recs[1:]) == [("UDP", 7000, "shutdown"),
                                                  ("UDP", 7001, "shutdown")]


def test_eve_time_is_suricatas_format_to_the_microsecond() -> None:
    """Against datetime's own formatting, truncating (not rounding) to microseconds."""
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    rng = random.Random(7)
    samples = [0, 999, 1000, 999_999_999, 1_772_442_000_000_999_999,
               1_772_442_000_123_456_789] + [rng.getrandbits(62) for _ in range(2000)]
    for ns in samples:
        want = (epoch + dt.timedelta(microseconds=ns // 1000)).strftime("%Y-%m-%dT%H:%M:%S.%f")
        assert eve_time(ns) == want + "+0000", ns
    assert eve_time(1_772_442_000_123_456_789) == "2026-03-02T09:00:00.123456+0000"


def test_eve_flow_record_fields(tmp_path: Path) -> None:
    path = _write(tmp_path / "one.pcap", [Ether() / p for p in
                                          _session("10.20.1.10", "77.74.176.10")])
    records, _ = replay([path], tmp_path)
    (f,) = flows(records)
    for key in ("timestamp", "flow_id", "event_type", "src_ip", "src_port", "dest_ip",
                "dest_port", "proto", "community_id"):
        assert key in f
    for key in ("pkts_toserver", "pkts_toclient", "bytes_toserver", "bytes_toclient", "start",
                "end"):
        assert key in f["flow"]
    assert f["flow"]["start"] == "2023-11-14T22:13:20.000000+0000"
    assert f["flow"]["end"] == "2023-11-14T22:13:20.070000+0000"
    assert f["flow"]["state"] == "closed"
    assert f["tcp"]["syn"] and f["tcp"]["fin"]


def test_icmp_error_does_not_make_flows(tmp_path: Path) -> None:
    inner = IP(src="10.20.1.10", dst="10.0.0.53") / UDP(sport=7001, dport=53)
    pkts = [Ether() / inner / Raw(b"q"),
            Ether() / IP(src="10.0.0.53", dst="10.20.1.10") / ICMP(type=3, code=3) / inner]
    path = _write(tmp_path / "icmperr.pcap", pkts)
    records, _ = replay([path], tmp_path)
    assert len(flows(records, "UDP")) == 1
    compare_with_tshark(path, records)
