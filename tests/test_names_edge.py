"""Names in awkward packets: captures built here (monitor.synth frames around real OpenSSL
ClientHellos, aioquic Initials and dnspython messages), replayed through the pipeline.

Covers TCP reassembly of large (post-quantum sized) hellos delivered out of order, with
retransmissions and overlaps; every split point of a hello; hellos that never complete;
coalesced, split, reordered and v2 QUIC Initials; Encrypted Client Hello; DNS over TCP
with pipelined and split messages naming later flows (for the right client only); TTL 0;
mixed case and trailing dots; CONNECT tunnels; malformed units counted as parse errors;
and random payloads, which must never break the replay.
"""

from __future__ import annotations

import random
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor import synth
from monitor.synth import NetPath, PcapWriter, TcpFlags
from signatures import SignatureSet, load_signature_set
from tests.helpers import flows, replay
from tests.tshark_oracle import require_tool

T0 = 1_772_442_000 * 10**9
MS = 1_000_000
KSN = "ksn-file-geo.kaspersky-labs.com"
CLIENT = "10.20.1.10"
OTHER_CLIENT = "10.20.1.11"
RESOLVER = "10.20.0.53"
SERVER = "203.0.113.7"  # documentation addresses: no IP signature matches them
SERVER2 = "203.0.113.8"
PROXY = "10.20.0.8"
PQ_GROUPS = "X25519MLKEM768:X25519"

SYN, ACK, FIN, PSH = TcpFlags.SYN, TcpFlags.ACK, TcpFlags.FIN, TcpFlags.PSH


# --------------------------------------------------------------------------- helpers


@cache
def sigs() -> SignatureSet:
    return load_signature_set()


def run_pipeline(frames: Sequence[tuple[int, bytes]], tmp: Path
                 ) -> tuple[list[dict[str, Any]], Any]:
    """Write ``frames`` (in the given order) to a pcap and replay it."""
    path = tmp / "edge.pcap"
    with PcapWriter(path) as w:
        w.write_all(frames)
    return replay([path], tmp, signatures=sigs())


