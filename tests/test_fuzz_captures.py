"""Mutation fuzzing of the capture readers and the whole pipeline, bounded for CI.

The real captures of tests/data/corpus/ (and the demo capture) are damaged by the mutators
of tests/mutate.py and replayed through the real reader and pipeline: bit flips in record
headers and packet bytes; truncation at every length field of the first records and at
arbitrary offsets; hostile values in length fields; records reordered, duplicated and
dropped; spliced bytes; foreign link types, timestamps and interface options; damaged
payloads, IP/TCP/UDP header fields and IP fragmentation inside intact records; gzip, whole
and damaged. The parsers get random and mutated units too.

Invariants: nothing but CaptureError escapes, and that only for a file that is not a
capture; damage part-way ends the file with one warning line naming the file and the
offset, after every packet before it; every EVE line is JSON; memory stays bounded. Where
the damage is known exactly (a cut, a length beyond the file, re-ordered intact records)
the packets read and the offset reported are checked too. bench/fuzz runs the same
mutators for as long as asked; docs/fuzzing.md describes both.
"""

from __future__ import annotations

import random
import resource
import struct
import subprocess
import sys
import tempfile
import traceback
import tracemalloc
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from monitor.capture.pcap import MAX_RECORD_BYTES, MAX_TSOFFSET_S, capture_format
from tests import mutate
from tests.mutate import Outcome, expected_after_cut, replay_capture

ROOT = Path(__file__).resolve().parent.parent
SEEDS = dict(mutate.seed_captures())
NAMES = sorted(SEEDS)
PCAP_NAMES = [n for n in NAMES if capture_format(SEEDS[n][:4]) == "pcap"]
PCAPNG_NAMES = [n for n in NAMES if capture_format(SEEDS[n][:4]) == "pcapng"]
ETHERNET_NAMES = [n for n in PCAP_NAMES if mutate.ethernet_frames(SEEDS[n])]
#: Small captures of each format (pcap; pcapng with two interfaces): the exhaustive tests
#: replay each hundreds of times.
SMALL = ["zeek_dns53.pcap", "zeek_pcapng-multi-interface.pcapng"]

#: Longest one replay may take: a hang fails the example instead of stalling CI.
TIMEOUT_S = 60.0
#: The whole module may raise the process's peak RSS by at most this much. Every seed is
#: under 600 kB and the reader reads in 8 MiB chunks, so growth beyond this would mean a
#: declared length was believed (or state leaks across replays).
RSS_GROWTH_LIMIT_MIB = 384
#: Peak Python/numpy allocation while one mutant of a small seed is replayed: the seed, an
#: 8 MiB read chunk and the pipeline's working set.
TRACED_PEAK_LIMIT_MIB = 48


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


#: Peak RSS when this module's first test started (other modules may have raised it).
RSS_AT_START = [_maxrss_mib()]


@pytest.fixture(scope="module", autouse=True)
def _rss_baseline() -> None:
    RSS_AT_START[0] = _maxrss_mib()


FUZZ = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


#: Crashes already found, reported and pinned by a strict xfail test below, while their fix
#: is pending: (exception type, file, function) of the innermost frame in monitor/ -> that
#: test. The property tests reject such examples instead of failing at random until the
#: fix lands; remove the entry together with the test's xfail mark (docs/fuzzing.md).
KNOWN_BUGS: dict[tuple[str, str, str], str] = {}


def _known_bug(exc: BaseException) -> str | None:
    ours = [f for f in traceback.extract_tb(exc.__traceback__) if "/monitor/" in f.filename]
    if not ours:
        return None
    f = ours[-1]
    where = f.filename[f.filename.rindex("/monitor/") + 1 :]
    return KNOWN_BUGS.get((type(exc).__name__, where, f.name))


