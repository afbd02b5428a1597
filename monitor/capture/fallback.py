"""Fallback live sources: tshark (dumpcap) and scapy's sniffer, feeding the same batches.

``TsharkCapture`` runs ``tshark -w -`` on the interfaces and reads its pcapng stream with
avmon's own reader: link types and capture features only Wireshark handles, and any
platform it runs on. ``ScapyCapture`` uses scapy's sniffer (other platforms, no
AF_PACKET). Both are slower than the AF_PACKET sources and meant for where those cannot
run.
"""

from __future__ import annotations

import queue
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from typing import Any, Final

import numpy as np

from monitor.capture.batch import Batch, LinkType
from monitor.capture.pcap import read_batches
from monitor.errors import CaptureError

__all__ = ["ScapyCapture", "TsharkCapture"]

#: Packets kept waiting for the pipeline before the sniffer's are dropped (counted).
MAX_QUEUE: Final = 100_000
#: How long a scapy batch collects packets (seconds).
BATCH_TIMEOUT: Final = 0.2
#: How long tshark may take to start capturing (seconds).
TSHARK_START_SECONDS: Final = 30.0


class TsharkCapture:
    """Batches from ``tshark -i IFACE... -w -`` (pcapng on a pipe)."""

    def __init__(self, interfaces: Sequence[str], *, bpf: str | None = None) -> None:
        tshark = shutil.which("tshark")
        if tshark is None:
            raise CaptureError("--source tshark: tshark is not installed")
        cmd = [tshark, "-q", "-w", "-", "-F", "pcapng"]
        for name in interfaces:
            cmd += ["-i", name]
        if bpf:
            cmd += ["-f", bpf]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.packets_read = 0
        self._drops = 0
        self._wait_started()

    def _wait_started(self) -> None:
        """Return once tshark says it is capturing (dumpcap takes a few seconds to start;
        traffic before that would be missed)."""
        stderr = self._proc.stderr
        if stderr is None:
            return
        deadline = time.monotonic() + TSHARK_START_SECONDS
        while time.monotonic() < deadline:
            line = stderr.readline()
            if not line:
                break
            if b"Capturing on" in line:
                return
        self.stop()
        raise CaptureError("--source tshark: tshark did not start capturing")

    def stop(self) -> None:
        """Ask tshark to end: SIGINT, on which it stops capturing and writes out what it
        has (SIGTERM could lose the packets still in dumpcap's buffer); the batches go
        on until its output ends."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)

    def dropped(self) -> int:
        return self._drops

    def __iter__(self) -> Iterator[Batch]:
        if self._proc.stdout is None:
            return
        try:
            for batch in read_batches(self._proc.stdout, origin="tshark"):
                self.packets_read += len(batch)
                yield batch
        except Exception as exc:  # noqa: BLE001 - the pipe ends however tshark ends
            if self._proc.poll() is None:
                raise CaptureError(f"--source tshark: {exc}") from None

    def close(self) -> None:
        self.stop()
        try:
            _, err = self._proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            _, err = self._proc.communicate()
        m = re.search(rb"(\d+) packets? dropped", err or b"")
        if m:
            self._drops = int(m.group(1))


class ScapyCapture:
    """Batches from scapy's sniffer."""

    def __init__(self, interfaces: Sequence[str], *, bpf: str | None = None) -> None:
        try:
            from scapy.sendrecv import AsyncSniffer
        except ImportError:
            raise CaptureError("--source scapy: scapy is not installed "
                               "(pip install 'avmon[live]')") from None
        self._queue: queue.Queue[tuple[int, bytes, int]] = queue.Queue(MAX_QUEUE)
        self._drops = 0
        self._stop = False
        self.packets_read = 0
        self.first_frame = 1
        self._sniffer = AsyncSniffer(iface=list(interfaces), filter=bpf, store=False,
                                     prn=self._put)
        self._sniffer.start()

    def _put(self, pkt: Any) -> None:
        raw = bytes(pkt)
        try:
            self._queue.put_nowait((int(float(pkt.time) * 1e9), raw, len(raw)))
        except queue.Full:
            self._drops += 1

    def stop(self) -> None:
        self._stop = True

    def dropped(self) -> int:
        return self._drops

    def __iter__(self) -> Iterator[Batch]:
        while not self._stop:
            deadline = time.monotonic() + BATCH_TIMEOUT
            items: list[tuple[int, bytes, int]] = []
            while time.monotonic() < deadline:
                try:
                    items.append(self._queue.get(timeout=max(deadline - time.monotonic(),
                                                             0.001)))
                except queue.Empty:
                    break
            if not items:
                continue
            lengths = np.array([len(raw) for _, raw, _ in items], dtype=np.int64)
            offsets = np.zeros(len(items), dtype=np.int64)
            offsets[1:] = np.cumsum(lengths)[:-1]
            batch = Batch(b"".join(raw for _, raw, _ in items), offsets, lengths,
                          np.array([w for _, _, w in items], dtype=np.int64),
                          np.array([t for t, _, _ in items], dtype=np.int64),
                          np.full(len(items), int(LinkType.ETHERNET), dtype=np.int32),
                          first_frame=self.first_frame, origin="scapy")
            self.first_frame += len(items)
            self.packets_read += len(items)
            yield batch

    def close(self) -> None:
        self._stop = True
        if self._sniffer.running:
            self._sniffer.stop()
