"""avmon: egress monitor for antivirus cloud-lookup and telemetry traffic.

The pipeline: capture -> decode -> flow table -> dissectors -> attribution -> policy ->
sinks. The stable programmatic surface is re-exported here, loaded on first use (PEP 562):
importing one submodule, or starting the ``avmon`` command, does not import the whole
pipeline through the package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitor.capture.batch import Batch, LinkType
    from monitor.errors import CaptureError, ConfigError, ParseError
    from monitor.pipeline import Pipeline

__all__ = ["Batch", "CaptureError", "ConfigError", "LinkType", "ParseError", "Pipeline"]
__version__ = "0.1.0"

_HOMES = {"Batch": "monitor.capture.batch", "LinkType": "monitor.capture.batch",
          "CaptureError": "monitor.errors", "ConfigError": "monitor.errors",
          "ParseError": "monitor.errors", "Pipeline": "monitor.pipeline"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'monitor' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