def run(data: bytes, name: str = "mutant", *, known_bugs: bool = False) -> Outcome:
    """Write ``data`` to a fresh directory and replay it, checking the invariants.

    An example that hits a crash of :data:`KNOWN_BUGS` is rejected (``known_bugs``: let
    it escape, for the tests that pin those bugs)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / (name + mutate.suffix_for(data))
        path.write_bytes(data)
        try:
            outcome = replay_capture(path, Path(tmp), timeout=TIMEOUT_S, data=data)
        except Exception as exc:
            if known_bugs or _known_bug(exc) is None:
                raise
            reject()
        for w in outcome.warnings:
            assert w.startswith(f"{path}: ")
    grown = _maxrss_mib() - RSS_AT_START[0]
    assert grown < RSS_GROWTH_LIMIT_MIB, f"peak RSS grew by {grown:.0f} MiB"
    return outcome


@cache
def packets_in(name: str) -> int:
    lay = mutate.layout(SEEDS[name])
    assert lay is not None
    return len(lay.packets)


def damage_at(outcome: Outcome) -> int | None:
    assert len(outcome.damaged) <= 1, outcome.damaged
    return outcome.damaged[0][0] if outcome.damaged else None


def maybe_gzip(data: bytes, gz: bool) -> bytes:
    return mutate.gzip_bytes(data) if gz else data


# ------------------------------------------------------------------------------ seeds


@pytest.mark.parametrize("name", NAMES)
def test_seeds_are_intact(name: str) -> None:
    """The oracles below assume intact seeds: every record framed, no warning."""
    data = SEEDS[name]
    lay = mutate.layout(data)
    assert lay is not None and lay.end == len(data)
    assert mutate.reorder(data, range(mutate.movable_records(data))) == data
    if lay.format == "pcap":
        variant = mutate.reencode_pcap(data, endian=">", nanoseconds=True)
        assert mutate.reencode_pcap(variant, endian="<", nanoseconds=False) == data
    outcome = run(data)
    assert outcome.packets == len(lay.packets) and not outcome.warnings


# -------------------------------------------------------------------------- truncation


def _cuts(data: bytes, records: int) -> list[int]:
    """Each length field of the first records: cut before it, inside it and after it;
    and one byte either side of each of those records' ends."""
    cuts = set()
    for f in mutate.length_fields(data, max_records=records):
        cuts |= {f.offset, f.offset + 2, f.offset + 4}
    lay = mutate.layout(data)
    assert lay is not None
    for rec in lay.records[:records]:
        cuts |= {rec.end - 1, rec.end, rec.end + 1}
    return sorted(c for c in cuts if 4 <= c <= len(data))


@pytest.mark.parametrize("name", NAMES)
def test_cut_at_every_length_field_of_the_first_records(name: str) -> None:
    data = SEEDS[name]
    for cut in _cuts(data, records=3):
        outcome = run(mutate.truncate(data, cut))
        expected = expected_after_cut(data, cut)
        assert (outcome.packets, damage_at(outcome)) == expected, (cut, outcome.warnings)


@FUZZ
@given(name=st.sampled_from(NAMES), where=st.floats(0, 1), gz=st.booleans())
def test_cut_anywhere(name: str, where: float, gz: bool) -> None:
    data = SEEDS[name]
    cut = 4 + int(where * (len(data) - 4))
    outcome = run(maybe_gzip(mutate.truncate(data, cut), gz))
    assert (outcome.packets, damage_at(outcome)) == expected_after_cut(data, cut)
    if outcome.damaged:
        assert gz == outcome.damaged[0][1].endswith("(offset in the decompressed data)")


@pytest.mark.parametrize("cut", [0, 1, 2, 3])
def test_cut_before_the_magic(cut: int) -> None:
    """Under four bytes is not a capture (an empty file is skipped with a warning)."""
    outcome = run(SEEDS["zeek_dns53.pcap"][:cut])
    if cut == 0:
        assert outcome.not_a_capture is None and outcome.packets == 0
        assert len(outcome.warnings) == 1 and "empty file" in outcome.warnings[0]
    else:
        assert outcome.not_a_capture is not None
        assert f"only {cut} bytes long" in outcome.not_a_capture


