"""monitor.synth builds bytes that real decoders (tshark, scapy, dnspython) read as intended;
the demo capture and the benchmark generator produce what their ground truth says."""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import dns.message
import pytest

from monitor import synth
from monitor.synth import NetPath, PcapWriter, TcpSession
from tests.helpers import internet_checksum

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_772_442_000 * 1_000_000_000


def _need_tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tshark is required in CI")
        pytest.skip("tshark not installed")
    return path


def tshark_fields(capture: Path, fields: list[str], display_filter: str = "") -> list[list[str]]:
    """Run tshark with checksum validation on and return one list of columns per frame."""
    argv = [_need_tshark(), "-n", "-r", str(capture), "-T", "fields"]
    for proto in ("ip", "tcp", "udp"):  # ICMP checksums are always verified
        argv += ["-o", f"{proto}.check_checksum:TRUE"]
    for f in fields:
        argv += ["-e", f]
    if display_filter:
        argv += ["-Y", display_filter]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def write(path: Path, frames: list[synth.Frame], **kw: object) -> Path:
    with PcapWriter(path, **kw) as w:  # type: ignore[arg-type]
        w.write_all(sorted(frames, key=lambda f: f[0]))
    return path


def tls_flow(
    sni: str | None, hello: bytes, *, client: str = "10.20.1.10", server: str = "77.74.177.10"
) -> list[synth.Frame]:
    sess = TcpSession(NetPath(client, server, vlan=20), 50123, 443, start_ns=T0)
    frames = sess.handshake()
    frames += sess.client_send(hello)
    frames += sess.close()
    return frames


# --- TLS ------------------------------------------------------------------------------


def test_client_hello_is_one_handshake_record() -> None:
    hello = synth.client_hello("ksn-file-geo.kaspersky-labs.com")
    assert hello[0] == 22 and hello[5] == 1  # handshake record, client_hello
    assert int.from_bytes(hello[3:5], "big") == len(hello) - 5
    assert b"ksn-file-geo.kaspersky-labs.com" in hello
    assert b"h2" in hello and b"http/1.1" in hello
    assert b"kaspersky" not in synth.client_hello(None)


def test_hybrid_hello_is_large_and_seeded_bytes_repeat() -> None:
    a = synth.client_hello("a.example", groups="X25519MLKEM768:X25519", seed=7)
    b = synth.client_hello("a.example", groups="X25519MLKEM768:X25519", seed=7)
    c = synth.client_hello("a.example", groups="X25519MLKEM768:X25519", seed=8)
    assert a == b != c
    assert len(a) > 1500
    assert b"\x11\xec\x04\xc0" in a  # key share entry: group 0x11EC, 1216 bytes
    plain = synth.client_hello("a.example")
    assert len(plain) < 600
    assert len(synth.client_hello("a.example", groups="SecP384r1MLKEM1024")) > 1900
    with pytest.raises(ValueError):
        synth.client_hello("a.example", groups="NoSuchGroup")


def test_tshark_reads_sni_from_split_and_plain_hellos(tmp_path: Path) -> None:
    big = synth.client_hello("ksn-url-geo.kaspersky-labs.com", groups="X25519MLKEM768")
    frames = tls_flow("s07.upd.kaspersky.com", synth.client_hello("s07.upd.kaspersky.com"))
    frames += [
        (t + 10**9, f)
        for t, f in tls_flow(None, big, client="2001:db8::10", server="2a03:2480:8010::1")
    ]
    # a hello split at arbitrary offsets: 3 segments of 100, 700, rest
    sess = TcpSession(NetPath("10.30.5.20", "77.74.180.10"), 40000, 443, start_ns=T0 + 2 * 10**9)
    frames += sess.handshake() + sess.client_send(
        synth.client_hello("dc1.ksn.kaspersky-labs.com"), segments=[100, 700]
    )
    cap = write(tmp_path / "tls.pcap", frames)
    rows = tshark_fields(
        cap,
        ["tls.handshake.extensions_server_name", "tls.handshake.extensions_supported_group"],
        "tls.handshake.type == 1",
    )
    names = [r[0] for r in rows]
    assert names == [
        "s07.upd.kaspersky.com",
        "ksn-url-geo.kaspersky-labs.com",
        "dc1.ksn.kaspersky-labs.com",
    ]
    assert "0x11ec" in rows[1][1]
    bad = tshark_fields(cap, ["frame.number"], "_ws.expert.severity >= warning")
    assert bad == []


