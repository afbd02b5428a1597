"""Capture sources: where packets come from, as :class:`Batch` objects.

:class:`CaptureReader` reads pcap and pcapng files (plain or gzip-compressed, single
files or directories of rotated captures); :class:`Batch` and :class:`LinkType` are the
unit it yields and the link-layer types decode understands.
"""

from monitor.capture.batch import Batch, LinkType
from monitor.capture.files import CaptureReader

__all__ = ["Batch", "CaptureReader", "LinkType"]