@FUZZ
@given(name=st.sampled_from(NAMES), where=st.floats(0, 1))
def test_cut_gzip_stream(name: str, where: float) -> None:
    """A gzip stream cut short: the packets that decompress are read, then one damage."""
    gz = mutate.gzip_bytes(SEEDS[name])
    cut = int(where * len(gz))
    outcome = run(gz[:cut])
    if cut == len(gz):
        assert outcome.packets == packets_in(name) and not outcome.warnings
    elif cut == 0:
        assert outcome.packets == 0 and "empty file" in outcome.warnings[0]
    elif cut == 1:
        assert outcome.not_a_capture is not None
    else:
        lay = mutate.layout(mutate.gunzip_prefix(gz[:cut]))
        assert outcome.packets <= (len(lay.packets) if lay else 0)
        assert len(outcome.damaged) == 1, outcome.warnings


# ------------------------------------------------------------------------------ bit flips


@FUZZ
@given(name=st.sampled_from(NAMES),
       flips=st.lists(st.tuples(st.booleans(), st.integers(0, 1 << 24), st.integers(0, 7)),
                      min_size=1, max_size=6),
       gz=st.booleans())
def test_bit_flips(name: str, flips: list[tuple[bool, int, int]], gz: bool) -> None:
    """Flips in the file and record headers of the first records (framing) or anywhere
    (packet bytes: link, IP, transport and payload headers)."""
    data = SEEDS[name]
    spots = mutate.header_offsets(data, max_records=4)
    bits = [(spots[i % len(spots)] if in_header else i % len(data)) * 8 + bit
            for in_header, i, bit in flips]
    mutant = mutate.flip_bits(data, bits)
    outcome = run(maybe_gzip(mutant, gz))
    if outcome.not_a_capture is None:
        assert outcome.packets <= len(mutant) // 16


@FUZZ
@given(name=st.sampled_from(NAMES), bits=st.lists(st.integers(0, 1 << 30), min_size=1,
                                                  max_size=3))
def test_bit_flips_in_gzip_stream(name: str, bits: list[int]) -> None:
    """Flips in the compressed bytes: a bad CRC, a bad deflate block or a bad header."""
    run(mutate.flip_bits(mutate.gzip_bytes(SEEDS[name]), bits))


# ------------------------------------------------------------------ hostile length values


def _beyond(data: bytes, f: mutate.Field, value: int) -> bool:
    """Whether ``value`` in ``f`` makes its record impossible at once: it declares more
    bytes than the file holds, more than MAX_RECORD_BYTES, or (pcapng) a block length
    under 12 or not a multiple of 4 or disagreeing with the other copy."""
    rec = f.record
    if rec is None:
        return False
    left = len(data) - rec.start
    if f.name == "pcap.incl_len":
        return value > MAX_RECORD_BYTES or 16 + value > left
    if f.name == "pcapng.block_len":
        return value < 12 or value % 4 != 0 or value > MAX_RECORD_BYTES or value > left
    return f.name == "pcapng.block_trailer"


def _check_hostile(data: bytes, f: mutate.Field, value: int, outcome: Outcome) -> None:
    if _beyond(data, f, value):
        assert f.record is not None
        lay = mutate.layout(data)
        assert lay is not None
        before = sum(1 for r in lay.packets if r.end <= f.record.start)
        assert (outcome.packets, damage_at(outcome)) == (before, f.record.start), \
            outcome.warnings
    elif f.name in ("pcap.orig_len", "pcap.snaplen", "pcapng.epb_origlen",
                    "pcapng.spb_origlen", "pcapng.idb_snaplen"):
        # Not framing: every packet is still read (orig_len < incl_len included).
        assert outcome.packets == len(mutate.layout(data).packets)  # type: ignore[union-attr]
        assert not outcome.damaged


@pytest.mark.parametrize("name", SMALL)
def test_every_hostile_value_in_every_length_field(name: str) -> None:
    data = SEEDS[name]
    for f in mutate.length_fields(data, max_records=4):
        for value in mutate.hostile_values(f, len(data)):
            outcome = run(mutate.set_u32(data, f, value))
            _check_hostile(data, f, value, outcome)


@FUZZ
@given(name=st.sampled_from(NAMES), which=st.integers(0, 1000), pick=st.integers(0, 1000),
       records=st.sampled_from([2, 8, 64]), gz=st.booleans())
