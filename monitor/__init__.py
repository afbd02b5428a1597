"""avmon: egress monitor for antivirus cloud-lookup and telemetry traffic.

The pipeline: capture -> decode -> flow table -> dissectors -> attribution -> policy ->
sinks. The stable programmatic surface is re-exported here.
"""

from monitor.capture.batch import Batch, LinkType
from monitor.errors import CaptureError, ConfigError, ParseError
from monitor.pipeline import Pipeline

__all__ = ["Batch", "CaptureError", "ConfigError", "LinkType", "ParseError", "Pipeline"]
__version__ = "0.1.0"
