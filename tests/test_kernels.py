"""The compiled kernels (monitor/_kernels.pyx) against their pure-Python references.

A kernel takes what it knows and returns None for everything else, which the reference
then decides: so on any input a kernel gives either nothing or exactly the reference's
result, and never a result where the reference raises. Checked on the units of every
corpus capture and the demo, and on hypothesis' mutations of them; the corpus units must
also be taken by the kernels (otherwise they would speed nothing up).
"""

from __future__ import annotations

import hashlib
import os
import random
import struct
import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import monitor.parsers.dns as dnsp
import monitor.parsers.quic as quicp
import monitor.parsers.tls as tlsp
from monitor import kernels
from monitor.capture import pcap
from monitor.errors import BadValue, ParseError
from monitor.iptext import ip_text
from monitor.wire import Reader
from tests.helpers import CORPUS, DATA, replay
from tests.test_dns_fast import messages
from tests.test_tls import python_client_hello, rich_hello, single_record_message

ROOT = Path(__file__).resolve().parent.parent
native = kernels.native
needs_native = pytest.mark.skipif(native is None and os.environ.get("CI") != "true",
                                  reason="the compiled kernels are not built here")


def test_kernels_are_built_where_ci_runs() -> None:
    """CI installs with a C compiler: a build that silently fell back would hide here."""
    if os.environ.get("CI") != "true":
        pytest.skip("checked where CI=true")
    assert native is not None and kernels.native_decode is not None \
        and kernels.native_flows is not None, kernels.status()


@pytest.mark.parametrize("name", ["_kernels", "_decode", "_flows"])
def test_kernels_are_built_from_this_source(name: str) -> None:
    """A stale build (the .pyx edited, the package not reinstalled) is caught here."""
    module = {"_kernels": native, "_decode": kernels.native_decode,
              "_flows": kernels.native_flows}[name]
    if module is None:
        if os.environ.get("CI") == "true":
            pytest.fail(kernels.status())
        pytest.skip("the compiled kernels are not built here")
    source = (ROOT / "monitor" / f"{name}.pyx").read_bytes()
    assert module.SOURCE_SHA256 == hashlib.sha256(source).hexdigest(), \
        f"monitor/{name}.pyx changed since the build: run pip install -e ."


def test_pure_python_switch() -> None:
    code = "from monitor import kernels; print(kernels.native is None, kernels.status())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "AVMON_PURE_PYTHON": "1"}, check=True).stdout
    assert out.startswith("True pure Python (AVMON_PURE_PYTHON is set)")


# --- units from real traffic ----------------------------------------------------------


class Units(NamedTuple):
    """What the pipeline parses, recorded at the parsers' entry points."""

    hellos: tuple[bytes, ...]
    dns: tuple[bytes, ...]
    #: Client-to-server UDP payloads fed to the QUIC Initial assembler.
    datagrams: tuple[bytes, ...]
    #: Decrypted Initial payloads whose frames were parsed.
    payloads: tuple[bytes, ...]


@cache
def corpus_units(tmp_root: str) -> Units:
    """Every ClientHello message, DNS message, QUIC datagram and decrypted Initial payload
    the pipeline parses in the corpus captures and the demo."""
    hellos: list[bytes] = []
    dns_wires: list[bytes] = []
    datagrams: list[bytes] = []
    payloads: list[bytes] = []
    parse_hello, parse_dns = tlsp.parse_client_hello, dnsp.parse_dns_message
    feed, parse_frames = quicp.QuicInitialAssembler.feed, quicp.parse_frames

    def hello(data: Any) -> Any:
        hellos.append(bytes(data))
        return parse_hello(data)

    def dns_message(data: Any, **kwargs: Any) -> Any:
        dns_wires.append(bytes(data))
        return parse_dns(data, **kwargs)

    def datagram(self: quicp.QuicInitialAssembler, data: Any) -> Any:
        datagrams.append(bytes(data))
        return feed(self, data)

    def frames(data: Any) -> Any:
        payloads.append(bytes(data))
        return parse_frames(data)

    captures = sorted(p for p in CORPUS.iterdir() if p.suffix in (".pcap", ".pcapng"))
    captures.append(ROOT / "monitor" / "data" / "demo.pcap")
    tlsp.parse_client_hello, dnsp.parse_dns_message = hello, dns_message  # type: ignore[assignment]
    quicp.QuicInitialAssembler.feed, quicp.parse_frames = datagram, frames  # type: ignore[method-assign]
    try:
        for path in captures:
            replay([path], Path(tmp_root))
    finally:
        tlsp.parse_client_hello, dnsp.parse_dns_message = parse_hello, parse_dns  # type: ignore[assignment]
        quicp.QuicInitialAssembler.feed, quicp.parse_frames = feed, parse_frames  # type: ignore[method-assign]
    return Units(*(tuple(dict.fromkeys(found))
                   for found in (hellos, dns_wires, datagrams, payloads)))


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory) -> Units:
    return corpus_units(str(tmp_path_factory.mktemp("units")))