def test_hostile_length_value(name: str, which: int, pick: int, records: int,
                              gz: bool) -> None:
    data = SEEDS[name]
    fs = mutate.length_fields(data, max_records=records)
    f = fs[which % len(fs)]
    values = mutate.hostile_values(f, len(data))
    value = values[pick % len(values)]
    outcome = run(maybe_gzip(mutate.set_u32(data, f, value), gz))
    _check_hostile(data, f, value, outcome)


# ------------------------------------------------------------ reordered and duplicated


@FUZZ
@given(data=st.data(), name=st.sampled_from(PCAP_NAMES), big=st.booleans(),
       nsec=st.booleans(), gz=st.booleans())
def test_reordered_duplicated_dropped_pcap_records(data: st.DataObject, name: str, big: bool,
                                                  nsec: bool, gz: bool) -> None:
    """Intact records in any order, repeated or missing: all of them read, no warning (flow
    state, TCP reassembly and DNS naming must cope with time going backwards)."""
    seed = mutate.reencode_pcap(SEEDS[name], endian=">" if big else "<", nanoseconds=nsec)
    n = mutate.movable_records(seed)
    order = data.draw(st.one_of(st.permutations(range(n)),
                                st.lists(st.integers(0, n - 1), max_size=2 * n + 4)))
    outcome = run(maybe_gzip(mutate.reorder(seed, order), gz))
    assert outcome.packets == len(order) and not outcome.warnings


@FUZZ
@given(data=st.data(), name=st.sampled_from(PCAPNG_NAMES), idbs_first=st.booleans())
def test_reordered_duplicated_dropped_pcapng_blocks(data: st.DataObject, name: str,
                                                    idbs_first: bool) -> None:
    """Blocks after the section header in any order. With the interface descriptions kept
    first, every packet block is read; a packet block before the IDB it refers to is
    damage, at that block."""
    seed = SEEDS[name]
    lay = mutate.layout(seed)
    assert lay is not None
    movable = lay.records[1:]
    idbs = [i for i, r in enumerate(movable) if r.kind == mutate.BLOCK_IDB]
    rest = [i for i, r in enumerate(movable) if r.kind not in (mutate.BLOCK_IDB,
                                                                mutate.BLOCK_SHB)]
    pool = rest if idbs_first else list(range(len(movable)))
    order = data.draw(st.one_of(st.permutations(pool),
                                st.lists(st.sampled_from(pool), max_size=2 * len(pool) + 4)))
    if idbs_first:
        order = idbs + order
    outcome = run(mutate.reorder(seed, order))
    pos, interfaces, packets, damage = lay.records[0].end, 0, 0, None
    for i in order:
        rec = movable[i]
        if rec.kind == mutate.BLOCK_IDB:
            interfaces += 1
        elif rec.is_packet:
            iface = 0 if rec.kind == 3 else struct.unpack_from(
                rec.endian + ("H" if rec.kind == 2 else "I"), seed, rec.start + 8)[0]
            if iface >= interfaces:
                damage = pos
                break
            packets += 1
        pos += rec.end - rec.start
    assert (outcome.packets, damage_at(outcome)) == (packets, damage), outcome.warnings
    if idbs_first:
        assert damage is None


# ------------------------------------------------------------------ other mutations


@FUZZ
@given(name=st.sampled_from(NAMES), where=st.floats(0, 1), delete=st.integers(0, 40),
       insert=st.binary(max_size=40), gz=st.booleans())
def test_inserted_and_deleted_bytes(name: str, where: float, delete: int, insert: bytes,
                                    gz: bool) -> None:
    data = SEEDS[name]
    run(maybe_gzip(mutate.splice(data, int(where * len(data)), delete, insert), gz))


@FUZZ
@given(first=st.sampled_from(NAMES), second=st.sampled_from(NAMES), where=st.floats(0, 1))
def test_captures_spliced_together(first: str, second: str, where: float) -> None:
    """A second capture (file header and all) appended or inserted mid-record."""
    data = SEEDS[first]
    run(mutate.splice(data, int(where * len(data)), 0, SEEDS[second]))


