"""The compiled kernels (monitor/_kernels.pyx, _decode.pyx, _flows.pyx), if they were built.

``native``, ``native_decode`` and ``native_flows`` are the extension modules, each None
when it is missing (a source tree that was not installed, a machine without a C
compiler) or when ``AVMON_PURE_PYTHON=1`` asks for the pure-Python references, which
give the same results, more slowly. Callers test for None once per batch or unit and use
the reference otherwise. See docs/kernels.md.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["missing", "native", "native_decode", "native_flows", "status"]


def _pure() -> bool:
    return os.environ.get("AVMON_PURE_PYTHON", "") not in ("", "0")


def _load(name: str) -> ModuleType | None:
    if _pure():
        return None
    try:
        return importlib.import_module(f"monitor.{name}")
    except ImportError:
        return None


#: The parsers' and capture readers' kernels (monitor/_kernels.pyx).
native: ModuleType | None = _load("_kernels")
#: The decoder's kernel (monitor/_decode.pyx).
native_decode: ModuleType | None = _load("_decode")
#: The flow table's kernel (monitor/_flows.pyx).
native_flows: ModuleType | None = _load("_flows")


def missing() -> bool:
    """The kernels were not built (as opposed to switched off on purpose)."""
    return not _pure() and (native is None or native_decode is None or native_flows is None)


def status() -> str:
    """One line for logs and warnings: which implementation runs."""
    if native is not None and native_decode is not None and native_flows is not None:
        return "compiled kernels"
    if not missing():
        return "pure Python (AVMON_PURE_PYTHON is set)"
    return ("pure Python: the compiled kernels were not built (reinstall with a C compiler "
            "and the Python headers; the pure-Python path is slower)")