def _outcome(fn: Callable[[bytes], object], data: bytes) -> object:
    try:
        return fn(data)
    except ParseError as exc:
        return type(exc)


def _mutated(seed: bytes, at: int, how: str, value: int, length_bytes: int) -> bytes:
    """``seed`` with one mutation at ``at``: a bit flipped (``value`` picks it), cut there,
    the byte set to ``value`` or ``value`` inserted, or the ``length_bytes`` bytes there
    read as a length and set to a nearby value."""
    data = bytearray(seed)
    if how == "flip":
        data[at] ^= 1 << (value % 8)
    elif how == "cut":
        del data[at:]
    elif how == "byte":
        data[at] = value
    elif how == "insert":
        data[at:at] = bytes([value])
    else:
        old = int.from_bytes(data[at:at + length_bytes], "big")
        near = (old + value - 128) & ((1 << 8 * length_bytes) - 1)
        data[at:at + length_bytes] = near.to_bytes(length_bytes, "big")[:len(data) - at]
    return bytes(data)


# --- TLS ClientHello ------------------------------------------------------------------


def _check_hello(data: bytes) -> object:
    """The kernel gives the reference's hello or declines; returns its answer."""
    assert native is not None
    want = _outcome(tlsp._parse_client_hello_py, data)
    got = native.client_hello(data, tlsp.ClientHello)
    if got is not None:
        assert got == want, data.hex()
    return got


HELLO_SEEDS = [
    rich_hello(),
    single_record_message(python_client_hello("Some.Host.example", ["h2", "http/1.1"])),
    single_record_message(python_client_hello(None)),
    *(single_record_message(p.read_bytes()) for p in sorted((DATA / "tls").glob("*.bin"))
      if p.read_bytes()[:1] == b"\x16"
      and int.from_bytes(p.read_bytes()[3:5], "big") == len(p.read_bytes()) - 5),
]


@needs_native
def test_kernel_takes_every_real_hello(units: Units) -> None:
    hellos = [*units.hellos, *HELLO_SEEDS]
    assert len(hellos) > 20
    for data in hellos:
        assert _check_hello(data) is not None, data.hex()


@needs_native
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10**6), st.sampled_from(["flip", "cut", "byte", "insert", "length"]),
       st.integers(0, 255))
def test_kernel_hello_on_mutations(seed: int, how: str, value: int) -> None:
    data = HELLO_SEEDS[seed % len(HELLO_SEEDS)]
    _check_hello(_mutated(data, seed % len(data), how, value, 2))


@needs_native
def test_kernel_hello_declines_what_it_does_not_know() -> None:
    """An internationalised name (the reference converts it) and every error."""
    assert native is not None
    from tests.test_tls import client_hello, sni_ext

    idn = client_hello(extensions=[sni_ext("bücher.example".encode())])
    assert native.client_hello(idn, tlsp.ClientHello) is None
    assert tlsp.parse_client_hello(idn).sni == "xn--bcher-kva.example"
    for cut in range(len(HELLO_SEEDS[0])):
        assert _check_hello(HELLO_SEEDS[0][:cut]) is None


# --- DNS messages ---------------------------------------------------------------------