def by_type(records: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [r for r in records if r["event_type"] == event_type]


def flow_of(records: list[dict[str, Any]], rec: dict[str, Any]) -> dict[str, Any]:
    found = [f for f in flows(records) if f["flow_id"] == rec["flow_id"]]
    assert len(found) == 1, rec
    return found[0]


class Clock:
    """Timestamps that advance by ``step`` on every frame (capture order = time order)."""

    def __init__(self, start: int = T0, step: int = MS) -> None:
        self.now = start
        self.step = step

    def __call__(self, frame: bytes, gap: int | None = None) -> tuple[int, bytes]:
        self.now += self.step if gap is None else gap
        return self.now, frame


class Tcp:
    """One TCP connection whose client segments are placed by stream offset, so tests can
    send them in any order, twice, or overlapping."""

    def __init__(self, clock: Clock, path: NetPath, cport: int, sport: int = 443,
                 isn: int = 0xFFFF_FE00) -> None:
        self.clock, self.path, self.cport, self.sport = clock, path, cport, sport
        self.isn = isn  # near the 32-bit wrap: sequence arithmetic must wrap too
        self.sisn = 0x2000_0000
        self.c_next = 0  # client bytes sent (highest offset)
        self.s_next = 0

    def client_seq(self, offset: int) -> int:
        return self._cseq(offset)

    def _cseq(self, offset: int) -> int:
        return (self.isn + 1 + offset) & 0xFFFFFFFF

    def open(self) -> list[tuple[int, bytes]]:
        p = self.path
        return [self.clock(p.tcp(True, self.cport, self.sport, self.isn, 0, SYN)),
                self.clock(p.tcp(False, self.sport, self.cport, self.sisn, self._cseq(0),
                                 SYN | ACK)),
                self.clock(p.tcp(True, self.cport, self.sport, self._cseq(0),
                                 self.sisn + 1, ACK))]

    def client(self, data: bytes, offset: int) -> tuple[int, bytes]:
        """A client segment carrying ``data`` at stream ``offset``."""
        self.c_next = max(self.c_next, offset + len(data))
        return self.clock(self.path.tcp(True, self.cport, self.sport, self._cseq(offset),
                                        self.sisn + 1 + self.s_next, ACK | PSH, data))

    def server(self, data: bytes) -> tuple[int, bytes]:
        seq = self.sisn + 1 + self.s_next
        self.s_next += len(data)
        return self.clock(self.path.tcp(False, self.sport, self.cport, seq,
                                        self._cseq(self.c_next), ACK | PSH, data))

    def pieces(self, data: bytes, cuts: Sequence[int],
               order: Sequence[int] | None = None) -> list[tuple[int, bytes]]:
        """``data`` cut at ``cuts``, segments sent in ``order`` (indices)."""
        bounds = [0, *cuts, len(data)]
        segs = [(bounds[i], data[bounds[i]:bounds[i + 1]]) for i in range(len(bounds) - 1)]
        return [self.client(segs[i][1], segs[i][0])
                for i in (order if order is not None else range(len(segs)))]

    def close(self) -> list[tuple[int, bytes]]:
        p = self.path
        c_fin = self._cseq(self.c_next)
        c_after = self._cseq(self.c_next + 1)
        s_fin = self.sisn + 1 + self.s_next
        return [self.clock(p.tcp(True, self.cport, self.sport, c_fin, s_fin, FIN | ACK)),
                self.clock(p.tcp(False, self.sport, self.cport, s_fin, c_after, FIN | ACK)),
                self.clock(p.tcp(True, self.cport, self.sport, c_after, s_fin + 1, ACK))]


def tls_flow(clock: Clock, hello: bytes, *, client: str = CLIENT, server: str = SERVER,
             cport: int = 50000, cuts: Sequence[int] = ()) -> list[tuple[int, bytes]]:
    conn = Tcp(clock, NetPath(client, server), cport)
    return conn.open() + conn.pieces(hello, cuts) + conn.close()


def udp(clock: Clock, path: NetPath, cport: int, sport: int, payload: bytes,
        from_client: bool = True, gap: int | None = None) -> tuple[int, bytes]:
    if from_client:
        return clock(path.udp(True, cport, sport, payload), gap)
    return clock(path.udp(False, sport, cport, payload), gap)


def hello_body_offsets(records: bytes) -> tuple[int, int]:
    """(offset of the extensions length field, offset of the SNI host name) in a
    single-record ClientHello."""
    body = 9  # record header 5 + handshake header 4
    p = body + 34
    p += 1 + records[p]
    p += 2 + int.from_bytes(records[p:p + 2], "big")
    p += 1 + records[p]
    ext_len_at = p
    q = p + 2
    while q < len(records):
        etype, elen = struct.unpack_from(">HH", records, q)
        if etype == 0:
            return ext_len_at, q + 4 + 5  # list length 2, name type 1, name length 2
        q += 4 + elen
    raise AssertionError("no server_name extension")


def with_extension(records: bytes, ext_type: int, data: bytes) -> bytes:
    """Append an extension to a single-record ClientHello, fixing the record, handshake
    and extensions lengths."""
    assert records[0] == 22 and len(records) == 5 + int.from_bytes(records[3:5], "big")
    ext_len_at, _ = hello_body_offsets(records)
    ext = struct.pack(">HH", ext_type, len(data)) + data
    ext_len = int.from_bytes(records[ext_len_at:ext_len_at + 2], "big") + len(ext)
    hs_body = records[9:ext_len_at] + struct.pack(">H", ext_len) + records[ext_len_at + 2:] + ext
    hs = b"\x01" + len(hs_body).to_bytes(3, "big") + hs_body
    return records[:3] + struct.pack(">H", len(hs)) + hs


def tshark_lines(path: Path, display_filter: str, *fields: str) -> list[str]:
    tshark = require_tool("tshark")
    args = [tshark, "-n", "-r", str(path), "-Y", display_filter, "-T", "fields"]
    for f in fields:
        args += ["-e", f]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.splitlines()


# ------------------------------------------------------------- TCP reassembly


def test_pq_hello_out_of_order_duplicate_overlap(tmp_path: Path) -> None:
    """A 1.5 kB post-quantum hello in four segments arriving 3, 1, 3 again, an overlap of
    1/2, 4, 2: one tls record, the same JA4 as the hello sent in order."""
    hello = synth.client_hello(KSN, groups=PQ_GROUPS, seed=1)
    assert len(hello) > 1500
    n = len(hello)
    cuts = [400, 800, 1200]
    clock = Clock()
    conn = Tcp(clock, NetPath(CLIENT, SERVER), 50000)
    frames = conn.open()
    frames += conn.pieces(hello, cuts, order=[2, 0])
    frames.append(conn.client(hello[800:1200], 800))  # retransmission of segment 3
    frames.append(conn.client(hello[300:500], 300))  # overlaps segments 1 and 2
    frames.append(conn.client(hello[1200:n], 1200))
    frames.append(conn.client(hello[400:800], 400))
    frames += conn.close()
    # the same hello in order, on another connection, for the reference JA4
    frames += tls_flow(clock, hello, cport=50001, cuts=cuts)
    records, pipe = run_pipeline(frames, tmp_path)
    tls = by_type(records, "tls")
    assert [r["src_port"] for r in tls] == [50000, 50001]
    assert tls[0]["tls"]["sni"] == KSN
    assert tls[0]["tls"]["ja4"] == tls[1]["tls"]["ja4"]
    assert tls[0]["tls"]["ja3"]["hash"] == tls[1]["tls"]["ja3"]["hash"]
    assert tls[0]["avmon"]["vendor"] == "kaspersky"
    assert flow_of(records, tls[0])["avmon"]["indicator"] == {"type": "sni", "value": KSN}
    assert pipe.dissector.stats.tls_client_hellos == 2
    assert not pipe.dissector.stats.parse_errors


def test_retransmission_with_other_bytes_does_not_replace_first_copy(tmp_path: Path) -> None:
    """First copy wins: a later overlapping segment that disagrees changes nothing."""
    hello = synth.client_hello(KSN, seed=2)
    _, at = hello_body_offsets(hello)
    clock = Clock()
    conn = Tcp(clock, NetPath(CLIENT, SERVER), 50000)
    bogus = hello[at:at + 3].upper()[::-1] + b"xx"
    frames = conn.open() + [conn.client(hello[:at + 10], 0),
                            conn.client(bogus, at),
                            conn.client(hello[at + 10:], at + 10)] + conn.close()
    records, _ = run_pipeline(frames, tmp_path)
    assert [r["tls"]["sni"] for r in by_type(records, "tls")] == [KSN]


def test_sni_split_at_every_byte(tmp_path: Path) -> None:
    """One connection per split point: the hello cut in two at every byte position."""
    hello = synth.client_hello(KSN, seed=3)
    clock = Clock(step=10_000)
    frames: list[tuple[int, bytes]] = []
    for k in range(1, len(hello)):
        frames += tls_flow(clock, hello, cport=10000 + k, cuts=[k])
    records, pipe = run_pipeline(frames, tmp_path)
    found = {r["src_port"] - 10000: r["tls"].get("sni") for r in by_type(records, "tls")}
    missing = [k for k in range(1, len(hello)) if found.get(k) != KSN]
    assert not missing, f"SNI not found for split points {missing[:20]}"
    assert len(by_type(records, "tls")) == len(hello) - 1
    assert pipe.dissector.stats.tls_client_hellos == len(hello) - 1


@pytest.mark.parametrize("pieces", [3, 16, 64])
def test_hello_in_many_tiny_segments(pieces: int, tmp_path: Path) -> None:
    hello = synth.client_hello(KSN, groups=PQ_GROUPS, seed=4)
    step = -(-len(hello) // pieces)
    cuts = list(range(step, len(hello), step))
    records, _ = run_pipeline(tls_flow(Clock(), hello, cuts=cuts), tmp_path)
    assert [r["tls"]["sni"] for r in by_type(records, "tls")] == [KSN]


@pytest.mark.parametrize("closed", [True, False], ids=["fin", "end-of-capture"])
def test_hello_never_completes(closed: bool, tmp_path: Path) -> None:
    hello = synth.client_hello(KSN, groups=PQ_GROUPS, seed=5)
    clock = Clock()
    conn = Tcp(clock, NetPath(CLIENT, SERVER), 50000)
    frames = conn.open() + [conn.client(hello[:1400], 0)]
    if closed:
        frames += conn.close()
    records, pipe = run_pipeline(frames, tmp_path)
    assert by_type(records, "tls") == []
    [flow] = flows(records)
    assert flow["src_port"] == 50000 and flow["dest_ip"] == SERVER
    assert flow["flow"]["pkts_toserver"] == 3 + (2 if closed else 0)
    assert flow["flow"]["state"] == ("closed" if closed else "established")
    assert "avmon" not in flow
    assert not pipe.dissector.stats.parse_errors


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("cuts", [[24], [32, 400], [64, 128, 256, 512, 1024]],
                         ids=["after-header", "two", "five"])
@pytest.mark.parametrize("order", ["in-order", "later-reversed", "first-last", "reversed"])
def test_hello_in_ip_fragments(v6: bool, cuts: list[int], order: str,
                               tmp_path: Path) -> None:
    """A client that fragments its segments at the IP layer does not hide its hello,
    whatever order the fragments come in: the later ones (which carry no ports) are held
    until the first one names the flow."""
    frames = _fragmented_hello(v6, cuts, order)
    records, pipe = run_pipeline(frames, tmp_path)
    assert [r["tls"]["sni"] for r in by_type(records, "tls")] == [KSN]
    [flow] = flows(records)
    assert flow["avmon"]["vendor"] == "kaspersky"
    # every fragment is counted in the flow (all but the server's SYN-ACK and FIN)
    assert flow["flow"]["pkts_toserver"] == len(frames) - 2
    assert pipe.table.stats.fragments_unattributed == 0


def _fragmented_hello(v6: bool, cuts: list[int], order: str) -> list[tuple[int, bytes]]:
    """A TLS session whose ClientHello segment is cut into IP fragments at ``cuts``, sent
    in ``order``: in-order, later-reversed (the first, then the rest last first),
    first-last (the later ones in order, then the first) or reversed (last first)."""
    from tests.mutate import fragment_frame
    hello = synth.client_hello(KSN, groups=PQ_GROUPS, seed=18)
    clock = Clock()
    server = "2001:db8::7" if v6 else SERVER
    conn = Tcp(clock, NetPath("fd00:20::10" if v6 else CLIENT, server), 50000)
    frames: list[tuple[int, bytes]] = []
    for ts, frame in conn.open() + conn.pieces(hello, [1200]) + conn.close():
        pieces = fragment_frame(frame, cuts) if len(frame) > 200 else [frame]
        if order == "later-reversed":
            pieces = [pieces[0], *pieces[:0:-1]]
        elif order == "first-last":
            pieces = [*pieces[1:], pieces[0]]
        elif order == "reversed":
            pieces = pieces[::-1]
        frames += [(ts + k, piece) for k, piece in enumerate(pieces)]
    assert len(frames) > 8 + len(cuts)
    return frames


def test_evidence_pcap_holds_the_fragments_that_came_first(tmp_path: Path) -> None:
    """An alert's evidence pcap has every packet of its flow, the fragments held before
    the first one included (in the order they came), so the hello reassembles from it."""
    from monitor.config import load_config

    frames = _fragmented_hello(False, [64, 128, 256, 512, 1024], "reversed")
    path = tmp_path / "frags.pcap"
    with PcapWriter(path) as w:
        w.write_all(frames)
    evidence = tmp_path / "evidence"
    demo_config = Path(__file__).resolve().parent.parent / "monitor" / "data" / "demo.toml"
    records, _ = replay([path], tmp_path, signatures=sigs(), config=load_config(demo_config),
                        evidence_dir=evidence)
    assert by_type(records, "alert")  # a SECRET client to a Russia-based vendor
    [flow] = flows(records)
    [pcap] = evidence.glob("*.pcap")
    data = pcap.read_bytes()
    packets, pos = [], 24
    while pos < len(data):
        incl = struct.unpack_from("<I", data, pos + 8)[0]
        packets.append(data[pos + 16:pos + 16 + incl])
        pos += 16 + incl
    assert len(packets) == flow["flow"]["pkts_toserver"] + flow["flow"]["pkts_toclient"]
    assert sorted(packets) == sorted(frame for _, frame in frames)


@pytest.mark.parametrize("batch_packets", [1, 2, 3])
def test_fragments_held_across_batches(batch_packets: int, tmp_path: Path) -> None:
    """The first fragment comes last and in a later batch than the others: what was held
    from the earlier batches (their bytes copied) completes the hello."""
    frames = _fragmented_hello(False, [64, 128, 256, 512, 1024], "reversed")
    path = tmp_path / "frags.pcap"
    with PcapWriter(path) as w:
        w.write_all(frames)
    records = replay_batched(path, tmp_path, batch_packets)
    assert [r["tls"]["sni"] for r in by_type(records, "tls")] == [KSN]
    [flow] = flows(records)
    assert flow["flow"]["pkts_toserver"] == len(frames) - 2


def test_hello_missing_middle_segment_is_not_guessed(tmp_path: Path) -> None:
    hello = synth.client_hello(KSN, groups=PQ_GROUPS, seed=6)
    clock = Clock()
    conn = Tcp(clock, NetPath(CLIENT, SERVER), 50000)
    frames = conn.open() + [conn.client(hello[:500], 0), conn.client(hello[1000:], 1000)]
    frames += conn.close()
    records, _ = run_pipeline(frames, tmp_path)
    assert by_type(records, "tls") == []
    assert len(flows(records)) == 1


def test_whole_hello_retransmitted_after_it_was_found(tmp_path: Path) -> None:
    hello = synth.client_hello(KSN, groups=PQ_GROUPS, seed=19)
    clock = Clock()
    conn = Tcp(clock, NetPath(CLIENT, SERVER), 50000)
    frames = conn.open() + conn.pieces(hello, [1000]) + conn.pieces(hello, [700])
    frames += conn.pieces(hello, [1000], order=[1, 0]) + conn.close()
    records, pipe = run_pipeline(frames, tmp_path)
    assert [r["tls"]["sni"] for r in by_type(records, "tls")] == [KSN]
    assert pipe.dissector.stats.tls_client_hellos == 1


def test_hello_in_syn_fast_open(tmp_path: Path) -> None:
    """TCP Fast Open: the ClientHello rides in the SYN (RFC 7413)."""
    hello = synth.client_hello(KSN, seed=20)
    clock = Clock()
    conn = Tcp(clock, NetPath(CLIENT, SERVER), 50000)
    p = conn.path
    after = conn.client_seq(len(hello))
    frames = [clock(p.tcp(True, 50000, 443, conn.isn, 0, SYN, hello)),
              clock(p.tcp(False, 443, 50000, conn.sisn, after, SYN | ACK)),
              clock(p.tcp(True, 50000, 443, after, conn.sisn + 1, ACK))]
    conn.c_next = len(hello)
    records, _ = run_pipeline(frames + conn.close(), tmp_path)
    [tls] = by_type(records, "tls")
    assert tls["tls"]["sni"] == KSN and tls["avmon"]["vendor"] == "kaspersky"


def refragment(records: bytes, size: int) -> bytes:
    """The same handshake message re-cut into TLS records of ``size`` bytes."""
    hs = b""
    pos = 0
    while pos < len(records):
        n = int.from_bytes(records[pos + 3:pos + 5], "big")
        hs += records[pos + 5:pos + 5 + n]
        pos += 5 + n
    return b"".join(b"\x16\x03\x01" + struct.pack(">H", len(hs[i:i + size])) + hs[i:i + size]
                    for i in range(0, len(hs), size))


@pytest.mark.parametrize("record_size, groups", [
    (1, None), (2, PQ_GROUPS), (7, PQ_GROUPS), (100, PQ_GROUPS), (1000, PQ_GROUPS),
    (1, PQ_GROUPS),
])
def test_hello_in_many_records_and_segments(record_size: int, groups: str | None,
                                            tmp_path: Path) -> None:
    """The handshake message re-cut into tiny TLS records (RFC 8446 §5.1 lets a client
    fragment it freely), the records then cut into TCP segments."""
    hello = refragment(synth.client_hello(KSN, groups=groups, seed=21), record_size)
    cuts = list(range(333, len(hello), 333))
    records, pipe = run_pipeline(tls_flow(Clock(), hello, cuts=cuts), tmp_path)
    [tls] = by_type(records, "tls")
    assert tls["tls"]["sni"] == KSN
    assert not pipe.dissector.stats.parse_errors


# ----------------------------------------------------------------------- QUIC


def quic_flow(datagrams: Sequence[bytes], *, cport: int = 51000,
              clock: Clock | None = None) -> list[tuple[int, bytes]]:
    clock = clock or Clock()
    path = NetPath(CLIENT, SERVER)
    return [udp(clock, path, cport, 443, d) for d in datagrams]


def zero_rtt_packet(initial: bytes, version: int = synth.QUIC_V1, size: int = 300) -> bytes:
    """A 0-RTT long-header packet with the Initial's connection IDs and opaque payload."""
    dlen = initial[5]
    slen = initial[6 + dlen]
    cids = initial[5:7 + dlen + slen]
    ptype = 1 if version == synth.QUIC_V1 else 2  # RFC 9369 §3.2 renumbers the types
    body = random.Random(7).randbytes(size)
    length = struct.pack(">H", 0x4000 | len(body))
    return bytes([0xC0 | ptype << 4 | 0x01]) + struct.pack(">I", version) + cids + length + body


@pytest.mark.parametrize("version", [synth.QUIC_V1, synth.QUIC_V2], ids=["v1", "v2"])
@pytest.mark.parametrize("layout", ["single", "initial+0rtt", "initial+zeros", "split",
                                    "split-reversed", "split-coalesced", "retransmitted"])
def test_quic_initials(layout: str, version: int, tmp_path: Path) -> None:
    large = layout.startswith("split")
    datagrams = synth.quic_initial_datagrams(KSN, version=version, large=large)
    assert len(datagrams) == (2 if large else 1)
    if layout == "initial+0rtt":
        datagrams = [datagrams[0] + zero_rtt_packet(datagrams[0], version)]
    elif layout == "initial+zeros":
        datagrams = [datagrams[0] + bytes(200)]
    elif layout == "split-reversed":
        datagrams = datagrams[::-1]
    elif layout == "split-coalesced":
        datagrams = [datagrams[0] + datagrams[1]]
    elif layout == "retransmitted":
        datagrams = datagrams * 3
    records, pipe = run_pipeline(quic_flow(datagrams), tmp_path)
    quic = by_type(records, "quic")
    assert len(quic) == 1
    assert quic[0]["quic"]["sni"] == KSN
    assert quic[0]["quic"]["version"] == ("1" if version == synth.QUIC_V1 else "2")
    assert quic[0]["avmon"]["indicator"] == {"type": "quic", "value": KSN}
    assert quic[0]["avmon"]["vendor"] == "kaspersky"
    [flow] = flows(records)
    assert flow["app_proto"] == "quic" and flow["avmon"]["vendor"] == "kaspersky"
    assert not pipe.dissector.stats.parse_errors


def test_quic_split_hello_only_second_initial(tmp_path: Path) -> None:
    """Half a hello is no hello: nothing reported, nothing counted as an error."""
    datagrams = synth.quic_initial_datagrams(KSN, large=True)
    records, pipe = run_pipeline(quic_flow(datagrams[1:]), tmp_path)
    assert by_type(records, "quic") == []
    assert len(flows(records)) == 1
    assert not pipe.dissector.stats.parse_errors


def junk_initial(rng: random.Random) -> bytes:
    """A QUIC v1 Initial with a random DCID and a payload no key opens."""
    dcid, body = rng.randbytes(8), rng.randbytes(1100)
    return (bytes([0xC3]) + struct.pack(">I", synth.QUIC_V1) + bytes([8]) + dcid + b"\x00"
            + b"\x00" + struct.pack(">H", 0x4000 | len(body)) + body)


@pytest.mark.parametrize("junk", [1, 5], ids=["one", "five"])
def test_junk_initials_before_the_real_one_do_not_hide_it(junk: int, tmp_path: Path) -> None:
    """A server drops an Initial it cannot open and goes on: so must avmon, or a client
    could hide its name behind one undecryptable datagram on the same 5-tuple."""
    rng = random.Random(junk)
    real = synth.quic_initial_datagrams(KSN, large=True)
    fake = [junk_initial(rng) for _ in range(junk)]
    records, pipe = run_pipeline(quic_flow(fake + real), tmp_path)
    assert [r["quic"]["sni"] for r in by_type(records, "quic")] == [KSN]
    assert pipe.dissector.stats.parse_errors == {("quic", "decrypt"): junk}


def test_junk_initials_alone_stop_at_the_datagram_cap(tmp_path: Path) -> None:
    rng = random.Random(3)
    fake = [junk_initial(rng) for _ in range(40)]
    records, pipe = run_pipeline(quic_flow(fake), tmp_path)
    assert by_type(records, "quic") == []
    from monitor.dissect import MAX_QUIC_DATAGRAMS
    assert pipe.dissector.stats.parse_errors == {("quic", "decrypt"): MAX_QUIC_DATAGRAMS}
    assert pipe.dissector.stats.gave_up == 1


@pytest.mark.parametrize("extra", [0, 1])
def test_a_hello_in_more_segments_than_the_cap_is_given_up(extra: int, tmp_path: Path) -> None:
    """A ClientHello cut into exactly MAX_TCP_SEGMENTS segments is read, one more and the
    flow is given up (every segment in one batch: the loop does not see those past the
    cap, and the result is the same as if it had)."""
    from monitor.dissect import MAX_TCP_SEGMENTS

    hello = synth.client_hello(KSN, seed=4)
    n = MAX_TCP_SEGMENTS + extra
    cuts = [len(hello) * i // n for i in range(1, n)]
    frames = tls_flow(Clock(), hello, cuts=cuts) + tls_flow(Clock(), hello, cport=50001)
    records, pipe = run_pipeline(frames, tmp_path)
    names = sorted(f["src_port"] for f in by_type(records, "tls"))
    assert names == ([50000, 50001] if extra == 0 else [50001])
    assert pipe.dissector.stats.gave_up == extra


# ------------------------------------------------------------------------ ECH


def ech_outer_extension(seed: int = 8) -> bytes:
    """ECHClientHello of type outer (draft-ietf-tls-esni §5): HPKE suite, config id,
    enc (an X25519 share) and the encrypted inner hello."""
    rng = random.Random(seed)
    enc, payload = rng.randbytes(32), rng.randbytes(240)
    return (b"\x00" + struct.pack(">HHB", 0x0001, 0x0001, rng.randrange(256))
            + struct.pack(">H", len(enc)) + enc + struct.pack(">H", len(payload)) + payload)


def test_ech_outer_sni(tmp_path: Path) -> None:
    outer = "ksn-file-geo.kaspersky-labs.com"
    plain = synth.client_hello(outer, seed=9)
    hello = with_extension(plain, 0xFE0D, ech_outer_extension())
    assert len(hello) == len(plain) + 4 + len(ech_outer_extension())
    clock = Clock()
    frames = tls_flow(clock, hello, cport=50000) + tls_flow(clock, plain, cport=50001)
    records, pipe = run_pipeline(frames, tmp_path)
    tls = {r["src_port"]: r["tls"] for r in by_type(records, "tls")}
    assert tls[50000]["ech"] is True
    assert tls[50000]["sni"] == outer
    assert "ech" not in tls[50001]
    # the extension count in JA4 grew by one
    assert int(tls[50000]["ja4"][6:8]) == int(tls[50001]["ja4"][6:8]) + 1
    rec = next(r for r in by_type(records, "tls") if r["src_port"] == 50000)
    assert rec["avmon"]["indicator"] == {"type": "sni", "value": outer}
    assert rec["avmon"]["vendor"] == "kaspersky"
    assert not pipe.dissector.stats.parse_errors
    # an independent parser reads the edited hello the same way
    path = tmp_path / "edge.pcap"
    rows = tshark_lines(path, "tls.handshake.type==1 && tcp.srcport==50000",
                        "tls.handshake.extensions_server_name", "tls.handshake.extension.type")
    assert len(rows) == 1
    name, types = rows[0].split("\t")
    assert name == outer and "65037" in types.split(",")


# ------------------------------------------------------------------------ DNS


def dns_tcp_frames(clock: Clock, client: str, cport: int,
                   names: dict[str, str], split_at: int) -> list[tuple[int, bytes]]:
    """Pipelined queries for ``names`` (name -> address) in one segment; the answers in
    two segments cut ``split_at`` bytes into the first answer."""
    conn = Tcp(clock, NetPath(client, RESOLVER), cport, 53)
    queries = b"".join(synth.dns_tcp(synth.dns_query(n, qid=i + 1))
                       for i, n in enumerate(names))
    answers = b"".join(synth.dns_tcp(synth.dns_response(
        n, qid=i + 1, cnames=[f"edge-{i}.cdn.example"], addresses=[a]))
        for i, (n, a) in enumerate(names.items()))
    frames = conn.open() + [conn.client(queries, 0)]
    frames += [conn.server(answers[:split_at]), conn.server(answers[split_at:])]
    return frames + conn.close()


@pytest.mark.parametrize("split_at", [1, 2, 30, 60])
def test_dns_tcp_pipelined_and_split_names_later_flows(split_at: int, tmp_path: Path) -> None:
    names = {KSN: SERVER, "update.eset.com": SERVER2}
    clock = Clock()
    frames = dns_tcp_frames(clock, CLIENT, 40000, names, split_at)
    nosni = synth.client_hello(None, seed=10)
    frames += tls_flow(clock, nosni, cport=50000, server=SERVER)
    frames += tls_flow(clock, nosni, cport=50001, server=SERVER2)
    frames += tls_flow(clock, nosni, cport=50002, server=SERVER, client=OTHER_CLIENT)
    records, pipe = run_pipeline(frames, tmp_path)
    dns = by_type(records, "dns")
    assert sorted(r["dns"]["rrname"] for r in dns if r["dns"]["type"] == "query") == sorted(names)
    answers = {r["dns"]["rrname"]: r["dns"] for r in dns if r["dns"]["type"] == "answer"}
    assert set(answers) == set(names)
    for name, addr in names.items():
        assert answers[name]["answers"][-1]["rdata"] == addr
    assert not pipe.dissector.stats.parse_errors
    tls = {r["src_port"]: r for r in by_type(records, "tls")}
    assert "sni" not in tls[50000]["tls"]
    assert tls[50000]["avmon"]["indicator"] == {"type": "dns", "value": KSN}
    assert tls[50000]["avmon"]["vendor"] == "kaspersky"
    assert tls[50001]["avmon"]["indicator"] == {"type": "dns", "value": "update.eset.com"}
    assert tls[50001]["avmon"]["vendor"] == "eset"
    assert flow_of(records, tls[50000])["avmon"]["indicator"]["type"] == "dns"
    # another client never asked: the same address is not named for it
    assert "avmon" not in tls[50002]
    assert "avmon" not in flow_of(records, tls[50002])


def test_dns_answer_for_other_client_only(tmp_path: Path) -> None:
    """UDP answer to one client; a flow from a second client to that address stays
    unnamed, even when it starts after the answer and before the first client's flow."""
    clock = Clock()
    path = NetPath(CLIENT, RESOLVER)
    frames = [udp(clock, path, 40000, 53, synth.dns_query(KSN, qid=5)),
              udp(clock, path, 40000, 53, synth.dns_response(KSN, qid=5, addresses=[SERVER]),
                  from_client=False)]
    nosni = synth.client_hello(None, seed=11)
    frames += tls_flow(clock, nosni, client=OTHER_CLIENT, cport=50001)
    frames += tls_flow(clock, nosni, cport=50000)
    records, _ = run_pipeline(frames, tmp_path)
    tls = {r["src_ip"]: r for r in by_type(records, "tls")}
    assert tls[CLIENT]["avmon"]["indicator"] == {"type": "dns", "value": KSN}
    assert "avmon" not in tls[OTHER_CLIENT]


def test_repeated_dns_messages_keep_their_ids_and_name_each_client(tmp_path: Path) -> None:
    """Two clients ask the same question and get the same answer, byte for byte but for
    the ID: the second query and answer are taken from the first parse, yet each record
    has its own ID and each client's flow is named by its own answer."""
    clock = Clock()
    frames = []
    for client, qid, cport in ((CLIENT, 0x1111, 40000), (OTHER_CLIENT, 0x2222, 40001)):
        path = NetPath(client, RESOLVER)
        frames += [udp(clock, path, cport, 53, synth.dns_query(KSN, qid=qid)),
                   udp(clock, path, cport, 53,
                       synth.dns_response(KSN, qid=qid, addresses=[SERVER]),
                       from_client=False)]
    nosni = synth.client_hello(None, seed=14)
    frames += tls_flow(clock, nosni, client=CLIENT, cport=50000)
    frames += tls_flow(clock, nosni, client=OTHER_CLIENT, cport=50001)
    records, pipe = run_pipeline(frames, tmp_path)
    dns = by_type(records, "dns")
    assert [(r["src_ip"], r["dns"]["type"], r["dns"]["id"]) for r in dns] == [
        (CLIENT, "query", 0x1111), (CLIENT, "answer", 0x1111),
        (OTHER_CLIENT, "query", 0x2222), (OTHER_CLIENT, "answer", 0x2222)]
    first, second = dns[1]["dns"], dns[3]["dns"]
    assert {**first, "id": 0} == {**second, "id": 0}
    assert pipe.dissector.stats.dns_messages == 4
    assert pipe.dissector.stats.dns_memo_hits == 2
    tls = {r["src_ip"]: r for r in by_type(records, "tls")}
    for client in (CLIENT, OTHER_CLIENT):
        assert tls[client]["avmon"]["indicator"] == {"type": "dns", "value": KSN}


def test_dns_memo_is_bounded_and_keeps_no_bad_message(tmp_path: Path) -> None:
    """More distinct messages than the memo holds: the oldest make room. A malformed
    message is counted as an error every time it comes, never remembered."""
    from monitor import dissect

    clock = Clock()
    path = NetPath(CLIENT, RESOLVER)
    extra = 3
    names = [f"h{i}.example.com" for i in range(dissect.DNS_MEMO_ENTRIES + extra)]
    frames = [udp(clock, path, 40000, 53, synth.dns_query(name, qid=1)) for name in names]
    # The first names again: their entries were the first dropped, so they are parsed again.
    frames += [udp(clock, path, 40000, 53, synth.dns_query(name, qid=2))
               for name in names[:extra]]
    bad = synth.dns_query(KSN, qid=3)[:-3]  # the question cut short
    frames += [udp(clock, path, 40000, 53, bad), udp(clock, path, 40000, 53, bad)]
    # Over the size remembered: parsed every time.
    big = synth.dns_response(KSN, qid=4, addresses=[f"203.0.113.{i}" for i in range(1, 20)])
    assert len(big) > dissect.DNS_MEMO_MAX_BYTES
    frames += [udp(clock, path, 40000, 53, big, from_client=False)] * 2
    records, pipe = run_pipeline(frames, tmp_path)
    stats = pipe.dissector.stats
    assert len(pipe.dissector._dns_memo) == dissect.DNS_MEMO_ENTRIES
    assert stats.dns_memo_hits == 0
    assert stats.dns_messages == len(names) + extra + 2
    assert sum(n for (proto, _), n in stats.parse_errors.items() if proto == "dns") == 2
    assert len(by_type(records, "dns")) == len(names) + extra + 2


def test_dns_ttl_zero_still_names_flow_one_second_later(tmp_path: Path) -> None:
    clock = Clock()
    path = NetPath(CLIENT, RESOLVER)
    frames = [udp(clock, path, 40000, 53, synth.dns_query(KSN, qid=6)),
              udp(clock, path, 40000, 53,
                  synth.dns_response(KSN, qid=6, addresses=[SERVER], ttl=0),
                  from_client=False)]
    clock.now += 10**9
    frames += tls_flow(clock, synth.client_hello(None, seed=12), cport=50000)
    records, _ = run_pipeline(frames, tmp_path)
    answer = next(r for r in by_type(records, "dns") if r["dns"]["type"] == "answer")
    assert answer["dns"]["answers"][0]["ttl"] == 0
    [tls] = by_type(records, "tls")
    assert tls["avmon"]["indicator"] == {"type": "dns", "value": KSN}
    assert tls["avmon"]["vendor"] == "kaspersky"


def test_dns_answer_before_query_time_does_not_name_earlier_flow(tmp_path: Path) -> None:
    """A flow that started before the answer was seen is not named by it."""
    clock = Clock()
    frames = tls_flow(clock, synth.client_hello(None, seed=13), cport=50000)
    path = NetPath(CLIENT, RESOLVER)
    frames += [udp(clock, path, 40000, 53, synth.dns_query(KSN, qid=7)),
               udp(clock, path, 40000, 53, synth.dns_response(KSN, qid=7, addresses=[SERVER]),
                   from_client=False)]
    records, _ = run_pipeline(frames, tmp_path)
    [tls] = by_type(records, "tls")
    assert "avmon" not in tls


@pytest.mark.parametrize("kind", ["ipv4", "ipv6", "vlan"])
def test_names_over_ip_versions_and_vlans(kind: str, tmp_path: Path) -> None:
    """DNS (A or AAAA) naming a flow without SNI, TLS SNI and QUIC SNI, over IPv6 and
    802.1Q as over plain IPv4."""
    if kind == "ipv6":
        client, resolver = "fd00:20::10", "fd00:20::53"
        server, other = "2001:db8::7", "2001:db8::8"
    else:
        client, resolver, server, other = CLIENT, RESOLVER, SERVER, SERVER2
    vlan = 20 if kind == "vlan" else None
    clock = Clock()
    dpath = NetPath(client, resolver, vlan=vlan)
    qtype = "AAAA" if kind == "ipv6" else "A"
    frames = [udp(clock, dpath, 40000, 53, synth.dns_query(KSN, qtype, qid=3)),
              udp(clock, dpath, 40000, 53,
                  synth.dns_response(KSN, qtype, qid=3, addresses=[server]),
                  from_client=False)]
    conn = Tcp(clock, NetPath(client, server, vlan=vlan), 50000)
    frames += conn.open() + conn.pieces(synth.client_hello(None, seed=23), []) + conn.close()
    conn = Tcp(clock, NetPath(client, other, vlan=vlan), 50001)
    frames += conn.open() + conn.pieces(synth.client_hello("update.eset.com", seed=24), [100])
    qpath = NetPath(client, other, vlan=vlan)
    frames += [udp(clock, qpath, 51000, 443, d)
               for d in synth.quic_initial_datagrams("nimbus.bitdefender.net", large=True)]
    records, _ = run_pipeline(frames, tmp_path)
    tls = {r["src_port"]: r for r in by_type(records, "tls")}
    assert tls[50000]["dest_ip"] == server
    assert tls[50000]["avmon"]["indicator"] == {"type": "dns", "value": KSN}
    assert tls[50001]["avmon"]["indicator"] == {"type": "sni", "value": "update.eset.com"}
    assert tls[50001]["avmon"]["vendor"] == "eset"
    [quic] = by_type(records, "quic")
    assert quic["avmon"]["vendor"] == "bitdefender"
    if vlan:
        assert all(r["vlan"] == [20] for r in records)


def test_dns_answer_without_captured_query(tmp_path: Path) -> None:
    """The capture starts between query and answer: the answer still names the flow."""
    clock = Clock()
    path = NetPath(CLIENT, RESOLVER)
    frames = [udp(clock, path, 40000, 53, synth.dns_response(KSN, qid=4, addresses=[SERVER]),
                  from_client=False)]
    frames += tls_flow(clock, synth.client_hello(None, seed=25), cport=50000)
    records, _ = run_pipeline(frames, tmp_path)
    [dns] = by_type(records, "dns")
    assert dns["src_ip"] == CLIENT and dns["dest_port"] == 53
    [tls] = by_type(records, "tls")
    assert tls["avmon"]["indicator"] == {"type": "dns", "value": KSN}


def test_dns_several_addresses_and_vendor_only_on_cname(tmp_path: Path) -> None:
    """Every address of an answer names flows; a vendor name that appears only as a CNAME
    target still gives the vendor, while the indicator keeps the name asked for."""
    alias = "av-lookup.corp.example"
    clock = Clock()
    path = NetPath(CLIENT, RESOLVER)
    frames = [udp(clock, path, 40000, 53, synth.dns_query(alias, qid=5)),
              udp(clock, path, 40000, 53,
                  synth.dns_response(alias, qid=5, cnames=[KSN, "edge.cdn.example"],
                                     addresses=[SERVER, SERVER2]), from_client=False)]
    nosni = synth.client_hello(None, seed=26)
    frames += tls_flow(clock, nosni, cport=50000, server=SERVER)
    frames += tls_flow(clock, nosni, cport=50001, server=SERVER2)
    records, _ = run_pipeline(frames, tmp_path)
    tls = by_type(records, "tls")
    assert len(tls) == 2
    for rec in tls:
        assert rec["avmon"]["indicator"] == {"type": "dns", "value": alias}
        assert rec["avmon"]["vendor"] == "kaspersky"


@pytest.mark.parametrize("order", ["in-order", "later-reversed", "reversed"])
def test_fragmented_dns_answer_names_flow(order: str, tmp_path: Path) -> None:
    """An answer too big for one packet (60 A records) arrives in IP fragments, in any
    order: the first one, which carries the ports, may come last."""
    from scapy.all import IP, UDP, Ether, fragment

    addresses = [f"198.51.100.{i}" for i in range(1, 60)] + [SERVER]
    answer = synth.dns_response(KSN, qid=6, addresses=addresses)
    assert len(answer) > 1000
    clock = Clock()
    path = NetPath(CLIENT, RESOLVER)
    frames = [udp(clock, path, 40000, 53, synth.dns_query(KSN, qid=6))]
    pkt = IP(src=RESOLVER, dst=CLIENT, id=777) / UDP(sport=53, dport=40000) / answer
    frags = [bytes(Ether(src="00:00:5e:00:01:fe", dst="02:00:00:00:00:01") / f)
             for f in fragment(pkt, fragsize=400)]
    assert len(frags) >= 3
    ordered = {"in-order": frags, "later-reversed": [frags[0], *frags[:0:-1]],
               "reversed": frags[::-1]}[order]
    frames += [clock(f) for f in ordered]
    frames += tls_flow(clock, synth.client_hello(None, seed=27), cport=50000)
    records, _ = run_pipeline(frames, tmp_path)
    answers = [r for r in by_type(records, "dns") if r["dns"]["type"] == "answer"]
    assert len(answers) == 1 and len(answers[0]["dns"]["answers"]) == 60
    [tls] = by_type(records, "tls")
    assert tls["avmon"]["indicator"] == {"type": "dns", "value": KSN}


def test_dns_answer_expires_after_its_ttl(tmp_path: Path) -> None:
    """TTL 300: a flow 200 s later is named, one 400 s later is not."""
    clock = Clock()
    path = NetPath(CLIENT, RESOLVER)
    frames = [udp(clock, path, 40000, 53, synth.dns_query(KSN, qid=6)),
              udp(clock, path, 40000, 53,
                  synth.dns_response(KSN, qid=6, addresses=[SERVER], ttl=300),
                  from_client=False)]
    nosni = synth.client_hello(None, seed=28)
    clock.now += 200 * 10**9
    frames += tls_flow(clock, nosni, cport=50000)
    clock.now += 200 * 10**9
    frames += tls_flow(clock, nosni, cport=50001)
    records, _ = run_pipeline(frames, tmp_path)
    tls = {r["src_port"]: r for r in by_type(records, "tls")}
    assert tls[50000]["avmon"]["indicator"] == {"type": "dns", "value": KSN}
    assert "avmon" not in tls[50001]


def test_flow_without_any_payload_named_by_dns(tmp_path: Path) -> None:
    """A flow that never sends a hello (only a handshake, or bytes that are no protocol
    avmon reads) still gets the name its client resolved."""
    clock = Clock()
    path = NetPath(CLIENT, RESOLVER)
    frames = [udp(clock, path, 40000, 53, synth.dns_query(KSN, qid=7)),
              udp(clock, path, 40000, 53, synth.dns_response(KSN, qid=7, addresses=[SERVER]),
                  from_client=False)]
    conn = Tcp(clock, NetPath(CLIENT, SERVER), 50000)
    frames += conn.open() + conn.close()
    conn = Tcp(clock, NetPath(CLIENT, SERVER), 50001)
    frames += conn.open() + [conn.client(b"\x00\x01binary protocol", 0)] + conn.close()
    frames.append(udp(clock, NetPath(CLIENT, SERVER), 51000, 8443, b"\x01\x02\x03 udp"))
    records, _ = run_pipeline(frames, tmp_path)
    named = [f for f in flows(records) if f["dest_ip"] == SERVER]
    assert len(named) == 3
    for f in named:
        assert f["avmon"]["indicator"] == {"type": "dns", "value": KSN}, f
        assert f["avmon"]["vendor"] == "kaspersky"


MIXED = "Ksn-File-GEO.Kaspersky-Labs.COM."


def test_mixed_case_dns_name_normalised(tmp_path: Path) -> None:
    clock = Clock()
    path = NetPath(CLIENT, RESOLVER)
    frames = [udp(clock, path, 40000, 53, synth.dns_query(MIXED, qid=8)),
              udp(clock, path, 40000, 53,
                  synth.dns_response(MIXED, qid=8, cnames=["Edge.CDN.Example."],
                                     addresses=[SERVER]), from_client=False)]
    frames += tls_flow(clock, synth.client_hello(None, seed=14), cport=50000)
    path_bytes = b"".join(f for _, f in frames)
    assert b"Kaspersky-Labs" in path_bytes  # the case really is on the wire
    records, _ = run_pipeline(frames, tmp_path)
    dns = by_type(records, "dns")
    assert {r["dns"]["rrname"] for r in dns} == {KSN}
    answer = next(r for r in dns if r["dns"]["type"] == "answer")
    assert [a["rrname"] for a in answer["dns"]["answers"]] == [KSN, "edge.cdn.example"]
    [tls] = by_type(records, "tls")
    assert tls["avmon"]["indicator"] == {"type": "dns", "value": KSN}
    assert tls["avmon"]["vendor"] == "kaspersky"


@pytest.mark.parametrize("sni", [MIXED, MIXED.lower(), MIXED.rstrip("."), "s07.upd.kaspersky.com."])
def test_sni_case_and_trailing_dot(sni: str, tmp_path: Path) -> None:
    hello = synth.client_hello(sni, seed=15)
    assert sni.encode() in hello
    records, _ = run_pipeline(tls_flow(Clock(), hello), tmp_path)
    [tls] = by_type(records, "tls")
    want = sni.lower().rstrip(".")
    assert tls["tls"]["sni"] == want
    assert tls["avmon"]["indicator"] == {"type": "sni", "value": want}
    assert tls["avmon"]["vendor"] == "kaspersky"


def test_http_host_case_and_trailing_dot(tmp_path: Path) -> None:
    clock = Clock()
    conn = Tcp(clock, NetPath(CLIENT, SERVER), 50000, 80)
    req = b"GET /v4/upd.xml HTTP/1.1\r\nHost: Update.DrWeb.COM.:80\r\nUser-Agent: x\r\n\r\n"
    frames = conn.open() + [conn.client(req, 0), conn.server(b"HTTP/1.1 200 OK\r\n\r\n")]
    records, _ = run_pipeline(frames + conn.close(), tmp_path)
    [http] = by_type(records, "http")
    assert http["http"]["hostname"] == "update.drweb.com"
    flow = flow_of(records, http)
    assert flow["avmon"]["indicator"] == {"type": "http", "value": "update.drweb.com"}
    assert flow["avmon"]["vendor"] == "drweb"


IDN_U = "ksn.касперский.рф"
IDN_A = "ksn.xn--80akjebc7ajgd.xn--p1ai"


@cache
def idn_sigs() -> SignatureSet:
    """A signature set with a vendor whose pattern is written with U-labels."""
    from tests.test_signatures import names_block, write_vendor
    folder = Path(tempfile.mkdtemp(prefix="avmon-idn-"))
    write_vendor(folder, "idnvendor", names_block(("*.касперский.рф", "lookup")))
    return load_signature_set(folder)


@pytest.mark.parametrize("wire", [IDN_U, IDN_A, IDN_U.upper(), IDN_A.upper() + "."],
                         ids=["utf8", "a-label", "utf8-upper", "a-label-upper-dot"])
def test_idn_sni_in_either_form_matches_a_u_label_pattern(wire: str, tmp_path: Path) -> None:
    raw = wire.encode()
    # OpenSSL only sends ASCII names: make a hello with a placeholder of the same length,
    # then put the raw name in its place (lengths unchanged).
    placeholder = "ksn." + "a" * (len(raw) - 4)
    hello = synth.client_hello(placeholder, seed=16)
    assert hello.count(placeholder.encode()) == 1
    hello = hello.replace(placeholder.encode(), raw)
    path = tmp_path / "idn.pcap"
    with PcapWriter(path) as w:
        w.write_all(tls_flow(Clock(), hello))
    records, pipe = replay([path], tmp_path, signatures=idn_sigs())
    [tls] = by_type(records, "tls")
    assert tls["tls"]["sni"] == IDN_A
    assert tls["avmon"]["indicator"] == {"type": "sni", "value": IDN_A}
    assert tls["avmon"]["vendor"] == "idnvendor"
    assert not pipe.dissector.stats.parse_errors


def test_idn_http_host_in_utf8_matches(tmp_path: Path) -> None:
    clock = Clock()
    conn = Tcp(clock, NetPath(CLIENT, SERVER), 50000, 80)
    req = b"GET / HTTP/1.1\r\nHost: " + IDN_U.upper().encode() + b"\r\n\r\n"
    frames = conn.open() + [conn.client(req, 0)] + conn.close()
    path = tmp_path / "idn-http.pcap"
    with PcapWriter(path) as w:
        w.write_all(frames)
    records, _ = replay([path], tmp_path, signatures=idn_sigs())
    [http] = by_type(records, "http")
    assert http["http"]["hostname"] == IDN_A
    assert flow_of(records, http)["avmon"]["vendor"] == "idnvendor"


def test_sni_that_is_not_a_name_in_any_form_is_a_parse_error(tmp_path: Path) -> None:
    placeholder = "ksn." + "a" * 12
    hello = synth.client_hello(placeholder, seed=17)
    bad = b"ksn.\xff\xfe" + b"a" * 10  # not UTF-8
    records, pipe = run_pipeline(tls_flow(Clock(), hello.replace(placeholder.encode(), bad)),
                                 tmp_path)
    assert by_type(records, "tls") == []
    assert pipe.dissector.stats.parse_errors == {("tls", "bad_value"): 1}


# ----------------------------------------------------------------- CONNECT


@pytest.mark.parametrize("same_segment", [False, True], ids=["answered", "pipelined"])
def test_connect_then_tunnelled_hello(same_segment: bool, tmp_path: Path) -> None:
    host = "ds.kaspersky.com"
    head = synth.http_connect_request(host, 443, user_agent="curl/8.5.0")
    hello = synth.client_hello(host, groups=PQ_GROUPS, seed=16)
    clock = Clock()
    conn = Tcp(clock, NetPath(CLIENT, PROXY), 50000, 3128)
    frames = conn.open()
    if same_segment:
        frames += [conn.client(head + hello[:600], 0),
                   conn.client(hello[600:], len(head) + 600),
                   conn.server(synth.HTTP_CONNECT_OK)]
    else:
        frames += [conn.client(head, 0), conn.server(synth.HTTP_CONNECT_OK)]
        frames += [conn.client(hello[:1000], len(head)),
                   conn.client(hello[1000:], len(head) + 1000)]
    frames += conn.close()
    records, pipe = run_pipeline(frames, tmp_path)
    [http] = by_type(records, "http")
    assert http["http"]["http_method"] == "CONNECT"
    assert http["http"]["hostname"] == host and http["http"]["http_port"] == 443
    [tls] = by_type(records, "tls")
    assert tls["tls"]["sni"] == host and tls["flow_id"] == http["flow_id"]
    flow = flow_of(records, tls)
    assert flow["avmon"]["indicator"] == {"type": "connect", "value": host}
    assert flow["avmon"]["vendor"] == "kaspersky"
    assert flow["dest_ip"] == PROXY
    assert not pipe.dissector.stats.parse_errors


def test_connect_to_other_host_with_av_sni(tmp_path: Path) -> None:
    """The CONNECT target names the flow; an AV SNI inside a tunnel to a non-AV name still
    gives the vendor (the most direct indicator that matches decides)."""
    head = synth.http_connect_request("cdn.example.net", 443)
    hello = synth.client_hello(KSN, seed=17)
    clock = Clock()
    conn = Tcp(clock, NetPath(CLIENT, PROXY), 50000, 3128)
    frames = conn.open() + [conn.client(head, 0), conn.server(synth.HTTP_CONNECT_OK),
                            conn.client(hello, len(head))] + conn.close()
    records, _ = run_pipeline(frames, tmp_path)
    [tls] = by_type(records, "tls")
    assert tls["tls"]["sni"] == KSN
    assert flow_of(records, tls)["avmon"]["vendor"] == "kaspersky"


def test_connect_head_and_hello_split_at_every_byte(tmp_path: Path) -> None:
    """CONNECT head plus tunnelled hello sent as one stream, cut in two at every byte of
    the head and the first bytes of the hello."""
    host = "ds.kaspersky.com"
    head = synth.http_connect_request(host, 443)
    hello = synth.client_hello(host, seed=22)
    stream = head + hello
    clock = Clock(step=10_000)
    frames: list[tuple[int, bytes]] = []
    points = set(range(1, len(head) + 12))
    for k in sorted(points):
        conn = Tcp(clock, NetPath(CLIENT, PROXY), 10000 + k, 3128)
        frames += conn.open() + conn.pieces(stream, [k]) + conn.close()
    records, pipe = run_pipeline(frames, tmp_path)
    connects = {r["src_port"] - 10000 for r in by_type(records, "http")
                if r["http"].get("hostname") == host}
    snis = {r["src_port"] - 10000 for r in by_type(records, "tls")
            if r["tls"].get("sni") == host}
    named = {f["src_port"] - 10000 for f in flows(records)
             if f.get("avmon", {}).get("indicator") == {"type": "connect", "value": host}}
    assert sorted(points - connects) == []
    assert sorted(points - snis) == []
    assert sorted(points - named) == []
    assert not pipe.dissector.stats.parse_errors


def test_forward_proxy_absolute_form(tmp_path: Path) -> None:
    """A plain-HTTP request to an explicit proxy names the target, not the proxy."""
    clock = Clock()
    conn = Tcp(clock, NetPath(CLIENT, PROXY), 50000, 3128)
    req = (b"GET http://update.drweb.com/x/drweb32.lst HTTP/1.1\r\nHost: update.drweb.com\r\n"
           b"Proxy-Connection: Keep-Alive\r\n\r\n")
    frames = conn.open() + conn.pieces(req, [20]) + conn.close()
    records, _ = run_pipeline(frames, tmp_path)
    [http] = by_type(records, "http")
    assert http["http"]["hostname"] == "update.drweb.com"
    assert http["http"]["http_method"] == "GET"
    flow = flow_of(records, http)
    assert flow["avmon"]["indicator"] == {"type": "http", "value": "update.drweb.com"}
    assert flow["avmon"]["vendor"] == "drweb"


# -------------------------------------------------------------- malformed units


def test_malformed_units_counted_not_raised(tmp_path: Path) -> None:
    rng = random.Random(18)
    clock = Clock()
    frames: list[tuple[int, bytes]] = []
    # TLS: a handshake record header, then bytes that are no handshake message
    frames += tls_flow(clock, b"\x16\x03\x01\x00\x40" + bytes([0xAB]) + rng.randbytes(63),
                       cport=50000)
    # TLS: a client_hello header whose body overruns itself
    frames += tls_flow(clock, b"\x16\x03\x01\x00\x40\x01\x00\x00\x3c" + b"\xff" * 60,
                       cport=50001)
    # DNS: an answer cut after 20 bytes
    dpath = NetPath(CLIENT, RESOLVER)
    full = synth.dns_response(KSN, qid=9, addresses=[SERVER])
    frames += [udp(clock, dpath, 40000, 53, synth.dns_query(KSN, qid=9)),
               udp(clock, dpath, 40000, 53, full[:20], from_client=False)]
    # QUIC: long-header and fixed bits, version 1, a well-formed Initial header and
    # random protected bytes (cannot decrypt)
    qpath = NetPath(CLIENT, SERVER)
    v1_junk = (b"\xc3\x00\x00\x00\x01\x08" + rng.randbytes(8) + b"\x00\x00\x44\xb1"
               + rng.randbytes(1201))
    frames.append(udp(clock, qpath, 51000, 443, v1_junk))
    # QUIC: version 1, then random bytes; the first says the DCID has 238 bytes
    v1_random = bytes([0xC0 | rng.randrange(64)]) + b"\x00\x00\x00\x01\xee" + rng.randbytes(1194)
    frames.append(udp(clock, qpath, 51002, 443, v1_random))
    # QUIC: the same with a random (unknown) version: not QUIC, so not a QUIC error
    junk = bytes([0xC0 | rng.randrange(64)]) + b"\xfa\xce\xb0\x0c" + rng.randbytes(1195)
    frames.append(udp(clock, qpath, 51001, 443, junk))
    records, pipe = run_pipeline(frames, tmp_path)
    errors = pipe.dissector.stats.parse_errors
    assert errors == {("tls", "bad_value"): 1, ("tls", "truncated"): 1,
                      ("dns", "truncated"): 1, ("quic", "decrypt"): 1,
                      ("quic", "bad_value"): 1}, errors
    assert by_type(records, "tls") == [] and by_type(records, "quic") == []
    assert len(flows(records)) == 6
    assert all("avmon" not in f for f in flows(records))
    assert [r["dns"]["type"] for r in by_type(records, "dns")] == ["query"]


# --------------------------------------------------------------- batch independence


def mixed_capture() -> list[tuple[int, bytes]]:
    """Most of the cases above in one capture."""
    clock = Clock()
    frames = dns_tcp_frames(clock, CLIENT, 40000, {KSN: SERVER, "update.eset.com": SERVER2},
                            40)
    nosni = synth.client_hello(None, seed=40)
    frames += tls_flow(clock, nosni, cport=50000, server=SERVER)
    frames += tls_flow(clock, nosni, cport=50001, server=SERVER2, cuts=[3])
    frames += tls_flow(clock, nosni, cport=50002, server=SERVER, client=OTHER_CLIENT)
    hello = synth.client_hello("s07.upd.kaspersky.com", groups=PQ_GROUPS, seed=41)
    conn = Tcp(clock, NetPath(CLIENT, "198.51.100.9"), 50003)
    frames += conn.open() + conn.pieces(hello, [500, 1000], order=[2, 1, 0]) + conn.close()
    head = synth.http_connect_request("ds.kaspersky.com")
    conn = Tcp(clock, NetPath(CLIENT, PROXY), 50004, 3128)
    frames += conn.open() + [conn.client(head, 0), conn.server(synth.HTTP_CONNECT_OK)]
    frames += conn.pieces(head + synth.client_hello("ds.kaspersky.com", seed=42),
                          [len(head), len(head) + 100])[1:]
    frames += conn.close()
    qpath = NetPath(CLIENT, "198.51.100.10")
    frames += [udp(clock, qpath, 51000, 443, d) for d in
               synth.quic_initial_datagrams("nimbus.bitdefender.net", version=synth.QUIC_V2,
                                            large=True)[::-1]]
    return frames


def replay_batched(path: Path, tmp: Path, batch_packets: int) -> list[dict[str, Any]]:
    import json

    from monitor.capture.files import CaptureReader
    from monitor.eve import EveWriter
    from monitor.pipeline import Pipeline

    eve_path = tmp / f"eve-{batch_packets}.json"
    eve = EveWriter(str(eve_path))
    pipe = Pipeline(eve=eve, signatures=sigs())
    for batch in CaptureReader([str(path)], batch_packets=batch_packets):
        pipe.process(batch)
    pipe.finish()
    eve.close()
    return [json.loads(line) for line in eve_path.read_text().splitlines()]


def test_names_do_not_depend_on_batching(tmp_path: Path) -> None:
    """Every packet in its own batch gives the same records as one batch for all."""
    path = tmp_path / "mixed.pcap"
    with PcapWriter(path) as w:
        w.write_all(mixed_capture())
    whole = replay_batched(path, tmp_path, 1 << 16)
    single = replay_batched(path, tmp_path, 1)
    assert len(by_type(whole, "tls")) == 5 and len(by_type(whole, "quic")) == 1
    named = [f for f in flows(whole) if "avmon" in f]
    assert len(named) == 5  # all but the other client's flow and the DNS flow
    assert sorted(map(repr, single)) == sorted(map(repr, whole))


# ------------------------------------------------------------- random payloads

STANDARD = ("timestamp", "flow_id", "event_type", "src_ip", "src_port", "dest_ip",
            "dest_port", "proto", "community_id")
PREFIXES = [b"", b"\x16\x03\x01", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"\xc3\x00\x00\x00\x01\x08", b"\xd3\x6b\x33\x43\xcf\x08", b"CONNECT ",
            b"GET / HTTP/1.1\r\nHost: ", b"\x00\x00\x81\x80\x00\x01\x00\x01"]


def fuzz_frames(tcp_payload: bytes, udp443: bytes, udp53: bytes,
                tcp53: bytes) -> list[tuple[int, bytes]]:
    clock = Clock()
    conn = Tcp(clock, NetPath(CLIENT, SERVER), 50000)
    frames = conn.open()
    if tcp_payload:
        mid = len(tcp_payload) // 2
        frames += [conn.client(tcp_payload[mid:], mid), conn.client(tcp_payload[:mid], 0)]
    frames += conn.close()
    qpath = NetPath(CLIENT, SERVER2)
    dpath = NetPath(CLIENT, RESOLVER)
    if udp443:
        frames += [udp(clock, qpath, 51000, 443, udp443), udp(clock, qpath, 51000, 443, udp443)]
    if udp53:
        frames += [udp(clock, dpath, 40000, 53, udp53),
                   udp(clock, dpath, 40000, 53, udp53, from_client=False)]
    dconn = Tcp(clock, dpath, 40001, 53)
    frames += dconn.open()
    if tcp53:
        frames += [dconn.client(tcp53, 0), dconn.server(tcp53)]
    return frames + dconn.close()


@cache
def seeds(kind: str) -> tuple[bytes, ...]:
    """Well-formed units to mutate, per slot of the fuzz capture."""
    if kind == "tcp":
        return (synth.client_hello(KSN, seed=30),
                synth.client_hello(KSN, groups=PQ_GROUPS, seed=31),
                synth.http_connect_request("ds.kaspersky.com") + synth.client_hello(KSN, seed=32),
                b"GET /x HTTP/1.1\r\nHost: update.drweb.com\r\nUser-Agent: a\r\n\r\n")
    if kind == "udp443":
        return tuple(synth.quic_initial_datagrams(KSN, large=True))
    if kind == "udp53":
        return (synth.dns_query(KSN, qid=1, edns=True),
                synth.dns_response(KSN, qid=1, cnames=["a.example", "b.example"],
                                   addresses=[SERVER, "2001:db8::1"]))
    return (synth.dns_tcp(synth.dns_query(KSN, qid=2))
            + synth.dns_tcp(synth.dns_response(KSN, qid=2, addresses=[SERVER])),)


def mutated(kind: str) -> st.SearchStrategy[bytes]:
    """A seed with a few bytes replaced and possibly cut short."""
    def apply(args: tuple[int, list[tuple[int, int]], int]) -> bytes:
        index, edits, cut = args
        data = bytearray(seeds(kind)[index % len(seeds(kind))])
        for pos, value in edits:
            data[pos % len(data)] = value
        return bytes(data[:len(data) - cut % 64] if cut % 3 == 0 else data)
    return st.tuples(st.integers(0, 7), st.lists(st.tuples(st.integers(0, 4000),
                                                           st.integers(0, 255)), max_size=6),
                     st.integers(0, 200)).map(apply)


random_payloads = st.tuples(st.sampled_from(PREFIXES), st.binary(max_size=3000)).map(
    lambda t: t[0] + t[1])
payloads = {kind: st.one_of(random_payloads, mutated(kind))
            for kind in ("tcp", "udp443", "udp53")}
tcp53_payloads = st.one_of(st.binary(max_size=600).map(lambda b: struct.pack(">H", len(b)) + b),
                           mutated("tcp53"))


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(tcp_payload=payloads["tcp"], udp443=payloads["udp443"], udp53=payloads["udp53"],
       tcp53=tcp53_payloads)
def test_random_payloads_never_break_replay(tcp_payload: bytes, udp443: bytes, udp53: bytes,
                                            tcp53: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        records, pipe = run_pipeline(fuzz_frames(tcp_payload, udp443, udp53, tcp53), Path(tmp))
    assert len(flows(records)) == 2 + bool(udp443) + bool(udp53)
    for rec in records:
        for key in STANDARD:
            assert key in rec, (key, rec)
        assert rec["proto"] in ("TCP", "UDP")
        assert isinstance(rec["flow_id"], int)
    for key, count in pipe.dissector.stats.parse_errors.items():
        assert key[0] in ("tls", "quic", "dns", "http") and count > 0