def test_tls_pair_runs_a_real_handshake() -> None:
    pair = synth.TlsPair("update.eset.com")
    assert pair.alpn == "h2"
    assert pair.server_flight[0] == 22 and pair.server_flight[5] == 2  # ServerHello
    records = pair.client_write(b"x" * 40_000)
    assert records[0] == 23 and len(records) > 40_000
    big = synth.TlsPair("update.eset.com", groups="X25519MLKEM768")
    assert len(big.client_hello) > 1500


def test_tls_app_records_frame_whole_records() -> None:
    data = synth.tls_app_records(40_000, bytes(range(256)) * 100)
    pos, total = 0, 0
    while pos < len(data):
        assert data[pos : pos + 3] == b"\x17\x03\x03"
        n = int.from_bytes(data[pos + 3 : pos + 5], "big")
        total += n - 17
        pos += 5 + n
    assert pos == len(data) and total == 40_000


# --- QUIC -----------------------------------------------------------------------------


def test_quic_initials_are_decrypted_by_tshark(tmp_path: Path) -> None:
    frames: list[synth.Frame] = []
    cases = [
        ("ksn-url-geo.kaspersky-labs.com", synth.QUIC_V1, False),
        ("ksn-file-geo.kaspersky-labs.com", synth.QUIC_V2, False),
        ("dc1.ksn.kaspersky-labs.com", synth.QUIC_V1, True),
    ]
    t = T0
    for i, (name, version, large) in enumerate(cases):
        dgs = synth.quic_initial_datagrams(name, version=version, large=large)
        assert all(len(d) >= 1200 for d in dgs)
        assert len(dgs) == (2 if large else 1)
        assert int.from_bytes(dgs[0][1:5], "big") == version
        path = NetPath("10.20.1.10", "77.74.179.5")
        frames += synth.udp_exchange(path, 51000 + i, 443, [(True, d) for d in dgs], start_ns=t)
        t += 10**9
    cap = write(tmp_path / "quic.pcap", frames)
    rows = tshark_fields(
        cap, ["quic.version", "tls.handshake.extensions_server_name"], "tls.handshake.type == 1"
    )
    assert [r[1] for r in rows] == [c[0] for c in cases]
    assert rows[1][0] == "0x6b3343cf"


def test_rebound_quic_conversation_keeps_sni_and_changes_ids(tmp_path: Path) -> None:
    conv = synth.quic_conversation("ksn-url-geo.kaspersky-labs.com", large=True, response_size=3000)
    assert conv.hello_datagrams == 2
    assert any(not fc for fc, _ in conv.datagrams)
    frames: list[synth.Frame] = []
    dcids = set()
    for i in range(3):
        dgs = conv.rebind(random.Random(i))
        assert [len(d) for _, d in dgs] == [len(d) for _, d in conv.datagrams]
        dcid = dgs[0][1][6 : 6 + dgs[0][1][5]]
        assert dcid != conv.original_dcid
        dcids.add(dcid)
        frames += synth.udp_exchange(
            NetPath("10.20.1.10", "77.74.179.5"), 52000 + i, 443, dgs, start_ns=T0 + i * 10**9
        )
    assert len(dcids) == 3
    cap = write(tmp_path / "conv.pcap", frames)
    rows = tshark_fields(cap, ["tls.handshake.extensions_server_name"], "tls.handshake.type == 1")
    assert [r[0] for r in rows] == ["ksn-url-geo.kaspersky-labs.com"] * 3
    # the server's Initial (ServerHello) decrypts with keys from the new DCID as well
    rows = tshark_fields(cap, ["frame.number"], "tls.handshake.type == 2")
    assert len(rows) == 3


# --- DNS ------------------------------------------------------------------------------


