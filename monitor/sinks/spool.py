"""A crash-safe on-disk spool: a directory of append-only JSONL segment files.

The Alertmanager sink writes every alert here *before* it tries to deliver it, and
deletes a segment only once Alertmanager has accepted everything in it, so a crash, a
restart or an outage loses nothing that reached the sink's thread. Entries are written as
whole lines, flushed and ``fsync``-ed per batch; a line torn by a crash is skipped on
load (and counted). The spool is bounded: when a write would exceed ``max_bytes``, the
oldest segments are deleted and their entries counted as dropped.

Alerts are sensitive (they name classified segments and hosts), so the directory must
belong to the user running avmon and not be writable by group or others; it is created
``0700`` and its files ``0600``. Anything else raises :class:`SpoolError`.

Segments are named ``<sequence>.jsonl`` with a zero-padded, ever-increasing sequence
number. Segments that were on disk when the spool was opened, or that were written by
:meth:`Spool.append` with ``unread=True`` (queue overflow in the caller's thread), are
*unread*: the sink's thread reads them back with :meth:`Spool.read_unread` before their
entries count as in hand.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

import msgspec

from monitor.sinks.base import SinkError

__all__ = ["MIN_SEGMENT_BYTES", "Spool", "SpoolError"]

log = logging.getLogger("avmon.sinks")

#: Segments are rotated at max_bytes / SEGMENTS_PER_SPOOL, so dropping the oldest frees
#: about that fraction of the spool: fine-grained enough to keep most of it.
SEGMENTS_PER_SPOOL: Final = 16
#: Smallest segment size: a demo alert record is ~3 KiB, so a segment holds at least one.
MIN_SEGMENT_BYTES: Final = 4096
#: Longest line accepted on load; an alert record is a few KiB, so anything near this is
#: not ours.
MAX_LINE_BYTES: Final = 16 * 1024 * 1024

_SEGMENT = re.compile(r"^(\d{12})\.jsonl$")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class SpoolError(SinkError):
    """The spool directory cannot be used safely."""


class _Segment(msgspec.Struct):
    seq: int
    size: int
    lines: int
    unread: bool


class Spool:
    """Append-only JSONL segments in ``path``, at most ``max_bytes`` in all. Thread-safe."""

    def __init__(self, path: Path, max_bytes: int, *,
                 on_drop: Callable[[int], None] = lambda n: None) -> None:
        if max_bytes < MIN_SEGMENT_BYTES:
            raise SpoolError(f"spool {path}: max_bytes must be at least {MIN_SEGMENT_BYTES}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.segment_bytes = max(MIN_SEGMENT_BYTES, max_bytes // SEGMENTS_PER_SPOOL)
        #: Entries deleted to keep the spool within max_bytes, plus torn lines skipped.
        self.dropped = 0
        self._on_drop = on_drop
        self._lock = threading.Lock()
        self._segments: dict[int, _Segment] = {}
        self._fd: int | None = None
        self._current: _Segment | None = None
        self._dirty = False
        self._open_dir()
        self._next_seq = max(self._segments, default=0) + 1

    # -- opening -------------------------------------------------------------------------

    def _open_dir(self) -> None:
        p = self.path
        try:
            if not p.exists():
                p.mkdir(mode=0o700, parents=True)
                os.chmod(p, 0o700)  # mkdir's mode is masked by the umask
            st = os.stat(p)
        except OSError as e:
            raise SpoolError(f"spool {p}: cannot create or read: {e.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise SpoolError(f"spool {p}: not a directory")
        if st.st_uid != os.geteuid():
            raise SpoolError(f"spool {p}: owned by uid {st.st_uid}, not by this user "
                             f"(uid {os.geteuid()}); refusing to use it")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise SpoolError(f"spool {p}: writable by group or others (mode "
                             f"{stat.S_IMODE(st.st_mode):04o}); refusing to use it "
                             f"(chmod 700 it)")
        for entry in os.scandir(p):
            m = _SEGMENT.match(entry.name)
            if m is None or not entry.is_file(follow_symlinks=False):
                continue
            data = Path(entry.path).read_bytes()
            seq = int(m.group(1))
            self._segments[seq] = _Segment(seq, len(data), data.count(b"\n"), unread=True)

    # -- state ---------------------------------------------------------------------------

    @property
    def bytes(self) -> int:
        """Bytes on disk in all segments."""
        with self._lock:
            return sum(s.size for s in self._segments.values())

    @property
    def has_unread(self) -> bool:
        with self._lock:
            return any(s.unread for s in self._segments.values())

    def segment_paths(self) -> list[Path]:
        with self._lock:
            return [self._file(seq) for seq in sorted(self._segments)]

    def _file(self, seq: int) -> Path:
        return self.path / f"{seq:012d}.jsonl"

    # -- writing -------------------------------------------------------------------------

    def append(self, entries: Iterable[dict[str, Any]], *, unread: bool = False,
               sync: bool = True) -> None:
        """Append entries as whole lines; ``fsync`` unless ``sync`` is False.

        ``unread`` marks them for :meth:`read_unread` (the writer is not the reader).
        Raises OSError if the disk refuses the write (the caller counts it).
        """
        lines = [json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
                 for e in entries]
        with self._lock:
            for line in lines:
                if len(line) > self.max_bytes - 1:
                    self._drop_count(1)
                    continue
                self._make_room(len(line))
                seg = self._writable(unread)
                _write_all(self._fd_checked(), line)
                seg.size += len(line)
                seg.lines += 1
                self._dirty = True
                if seg.size >= self.segment_bytes:
                    self._seal_locked()
            if sync:
                self._sync_locked()

    def sync(self) -> None:
        """``fsync`` what was written with ``sync=False``."""
        with self._lock:
            self._sync_locked()

    def seal(self) -> int:
        """Close the current segment; return the highest sequence number written so far.

        Entries appended after this go to a later segment, so ``ack(seal())`` after a
        delivery deletes exactly what was in hand when the delivery began.
        """
        with self._lock:
            self._seal_locked()
            return self._next_seq - 1

    def ack(self, upto: int) -> None:
        """Delete read segments with sequence number ``<= upto``: their entries were delivered."""
        with self._lock:
            for seq in sorted(self._segments):
                seg = self._segments[seq]
                if seq > upto:
                    break
                if seg.unread or seg is self._current:
                    continue
                self._delete(seq)

    def read_unread(self) -> list[dict[str, Any]]:
        """Entries of every unread segment, oldest first; they are then read (in hand)."""
        with self._lock:
            if self._current is not None and self._current.unread:
                self._seal_locked()
            out: list[dict[str, Any]] = []
            for seq in sorted(self._segments):
                seg = self._segments[seq]
                if not seg.unread:
                    continue
                seg.unread = False
                out.extend(self._read(seq))
            return out

    def close(self) -> None:
        with self._lock:
            self._seal_locked()

    # -- internals (lock held) -------------------------------------------------------------

    def _fd_checked(self) -> int:
        if self._fd is None:
            raise OSError("spool segment is not open")
        return self._fd

    def _writable(self, unread: bool) -> _Segment:
        cur = self._current
        if cur is not None and cur.unread == unread:
            return cur
        self._seal_locked()
        seq = self._next_seq
        self._next_seq += 1
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(self._file(seq), flags, 0o600)
        self._fsync_dir()
        seg = _Segment(seq, 0, 0, unread)
        self._segments[seq] = seg
        self._current = seg
        return seg

    def _seal_locked(self) -> None:
        if self._fd is not None:
            self._sync_locked()
            os.close(self._fd)
        self._fd = None
        self._current = None

    def _sync_locked(self) -> None:
        if self._dirty and self._fd is not None:
            os.fsync(self._fd)
        self._dirty = False

    def _make_room(self, n: int) -> None:
        total = sum(s.size for s in self._segments.values())
        for seq in sorted(self._segments):
            if total + n <= self.max_bytes:
                return
            seg = self._segments[seq]
            if seg is self._current:
                self._seal_locked()
            total -= seg.size
            self._drop_count(seg.lines)
            log.warning("spool %s: full (%d bytes), dropped its oldest segment (%d alert(s))",
                        self.path, self.max_bytes, seg.lines)
            self._delete(seq)

    def _drop_count(self, n: int) -> None:
        if n:
            self.dropped += n
            self._on_drop(n)

    def _delete(self, seq: int) -> None:
        try:
            self._file(seq).unlink()
        except FileNotFoundError:
            pass
        del self._segments[seq]
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _read(self, seq: int) -> list[dict[str, Any]]:
        try:
            data = self._file(seq).read_bytes()
        except FileNotFoundError:
            return []
        out: list[dict[str, Any]] = []
        torn = 0
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        elif lines:
            torn += 1  # a crash during the last write: the line has no end
            lines.pop()
        for line in lines:
            try:
                entry = json.loads(line) if len(line) <= MAX_LINE_BYTES else None
            except ValueError:
                entry = None
            if isinstance(entry, dict):
                out.append(entry)
            else:
                torn += 1
        if torn:
            log.warning("spool %s: skipped %d damaged line(s) in %s", self.path, torn,
                        self._file(seq).name)
            self._drop_count(torn)
        return out
