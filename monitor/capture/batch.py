"""The unit that flows from capture sources into decode: a batch of packets.

A batch is one buffer plus per-packet columns (numpy arrays of equal length): where each
packet's bytes start in the buffer, how many were captured, how long the packet was on
the wire, its timestamp in nanoseconds since the epoch, and its link type. Sources never
build a Python object per packet; later stages index these columns.
"""

from __future__ import annotations

from enum import IntEnum

import msgspec
import numpy as np
import numpy.typing as npt

__all__ = ["Batch", "LinkType", "empty_batch"]


class LinkType(IntEnum):
    """LINKTYPE_* values (tcpdump.org link-layer header types) that avmon decodes."""

    NULL = 0          # BSD loopback, 4-byte family in the capturing host's byte order
    ETHERNET = 1
    RAW = 101         # raw IPv4/IPv6, version from the first nibble
    LOOP = 108        # OpenBSD loopback, family in network byte order
    LINUX_SLL = 113   # tcpdump -i any (v1)
    IPV4 = 228
    IPV6 = 229
    NFLOG = 239
    LINUX_SLL2 = 276  # tcpdump -i any (v2)
    # DLT_RAW values some platforms write into pcap headers instead of 101.
    RAW_DLT12 = 12
    RAW_DLT14 = 14


class Batch(msgspec.Struct, frozen=True, eq=False):
    """Packets read from one source, in capture order."""

    #: The bytes all packets of this batch live in (valid until the next batch is read).
    buffer: bytes | bytearray | memoryview
    #: Start of each packet's captured bytes within ``buffer`` (int64).
    offsets: npt.NDArray[np.int64]
    #: Captured length of each packet (int64; may be less than ``wirelens``).
    caplens: npt.NDArray[np.int64]
    #: Original length on the wire (int64).
    wirelens: npt.NDArray[np.int64]
    #: Timestamp, nanoseconds since the Unix epoch (int64).
    ts_ns: npt.NDArray[np.int64]
    #: Link type of each packet (int32; pcapng interfaces may differ).
    linktypes: npt.NDArray[np.int32]
    #: Frame number (1-based, across all files of one replay) of the first packet; the
    #: i-th packet of the batch is frame ``first_frame + i`` (Suricata's ``pcap_cnt``).
    first_frame: int = 1
    #: Name of the file or interface the batch came from (for messages).
    origin: str = ""

    def __len__(self) -> int:
        return int(self.offsets.shape[0])

    def packet(self, i: int) -> bytes:
        """Captured bytes of packet ``i`` (a copy; for the slow path and tests)."""
        off = int(self.offsets[i])
        return bytes(self.buffer[off : off + int(self.caplens[i])])


def empty_batch(origin: str = "", first_frame: int = 1) -> Batch:
    """A batch of no packets: live sources yield one when the link is idle, so the
    pipeline can still expire flows and apply reloads on packet-less time."""
    none64 = np.zeros(0, dtype=np.int64)
    return Batch(b"", none64, none64, none64, none64, np.zeros(0, dtype=np.int32),
                 first_frame=first_frame, origin=origin)
