"""The compiled kernels (monitor/_kernels.pyx), if they were built.

``native`` is the extension module, or None when it is missing (a source tree that was
not installed, a machine without a C compiler) or when ``AVMON_PURE_PYTHON=1`` asks for
the pure-Python references, which give the same results, about twice as slowly. Callers
test ``native is not None`` once per batch or unit and use the reference otherwise.
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ["native", "status"]


def _load() -> ModuleType | None:
    if os.environ.get("AVMON_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from monitor import _kernels
    except ImportError:
        return None
    return _kernels


native: ModuleType | None = _load()


def status() -> str:
    """One line for logs and warnings: which implementation runs."""
    if native is not None:
        return "compiled kernels"
    if os.environ.get("AVMON_PURE_PYTHON", "") not in ("", "0"):
        return "pure Python (AVMON_PURE_PYTHON is set)"
    return ("pure Python: the compiled kernels were not built (reinstall with a C compiler "
            "and the Python headers; the pure-Python path is slower)")