def _kernel_dns(wire: bytes, strict: bool = False) -> Any:
    assert native is not None
    return native.dns_message(wire, strict, dnsp.DnsMessage, dnsp.DnsQuestion,
                              dnsp.DnsAnswer, dnsp._type_name, ip_text,
                              dnsp.MAX_QUESTIONS, dnsp.MAX_ANSWERS, dnsp.MAX_RECORDS)


def _check_dns(wire: bytes) -> object:
    got = None
    for strict in (False, True):
        got = _kernel_dns(wire, strict)
        if got is not None:
            assert got == dnsp._fast_message(wire, strict), wire.hex()
    return got


@needs_native
def test_kernel_takes_real_dns_messages(units: Units) -> None:
    wires = [*units.dns, *(p.read_bytes() for p in sorted((DATA / "dns").glob("*.bin")))]
    fast = [w for w in wires if len(w) >= 12 and dnsp._fast_message(w, False) is not None]
    assert len(fast) > 50
    taken = [w for w in fast if _check_dns(w) is not None]
    # The kernel leaves names with escaped characters to the Python fast path.
    assert len(taken) >= 0.9 * len(fast)


@needs_native
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(), st.integers(0, 10_000), st.integers(0, 7))
def test_kernel_dns_on_generated_and_mutated(wire: bytes, where: int, bit: int) -> None:
    _check_dns(wire)
    flipped = bytearray(wire)
    flipped[where % len(wire)] ^= 1 << bit
    _check_dns(bytes(flipped))
    _check_dns(wire[: where % (len(wire) + 1)])


# --- QUIC Initial packets -------------------------------------------------------------


def _kernel_headers(data: bytes) -> list[quicp.LongHeader] | None:
    assert native is not None
    return native.quic_long_headers(data, quicp._TYPES, quicp.LongHeader,
                                    quicp.PacketType.INITIAL, quicp.PacketType.RETRY,
                                    quicp.MAX_COALESCED_PACKETS, quicp.MAX_CID_LEN)


def _check_headers(data: bytes) -> object:
    """The header kernel gives the reference walk's headers, or declines; it declines
    wherever the reference raises or stops at an error after a good header."""
    out: list[quicp.LongHeader] = []
    errors: list[ParseError] = []
    try:
        quicp._walk(Reader(data), out, errors)
        want: object = ("stopped at", type(errors[0])) if errors else out
    except ParseError as exc:
        want = type(exc)
    got = _kernel_headers(data)
    if got is not None:
        assert got == want, data.hex()
    return got


def _kernel_frames(payload: bytes) -> tuple[quicp.Frame, ...] | None:
    assert native is not None
    return native.quic_frames(payload, quicp.PaddingFrame, quicp.PingFrame, quicp.AckFrame,
                              quicp.CryptoFrame, quicp.ConnectionCloseFrame,
                              quicp.MAX_FRAMES_PER_PACKET, quicp.MAX_ACK_RANGES)


def _check_frames(payload: bytes) -> object:
    want = _outcome(quicp._parse_frames_py, payload)
    got = _kernel_frames(payload)
    if got is not None:
        assert got == want, payload.hex()
    return got


def _quic_seeds() -> tuple[list[bytes], list[bytes]]:
    """Client Initial datagrams of every supported version (the RFCs' examples, a
    Chromium capture, packets built here: coalesced with 0-RTT and Handshake packets,
    with a token, with a short header after them) and their decrypted payloads."""
    from tests.test_quic import (
        QDATA,
        RFC_DCID,
        RFC_PAYLOAD,
        RFC_V1_PACKET,
        RFC_V2_PACKET,
        crypto,
        long_packet,
        protect,
    )

    hello = crypto(0, bytes([1, 0, 0, 4]) + b"abcd")
    ack = bytes.fromhex("02" "05" "00" "01" "01" "00" "01"  # ACK with one range
                        "03" "09" "00" "00" "02" "01" "02" "03")  # ACK_ECN
    close = bytes.fromhex("1c" "0a" "06" "03") + b"bye"
    payloads = [RFC_PAYLOAD, hello + bytes(40), b"\x01" + ack + hello + bytes(30),
                bytes(5) + hello + b"\x01" + bytes(20), close, b"\x01" * 3 + bytes(300)]
    datagrams = [RFC_V1_PACKET, RFC_V2_PACKET, (QDATA / "chromium115_initial.bin").read_bytes()]
    for version in sorted(quicp.SUPPORTED_VERSIONS):
        initial = protect(version, RFC_DCID, payloads[1], scid=b"\x07" * 4, token=b"tok")
        datagrams += [
            initial,
            initial + long_packet(version, "0rtt", RFC_DCID, bytes(40))
            + long_packet(version, "handshake", RFC_DCID, bytes(24)),
            initial + b"\x40" + bytes(30),  # a short-header packet after it
            initial + long_packet(version, "0rtt", b"\x01" * 8, bytes(40)),  # another DCID
        ]
    return datagrams, payloads


