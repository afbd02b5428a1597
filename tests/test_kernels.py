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
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import monitor.parsers.dns as dnsp
import monitor.parsers.tls as tlsp
from monitor import kernels
from monitor.capture import pcap
from monitor.errors import ParseError
from monitor.iptext import ip_text
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


@cache
def corpus_units(tmp_root: str) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """Every ClientHello message and DNS message the pipeline parses in the corpus
    captures and the demo, recorded at the parsers' entry points."""
    hellos: list[bytes] = []
    dns_wires: list[bytes] = []
    parse_hello, parse_dns = tlsp.parse_client_hello, dnsp.parse_dns_message

    def hello(data: Any) -> Any:
        hellos.append(bytes(data))
        return parse_hello(data)

    def dns_message(data: Any, **kwargs: Any) -> Any:
        dns_wires.append(bytes(data))
        return parse_dns(data, **kwargs)

    captures = sorted(p for p in CORPUS.iterdir() if p.suffix in (".pcap", ".pcapng"))
    captures.append(ROOT / "monitor" / "data" / "demo.pcap")
    tlsp.parse_client_hello, dnsp.parse_dns_message = hello, dns_message  # type: ignore[assignment]
    try:
        for path in captures:
            replay([path], Path(tmp_root))
    finally:
        tlsp.parse_client_hello, dnsp.parse_dns_message = parse_hello, parse_dns  # type: ignore[assignment]
    return tuple(dict.fromkeys(hellos)), tuple(dict.fromkeys(dns_wires))


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    return corpus_units(str(tmp_path_factory.mktemp("units")))


def _outcome(fn: Callable[[bytes], object], data: bytes) -> object:
    try:
        return fn(data)
    except ParseError as exc:
        return type(exc)


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
def test_kernel_takes_every_real_hello(units: tuple[tuple[bytes, ...], tuple[bytes, ...]]
                                       ) -> None:
    hellos = [*units[0], *HELLO_SEEDS]
    assert len(hellos) > 20
    for data in hellos:
        assert _check_hello(data) is not None, data.hex()


@needs_native
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10**6), st.sampled_from(["flip", "cut", "byte", "insert", "length"]),
       st.integers(0, 255))
def test_kernel_hello_on_mutations(seed: int, how: str, value: int) -> None:
    data = bytearray(HELLO_SEEDS[seed % len(HELLO_SEEDS)])
    at = seed % len(data)
    if how == "flip":
        data[at] ^= 1 << (value % 8)
    elif how == "cut":
        del data[at:]
    elif how == "byte":
        data[at] = value
    elif how == "insert":
        data[at:at] = bytes([value])
    else:  # a length field: any two bytes set to a nearby value
        old = int.from_bytes(data[at:at + 2], "big")
        data[at:at + 2] = ((old + value - 128) & 0xFFFF).to_bytes(2, "big")[:len(data) - at]
    _check_hello(bytes(data))


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
def test_kernel_takes_real_dns_messages(units: tuple[tuple[bytes, ...], tuple[bytes, ...]]
                                        ) -> None:
    wires = [*units[1], *(p.read_bytes() for p in sorted((DATA / "dns").glob("*.bin")))]
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
    """The kernels set a result's fields through its slots rather than call its frozen
    ``__init__``: the objects are still of the class, equal, hashable and frozen, and a
    class whose construction does more than store fields is built by calling it."""
    import dataclasses

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
        values = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
        built = type(obj)(*values)
        assert obj == built and hash(obj) == hash(built) and repr(obj) == repr(built)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, dataclasses.fields(obj)[0].name, None)
    assert message.answers[0].rdata == "93.184.216.34"
    assert message == dnsp._fast_message(wire, False)

    calls: list[tuple[Any, ...]] = []

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
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
