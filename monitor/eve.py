"""EVE JSON lines output (Suricata's field names, plus avmon's own object).

Records are serialised with orjson and written as whole lines: the lines of one batch of
packets are appended together with a single ``write`` call on an ``O_APPEND`` descriptor
at the end of the batch (``flush``), so a reader (or a crash) never sees half a record,
and a record is on disk at most one batch after its packet was read. Timestamps are
packet time.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import stat
import sys
from collections.abc import Callable, Iterable
from typing import IO, Any, Final

import orjson

from monitor.decode import Proto
from monitor.errors import ConfigError, OutputError
from monitor.flow.table import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Flow
from monitor.iptext import ip_text
from monitor.kernels import native

__all__ = ["EveWriter", "eve_time", "flow_record", "prepare_headers", "proto_name"]

_PROTO_NAMES: Final = {Proto.TCP: "TCP", Proto.UDP: "UDP", Proto.ICMP: "ICMP",
                       Proto.ICMPV6: "IPv6-ICMP", Proto.SCTP: "SCTP", Proto.GRE: "GRE",
                       Proto.ESP: "ESP"}
_TCP_FLAG_NAMES: Final = ((TCP_FIN, "fin"), (TCP_SYN, "syn"), (TCP_RST, "rst"), (0x08, "psh"),
                          (TCP_ACK, "ack"), (0x20, "urg"), (0x40, "ecn"), (0x80, "cwr"))


_PROTO_TEXT: Final = {int(p): name for p, name in _PROTO_NAMES.items()}
_PORT_PROTOS: Final = frozenset((int(Proto.TCP), int(Proto.UDP), int(Proto.SCTP)))
_ICMP_PROTOS: Final = frozenset((int(Proto.ICMP), int(Proto.ICMPV6)))


def proto_name(proto: int) -> str:
    name = _PROTO_TEXT.get(int(proto))
    return name if name is not None else str(proto)


def _eve_time_py(ns: int) -> str:
    """Suricata's timestamp format: ``2026-11-28T00:13:50.123456+0000`` (UTC)."""
    secs, rem = divmod(ns, 10**9)
    ms, us = divmod(rem // 1000, 1000)
    # Every record has one or two: digits from a table, as formatting an int takes longer.
    return f"{_second_text(secs)}.{_DIGITS3[ms]}{_DIGITS3[us]}+0000"


#: ``ns`` (packet time, UTC) in Suricata's timestamp format,
#: ``2026-11-28T00:13:50.123456+0000``: the compiled kernel when it was built (1.5 us a
#: call amid a replay for the reference, a third of that for the kernel), else
#: :func:`_eve_time_py`.
eve_time: Callable[[int], str] = native.eve_time if native is not None else _eve_time_py


_DIGITS3: Final = tuple(f"{i:03d}" for i in range(1000))


@functools.lru_cache(maxsize=4096)
def _second_text(secs: int) -> str:
    """The date and time of a second (records come many to the second)."""
    return f"{dt.datetime.fromtimestamp(secs, tz=dt.timezone.utc):%Y-%m-%dT%H:%M:%S}"


def flow_header(flow: Flow, event_type: str, ts_ns: int,
                timestamp: str | None = None) -> dict[str, Any]:
    """The fields every record about ``flow`` starts with (``timestamp``: ``ts_ns`` as
    text, when the caller has it already)."""
    head = flow.ext.get("eve_head")
    if head is None:
        head = flow.ext["eve_head"] = _header(flow)
    # A copy of the flow's own header with the two fields that change filled in: the
    # keys keep their places, and copying a dict costs a third of building it anew.
    rec = head.copy()
    rec["timestamp"] = timestamp or eve_time(ts_ns)
    rec["event_type"] = event_type
    return rec


def prepare_headers(flows: Iterable[Flow]) -> None:
    """Make the header of new ``flows``' records now (with the flow id and the Community
    ID), all together: one flow after another they cost about half of what they cost
    made at each flow's first record, amid other work (measured on the 1M-packet bench
    capture)."""
    for flow in flows:
        ext = flow.ext
        if "eve_head" not in ext:
            ext["eve_head"] = _header(flow)


def _header(flow: Flow) -> dict[str, Any]:
    """The header fields of every record of the flow, in their order; ``timestamp`` and
    ``event_type`` are each record's own and left empty here. (A flow continued after the
    active timeout is a new record with its own flow id: the pipeline drops the header
    it inherits.)"""
    if flow.client_is_a:
        src, sport, dest, dport = flow.a_addr, flow.a_port, flow.b_addr, flow.b_port
    else:
        src, sport, dest, dport = flow.b_addr, flow.b_port, flow.a_addr, flow.a_port
    head: dict[str, Any] = {"timestamp": "", "flow_id": flow.flow_id, "event_type": ""}
    proto = flow.proto
    head["src_ip"] = ip_text(src)
    if proto in _PORT_PROTOS:
        head["src_port"] = sport
    head["dest_ip"] = ip_text(dest)
    if proto in _PORT_PROTOS:
        head["dest_port"] = dport
    head["proto"] = proto_name(proto)
    if proto in _ICMP_PROTOS:
        icmp_type, icmp_code = flow.ext.get("icmp", (0, 0))
        head["icmp_type"] = icmp_type
        head["icmp_code"] = icmp_code
    if flow.vlan:
        head["vlan"] = [flow.vlan]
    head["community_id"] = flow.community_id
    return head


@functools.lru_cache(maxsize=4096)
def _tcp_object(to_server: int, to_client: int) -> dict[str, Any]:
    """The ``tcp`` object of a flow record for its flags each way (flag sets recur: the
    caller copies this cached one)."""
    both = to_server | to_client
    tcp: dict[str, Any] = {"tcp_flags": f"{both:02x}", "tcp_flags_ts": f"{to_server:02x}",
                           "tcp_flags_tc": f"{to_client:02x}"}
    for bit, name in _TCP_FLAG_NAMES:
        if both & bit:
            tcp[name] = True
    return tcp


def flow_record(flow: Flow) -> dict[str, Any]:
    """The EVE ``flow`` record written when ``flow`` ends."""
    first_ns = flow.first_ns
    start = eve_time(first_ns)
    rec = flow_header(flow, "flow", first_ns, start)
    if flow.client_is_a:
        pkts, byts = (flow.pkts_ab, flow.pkts_ba), (flow.bytes_ab, flow.bytes_ba)
    else:
        pkts, byts = (flow.pkts_ba, flow.pkts_ab), (flow.bytes_ba, flow.bytes_ab)
    ext = flow.ext
    body = rec["flow"] = {
        "pkts_toserver": pkts[0],
        "pkts_toclient": pkts[1],
        "bytes_toserver": byts[0],
        "bytes_toclient": byts[1],
        "start": start,
        "end": eve_time(flow.last_ns),
        "age": (flow.last_ns - first_ns) // 10**9,
        "state": flow.state(),
        "reason": flow.reason or "shutdown",
        "alerted": bool(ext.get("alerted", False)),
    }
    if flow.depth:
        body["tunnel_depth"] = flow.depth
    if flow.proto == Proto.TCP:
        rec["tcp"] = dict(_tcp_object(flow.flags_toserver, flow.flags_toclient))
    app = ext.get("app_proto")
    if app:
        rec["app_proto"] = app
    avmon = ext.get("eve_avmon")
    if avmon:
        rec["avmon"] = avmon
    return rec


#: How far back from its end an EVE file is searched for the last whole line.
_TAIL_SEARCH: Final = 1 << 20
#: Bytes of lines held before they are written even within a batch.
_PENDING_LIMIT: Final = 1 << 20


class EveWriter:
    """Appends EVE records as whole JSON lines, each batch's lines in one write.

    ``write`` holds the line; ``flush`` (which the pipeline calls after every batch of
    packets, and ``close``) appends what is held. One write(2) per batch instead of per
    record: on a replay most of the cost of a record was its own system call.

    A run killed in the middle of a write(2) can leave a torn last line (the kernel may
    stop a write to a file at a page boundary on SIGKILL); opening the file again cuts it
    off, with a warning, so new records never join a fragment.
    """

    def __init__(self, target: str | None,
                 warn: Callable[[str], None] | None = None) -> None:
        #: None disables output; "-" is standard output.
        self.target = target
        self._fd: int | None = None
        self._stream: IO[bytes] | None = None
        self.records = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        if target is None:
            return
        if target == "-":
            self._stream = sys.stdout.buffer
        else:
            try:
                try:
                    self._fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
                except PermissionError:  # write-only to us: append without the check
                    self._fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
                    return
            except OSError as e:
                raise ConfigError(f"--eve {target}: cannot open for writing: "
                                  f"{e.strerror}") from None
            torn = _cut_torn_tail(self._fd)
            if torn and warn is not None:
                warn(f"{target}: removed a torn last line ({torn} bytes) left by a run "
                     "that was stopped mid-write")

    def appends_to_file(self) -> bool:
        """Writes go to a regular file opened for appending: processes forked after it was
        opened (with nothing held) may each append their own whole lines to it, as their
        writes never interleave inside a line. A pipe or terminal is not so shared."""
        return self._fd is not None and stat.S_ISREG(os.fstat(self._fd).st_mode)

    def write(self, record: dict[str, Any]) -> None:
        if self._fd is None and self._stream is None:
            return
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        self._pending.append(line)
        self._pending_bytes += len(line)
        self.records += 1
        if self._pending_bytes >= _PENDING_LIMIT:
            self._write_pending()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        # Written or failed (the error goes on to the caller), the lines are not tried
        # again: a retry after a partial write would repeat its lines.
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        try:
            if self._fd is not None:
                # Whole lines in one write(2) on an O_APPEND descriptor: never a torn
                # record between two writers, and a short write goes on where it stopped.
                view = memoryview(data)
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]
            elif self._stream is not None:
                self._stream.write(data)
        except BrokenPipeError:
            raise  # the reader of a pipe went away: not an error of ours
        except OSError as e:
            raise OutputError(f"--eve {self.target}: cannot write: "
                              f"{e.strerror or e}") from None

    def flush(self) -> None:
        self._write_pending()
        if self._stream is not None:
            self._stream.flush()

    def close(self) -> None:
        self.flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _cut_torn_tail(fd: int) -> int:
    """Truncate a file that does not end in a newline after its last whole line; the
    number of bytes removed. A regular file only (not a FIFO or a terminal)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        return 0
    size = st.st_size
    if os.pread(fd, 1, size - 1) == b"\n":
        return 0
    start = max(size - _TAIL_SEARCH, 0)
    tail = os.pread(fd, size - start, start)
    if b"\n" in tail:
        keep = start + tail.rfind(b"\n") + 1
    elif start == 0:
        keep = 0
    else:
        return 0  # no line end in the last MB: not an EVE file's torn record; leave it
    os.ftruncate(fd, keep)
    return size - keep