QUIC_DATAGRAMS, QUIC_PAYLOADS = _quic_seeds()


@needs_native
def test_kernel_takes_every_real_quic_datagram(units: Units) -> None:
    """Every datagram and decrypted payload of the corpus and of the seeds is taken."""
    datagrams = [*units.datagrams, *QUIC_DATAGRAMS]
    payloads = [*units.payloads, *QUIC_PAYLOADS]
    assert len(units.datagrams) >= 10 and len(units.payloads) >= 10
    for data in datagrams:
        if data[0] & 0x80 and int.from_bytes(data[1:5], "big") in quicp.SUPPORTED_VERSIONS:
            assert _check_headers(data) is not None, data.hex()
    for payload in payloads:
        assert _check_frames(payload) is not None, payload.hex()


@needs_native
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10**6), st.sampled_from(["flip", "cut", "byte", "insert", "length"]),
       st.integers(0, 255), st.booleans())
def test_kernel_quic_on_mutations(seed: int, how: str, value: int, frames: bool) -> None:
    seeds = QUIC_PAYLOADS if frames else QUIC_DATAGRAMS
    data = seeds[seed % len(seeds)]
    # Most mutations of a datagram land in its ciphertext: aim at the headers as often.
    at = seed % (len(data) if frames or seed % 2 else min(len(data), 60))
    mutated = _mutated(data, at, how, value, 1)  # QUIC lengths: varints, one byte here
    (_check_frames if frames else _check_headers)(mutated)


def _varint(value: int, size: int) -> bytes:
    """``value`` as a QUIC varint of at least ``size`` bytes (1, 2, 4 or 8)."""
    for n, prefix in ((1, 0), (2, 0x40), (4, 0x80), (8, 0xC0)):
        if n >= size and value < 1 << (8 * n - 2):
            return (value | (prefix << (8 * n - 8))).to_bytes(n, "big")
    raise ValueError(value)


_VALUES = st.one_of(st.integers(0, 70), st.integers(0, 20_000),
                    st.integers((1 << 62) - 300, (1 << 62) - 1))


@st.composite
def _frame(draw: st.DrawFn) -> bytes:
    size = draw(st.sampled_from([1, 1, 1, 2, 4, 8]))

    def v(value: int) -> bytes:
        return _varint(value, size)

    kind = draw(st.sampled_from(["padding", "ping", "ack", "ack_ecn", "crypto", "close",
                                 "other"]))
    if kind == "padding":
        return bytes(draw(st.integers(1, 40)))
    if kind == "ping":
        return b"\x01"
    if kind in ("ack", "ack_ecn"):
        ranges = draw(st.lists(st.tuples(_VALUES, _VALUES), max_size=4))
        out = (b"\x02" if kind == "ack" else b"\x03") + v(draw(_VALUES)) + v(draw(_VALUES)) \
            + v(len(ranges)) + v(draw(_VALUES))
        out += b"".join(v(gap) + v(length) for gap, length in ranges)
        if kind == "ack_ecn":
            out += v(draw(_VALUES)) + v(draw(_VALUES)) + v(draw(_VALUES))
        return out
    data = draw(st.binary(max_size=40))
    if kind == "crypto":
        return b"\x06" + v(draw(_VALUES)) + v(len(data)) + data
    if kind == "close":
        return b"\x1c" + v(draw(_VALUES)) + v(draw(_VALUES)) + v(len(data)) + data
    return draw(st.binary(min_size=1, max_size=6))