def test_dns_messages_round_trip_and_tshark(tmp_path: Path) -> None:
    q = synth.dns_query("dc1.ksn.kaspersky-labs.com", qid=0x1234, edns=True)
    r = synth.dns_response(
        "dc1.ksn.kaspersky-labs.com",
        qid=0x1234,
        cnames=["dc1-ru.ksn.kaspersky-labs.com", "edge.kaspersky-labs.com"],
        addresses=["77.74.176.61", "77.74.176.62"],
        ttl=120,
    )
    msg = dns.message.from_wire(r)
    assert msg.id == 0x1234
    assert [str(rr.name) for rr in msg.answer] == [
        "dc1.ksn.kaspersky-labs.com.",
        "dc1-ru.ksn.kaspersky-labs.com.",
        "edge.kaspersky-labs.com.",
    ]
    assert msg.answer[-1].ttl == 120
    r6 = synth.dns_response("www.gov.uk", "AAAA", addresses=["2a04:4e42::144"])
    udp = NetPath("10.20.1.10", "10.0.0.53")
    frames = synth.udp_exchange(udp, 5353, 53, [(True, q), (False, r)], start_ns=T0)
    frames += synth.udp_exchange(
        NetPath("fd00:20::10", "fd00::53"), 5354, 53, [(False, r6)], start_ns=T0 + 10**9
    )
    sess = TcpSession(NetPath("10.20.1.10", "10.0.0.53"), 5400, 53, start_ns=T0 + 2 * 10**9)
    frames += (
        sess.handshake() + sess.client_send(synth.dns_tcp(q)) + sess.server_send(synth.dns_tcp(r))
    )
    cap = write(tmp_path / "dns.pcap", frames)
    rows = tshark_fields(
        cap, ["dns.qry.name", "dns.cname", "dns.a", "dns.aaaa", "dns.resp.ttl"], "dns"
    )
    assert rows[0][0] == "dc1.ksn.kaspersky-labs.com"
    assert rows[1][1] == "dc1-ru.ksn.kaspersky-labs.com,edge.kaspersky-labs.com"
    assert set(rows[1][2].split(",")) == {"77.74.176.61", "77.74.176.62"}
    assert rows[2][3] == "2a04:4e42::144"
    assert len(rows) == 5 and rows[4][0] == "dc1.ksn.kaspersky-labs.com"  # over TCP too


# --- frames, checksums, pcap ----------------------------------------------------------


def _all_kinds() -> list[synth.Frame]:
    frames: list[synth.Frame] = []
    for i, (client, server, vlan) in enumerate(
        (
            ("10.20.1.10", "77.74.177.10", None),
            ("10.20.1.10", "77.74.177.10", 100),
            ("fd00:20::10", "2a03:2480:8010::1", None),
            ("fd00:20::10", "2a03:2480:8010::1", 4094),
        )
    ):
        path = NetPath(client, server, vlan=vlan)
        sess = TcpSession(path, 40001 + i, 443, start_ns=T0 + i * 10**9)
        frames += sess.handshake()
        frames += sess.client_send(os.urandom(3001))  # odd length: checksum padding
        frames += sess.server_send(os.urandom(5000))
        frames += sess.close(by_client=False)
        t = sess.now
        for n in (0, 1, 2, 1471):
            frames.append((t, path.udp(True, 40002, 9999, os.urandom(n))))
            t += 1000
        frames.append((t, path.icmp_echo(True, 7, 1, b"ping" * 10)))
        frames.append((t + 1, path.icmp_echo(False, 7, 1, b"ping" * 10, reply=True)))
    frames.append(
        (T0, synth.arp_frame(1, synth.mac_for("10.20.1.10"), "10.20.1.10", b"", "10.20.0.1"))
    )
    return frames


def test_checksums_are_valid_per_scapy() -> None:
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest
    from scapy.layers.l2 import ARP, Ether

    checked = Counter[str]()
    for _, frame in _all_kinds():
        pkt = Ether(frame)
        if ARP in pkt:
            checked["arp"] += 1
            continue
        for layer in (IP, TCP, UDP, ICMP, ICMPv6EchoRequest, ICMPv6EchoReply):
            if layer in pkt:
                got = pkt[layer].cksum if hasattr(pkt[layer], "cksum") else pkt[layer].chksum
                fresh = pkt.copy()
                field = "cksum" if hasattr(fresh[layer], "cksum") else "chksum"
                delattr(fresh[layer], field)
                want = getattr(Ether(bytes(fresh))[layer], field)
                assert got == want or {got, want} <= {0, 0xFFFF}, (layer.__name__, got, want)
                checked[layer.__name__] += 1
        if IP in pkt:
            assert pkt[IP].len == len(frame) - (18 if frame[12:14] == b"\x81\x00" else 14)
    assert checked["TCP"] > 20 and checked["UDP"] == 16 and checked["IP"] > 20
    assert checked["ICMP"] == 4 and checked["ICMPv6EchoRequest"] == 2


