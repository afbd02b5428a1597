"""bench/run itself: its table, its recall and the scaling line read against avmon-pair."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench_run() -> ModuleType:
    """bench/run as a module (it has no .py suffix); registered first, as its dataclasses
    look their module up while they are made."""
    if "bench_run" in sys.modules:
        return sys.modules["bench_run"]
    loader = importlib.machinery.SourceFileLoader("bench_run", str(ROOT / "bench" / "run"))
    spec = importlib.util.spec_from_loader("bench_run", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module
    loader.exec_module(module)
    return module


def test_scaling_line_sets_two_workers_against_the_machine() -> None:
    # Round 1: 2.4 / 1.6 = 1.5x; two copies in 3.2 s = 1.5x one's throughput; 100% of it.
    # Round 2, on a slower spell: 4.0 / 2.0 = 2.0x; 8.0 / 4.4 = 1.82x; 4.4 / 4.0 = 110%.
    # Round 3: 3.0 / 3.0 = 1.0x; 6.0 / 4.0 = 1.5x; 4.0 / 6.0 = 67%.
    line = _bench_run().scaling_line([2.4, 4.0, 3.0], [1.6, 2.0, 3.0], [3.2, 4.4, 4.0])
    assert line == ("avmon-2w scaling (medians over 3 rounds): 1.50x one process; two "
                    "one-process replays at once ran 1.50x one's throughput (avmon-pair: "
                    "what this machine gives two processes); two workers reach 100% of it")
    # Lists of unequal length: only whole rounds count.
    assert "over 1 rounds" in _bench_run().scaling_line([2.0, 2.0], [2.0], [2.0, 2.0])


@pytest.mark.slow
def test_bench_run_times_the_pair_and_prints_the_scaling(tmp_path: Path) -> None:
    capture = tmp_path / "small.pcap"
    subprocess.run([sys.executable, str(ROOT / "bench" / "gen_capture.py"), "--packets",
                    "3000", "--seed", "3", "--quic-names", "4", "--out", str(capture),
                    "--quiet"], check=True, capture_output=True, timeout=300)
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run"), "--capture",
                           str(capture), "--repeat", "1", "--tools", "avmon,avmon-2w,avmon-pair",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = {r["tool"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"avmon", "avmon-2w", "avmon-pair"}
    for tool, r in results.items():
        assert r["skipped"] is None, (tool, r["skipped"])
        assert r["recall"] == {"sni": 1.0, "dns": 1.0}, tool
    pair = results["avmon-pair"]
    assert pair["copies"] == 2 and pair["command"].count(" & ") == 1
    assert results["avmon"]["copies"] == 1
    # The pair's rate counts both copies' packets: twice the capture over its median.
    row = next(line for line in done.stdout.splitlines() if line.startswith("avmon-pair "))
    assert int(row.split()[2].replace(",", "")) == round(2 * 3000 / pair["median_seconds"])
    assert "avmon-2w scaling (medians over 1 rounds): " in done.stdout
    assert "% of it" in done.stdout