@needs_native
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_frame(), max_size=8), st.integers(0, 10_000))
def test_kernel_quic_frames_on_generated(frames: list[bytes], cut: int) -> None:
    """Frames of every kind with fields of every size (a longer varint than needed, values
    at 2^62-1, ACK ranges below zero, unknown types), whole and cut short."""
    payload = b"".join(frames)
    _check_frames(payload)
    _check_frames(payload[:cut % (len(payload) + 1)])


@needs_native
def test_kernel_quic_declines_what_it_does_not_know() -> None:
    """Retry, Version Negotiation, other versions, oversized connection IDs, more than
    MAX_COALESCED_PACKETS packets and frames past MAX_FRAMES_PER_PACKET: the reference
    decides each, with its exact error."""
    from tests.test_quic import RFC_DCID, RFC_V1_PACKET, hexfile, long_packet

    retry = hexfile("rfc9001_a4_retry.hex")
    negotiation = bytes([0x80]) + bytes(4) + bytes([8]) + RFC_DCID + b"\x00" + bytes(8)
    other = bytes([0xC0]) + (0x1A2A3A4A).to_bytes(4, "big") + bytes([8]) + RFC_DCID + bytes(8)
    long_cid = bytes([0xC0]) + (1).to_bytes(4, "big") + bytes([21]) + bytes(21) + bytes(8)
    many = long_packet(1, "handshake", RFC_DCID, b"") * (quicp.MAX_COALESCED_PACKETS + 1)
    for data in (retry, negotiation, other, long_cid, many, b""):
        assert _check_headers(data) is None, data.hex()
    with pytest.raises(TypeError):  # a table of anything but tuples is refused, not read
        native.quic_long_headers(RFC_V1_PACKET, {1: list(quicp._TYPES[1])}, quicp.LongHeader,
                                 quicp.PacketType.INITIAL, quicp.PacketType.RETRY,
                                 quicp.MAX_COALESCED_PACKETS, quicp.MAX_CID_LEN)
    assert _kernel_frames(b"\x01" * quicp.MAX_FRAMES_PER_PACKET) is not None
    # ACK ranges down to packet 0 are taken; one below it is the reference's error.
    for largest, first, gap, length in ((10, 2, 3, 3), (10, 2, 3, 4), (5, 0, 0, 3)):
        frame = bytes([2, largest, 0, 1, first, gap, length])
        smallest = largest - first - gap - 2 - length
        assert (_check_frames(frame) is not None) == (smallest >= 0)
        assert (_outcome(quicp._parse_frames_py, frame) is BadValue) == (smallest < 0)
    for payload in (b"\x01" * (quicp.MAX_FRAMES_PER_PACKET + 1), b"", b"\x40\x01", b"\x1d"):
        assert _check_frames(payload) is None, payload.hex()


# --- the pcap record walk -------------------------------------------------------------


def _walks(buf: bytes, pos: int, endian: str) -> None:
    """The kernel's one pass gives the reference walk's records and header fields, for
    microsecond and nanosecond captures."""
    assert native is not None
    ref, ref_pos = pcap._walk_pcap_py(buf, pos, struct.Struct(endian + "8xI"))
    starts = np.frombuffer(ref, dtype=np.int64)
    for frac_ns in (1000, 1):
        *got, got_pos = native.walk_pcap(buf, pos, endian == ">", pcap.MAX_RECORD_BYTES,
                                         frac_ns)
        assert got_pos == ref_pos
        want = (starts, *pcap._pcap_headers_py(buf, starts, endian, frac_ns))
        for column, expected in zip(got, want, strict=True):
            assert column.dtype == np.int64
            assert np.array_equal(column, expected)