@FUZZ
@given(name=st.sampled_from(NAMES), linktype=st.one_of(st.sampled_from(mutate.LINKTYPES),
                                                       st.integers(0, 0xFFFF)))
def test_foreign_link_types(name: str, linktype: int) -> None:
    """Every packet decoded as another link layer: framing is intact, so all are read."""
    outcome = run(mutate.set_linktype(SEEDS[name], linktype))
    assert outcome.packets == packets_in(name) and not outcome.warnings


@FUZZ
@given(name=st.sampled_from(NAMES), which=st.integers(0, 1000),
       value=st.sampled_from([0, 1, 999_999, 1_000_000, 10**9, 0x7FFF_FFFF, 0x8000_0000,
                              0xFFFF_FFFF]))
def test_hostile_timestamps_and_interface_ids(name: str, which: int, value: int) -> None:
    data = SEEDS[name]
    fs = [f for f in mutate.fields(data, max_records=64) if not f.is_length]
    f = fs[which % len(fs)]
    outcome = run(mutate.set_u32(data, f, value))
    if f.name != "pcapng.epb_interface":
        assert outcome.packets == packets_in(name) and not outcome.warnings


@FUZZ
@given(name=st.sampled_from(PCAPNG_NAMES),
       tsresol=st.one_of(st.none(), st.integers(0, 255)),
       tsoffset=st.one_of(st.none(), st.sampled_from([0, 1, -1, MAX_TSOFFSET_S,
                                                      -MAX_TSOFFSET_S, MAX_TSOFFSET_S + 1,
                                                      (1 << 63) - 1, -(1 << 63)]),
                          st.integers(-(1 << 63), (1 << 63) - 1)))
def test_hostile_interface_options(name: str, tsresol: int | None,
                                   tsoffset: int | None) -> None:
    """if_tsresol and if_tsoffset at and beyond their limits: a resolution finer than
    2^64 units per second, or an offset over 2^32 s, is damage at the IDB; anything else
    reads every packet, whatever time it gives them."""
    data = mutate.with_interface_options(SEEDS[name], tsresol, tsoffset)
    outcome = run(data)
    units = None if tsresol is None else \
        (1 << (tsresol & 0x7F) if tsresol & 0x80 else 10**tsresol)
    bad = (units is not None and units >= 1 << 64) or \
        (tsoffset is not None and abs(tsoffset) > MAX_TSOFFSET_S)
    if bad:
        lay = mutate.layout(data)
        assert lay is not None
        idb = next(r for r in lay.records if r.kind == mutate.BLOCK_IDB)
        assert (outcome.packets, damage_at(outcome)) == (0, idb.start), outcome.warnings
    else:
        assert outcome.packets == packets_in(name) and not outcome.warnings


@FUZZ
@given(mutator=st.sampled_from(["payload", "ip_fields", "fragment"]),
       name=st.sampled_from(ETHERNET_NAMES), seed=st.integers(0, 2**32))
def test_packet_level_mutations(mutator: str, name: str, seed: int) -> None:
    """Damage inside intact records: L4 payloads (mutated units, or units of another
    protocol, in real flows), IP/TCP/UDP header fields (lengths, fragment offset and
    flags, protocol, data offset, ports), packets split into IP fragments that are
    shuffled, duplicated, dropped or overlapped. The framing is intact: all are read."""
    mutant = mutate.CAPTURE_MUTATORS[mutator](random.Random(seed), SEEDS[name])
    outcome = run(mutant)
    lay = mutate.layout(mutant)
    assert lay is not None
    assert outcome.packets == len(lay.packets) and not outcome.warnings


# ------------------------------------------------- the long run's mutators, briefly


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutator=st.sampled_from(sorted(mutate.CAPTURE_MUTATORS)), seed=st.integers(0, 2**32))
def test_long_run_capture_mutators(mutator: str, seed: int) -> None:
    """bench/fuzz's random mutators (stacked ones too), a few examples each."""
    rng = random.Random(seed)
    name, data = rng.choice(mutate.seed_captures())
    run(mutate.CAPTURE_MUTATORS[mutator](rng, mutate.random_variant(rng, data)))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(target=st.sampled_from(sorted(mutate.PARSER_TARGETS)), seed=st.integers(0, 2**32))
