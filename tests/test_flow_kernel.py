"""The flow table's compiled kernel (monitor/_flows.pyx) against its numpy reference.

``monitor._flows.group`` must give exactly what ``monitor.flow.table._group_py`` gives:
the same group per packet, in the same group order (records are written in that order),
and the same sums. Checked on every layer the flow table sees in every capture under
tests/data, on random batches built to repeat tuples, reorder time and wrap it, and on
the way the table uses the kernel's answer (a replay is the same with it and without).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor import kernels
from monitor.flow import table
from tests.helpers import DATA, replay

native = kernels.native_flows
pytestmark = pytest.mark.skipif(native is None and os.environ.get("CI") != "true",
                                reason="the compiled kernels are not built here")

Inputs = tuple[Any, ...]


def assert_same(inputs: Inputs) -> None:
    assert native is not None, kernels.status()
    got = native.group(*_native_args(inputs))
    want = table._group_py(*inputs)
    if got is None:  # two tuples share a hash: the reference decides
        return
    names = ("inv", "first", "last", "pkts", "bytes", "flags", "slow")
    for name, g, w in zip(names, got, want, strict=True):
        assert g.dtype == w.dtype, name
        assert g.shape == w.shape, name
        assert np.array_equal(g, w), name


def _native_args(inputs: Inputs) -> Inputs:
    ah, al, bh, bl, pa, pb, pr, depth, swap, pure_syn, flags, wl, ts, min_idle = inputs
    return (ah, al, bh, bl, pa, pb, pr, depth, swap.view(np.uint8), pure_syn.view(np.uint8),
            flags, wl, ts, min_idle)


def recorded_layers(tmp: Path) -> list[Inputs]:
    """The reference's arguments for every layer of every capture under tests/data."""
    seen: list[Inputs] = []
    reference = table._group_py

    def record(*args: Any) -> Any:
        seen.append(tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args))
        return reference(*args)

    captures = sorted(p for p in DATA.rglob("*") if p.suffix in (".pcap", ".pcapng"))
    assert len(captures) > 20
    mp = pytest.MonkeyPatch()
    mp.setattr(table, "native_flows", None)
    mp.setattr(table, "_group_py", record)
    try:
        for path in captures:
            try:
                replay([path], tmp)
            except Exception:  # noqa: BLE001 - captures made to be refused are not the point
                continue
    finally:
        mp.undo()
    return seen


def test_kernel_equals_reference_on_every_capture(tmp_path: Path) -> None:
    layers = recorded_layers(tmp_path)
    assert sum(len(layer[0]) for layer in layers) > 2_000
    assert any(layer[7] for layer in layers)  # tunnelled layers are among them
    for inputs in layers:
        assert_same(inputs)


def test_replay_is_the_same_without_the_kernel(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """What the table does with the answer: the records of every capture under tests/data
    (flows across batches, closed and reused tuples, tunnels), with the kernel and with
    the reference."""
    captures = sorted(p for p in DATA.rglob("*") if p.suffix in (".pcap", ".pcapng"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for path in captures:
        monkeypatch.setattr(table, "native_flows", native)
        try:
            with_kernel, _ = replay([path], tmp_path / "a")
        except Exception:  # noqa: BLE001 - captures made to be refused are not the point
            continue
        monkeypatch.setattr(table, "native_flows", None)
        without, _ = replay([path], tmp_path / "b")
        assert with_kernel == without, path.name


@st.composite
def batches(draw: st.DrawFn) -> Inputs:
    """A batch whose packets share a few tuples (so groups have many packets), in both
    directions, with times that jump, go back and sit near the int64 limits."""
    n = draw(st.integers(0, 300))
    tuples = draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2**64 - 1),
                                     st.integers(0, 3), st.integers(0, 2**64 - 1),
                                     st.integers(0, 65535), st.integers(0, 65535),
                                     st.sampled_from([1, 6, 17, 58, 132])),
                           min_size=1, max_size=12))
    which = draw(st.lists(st.integers(0, len(tuples) - 1), min_size=n, max_size=n))
    cols = np.array([tuples[w] for w in which], dtype=np.uint64).reshape(n, 7)
    base = draw(st.sampled_from([0, 10**18, 2**63 - 10**12, -(2**63) + 10**12]))
    steps = draw(st.lists(st.integers(-10**10, 10**12), min_size=n, max_size=n))
    ts = np.array([min(max(base + s, -(2**63)), 2**63 - 1) for s in np.cumsum(steps, dtype=object)]
                  if n else [], dtype=np.int64)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    flags = rng.integers(0, 256, n, dtype=np.uint8)
    swap = rng.random(n) < 0.5
    proto = cols[:, 6] if n else np.zeros(0, np.uint64)
    pure_syn = (proto == 6) & ((flags & 0x12) == 0x02)
    wl = rng.integers(0, 65536, n, dtype=np.int64)
    depth = draw(st.integers(0, 3))
    min_idle = draw(st.sampled_from([0, 30 * 10**9, 120 * 10**9]))
    return (np.ascontiguousarray(cols[:, 0]), np.ascontiguousarray(cols[:, 1]),
            np.ascontiguousarray(cols[:, 2]), np.ascontiguousarray(cols[:, 3]),
            np.ascontiguousarray(cols[:, 4]), np.ascontiguousarray(cols[:, 5]),
            np.ascontiguousarray(proto), depth, swap, pure_syn, flags, wl, ts, min_idle)


@settings(max_examples=400, deadline=None)
@given(batches())
def test_kernel_equals_reference_on_random_batches(inputs: Inputs) -> None:
    assert_same(inputs)


def test_kernel_refuses_columns_of_different_lengths() -> None:
    assert native is not None
    one = np.zeros(1, np.uint64)
    none = np.zeros(0, np.uint64)
    with pytest.raises(ValueError):
        native.group(one, one, one, one, one, one, none, 0, np.zeros(1, np.uint8),
                     np.zeros(1, np.uint8), np.zeros(1, np.uint8), np.zeros(1, np.int64),
                     np.zeros(1, np.int64), 0)