def test_tshark_sees_valid_checksums_and_clean_tcp(tmp_path: Path) -> None:
    cap = write(tmp_path / "kinds.pcap", _all_kinds())
    bad = tshark_fields(
        cap, ["frame.number", "_ws.expert.message"], "_ws.expert.severity >= warning"
    )
    assert bad == []
    analysis = tshark_fields(cap, ["frame.number", "_ws.expert.message"], "tcp.analysis.flags")
    assert analysis == []
    vlans = tshark_fields(cap, ["vlan.id"], "vlan")
    assert {r[0] for r in vlans} == {"100", "4094"}


def test_a_sum_of_0xffff_gives_checksum_0x0000_not_0xffff(tmp_path: Path) -> None:
    """When the words of a segment sum to 0xFFFF, its checksum is 0x0000 (RFC 1624 §3);
    0xFFFF, the other zero of one's complement, verifies too but is wrong, and Wireshark
    flags it in TCP. About one segment in 65,535 sums so: the random ciphertext of a
    regenerated demo capture hit it once. Each field is forced here: a payload word (TCP),
    the IP ID (IPv4 header), an echo's sequence number (ICMP)."""
    ack = int(synth.TcpFlags.ACK)
    probe = NetPath("10.20.1.10", "77.74.177.10")
    base = probe.tcp(True, 40000, 443, 1, 1, ack, b"\0\0")
    payload = base[50:52]  # the checksum of the zero payload, as the payload's word
    tcp_frame = probe.tcp(True, 40000, 443, 1, 1, ack, payload)
    assert tcp_frame[50:52] == b"\0\0"
    pseudo = tcp_frame[26:34] + b"\0\x06" + (len(tcp_frame) - 34).to_bytes(2, "big")
    assert internet_checksum(pseudo + tcp_frame[34:]) == 0  # it verifies

    ip_id = int.from_bytes(NetPath("10.20.1.10", "77.74.177.10").tcp(False, 443, 40000, 1, 1,
                                                                     ack)[24:26], "big")
    ip_frame = NetPath("10.20.1.10", "77.74.177.10", ipid=ip_id).tcp(False, 443, 40000, 1, 1,
                                                                     ack)
    assert ip_frame[24:26] == b"\0\0" and internet_checksum(ip_frame[14:34]) == 0

    echo = probe.icmp_echo(True, 7, 0, b"ping")
    icmp_frame = probe.icmp_echo(True, 7, int.from_bytes(echo[36:38], "big"), b"ping")
    assert icmp_frame[36:38] == b"\0\0" and internet_checksum(icmp_frame[34:]) == 0
    # Every word zero (an echo reply with identifier, sequence and payload all zero): the
    # sum is 0x0000 and the checksum 0xFFFF.
    assert probe.icmp_echo(True, 0, 0, b"", reply=True)[36:38] == b"\xff\xff"

    if shutil.which("tshark") or os.environ.get("CI"):
        cap = write(tmp_path / "zero.pcap", [(T0, tcp_frame), (T0 + 1, ip_frame),
                                             (T0 + 2, icmp_frame)])
        assert tshark_fields(cap, ["frame.number", "_ws.expert.message"],
                             "_ws.expert.severity >= warning") == []


@pytest.mark.parametrize("nanosecond", [False, True])
@pytest.mark.parametrize("suffix", [".pcap", ".pcap.gz"])
def test_pcap_writer_formats(tmp_path: Path, nanosecond: bool, suffix: str) -> None:
    from scapy.utils import RawPcapReader

    frames = _all_kinds()
    cap = write(tmp_path / f"w{suffix}", frames, nanosecond=nanosecond)
    if suffix.endswith(".gz"):
        with gzip.open(cap, "rb") as fh:
            raw = fh.read()
    else:
        raw = cap.read_bytes()
    magic = int.from_bytes(raw[:4], "little")
    assert magic == (0xA1B23C4D if nanosecond else 0xA1B2C3D4)
    plain = tmp_path / "plain.pcap"
    plain.write_bytes(raw)
    records = list(RawPcapReader(str(plain)))
    assert len(records) == len(frames)
    assert sorted(r[0] for r in records) == sorted(f for _, f in frames)
    first = records[0][1]
    want = min(t for t, _ in frames)
    frac = first.tsusec if hasattr(first, "tsusec") else first.usec
    assert first.sec == want // 10**9 and frac == (want % 10**9) // (1 if nanosecond else 1000)


