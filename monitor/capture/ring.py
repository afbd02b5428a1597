"""Live capture through a memory-mapped AF_PACKET ring (TPACKET_V3), as batches.

Per interface one ``AF_PACKET`` socket gets a ``PACKET_RX_RING`` of ``block_count`` blocks
of ``block_size`` bytes that the kernel fills with packets and hands over whole (when a
block is full or ``block_timeout_ms`` has passed). Each ready block is copied into the
batch's buffer and returned to the kernel at once, so the ring never waits on the
pipeline; kernel drops (ring full) come from ``PACKET_STATISTICS``.

As libpcap does, the 802.1Q tag the kernel strips into ``tp_vlan_tci`` is put back into
the frame, and on a loopback interface the outgoing copy of each packet is skipped.
``"any"`` opens a cooked (``SOCK_DGRAM``) ring on every interface and yields raw IP. An
optional BPF filter (pcap-filter syntax, compiled by tcpdump) is attached before the
socket is bound, so no unfiltered packet is ever queued.
"""

from __future__ import annotations

import mmap
import select
import socket
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from monitor.capture.batch import Batch, LinkType, empty_batch
from monitor.capture.bpf import attach_bpf, compile_bpf
from monitor.errors import CaptureError

__all__ = ["RingCapture", "open_error", "ring_geometry"]

ETH_P_ALL: Final = 0x0003
SOL_PACKET: Final = 263
#: setsockopt names (linux/if_packet.h).
PACKET_ADD_MEMBERSHIP: Final = 1
PACKET_RX_RING: Final = 5
PACKET_STATISTICS: Final = 6
PACKET_VERSION: Final = 10
TPACKET_V3: Final = 2
PACKET_FANOUT: Final = 18
PACKET_FANOUT_HASH: Final = 0
PACKET_FANOUT_FLAG_DEFRAG: Final = 0x8000
PACKET_MR_PROMISC: Final = 1
#: sll_pkttype of a packet this host sent.
PACKET_OUTGOING: Final = 4
#: block_status / tp_status bits.
TP_STATUS_KERNEL: Final = 0
TP_STATUS_USER: Final = 1
TP_STATUS_VLAN_VALID: Final = 0x10
TP_STATUS_VLAN_TPID_VALID: Final = 0x40
#: Tag protocol identifier used when the kernel did not report one (802.1Q).
ETH_P_8021Q: Final = 0x8100
#: Bytes of destination + source MAC: where an 802.1Q tag goes back in.
MAC_ADDRS_LEN: Final = 12
#: struct tpacket_req3: block_size, block_nr, frame_size, frame_nr, retire_blk_tov,
#: sizeof_priv, feature_req_word.
REQ3: Final = struct.Struct("7I")
#: struct tpacket_block_desc up to hdr.bh1.blk_len: version, offset_to_priv,
#: block_status, num_pkts, offset_to_first_pkt, blk_len.
BLOCK_DESC: Final = struct.Struct("6I")
#: Offset of bh1.block_status inside the block descriptor.
BLOCK_STATUS_OFFSET: Final = 8
BLOCK_STATUS: Final = struct.Struct("I")
#: struct tpacket3_hdr: tp_next_offset, tp_sec, tp_nsec, tp_snaplen, tp_len, tp_status,
#: tp_mac, tp_net, hv1.tp_rxhash, hv1.tp_vlan_tci, hv1.tp_vlan_tpid.
PKT_HDR: Final = struct.Struct("6IHH2IH")
#: struct sockaddr_ll follows the header at TPACKET_ALIGN(sizeof(struct tpacket3_hdr));
#: sll_pkttype is at byte 10 of it.
SLL_PKTTYPE_OFFSET: Final = 48 + 10
#: struct packet_mreq: mr_ifindex, mr_type, mr_alen, mr_address[8].
MREQ: Final = struct.Struct("iHH8s")
#: struct tpacket_stats_v3: tp_packets, tp_drops, tp_freeze_q_cnt.
STATS_V3: Final = struct.Struct("3I")
VLAN_TAG: Final = struct.Struct("!HH")
#: On an idle link an empty batch is yielded this often (seconds), so flows still expire
#: and reloads still apply.
IDLE_SECONDS: Final = 1.0
#: Longest wait in one poll, so stop() is noticed promptly (milliseconds).
POLL_MS: Final = 200


@dataclass(eq=False)
class _Ring:
    """One socket, its mapped ring and the next block to read."""

    name: str
    sock: socket.socket
    ring: mmap.mmap
    linktype: int
    loopback: bool
    block_size: int
    block_count: int
    next_block: int = 0
    view: memoryview = field(init=False)

    def __post_init__(self) -> None:
        self.view = memoryview(self.ring)


