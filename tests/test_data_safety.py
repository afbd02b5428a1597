"""Data safety and hardening: whole EVE lines after a kill, byte-identical replays, output
paths checked before work starts, and no code execution or shell from any input.

The kill tests run ``avmon replay --speed`` (a paced replay writes records as it goes) and
SIGKILL it part-way; every line left must be a whole JSON record. A torn last line (which
the kernel can leave when a write is cut at a page boundary) is simulated and must be cut
off, with a one-line warning, by the next run that appends to the file.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import CORPUS

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "monitor" / "data" / "demo.pcap"
DEMO_CONFIG = ROOT / "monitor" / "data" / "demo.toml"


def avmon(*args: str, timeout: float = 300,
          preexec_fn: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "monitor.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, preexec_fn=preexec_fn)


def whole_records(path: Path) -> list[dict[str, object]]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"torn last line: {data[-200:]!r}"
    return [json.loads(line) for line in data.splitlines()]


@pytest.mark.parametrize("lines", [1, 20, 40])
def test_sigkill_mid_replay_leaves_only_whole_lines(lines: int, tmp_path: Path) -> None:
    eve = tmp_path / "eve.json"
    proc = subprocess.Popen([sys.executable, "-m", "monitor.cli", "replay", str(DEMO), "-c",
                             str(DEMO_CONFIG), "-q", "--speed", "20", "--eve", str(eve)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not eve.exists() or eve.read_bytes().count(b"\n") < lines:
        assert proc.poll() is None, "the paced replay ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.kill()
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    first = whole_records(eve)
    assert first, "nothing written before the kill"
    # A second run appends whole records after the first run's.
    done = avmon("replay", str(DEMO), "-c", str(DEMO_CONFIG), "-q", "--eve", str(eve))
    assert done.returncode == 0, done.stderr
    assert "torn" not in done.stderr
    both = whole_records(eve)
    assert both[:len(first)] == first and len(both) > len(first)


def test_a_torn_last_line_is_cut_off_by_the_next_run(tmp_path: Path) -> None:
    eve = tmp_path / "eve.json"
    ok = avmon("replay", str(DEMO), "-c", str(DEMO_CONFIG), "-q", "--eve", str(eve))
    assert ok.returncode == 0, ok.stderr
    whole = eve.read_bytes()
    lines = whole.splitlines(keepends=True)
    torn = lines[-1][:37]
    eve.write_bytes(b"".join(lines[:-1]) + torn)
    again = avmon("replay", str(DEMO), "-c", str(DEMO_CONFIG), "-q", "--eve", str(eve))
    assert again.returncode == 0, again.stderr
    [warning] = [line for line in again.stderr.splitlines() if "torn" in line]
    assert warning == (f"avmon: warning: {eve}: removed a torn last line ({len(torn)} bytes) "
                       "left by a run that was stopped mid-write")
    records = whole_records(eve)
    assert len(records) == 2 * len(lines) - 1


def test_a_file_without_line_ends_is_left_alone(tmp_path: Path) -> None:
    """Not a torn record: a file with no newline in its last MB is not cut."""
    eve = tmp_path / "eve.json"
    blob = b"x" * (2 << 20)
    eve.write_bytes(blob)
    ok = avmon("replay", str(DEMO), "-c", str(DEMO_CONFIG), "-q", "--eve", str(eve))
    assert ok.returncode == 0, ok.stderr
    assert eve.read_bytes().startswith(blob)


@pytest.mark.parametrize("inputs", [[DEMO], sorted(CORPUS.glob("*.pcap*"))],
                         ids=["demo", "corpus"])
def test_replay_is_byte_identical_run_after_run(inputs: list[Path], tmp_path: Path) -> None:
    outputs = []
    for run in range(2):
        eve = tmp_path / f"eve{run}.json"
        proc = avmon("replay", *map(str, inputs), "-c", str(DEMO_CONFIG), "-q", "--eve",
                     str(eve), "--workers", "1")
        assert proc.returncode == 0, proc.stderr
        outputs.append(eve.read_bytes())
    assert outputs[0] == outputs[1]
    assert outputs[0].count(b"\n") > 50


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_full_disk_is_one_line_not_a_traceback(workers: str) -> None:
    """/dev/full fails every write with ENOSPC; with workers the first process writes to
    it (it is not a regular file) and the workers are stopped, not left hanging."""
    proc = avmon("replay", str(DEMO), "-q", "--eve", "/dev/full", "--workers", workers,
                 timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == \
        "avmon: --eve /dev/full: cannot write: No space left on device"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_file_that_cannot_grow_is_one_line_not_a_traceback(workers: str,
                                                             tmp_path: Path) -> None:
    """A regular file (workers append to it themselves) under a file size limit: writes
    past it fail with EFBIG."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    eve = tmp_path / "eve.json"
    proc = avmon("replay", str(DEMO), "-q", "--eve", str(eve), "--workers", workers,
                 timeout=120, preexec_fn=limit)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == f"avmon: --eve {eve}: cannot write: File too large"


def test_lines_a_failed_write_held_are_not_written_again() -> None:
    """A retry after a partial write would repeat its lines: once a write fails, its
    lines are dropped, and closing does not try them again."""
    from monitor.errors import OutputError
    from monitor.eve import EveWriter

    eve = EveWriter("/dev/full")
    for i in range(3):
        eve.write({"event_type": "flow", "n": i})
    with pytest.raises(OutputError, match="^--eve /dev/full: cannot write: No space"):
        eve.flush()
    eve.close()
    assert eve.records == 3


