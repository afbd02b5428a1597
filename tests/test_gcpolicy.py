"""The collector settings of replay and live capture (monitor.gcpolicy)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from monitor import cli
from monitor.config import load_config
from monitor.gcpolicy import FULL, OLDER, REPLAY_YOUNG, YOUNG, packet_processing
from tests.recorder import free_port

ROOT = Path(__file__).resolve().parent.parent
TUNED = (YOUNG, OLDER, FULL)
REPLAY = (REPLAY_YOUNG, OLDER, FULL)


def test_settings_hold_inside_and_are_restored() -> None:
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    with packet_processing():
        assert gc.get_threshold() == TUNED
        assert gc.get_freeze_count() > frozen
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_settings_are_restored_when_the_body_raises() -> None:
    before = gc.get_threshold()
    try:
        with packet_processing():
            raise KeyError("x")
    except KeyError:
        pass
    assert gc.get_threshold() == before


def test_what_is_still_alive_at_the_end_joins_the_oldest_generation() -> None:
    """Leaving the settings does not examine the young generation at once under the
    restored thresholds (it may hold a replay's worth of objects): what is alive joins
    the oldest generation, and garbage among it is still found by a full collection."""
    gc.collect()
    with packet_processing(young=10**9):
        kept = [{"i": i} for i in range(50_000)]
        for _ in range(100):
            _Node()
        assert gc.get_count()[0] > 50_000
        _Node.collected = 0
    assert gc.get_count()[0] < 100
    assert _Node.collected == 0
    gc.collect()
    assert _Node.collected == 100 and len(kept) == 50_000


class _Node:
    collected = 0

    def __init__(self) -> None:
        self.me = self  # a cycle: reference counting alone never frees it

    def __del__(self) -> None:
        _Node.collected += 1


def test_cycles_are_still_collected_without_an_explicit_collect() -> None:
    """The tuned collector still runs on its own: garbage in cycles does not pile up."""
    gc.collect()
    _Node.collected = 0
    made = 20 * YOUNG
    with packet_processing():
        for _ in range(made):
            _Node()
        collected = _Node.collected
    gc.collect()
    assert collected >= made // 2, f"only {collected} of {made} cycles collected"


def test_replay_processes_packets_under_the_settings() -> None:
    seen: list[tuple[Any, ...]] = []

    def listener(record: dict[str, Any]) -> None:
        seen.append((gc.get_threshold(), gc.get_freeze_count() > 0))

    before = gc.get_threshold()
    rc = cli._replay([str(cli.DEMO_CAPTURE)], load_config(None), None, True,
                     listeners=[listener])
    assert rc == 0
    assert seen, "the demo capture gave no records"
    assert set(seen) == {(REPLAY, True)}
    assert gc.get_threshold() == before


def test_live_capture_processes_packets_under_the_settings() -> None:
    """The capture loop of ``avmon live`` (a capture source that replays the demo
    capture stands in for the interface: opening one needs privileges)."""
    code = (
        "import gc\n"
        "import monitor.cli as cli\n"
        "from monitor.capture.files import CaptureReader\n"
        "class Source:\n"
        "    def __iter__(self):\n"
        "        for batch in CaptureReader([str(cli.DEMO_CAPTURE)]):\n"
        "            print(gc.get_threshold(), gc.get_freeze_count() > 0)\n"
        "            yield batch\n"
        "    def stop(self): pass\n"
        "    def close(self): pass\n"
        "    def dropped(self): return 0\n"
        "cli._open_live_source = lambda args: Source()\n"
        f"cli.main(['live', '-i', 'lo', '--metrics-listen', '127.0.0.1:{free_port()}'])\n"
        "print(gc.get_threshold())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0] == f"{TUNED} True"
    assert out[-1] == str(gc.get_threshold())


def test_the_command_exits_without_the_final_collections(tmp_path: Path) -> None:
    """``avmon`` (monitor.__main__:run, then monitor.cli:run) freezes what is left before
    the interpreter ends, once every record is written."""
    eve = tmp_path / "eve.json"
    out = _command_replays_demo(
        "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n", eve)
    assert out.split() == ["frozen", "True"]
    records = [json.loads(line) for line in eve.read_text().splitlines()]
    in_process = tmp_path / "in-process.json"
    assert cli._replay([str(cli.DEMO_CAPTURE)], load_config(None), str(in_process),
                       True) == 0
    assert len(records) == len(in_process.read_text().splitlines()) > 10


def test_the_installed_command_is_the_one_that_freezes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["avmon"] == "monitor.__main__:run"


def test_the_command_imports_with_the_collector_paused(tmp_path: Path) -> None:
    """No collection runs while the command line is imported (the package itself imports
    nothing heavy first); the collector is on again when the command runs."""
    out = _command_replays_demo(
        "import monitor.gcpolicy as gp\n"
        "assert 'monitor.pipeline' not in sys.modules, 'the package imported the pipeline'\n"
        "during_import, enabled = [], []\n"
        "def watch(phase, info):\n"
        "    cli = sys.modules.get('monitor.cli')\n"
        "    if phase == 'start' and (cli is None or not hasattr(cli, 'run')):\n"
        "        during_import.append(info['generation'])\n"
        "exit_as_before = gp.before_exit\n"
        "def before_exit():\n"
        "    enabled.append(gc.isenabled())\n"
        "    exit_as_before()\n"
        "gp.before_exit = before_exit\n"
        "atexit.register(lambda: print(len(during_import), enabled))\n"
        "gc.callbacks.append(watch)\n", tmp_path / "eve.json")
    assert out.split() == ["0", "[True]"]


def test_what_the_imports_made_is_frozen_before_collection(tmp_path: Path) -> None:
    """The first collection after the command line is imported does not walk what the
    imports made (some 40,000 objects): they were frozen out of collection first."""
    out = _command_replays_demo(
        "first = []\n"
        "def watch(phase, info):\n"
        "    cli = sys.modules.get('monitor.cli')\n"
        "    if phase == 'start' and not first and cli is not None and hasattr(cli, 'run'):\n"
        "        first.append((gc.get_freeze_count(), len(gc.get_objects(0))))\n"
        "atexit.register(lambda: print(*first[0]))\n"
        "gc.callbacks.append(watch)\n", tmp_path / "eve.json")
    frozen, young = map(int, out.split())
    assert frozen > 20_000 and young < 5_000, (frozen, young)


def test_the_command_runs_one_blas_thread(tmp_path: Path) -> None:
    """numpy's OpenBLAS would start a spinning thread per core; the command asks for one
    (it does no linear algebra), unless the user chose a number."""
    report = ("atexit.register(lambda: print(os.environ['OPENBLAS_NUM_THREADS'], "
              "len(os.listdir('/proc/self/task'))))\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = _command_replays_demo("import os\n" + report, tmp_path / "a.json", env)
    assert out.split() == ["1", "1"]  # the main thread alone
    out = _command_replays_demo("import os\n" + report, tmp_path / "b.json",
                                {**env, "OPENBLAS_NUM_THREADS": "2"})
    assert out.split()[0] == "2"


def _command_replays_demo(setup: str, eve: Path, env: dict[str, str] | None = None) -> str:
    """In a new interpreter (with ``env``, or this one's environment): import the
    ``avmon`` command's entry point, run ``setup``, then the command (a replay of the demo
    capture into ``eve``); what it printed."""
    code = ("import atexit, gc, sys\n"
            "import monitor.__main__ as entry\n"
            + setup +
            f"sys.argv = ['avmon', 'replay', '-q', '--workers', '1', '--eve', {str(eve)!r}]\n"
            "entry.run()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