@needs_native
def test_kernel_walks_every_classic_capture() -> None:
    paths = [p for p in [*CORPUS.iterdir(), ROOT / "monitor" / "data" / "demo.pcap"]
             if p.suffix == ".pcap"]
    rng = random.Random(7)
    for path in paths:
        data = path.read_bytes()
        endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        _walks(data, 24, endian)
        for cut in [24, 25, 40, len(data) - 1, *(rng.randrange(24, len(data)) for _ in range(50))]:
            _walks(data[:cut], 24, endian)


@needs_native
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 3000), max_size=40), st.sampled_from("<>"),
       st.integers(0, 200_000), st.integers(0, 40))
def test_kernel_walk_on_generated_records(caplens: list[int], endian: str, hostile: int,
                                          cut: int) -> None:
    buf = bytearray(24)
    for i, caplen in enumerate(caplens):
        value = hostile if i == len(caplens) // 2 else caplen
        buf += struct.pack(endian + "IIII", 0, 0, value, value) + b"\xab" * caplen
    _walks(bytes(buf[:max(24, len(buf) - cut)]), 24, endian)  # the file header is whole


def _batches(data: bytes) -> list[tuple[np.ndarray, ...]]:
    import io

    return [(b.offsets, b.caplens, b.wirelens, b.ts_ns, b.linktypes)
            for b in pcap.read_batches(io.BytesIO(data), origin="test", batch_packets=7)]


@needs_native
@pytest.mark.parametrize(("endian", "nanoseconds"), [("<", False), (">", False), ("<", True),
                                                      (">", True)])
def test_kernel_record_headers_match_the_numpy_gather(monkeypatch: pytest.MonkeyPatch,
                                                      endian: str, nanoseconds: bool) -> None:
    """Lengths and times of every record, in every byte order and time resolution."""
    from tests.mutate import reencode_pcap

    paths = [p for p in [*CORPUS.iterdir(), ROOT / "monitor" / "data" / "demo.pcap"]
             if p.suffix == ".pcap"]
    for path in paths:
        data = reencode_pcap(path.read_bytes(), endian=endian, nanoseconds=nanoseconds)
        got = _batches(data)
        monkeypatch.setattr(pcap, "native", None)
        want = _batches(data)
        monkeypatch.undo()
        assert len(got) == len(want) > 0
        for g, w in zip(got, want, strict=True):
            for a, b in zip(g, w, strict=True):
                assert np.array_equal(a, b), path.name