def test_long_run_parser_targets(target: str, seed: int) -> None:
    """Random and mutated units into the dns, tls, quic and http parsers (QUIC also sealed
    with the right keys): only ParseError may escape, which the calls catch themselves."""
    data, call = mutate.PARSER_TARGETS[target](random.Random(seed))
    call()
    mutate.PARSER_REPLAY[target](data)


# ------------------------------------------------------------- found by fuzzing


def _pcap(frames: list[bytes]) -> bytes:
    """A little-endian Ethernet pcap of ``frames``, one second apart."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i, frame in enumerate(frames):
        out.append(struct.pack("<IIII", 1_700_000_000 + i, 0, len(frame), len(frame)) + frame)
    return b"".join(out)


_ETH4 = bytes.fromhex("020000000002020000000001") + b"\x08\x00"
_ETH6 = bytes.fromhex("020000000002020000000001") + b"\x86\xdd"


def _ipv4(payload: bytes, *, ident: int, frag_offset: int = 0, proto: int = 17) -> bytes:
    """IPv4 10.0.0.1 -> 10.0.0.2; ``frag_offset`` in 8-byte units (MF clear)."""
    return struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag_offset, 64,
                       proto, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])) + payload


def _ipv6_later_fragment() -> bytes:
    """IPv6 2001:db8::1 -> 2001:db8::2, a fragment header at offset 8 (UDP, MF clear)."""
    frag = struct.pack(">BBHI", 17, 0, 1 << 3, 0x1234) + b"z" * 16
    return struct.pack(">IHBB", 0x6000_0000, len(frag), 44, 64) \
        + bytes.fromhex("20010db8" + "0" * 23 + "1") + bytes.fromhex("20010db8" + "0" * 23 + "2") \
        + frag


_UDP53 = struct.pack(">HHHH", 1234, 53, 16, 0) + b"x" * 8
_TEREDO = struct.pack(">HHHH", 3544, 3544, 8 + len(_ipv6_later_fragment()), 0) \
    + _ipv6_later_fragment()

#: found by fuzzing (an early bench/fuzz run: a bit-flipped, re-encoded Teredo capture
#: whose only packet had become a later IPv4 fragment). A layer of a batch whose
#: decodable packets were all non-first IP fragments without their first fragment made
#: FlowTable.update (monitor/flow/table.py) call ts.max() on an empty array: ValueError
#: ("zero-size array to reduction operation maximum which has no identity") out of
#: Pipeline.process. A tunnelled stray fragment triggered it whatever else the batch held.
STRAY_FRAGMENTS = {
    "ipv4-later-fragment-alone": [_ETH4 + _ipv4(b"y" * 16, ident=1, frag_offset=1)],
    "ipv4-two-later-fragments": [_ETH4 + _ipv4(b"y" * 16, ident=1, frag_offset=0x2001),
                                 _ETH4 + _ipv4(b"y" * 16, ident=1, frag_offset=3)],
    "ipv6-later-fragment-alone": [_ETH6 + _ipv6_later_fragment()],
    "teredo-later-fragment-after-normal-packet": [_ETH4 + _ipv4(_UDP53, ident=2),
                                                  _ETH4 + _ipv4(_TEREDO, ident=3)],
}


# found by fuzzing
@pytest.mark.parametrize("case", sorted(STRAY_FRAGMENTS))
def test_stray_later_fragments(case: str) -> None:
    frames = STRAY_FRAGMENTS[case]
    outcome = run(_pcap(frames), known_bugs=True)
    assert outcome.packets == len(frames) and not outcome.warnings


# ----------------------------------------------------------------------------- memory


@pytest.mark.parametrize("value", [MAX_RECORD_BYTES - 16, MAX_RECORD_BYTES, 0x7FFF_FFF0])
def test_hostile_length_allocates_no_more_than_the_file(value: int) -> None:
    """A record that declares (up to) 256 MiB in a 515-byte file: the reader must not
    allocate what the header declares, only what it reads."""
    data = SEEDS["zeek_dns53.pcap"]
    f = next(f for f in mutate.length_fields(data) if f.name == "pcap.incl_len")
    for gz in (False, True):
        mutant = maybe_gzip(mutate.set_u32(data, f, value), gz)
        run(mutant)  # warm caches (signatures, geo, numpy) outside the measurement
        tracemalloc.start()
        try:
            run(mutant)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < TRACED_PEAK_LIMIT_MIB << 20, f"traced peak {peak >> 20} MiB"


# --------------------------------------------------------------------------------- CLI


def _cli_mutants() -> dict[str, tuple[bytes, int]]:
    """name -> (bytes, expected exit code): 0 when something was read (damage part-way
    included), 1 when nothing could be (not a capture, or damaged before the first
    packet), as the README's "Damaged captures" says."""
    kakao = SEEDS["ndpi_KakaoTalk_chat.pcap"]
    ng = SEEDS["ndpi_tls_2_reasms.pcapng"]
    incl = [f for f in mutate.length_fields(kakao, 8) if f.name == "pcap.incl_len"]
    block = [f for f in mutate.length_fields(ng, 8) if f.name == "pcapng.block_len"]
    return {
        "cut-mid-record": (kakao[:40000], 0),
        "huge-incl-len": (mutate.set_u32(kakao, incl[3], 0xFFFF_FFF0), 0),
        "incl-len-first-record": (mutate.set_u32(kakao, incl[0], MAX_RECORD_BYTES + 1), 1),
        "block-len-not-multiple-of-4": (mutate.set_u32(ng, block[4], block[4].value + 2), 0),
        "gzip-cut": (mutate.gzip_bytes(kakao)[:30000], 0),
        "not-a-capture": (b"hello, this is text\n", 1),
        "duplicated-records": (mutate.reorder(kakao, [0, 0, 1, 1, 2, 5, 4, 3]), 0),
    }