@pytest.mark.parametrize(("option", "message"), [
    ("--eve", "cannot open for writing: No such file or directory"),
    ("--metrics-textfile", "is not a writable directory"),
])
def test_unusable_output_path_is_one_line_before_any_work(option: str, message: str,
                                                          tmp_path: Path) -> None:
    target = tmp_path / "missing" / "out"
    proc = avmon("replay", str(DEMO), "-q", option, str(target))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert str(target) in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------- security

#: Calls that would run code or a shell built from data.
_FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "os.system", "os.popen",
                    "pickle.load", "pickle.loads", "marshal.loads", "yaml.load",
                    "yaml.unsafe_load", "subprocess.getoutput", "subprocess.getstatusoutput"}


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _product_sources() -> list[Path]:
    return [p for pkg in ("monitor", "geo", "signatures") for p in (ROOT / pkg).rglob("*.py")]


def test_no_code_execution_or_shell_in_the_product() -> None:
    found = []
    for path in _product_sources():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = _dotted(node.func)
            if name in _FORBIDDEN_CALLS:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}()")
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant)
                                              and kw.value.value is False):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: shell=")
            if name.startswith("subprocess.") and node.args \
                    and isinstance(node.args[0], (ast.Constant, ast.JoinedStr, ast.BinOp)):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: command as a string")
    assert found == []
    assert len(_product_sources()) > 30


def test_config_signature_and_registry_files_are_data_only() -> None:
    """TOML (tomli) is the only format read from config, signature and registry files;
    nothing imports a loader that can build objects (PyYAML, pickle, jsonpickle)."""
    imported = set()
    for path in _product_sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
    assert "tomli" in imported and "tomllib" not in imported
    assert not imported & {"yaml", "pickle", "shelve", "marshal", "jsonpickle", "dill"}


def test_eve_file_is_created_without_world_access(tmp_path: Path) -> None:
    eve = tmp_path / "eve.json"
    old = os.umask(0)
    try:
        proc = avmon("replay", str(DEMO), "-c", str(DEMO_CONFIG), "-q", "--eve", str(eve))
    finally:
        os.umask(old)
    assert proc.returncode == 0, proc.stderr
    assert eve.stat().st_mode & 0o777 == 0o640


# ---------------------------------------------------------- a bug meets a packet


def test_a_bug_in_a_parser_costs_one_flow_not_the_sensor(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from monitor import synth
    from monitor.parsers import tls
    from monitor.synth import PcapWriter
    from tests.helpers import replay
    from tests.test_names_edge import KSN, Clock, by_type, sigs, tls_flow

    real = tls.parse_client_hello

    def buggy(data: bytes) -> tls.ClientHello:
        ch = real(data)
        if ch.sni == "bug.example":
            raise RuntimeError("simulated bug")
        return ch

    monkeypatch.setattr(tls, "parse_client_hello", buggy)
    clock = Clock()
    frames = tls_flow(clock, synth.client_hello("bug.example", seed=1), cport=50001)
    frames += tls_flow(clock, synth.client_hello(KSN, seed=2), cport=50002)
    path = tmp_path / "bug.pcap"
    with PcapWriter(path) as w:
        w.write_all(frames)
    records, pipe = replay([path], tmp_path, signatures=sigs())
    assert [r["tls"]["sni"] for r in by_type(records, "tls")] == [KSN]
    assert pipe.dissector.stats.internal_errors == 1
    assert len([r for r in records if r["event_type"] == "flow"]) == 2
    [message] = [r.getMessage() for r in caplog.records if r.name == "avmon.dissect"]
    assert message.startswith("internal error dissecting frame 4 (IP protocol 6, ")
    assert message.endswith("RuntimeError: simulated bug; the flow is no longer inspected")


def test_a_bug_outside_the_parsers_costs_one_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from monitor.capture.files import CaptureReader
    from monitor.flow.table import FlowTable
    from monitor.pipeline import Pipeline
    from tests.test_names_edge import sigs

    real = FlowTable.update
    calls = []

    def buggy(self: FlowTable, *args: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise IndexError("simulated bug")
        return real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(FlowTable, "update", buggy)
    pipe = Pipeline(signatures=sigs())
    batches = list(CaptureReader([str(DEMO)], batch_packets=100))
    assert len(batches) == 7
    for batch in batches:
        pipe.process(batch)
    pipe.finish()
    assert pipe.dissector.stats.internal_errors == 1
    assert pipe.stats.packets == 700 and len(calls) == 7  # every later batch processed
    assert sum(pipe.stats.flows_by_reason.values()) > 20
    [message] = [r.getMessage() for r in caplog.records if r.name == "avmon.pipeline"]
    assert message == ("internal error processing frames 101-200: IndexError: simulated "
                       "bug; the rest of the batch is skipped")


def test_eve_lines_are_held_to_the_batch_end_and_bounded(tmp_path: Path) -> None:
    """Records wait for the end of their batch (one write for all of them), but a batch's
    records never hold more than about 1 MiB: past that they are written at once, whole."""
    from monitor.eve import EveWriter

    path = tmp_path / "eve.json"
    eve = EveWriter(str(path))
    record = {"event_type": "flow", "pad": "x" * 1000}
    eve.write(record)
    assert path.read_bytes() == b""  # held until the batch ends
    eve.flush()
    assert path.read_bytes().count(b"\n") == 1
    for _ in range(2000):  # about 2 MB within one batch
        eve.write(record)
    written = path.read_bytes()
    assert 1 < written.count(b"\n") < 2001 and written.endswith(b"\n")
    assert len(written) - 1020 < (1 << 20) + 1100  # one 1 MiB chunk of whole lines
    eve.close()
    lines = path.read_bytes().splitlines()
    assert len(lines) == 2001 and all(json.loads(line) == record for line in lines)