@pytest.mark.parametrize("pure", [False, True])
def test_a_build_without_kernels_says_so(pure: bool) -> None:
    """Missing kernels (no compiler at install) still replay, with a one-line warning;
    asking for pure Python on purpose gives no warning."""
    code = ("import sys; sys.modules['monitor._kernels'] = None; "  # import fails
            "from monitor.cli import main; sys.exit(main(['demo']))")
    env = {**os.environ, "AVMON_PURE_PYTHON": "1" if pure else "0"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "alerts: 7" in run.stdout  # the demo's alerts, all found without the kernels
    warning = [line for line in run.stderr.splitlines() if "compiled kernels" in line]
    if pure:
        assert warning == []
    else:
        assert warning == ["avmon: warning: pure Python: the compiled kernels were not built "
                           "(reinstall with a C compiler and the Python headers; the "
                           "pure-Python path is slower)"]


@needs_native
def test_kernel_record_walk_refuses_positions_outside_the_buffer() -> None:
    """Never called so by the reader, but a compiled kernel must not read out of bounds."""
    assert native is not None
    data = (ROOT / "monitor" / "data" / "demo.pcap").read_bytes()
    with pytest.raises(ValueError):
        native.walk_pcap(data, -1, False, pcap.MAX_RECORD_BYTES, 1000)
    for pos in (len(data) - 15, len(data), len(data) + 100):  # nothing whole: no record
        starts, *_, stop = native.walk_pcap(data, pos, False, pcap.MAX_RECORD_BYTES, 1000)
        assert len(starts) == 0 and stop == pos


@needs_native
def test_kernel_results_are_the_frozen_classes_themselves() -> None:
    """The kernels build their results by calling the classes they are given: the objects
    are of the class, equal to and hashed like the same fields built in Python, frozen,
    and a class whose construction checks its fields is run through that check."""
    assert native is not None
    hello = native.client_hello(rich_hello(), tlsp.ClientHello)
    wire = bytes.fromhex("abcd81800001000100000000" "03777777076578616d706c6503636f6d00"
                         "00010001" "c00c000100010000003c00045db8d822")
    message = native.dns_message(wire, False, dnsp.DnsMessage, dnsp.DnsQuestion,
                                 dnsp.DnsAnswer, dnsp._type_name, ip_text,
                                 dnsp.MAX_QUESTIONS, dnsp.MAX_ANSWERS, dnsp.MAX_RECORDS)
    assert hello is not None and message is not None
    objects = [hello, message, *message.questions, *message.answers]
    for obj in objects:
        names = obj.__struct_fields__
        built = type(obj)(*(getattr(obj, name) for name in names))
        assert obj == built and hash(obj) == hash(built) and repr(obj) == repr(built)
        with pytest.raises(AttributeError):
            setattr(obj, names[0], None)
    assert message.answers[0].rdata == "93.184.216.34"
    assert message == dnsp._fast_message(wire, False)

    calls: list[tuple[Any, ...]] = []

    class Checked(msgspec.Struct, frozen=True):
        qname: str
        qtype: str
        qclass: str

        def __post_init__(self) -> None:
            calls.append((self.qname, self.qtype, self.qclass))

    native.dns_message(wire, False, dnsp.DnsMessage, Checked, dnsp.DnsAnswer,
                       dnsp._type_name, ip_text, dnsp.MAX_QUESTIONS,
                       dnsp.MAX_ANSWERS, dnsp.MAX_RECORDS)
    assert calls == [("www.example.com", "A", "IN")]


# ----------------------------------------------------------------- EVE timestamps

#: Instants where a calendar computation goes wrong if it goes wrong at all: the epoch and
#: a nanosecond either side, leap days (2000: a 400-year leap; 1900 and 2100: not leap
#: years), the ends of months and years, and the ends of int64 nanoseconds (1677, 2262).
TIME_EDGES = [0, 1, -1, 999_999_999, 10**9, -10**9, -10**9 - 1, -(10**9) + 1,
              951_782_400 * 10**9, 951_868_800 * 10**9 - 1, 951_868_800 * 10**9,
              -2_203_891_200 * 10**9, -2_203_891_200 * 10**9 - 1,
              4_107_542_400 * 10**9, 4_107_542_400 * 10**9 - 1,
              1_767_225_599_999_999_999, 1_767_225_600 * 10**9, 1_764_288_830_123_456_789,
              2**63 - 1, -(2**63), 2**31 * 10**9, -(2**31) * 10**9]


@needs_native
@pytest.mark.parametrize("ns", TIME_EDGES)
def test_kernel_eve_time_at_calendar_edges(ns: int) -> None:
    from monitor.eve import _eve_time_py
    assert native is not None
    assert native.eve_time(ns) == _eve_time_py(ns)


@needs_native
@settings(max_examples=3000, deadline=None)
@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_kernel_eve_time_on_any_int64(ns: int) -> None:
    from monitor.eve import _eve_time_py
    assert native is not None
    assert native.eve_time(ns) == _eve_time_py(ns)


@needs_native
def test_kernel_eve_time_beyond_int64_is_the_references() -> None:
    """No packet time is outside int64; an integer that is gets the reference's answer
    (a date up to 9999) or error, not an overflow of the kernel's own."""
    from monitor.eve import _eve_time_py
    assert native is not None
    beyond = 253_402_300_799 * 10**9 + 999_999_999  # 9999-12-31T23:59:59.999999
    assert native.eve_time(beyond) == _eve_time_py(beyond) == \
        "9999-12-31T23:59:59.999999+0000"
    with pytest.raises(ValueError):
        _eve_time_py(beyond + 1)
    with pytest.raises(ValueError):
        native.eve_time(beyond + 1)


def test_eve_time_is_the_kernel_when_built() -> None:
    from monitor import eve
    assert eve.eve_time is (native.eve_time if native is not None else eve._eve_time_py)
