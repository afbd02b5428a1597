"""Live capture from Linux AF_PACKET sockets, as batches.

Packets are received into one preallocated buffer per batch with ``recvmsg_into``, with
the kernel's receive timestamp (``SO_TIMESTAMPNS``); a batch is handed on when it is full
or when ``batch_timeout`` has passed, so a quiet link still flows. ``-i any`` uses a cooked
(``SOCK_DGRAM``) socket and yields raw IP; a named interface yields its link layer. As
libpcap does, packets a loopback interface sends are taken once (the outgoing copy is
skipped). Kernel drop counters come from ``PACKET_STATISTICS``.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Iterator, Sequence
from typing import Final

import numpy as np

from monitor.capture.batch import Batch, LinkType, empty_batch
from monitor.capture.ring import (
    ETH_P_ALL,
    PACKET_OUTGOING,
    PACKET_STATISTICS,
    SOL_PACKET,
    open_error,
)
from monitor.errors import CaptureError

__all__ = ["LiveCapture"]

SO_TIMESTAMPNS: Final = 35
#: Largest frame kept (the interface MTU is usually far below; GRO can exceed it).
SNAPLEN: Final = 65_535
#: Packets per batch before it is handed on.
BATCH_PACKETS: Final = 4096
#: A batch is handed on after this long even if not full (seconds).
BATCH_TIMEOUT: Final = 0.2
#: On an idle link an empty batch is yielded this often (seconds).
IDLE_SECONDS: Final = 1.0
_CMSG_SPACE: Final = socket.CMSG_SPACE(16)
#: Bytes received before a batch is handed on (a few hundred full-size frames).
RECEIVE_BUFFER: Final = 16 << 20


class LiveCapture:
    """Batches from one or more interfaces (``"any"`` for all of them)."""

    def __init__(self, interfaces: Sequence[str], *, batch_packets: int = BATCH_PACKETS,
                 batch_timeout: float = BATCH_TIMEOUT, bpf: str | None = None) -> None:
        self.batch_packets = batch_packets
        self.batch_timeout = batch_timeout
        self._socks: list[tuple[socket.socket, int, bool]] = []
        self._stop = False
        self.packets_read = 0
        self.first_frame = 1
        try:
            for name in interfaces:
                self._socks.append(self._open(name))
            if bpf:
                from monitor.capture.bpf import attach_bpf, compile_bpf

                for sock, linktype, _ in self._socks:
                    attach_bpf(sock, compile_bpf(bpf, "RAW" if linktype == LinkType.RAW
                                                 else "EN10MB"))
        except OSError as exc:
            self.close()
            raise open_error(name, exc) from None

    @staticmethod
    def _open(name: str) -> tuple[socket.socket, int, bool]:
        if name == "any":
            # An unbound packet socket receives from every interface (Python cannot bind
            # to ifindex 0 by name).
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
            linktype, loopback = LinkType.RAW, False
        else:
            if name not in {n for _, n in socket.if_nameindex()}:
                raise CaptureError(f"no such interface: {name}")
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            sock.bind((name, ETH_P_ALL))
            linktype = LinkType.ETHERNET
            loopback = name == "lo" or name.startswith("lo:")
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.setblocking(False)
        return sock, int(linktype), loopback

    def stop(self) -> None:
        """Ask the iterator to end after the current batch (signal handlers call this)."""
        self._stop = True

    def dropped(self) -> int:
        """Packets the kernel dropped since the sockets opened (PACKET_STATISTICS)."""
        total = 0
        for sock, _, _ in self._socks:
            try:
                raw = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            except OSError:
                continue
            _, drops = struct.unpack("II", raw)
            total += drops
        self._drops = getattr(self, "_drops", 0) + total
        return self._drops

    def __iter__(self) -> Iterator[Batch]:
        size = self.batch_packets
        # One receive buffer, reused: each batch gets a copy of the bytes it holds.
        buf = bytearray(RECEIVE_BUFFER)
        view = memoryview(buf)
        last_yield = time.monotonic()
        while not self._stop:
            offsets = np.zeros(size, np.int64)
            caplens = np.zeros(size, np.int64)
            wirelens = np.zeros(size, np.int64)
            ts = np.zeros(size, np.int64)
            lts = np.zeros(size, np.int32)
            n = 0
            pos = 0
            deadline = time.monotonic() + self.batch_timeout
            while n < size and not self._stop and pos + SNAPLEN <= len(buf):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                ready, _, _ = select.select([s for s, _, _ in self._socks], [], [], left)
                for sock, linktype, loopback in self._socks:
                    if sock not in ready:
                        continue
                    while n < size and pos + SNAPLEN <= len(buf):
                        try:
                            nbytes, anc, flags, addr = sock.recvmsg_into(
                                [view[pos:pos + SNAPLEN]], _CMSG_SPACE, socket.MSG_TRUNC)
                        except BlockingIOError:
                            break
                        if loopback and addr[2] == PACKET_OUTGOING:
                            continue  # lo shows each packet twice; keep the incoming copy
                        stamp = time.time_ns()
                        for level, kind, data in anc:
                            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                                sec, nsec = struct.unpack("qq", data[:16])
                                stamp = sec * 10**9 + nsec
                        cap = min(nbytes, SNAPLEN)
                        offsets[n], caplens[n], wirelens[n] = pos, cap, nbytes
                        ts[n], lts[n] = stamp, linktype
                        pos += cap
                        n += 1
            if not n:
                if time.monotonic() - last_yield >= IDLE_SECONDS:
                    last_yield = time.monotonic()
                    yield empty_batch("live", self.first_frame)
                continue
            last_yield = time.monotonic()
            if n:
                batch = Batch(bytes(view[:pos]), offsets[:n].copy(), caplens[:n].copy(),
                              wirelens[:n].copy(), ts[:n].copy(), lts[:n].copy(),
                              first_frame=self.first_frame, origin="live")
                self.first_frame += n
                self.packets_read += n
                yield batch

    def close(self) -> None:
        for sock, _, _ in self._socks:
            sock.close()
        self._socks = []