def open_error(name: str, exc: OSError) -> CaptureError:
    """The one-line error for an AF_PACKET socket that could not be opened on ``name``."""
    if isinstance(exc, PermissionError):
        return CaptureError("live capture needs CAP_NET_RAW (run as root, or grant the "
                            "capability: setcap cap_net_raw,cap_net_admin=eip)")
    return CaptureError(f"cannot capture on {name}: {exc.strerror or exc}")


def ring_geometry(megabytes: int) -> dict[str, int]:
    """Block size and count for a ring of ``megabytes``: 4 MiB blocks, or at least eight
    smaller ones (whole pages) for a small ring."""
    total = megabytes << 20
    block = 1 << 22
    if total < 8 * block:
        block = max(total // 8 // mmap.PAGESIZE * mmap.PAGESIZE, mmap.PAGESIZE)
    return {"block_size": block, "block_count": max(total // block, 1)}


class RingCapture:
    """Batches from one or more interfaces (``"any"`` for all of them) via TPACKET_V3."""

    def __init__(self, interfaces: Sequence[str], *, bpf: str | None = None,
                 promisc: bool = False, block_size: int = 1 << 22, block_count: int = 64,
                 frame_size: int = 1 << 11, block_timeout_ms: int = 100,
                 fanout_group: int | None = None) -> None:
        if block_size % mmap.PAGESIZE or block_size <= 0:
            raise CaptureError(f"ring block size must be a multiple of {mmap.PAGESIZE}")
        if block_count <= 0 or frame_size <= 0 or block_size % frame_size:
            raise CaptureError("ring block count and frame size must be positive, and the "
                               "frame size must divide the block size")
        self.block_size = block_size
        self.block_count = block_count
        self.frame_size = frame_size
        self.block_timeout_ms = block_timeout_ms
        self.promisc = promisc
        #: PACKET_FANOUT group id (one per interface: this plus the interface's index).
        self.fanout_group = fanout_group
        self.packets_read = 0
        self.first_frame = 1
        self._stop = False
        self._drops = 0
        self._kernel_packets = 0
        self._rings: list[_Ring] = []
        # Compile once per link type before any socket exists (a bad filter is a
        # configuration error, not a capture error).
        programs: dict[str, bytes] = {}
        if bpf is not None:
            kinds = {"RAW" if name == "any" else "EN10MB" for name in interfaces}
            programs = {kind: compile_bpf(bpf, kind) for kind in sorted(kinds)}
        name = ""
        try:
            for index, name in enumerate(interfaces):
                self._rings.append(self._open(name, programs, index))
        except OSError as exc:
            self.close()
            raise open_error(name, exc) from None
        except CaptureError:
            self.close()
            raise

    def _open(self, name: str, programs: dict[str, bytes], index: int) -> _Ring:
        if name == "any":
            kind, ifname, linktype, loopback = socket.SOCK_DGRAM, "", LinkType.RAW, False
            program = programs.get("RAW")
        else:
            if name not in {n for _, n in socket.if_nameindex()}:
                raise CaptureError(f"no such interface: {name}")
            kind, ifname, linktype = socket.SOCK_RAW, name, LinkType.ETHERNET
            loopback = name == "lo" or name.startswith("lo:")
            program = programs.get("EN10MB")
        # A named interface opens with protocol 0, so nothing is queued until bind(), after
        # the filter and ring are set. "any" cannot be bound (Python resolves "" as an
        # interface name), so it takes ETH_P_ALL at once; whatever arrives before the ring
        # exists stays in the plain receive queue, which is never read.
        sock = socket.socket(socket.AF_PACKET, kind, 0 if ifname else socket.htons(ETH_P_ALL))
        try:
            if program is not None:
                attach_bpf(sock, program)
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            req = REQ3.pack(self.block_size, self.block_count, self.frame_size,
                            self.block_size // self.frame_size * self.block_count,
                            self.block_timeout_ms, 0, 0)
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            ring = mmap.mmap(sock.fileno(), self.block_size * self.block_count,
                             mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            if ifname:
                sock.bind((ifname, ETH_P_ALL))
            if self.promisc and ifname:
                mreq = MREQ.pack(socket.if_nametoindex(ifname), PACKET_MR_PROMISC, 0, b"")
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            if self.fanout_group is not None:
                # Flow-symmetric hash (both directions of a flow reach the same socket);
                # fragments reassembled first so they follow their flow.
                group = (self.fanout_group + index) & 0xFFFF
                mode = PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG
                sock.setsockopt(SOL_PACKET, PACKET_FANOUT, struct.pack("I", group | mode << 16))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return _Ring(name, sock, ring, int(linktype), loopback, self.block_size,
                     self.block_count)

    def __enter__(self) -> RingCapture:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def stop(self) -> None:
        """Ask the iterator to end after the current batch (signal handlers call this)."""
        self._stop = True

    def _read_stats(self) -> None:
        for r in self._rings:
            try:
                raw = r.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, STATS_V3.size)
            except OSError:
                continue
            packets, drops, _ = STATS_V3.unpack(raw)
            self._kernel_packets += packets
            self._drops += drops

    def dropped(self) -> int:
        """Packets the kernel dropped since the rings opened (PACKET_STATISTICS; the
        kernel resets its counters on each read, so they are accumulated here)."""
        self._read_stats()
        return self._drops

    def kernel_packets(self) -> int:
        """Packets the kernel counted for the rings (received plus dropped)."""
        self._read_stats()
        return self._kernel_packets

    def __iter__(self) -> Iterator[Batch]:
        poller = select.poll()
        for r in self._rings:
            poller.register(r.sock.fileno(), select.POLLIN | select.POLLERR)
        last_yield = time.monotonic()
        while self._rings:
            stopping = self._stop
            if stopping:
                # Packets in a block the kernel has not retired yet are handed over at
                # the block timeout: wait for it once, so a stop loses nothing captured.
                time.sleep(self.block_timeout_ms / 1000 + 0.01)
            buf = bytearray()
            offsets: list[int] = []
            caplens: list[int] = []
            wirelens: list[int] = []
            stamps: list[int] = []
            linktypes: list[int] = []
            for r in self._rings:
                self._drain(r, buf, offsets, caplens, wirelens, stamps, linktypes)
            if not offsets:
                if stopping:
                    return
                poller.poll(POLL_MS)
                if time.monotonic() - last_yield >= IDLE_SECONDS:
                    last_yield = time.monotonic()
                    yield empty_batch("ring", self.first_frame)
                continue
            last_yield = time.monotonic()
            n = len(offsets)
            batch = Batch(buf, np.array(offsets, np.int64), np.array(caplens, np.int64),
                          np.array(wirelens, np.int64), np.array(stamps, np.int64),
                          np.array(linktypes, np.int32), first_frame=self.first_frame,
                          origin="ring")
            self.first_frame += n
            self.packets_read += n
            yield batch
            if stopping:
                return

    @staticmethod
    def _drain(r: _Ring, buf: bytearray, offsets: list[int], caplens: list[int],
               wirelens: list[int], stamps: list[int], linktypes: list[int]) -> None:
        """Copy every block the kernel has handed over (at most one ring's worth) into
        ``buf`` and give each block back right away."""
        view, ring = r.view, r.ring
        unpack_block, unpack_pkt = BLOCK_DESC.unpack_from, PKT_HDR.unpack_from
        linktype, loopback = r.linktype, r.loopback
        tag_frames = linktype == LinkType.ETHERNET
        for _ in range(r.block_count):
            base = r.next_block * r.block_size
            _, _, status, num_pkts, first, _ = unpack_block(ring, base)
            if not status & TP_STATUS_USER:
                return
            pos = base + first
            for _ in range(num_pkts):
                (next_off, sec, nsec, snaplen, wirelen, tp_status, mac, _, _, tci,
                 tpid) = unpack_pkt(ring, pos)
                if not (loopback and ring[pos + SLL_PKTTYPE_OFFSET] == PACKET_OUTGOING):
                    start = pos + mac
                    offsets.append(len(buf))
                    if tag_frames and tp_status & TP_STATUS_VLAN_VALID and snaplen >= 12:
                        if not tp_status & TP_STATUS_VLAN_TPID_VALID or not tpid:
                            tpid = ETH_P_8021Q
                        buf += view[start:start + MAC_ADDRS_LEN]
                        buf += VLAN_TAG.pack(tpid, tci)
                        buf += view[start + MAC_ADDRS_LEN:start + snaplen]
                        snaplen += 4
                        wirelen += 4
                    else:
                        buf += view[start:start + snaplen]
                    caplens.append(snaplen)
                    wirelens.append(wirelen)
                    stamps.append(sec * 1_000_000_000 + nsec)
                    linktypes.append(linktype)
                pos += next_off
            BLOCK_STATUS.pack_into(ring, base + BLOCK_STATUS_OFFSET, TP_STATUS_KERNEL)
            r.next_block = (r.next_block + 1) % r.block_count

    def close(self) -> None:
        """Unmap the rings and close the sockets (idempotent)."""
        for r in self._rings:
            r.view.release()
            r.ring.close()
            r.sock.close()
        self._rings = []
