"""The style rules that tools can check: ruff (including S101, no assert on input outside
tests) over everything, and mypy --strict over the packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff() -> None:
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "monitor", "signatures",
                           "geo", "tests", "bench", "dashboards",
                           # the bench scripts have no .py suffix: named, or ruff skips them
                           "bench/run", "bench/live_rate", "bench/fuzz", "bench/adversarial"],
                          cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