def test_ones_sum_matches_a_word_loop() -> None:
    rng = random.Random(3)
    for n in (0, 1, 2, 3, 20, 1459, 1460):
        data = rng.randbytes(n)
        padded = data + b"\0" * (n & 1)
        s = sum(int.from_bytes(padded[i : i + 2], "big") for i in range(0, len(padded), 2))
        while s > 0xFFFF:
            s = (s & 0xFFFF) + (s >> 16)
        assert synth.ones_sum(data) % 0xFFFF == s % 0xFFFF


# --- the demo capture -----------------------------------------------------------------


def test_demo_regenerates_with_the_committed_flows(tmp_path: Path) -> None:
    from monitor.demo import generate

    committed = json.loads((ROOT / "monitor" / "data" / "demo.json").read_text())
    out = tmp_path / "demo.pcap"
    plan = generate.write(out)
    fresh = json.loads(out.with_suffix(".json").read_text())
    for key in ("packets", "flows", "dns", "segments", "first_ts", "last_ts"):
        assert fresh[key] == committed[key], key
    assert out.stat().st_size < 1_000_000
    assert 300 <= len(plan.frames) <= 5000
    committed_pcap = ROOT / "monitor" / "data" / "demo.pcap"
    assert committed_pcap.stat().st_size == out.stat().st_size

    alerts = {f["id"] for f in committed["flows"] if f["expected_alert"]}
    assert alerts == {
        "secret-ksn-file-upload",
        "secret-kaspersky-update",
        "secret-ksn-quic",
        "secret-ksn-dc1-no-sni",
        "secret-proxy-connect-ds",
        "official-ksn-verdict",
    }

    rows = tshark_fields(
        out,
        ["ip.src", "tcp.srcport", "udp.srcport", "tls.handshake.extensions_server_name"],
        "tls.handshake.type == 1",
    )
    seen = {(r[0], int(r[1] or r[2]), r[3]) for r in rows}
    for flow in committed["flows"]:
        if flow["indicator"] in ("sni", "quic"):
            assert (flow["client"], flow["client_port"], flow["name"]) in seen, flow["id"]
    nosni = [r for r in rows if not r[3]]
    assert len(nosni) == 1 and nosni[0][0] == "10.20.1.10"
    qnames = {r[0] for r in tshark_fields(out, ["dns.qry.name"], "dns.flags.response == 1")}
    assert qnames == {d["qname"] for d in committed["dns"]}
    connect = tshark_fields(out, ["http.request.uri"], "http.request.method == CONNECT")
    assert connect == [["ds.kaspersky.com:443"]]
    assert tshark_fields(out, ["frame.number"], "_ws.expert.severity >= warning and !quic") == []


# --- the benchmark generator ----------------------------------------------------------


@pytest.mark.slow
def test_bench_capture_agrees_with_tshark(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gen_capture
    finally:
        sys.path.remove(str(ROOT / "bench"))

    out = tmp_path / "bench.pcap"
    doc = gen_capture.generate(
        out, packets=20_000, size_bytes=None, seed=5, quic_names=16, log=False
    )
    truth = json.loads(gen_capture.truth_path(out).read_text())
    assert truth["packets"] == doc["packets"] == 20_000

    if shutil.which("capinfos"):
        info = subprocess.run(
            ["capinfos", "-M", "-c", "-T", str(out)], capture_output=True, text=True, check=True
        ).stdout.splitlines()[-1]
        assert info.split("\t")[-1] == "20000"

    rows = tshark_fields(
        out,
        ["udp.port", "tls.handshake.extensions_server_name", "dns.qry.name", "dns.a", "dns.aaaa"],
        "tls.handshake.type == 1 or dns",
    )
    tls, quic, qnames, addrs = Counter[str](), Counter[str](), set(), set()
    for udp_port, sni, qname, a, aaaa in rows:
        if sni:
            (quic if udp_port else tls)[sni] += 1
        if qname:
            qnames.add(qname)
        addrs.update(x for x in (a + "," + aaaa).split(",") if x)
    assert tls == Counter(truth["tls_sni"])
    assert quic == Counter(truth["quic_sni"])
    assert qnames == set(truth["dns_queries"])
    want_addrs = {x for v in truth["dns_answers"].values() for x in v["A"] + v["AAAA"]}
    assert addrs == want_addrs
    assert truth["tls_client_hellos"] > 20 and truth["quic_client_hellos"] > 5
    assert truth["ipv6_packets"] > 0 and truth["vlan_packets"] > 0
    large = truth["flows_started"].get("tls_large_hello", 0)
    assert large > 0