@dataclass(frozen=True)
class CliRun:
    path: Path
    eve: Path
    returncode: int
    stderr: str


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CliRun]:
    """``avmon replay MUTANT --eve EVE`` for every case, started all at once (each run is
    mostly interpreter start-up)."""
    tmp = tmp_path_factory.mktemp("cli")
    procs = {}
    for case, (data, _expected) in _cli_mutants().items():
        path = tmp / (case + mutate.suffix_for(data))
        path.write_bytes(data)
        eve = tmp / f"{case}.eve.json"
        procs[case] = (path, eve, subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "replay", str(path), "--eve", str(eve)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    runs = {}
    for case, (path, eve, proc) in procs.items():
        _out, err = proc.communicate(timeout=120)
        runs[case] = CliRun(path, eve, proc.returncode, err)
    return runs


@pytest.mark.parametrize("case", sorted(_cli_mutants()))
def test_cli_on_mutants(case: str, cli_runs: dict[str, CliRun]) -> None:
    """``avmon replay`` on damaged files: exit 0 or 1 (never 2, which is bad usage), never
    a traceback; each warning is one line naming the file."""
    _data, expected = _cli_mutants()[case]
    run_ = cli_runs[case]
    path = run_.path
    assert "Traceback" not in run_.stderr, run_.stderr
    assert run_.returncode == expected, run_.stderr
    lines = run_.stderr.splitlines()
    warnings = [line for line in lines if line.startswith("avmon: warning:")]
    assert all(w.startswith(f"avmon: warning: {path}: ") for w in warnings), warnings
    if case in ("not-a-capture", "duplicated-records"):
        assert not warnings
    else:
        assert len(warnings) == 1 and "damaged capture at offset" in warnings[0]
        assert any(line.startswith(f"  damaged: {path} at offset") for line in lines)
    if case == "not-a-capture":
        assert lines == [f"avmon: {path}: not a pcap or pcapng capture (starts with 0x68656c6c)"]
    if expected == 1 and case != "not-a-capture":
        assert lines[-1] == "avmon: error: no packets could be read"
    if run_.eve.exists():
        mutate.check_eve(run_.eve)
