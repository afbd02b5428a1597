"""`avmon replay --workers N` writes the records one process writes (in another order):
flows split by address pair, DNS names shared, metrics summed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "monitor" / "data" / "demo.pcap"
DEMO_CONFIG = ROOT / "monitor" / "data" / "demo.toml"
CORPUS = ROOT / "tests" / "data" / "corpus"


def _replay(tmp: Path, inputs: list[Path], workers: int, *extra: str) -> list[str]:
    eve = tmp / f"eve-{workers}.json"
    proc = subprocess.run([sys.executable, "-m", "monitor.cli", "replay", *map(str, inputs),
                           "--eve", str(eve), "--workers", str(workers), *extra],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    if workers > 1 and "-q" not in extra:
        assert f"({workers} workers)" in proc.stderr
    return sorted(json.dumps(json.loads(line), sort_keys=True)
                  for line in eve.read_text().splitlines())


@pytest.fixture(scope="module")
def demo_one(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The demo's records from one process (compared with each number of workers)."""
    return _replay(tmp_path_factory.mktemp("demo-one"), [DEMO], 1, "-c", str(DEMO_CONFIG))


@pytest.fixture(scope="module")
def corpus_one(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The corpus directory's records from one process."""
    return _replay(tmp_path_factory.mktemp("corpus-one"), [CORPUS], 1)


@pytest.mark.parametrize("workers", [2, 3])
def test_demo_alerts_and_records_match_one_process(workers: int, tmp_path: Path,
                                                   demo_one: list[str]) -> None:
    one = demo_one
    many = _replay(tmp_path, [DEMO], workers, "-c", str(DEMO_CONFIG))
    assert many == one
    alerts = [json.loads(r) for r in one if '"event_type": "alert"' in r]
    # the demo has a flow named only by its client's DNS answer: it must survive the split
    assert {a["avmon"]["indicator"]["type"] for a in alerts} >= {"sni", "quic", "dns",
                                                                 "connect"}


@pytest.mark.parametrize("workers", [2, 3])
def test_corpus_records_match_one_process(workers: int, tmp_path: Path,
                                          corpus_one: list[str]) -> None:
    """Fragments, tunnels, several link types and interfaces, DNS over TCP: all split.

    Every record is the same, ``avmon.other_names`` included: a flow that carries its own
    name (SNI) also waits for the DNS answers other workers parsed, which add the further
    names its client resolved for the address (with two workers, two records of the
    corpus differed in them when such a flow was judged at once)."""
    one = corpus_one
    many = _replay(tmp_path, [CORPUS], workers)
    assert len(one) > 300
    assert sum('"other_names"' in r for r in one) > 0
    assert many == one


def test_metrics_are_summed_over_workers(tmp_path: Path) -> None:
    def metrics(workers: int) -> dict[str, str]:
        path = tmp_path / f"metrics-{workers}.prom"
        _replay(tmp_path, [DEMO], workers, "-c", str(DEMO_CONFIG), "--metrics-textfile",
                str(path), "-q")
        lines = [ln for ln in path.read_text().splitlines()
                 if ln and not ln.startswith("#") and "_created" not in ln
                 and "lag_seconds" not in ln]
        return dict(ln.rsplit(" ", 1) for ln in lines)  # type: ignore[misc]

    one, two = metrics(1), metrics(2)
    assert one['avmon_packets_total{source="replay"}'] == "700.0"
    # the DNS cache holds every answer in each worker; everything else adds up exactly
    differ = {k for k in one if one[k] != two.get(k)}
    assert differ <= {"avmon_dns_cache_entries"}, {k: (one[k], two.get(k)) for k in differ}


def test_workers_and_speed_do_not_mix(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "monitor.cli", "replay", str(DEMO),
                           "--workers", "2", "--speed", "10"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 2 and "--speed replays in one process" in proc.stderr


def _repeated_demo(path: Path, copies: int) -> None:
    """The demo capture ``copies`` times over, each copy an hour later (a larger input
    made in a moment)."""
    import struct

    data = DEMO.read_bytes()
    header, body = data[:24], data[24:]
    assert struct.unpack_from("<I", header)[0] == 0xA1B2C3D4  # microsecond pcap
    records = []
    pos = 0
    while pos < len(body):
        sec, usec, caplen, wirelen = struct.unpack_from("<IIII", body, pos)
        records.append((sec, usec, caplen, wirelen, body[pos + 16 : pos + 16 + caplen]))
        pos += 16 + caplen
    with path.open("wb") as out:
        out.write(header)
        for copy in range(copies):
            for sec, usec, caplen, wirelen, frame in records:
                out.write(struct.pack("<IIII", sec + 3600 * copy, usec, caplen, wirelen))
                out.write(frame)


def test_a_dead_worker_ends_the_replay_with_an_error(tmp_path: Path) -> None:
    """Killing one worker mid-run: the others are stopped (they would wait for its DNS
    answers for ever), avmon names the worker and exits 1; nothing hangs."""
    import os
    import signal
    import time

    big = tmp_path / "big.pcap"
    _repeated_demo(big, 400)
    proc = subprocess.Popen([sys.executable, "-m", "monitor.cli", "replay", str(big),
                             "--eve", os.devnull, "--workers", "2", "-q"], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    children: list[int] = []
    deadline = time.monotonic() + 30
    while len(children) < 2 and time.monotonic() < deadline and proc.poll() is None:
        try:
            text = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text()
            # the workers, not multiprocessing's resource tracker (for shared memory)
            children = [int(c) for c in text.split()
                        if b"resource_tracker" not in Path(f"/proc/{c}/cmdline").read_bytes()]
        except OSError:
            pass
        time.sleep(0.01)
    assert len(children) == 2, "the workers did not start"
    os.kill(children[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "was ended by SIGKILL" in err


def test_damage_is_reported_once_with_the_records_of_one_process(tmp_path: Path) -> None:
    """Every worker reads the input; one speaks for it: the damage warning and the
    summary's damage line appear once, and the records before the damage are all there."""
    cut = tmp_path / "cut.pcap"
    data = DEMO.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3] + b"\xff" * 40)  # a torn last record
    runs = {}
    for workers in (1, 2):
        eve = tmp_path / f"cut-{workers}.json"
        proc = subprocess.run([sys.executable, "-m", "monitor.cli", "replay", str(cut),
                               "--eve", str(eve), "--workers", str(workers)],
                              capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.count("damaged capture at offset") == 1, proc.stderr
        assert proc.stderr.count(f"damaged: {cut} at offset") == 1, proc.stderr
        runs[workers] = sorted(json.dumps(json.loads(line), sort_keys=True)
                               for line in eve.read_text().splitlines())
    assert len(runs[1]) >= 10
    assert runs[2] == runs[1]


def test_records_to_standard_output_go_through_the_first_process(tmp_path: Path) -> None:
    """A pipe is not shared by the workers: the first process writes every line."""
    proc = subprocess.run([sys.executable, "-m", "monitor.cli", "replay", str(DEMO),
                           "-c", str(DEMO_CONFIG), "--eve", "-", "--workers", "2", "-q"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    piped = sorted(json.dumps(json.loads(line), sort_keys=True)
                   for line in proc.stdout.splitlines())
    assert piped == _replay(tmp_path, [DEMO], 1, "-c", str(DEMO_CONFIG))


def test_a_read_error_ends_a_workers_input_and_is_reported() -> None:
    """A worker reports a read error (once, through worker 0) and finishes its flows; an
    output error raised while it processes a batch is not taken for a read error."""
    from monitor.cli import _read_guarded
    from monitor.errors import CaptureError

    class Reader:
        def __iter__(self):  # type: ignore[no-untyped-def]
            yield "batch 1"
            raise CaptureError("capture.pcap: cannot open (Permission denied)")

    errors: list[Exception] = []
    assert list(_read_guarded(Reader(), errors.append)) == ["batch 1"]  # type: ignore[arg-type]
    assert [str(e) for e in errors] == ["capture.pcap: cannot open (Permission denied)"]

    errors.clear()
    with pytest.raises(OSError, match="No space left"):
        for _ in _read_guarded(Reader(), errors.append):  # type: ignore[arg-type]
            raise OSError(28, "No space left on device")
    assert errors == []
