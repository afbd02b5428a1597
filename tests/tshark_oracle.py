"""tshark as the oracle for flow counters.

``tshark -z conv,tcp`` / ``-z conv,udp`` print byte counts rounded to kB, so the exact
oracle is built from the same dissection, frame by frame: every TCP or UDP layer of a frame
(outer and tunnelled) with its ``tcp.stream``/``udp.stream`` index, the addresses of the IP
layer below it, and the frame length. A conversation's side A is the sender of its first
frame, as in tshark's table. ``conv_table`` parses the ``-z conv`` text so tests can also
check that this oracle agrees with tshark's own table.

One documented difference is folded in: tshark attributes a reassembled IP datagram to
the conversation once, in the frame that completed it; avmon counts every fragment frame
of it (egress volume must include them), so the oracle adds the other fragment frames.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field

import pytest

FIELDS = ["frame.number", "frame.len", "frame.protocols", "ip.src", "ip.dst", "ipv6.src",
          "ipv6.dst", "tcp.stream", "tcp.srcport", "tcp.dstport", "udp.stream", "udp.srcport",
          "udp.dstport", "ip.fragment", "ipv6.fragment"]


def require_tool(name: str) -> str:
    """Path of a system binary; skip without it, but fail in CI (CI=true)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{name} is required in CI but not installed")
        pytest.skip(f"{name} not installed")
    return path


@dataclass
class Conv:
    proto: str
    a: tuple[str, int]
    b: tuple[str, int]
    frames_ab: int = 0
    frames_ba: int = 0
    bytes_ab: int = 0
    bytes_ba: int = 0
    frames: list[int] = field(default_factory=list)

    def key(self) -> tuple[str, frozenset[tuple[str, int]]]:
        return (self.proto, frozenset((self.a, self.b)))

    def oriented(self, src: tuple[str, int]) -> tuple[int, int, int, int]:
        """(frames src->other, frames other->src, bytes src->other, bytes other->src)."""
        if src == self.a:
            return self.frames_ab, self.frames_ba, self.bytes_ab, self.bytes_ba
        return self.frames_ba, self.frames_ab, self.bytes_ba, self.bytes_ab


def _norm(addr: str) -> str:
    import ipaddress

    return str(ipaddress.ip_address(addr))


def tshark_conversations(path: str) -> list[Conv]:
    tshark = require_tool("tshark")
    out = subprocess.run(
        [tshark, "-n", "-r", path, "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a",
         "-E", "aggregator=,"] + [a for f in FIELDS for a in ("-e", f)],
        check=True, capture_output=True, text=True).stdout
    rows = [line.split("\t") for line in out.splitlines() if line]
    lengths = {int(r[0]): int(r[1]) for r in rows}
    convs: dict[tuple[str, str], Conv] = {}
    for r in rows:
        rec = dict(zip(FIELDS, r, strict=False))
        frame = int(rec["frame.number"])
        flen = int(rec["frame.len"])
        protos = rec["frame.protocols"].split(":")
        split = {k: (rec.get(k) or "").split(",") if rec.get(k) else []
                 for k in FIELDS[3:]}
        counters = defaultdict(int)
        ip_src = ip_dst = None
        for proto in protos:
            if proto in ("icmp", "icmpv6"):
                break  # headers quoted inside ICMP errors make no conversation
            if proto in ("ip", "ipv6"):
                i = counters[proto]
                counters[proto] += 1
                srcs, dsts = split[f"{proto}.src"], split[f"{proto}.dst"]
                if i < len(srcs):
                    ip_src, ip_dst = _norm(srcs[i]), _norm(dsts[i])
            elif proto in ("tcp", "udp"):
                i = counters[proto]
                counters[proto] += 1
                streams = split[f"{proto}.stream"]
                if i >= len(streams) or ip_src is None:
                    continue
                sport = int(split[f"{proto}.srcport"][i])
                dport = int(split[f"{proto}.dstport"][i])
                ck = (proto, streams[i])
                conv = convs.get(ck)
                if conv is None:
                    conv = convs[ck] = Conv(proto, (ip_src, sport), (ip_dst, dport))
                extra = []
                for fk in ("ip.fragment", "ipv6.fragment"):
                    extra += [int(x) for x in split[fk] if x and int(x) != frame]
                n_frames = 1 + len(extra)
                n_bytes = flen + sum(lengths[x] for x in extra)
                if (ip_src, sport) == conv.a:
                    conv.frames_ab += n_frames
                    conv.bytes_ab += n_bytes
                else:
                    conv.frames_ba += n_frames
                    conv.bytes_ba += n_bytes
                conv.frames.append(frame)
    return list(convs.values())


_CONV_LINE = re.compile(
    r"^(?P<a>\S+):(?P<pa>\d+)\s+<->\s+(?P<b>\S+):(?P<pb>\d+)\s+"
    r"(?P<f1>\d+)\s+(?P<b1>[\d,]+ \S+)\s+(?P<f2>\d+)\s+(?P<b2>[\d,]+ \S+)\s+")


def conv_table(path: str, proto: str) -> list[tuple[tuple[str, int], tuple[str, int], int, int]]:
    """tshark's own ``-z conv,PROTO`` rows: (A, B, frames B->A, frames A->B)."""
    tshark = require_tool("tshark")
    out = subprocess.run([tshark, "-n", "-q", "-r", path, "-z", f"conv,{proto}"],
                         check=True, capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        m = _CONV_LINE.match(line.strip())
        if m:
            rows.append(((_norm(m["a"]), int(m["pa"])), (_norm(m["b"]), int(m["pb"])),
                         int(m["f1"]), int(m["f2"])))
    return rows
