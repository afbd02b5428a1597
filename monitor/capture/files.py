"""Capture files as one source: the paths a replay is given, in the order they are read.

This module owns everything about capture *files* that is not their format: expanding
directories into the captures they hold, recognising gzip by its magic number and
streaming through it, ordering several files by the time of their first packet, numbering
frames across all of them, progress counters, and turning damage into a warning so that
reading goes on with the next file. Decoding the formats is :mod:`monitor.capture.pcap`'s.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Final

import msgspec

from monitor.capture.batch import Batch
from monitor.capture.pcap import (
    DEFAULT_BATCH_PACKETS,
    DEFAULT_CHUNK_BYTES,
    CaptureDamaged,
    NotACapture,
    Readable,
    capture_format,
    describe_head,
    read_batches,
)
from monitor.errors import CaptureError

__all__ = ["CaptureReader"]

_log = logging.getLogger(__name__)

GZIP_MAGIC: Final = b"\x1f\x8b"
#: Bytes read from each file up front to find its first packet's time (for ordering):
#: enough for the file header, the interface blocks and a first packet of usual size;
#: more is read only if the first packet is further in.
PROBE_CHUNK_BYTES: Final = 64 << 10

#: Names that say "capture" (including rotated and compressed ones such as
#: ``x.pcap3``, ``x.pcap.1``, ``x.pcapng.gz``); in a directory, only such files are
#: worth a warning when they turn out not to be readable captures.
_CAPTURE_NAME = re.compile(r"\.(pcap|pcapng|cap|ntar|dmp)(\d+|\.\d+)?(\.gz)?$", re.IGNORECASE)


class _File(msgspec.Struct, frozen=True):
    path: Path
    #: On-disk size in bytes.
    size: int
    #: Compressed with gzip (found by magic number, not by name).
    gzipped: bool
    #: Timestamp of the first packet (ns), or ``None`` if none could be read.
    first_ts: int | None


class CaptureReader:
    """Read packets from capture files and directories of capture files, as batches.

    ``paths`` may name pcap or pcapng files, gzip-compressed ones, or directories (whose
    capture files, recognised by magic number, are read; other files are ignored). Files
    are read one after another, ordered by the timestamp of their first packet (then by
    name); frames are numbered 1, 2, ... across all of them.

    Raises :class:`~monitor.errors.CaptureError` at construction if a path does not
    exist, cannot be read, is not a capture, or is a directory without captures. An
    empty file is skipped with a warning. Damage part-way through a file (a truncated or
    corrupt record) ends that file: its earlier packets are yielded, ``warn`` is called,
    the damage is recorded in :attr:`damaged`, and reading goes on with the next file.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        batch_packets: int = DEFAULT_BATCH_PACKETS,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        if batch_packets < 1:
            raise ValueError(f"batch_packets must be positive, not {batch_packets}")
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be positive, not {chunk_bytes}")
        if isinstance(paths, (str, os.PathLike)):
            raise TypeError("paths must be a sequence of paths, not a single path")
        self._batch_packets = batch_packets
        self._chunk_bytes = chunk_bytes
        #: Called with each warning (damage, an empty or unreadable file skipped).
        self.warn = warn if warn is not None else _log.warning
        found = self._collect([Path(p) for p in paths])
        found.sort(key=lambda f: (f.first_ts is None, f.first_ts or 0, str(f.path)))
        self._found = found
        #: The capture files, in the order they are read.
        self.files: list[Path] = [f.path for f in found]
        #: Sum of the files' on-disk sizes.
        self.total_bytes: int = sum(f.size for f in found)
        #: On-disk bytes consumed so far (compressed bytes for gzip files); equals
        #: :attr:`total_bytes` once iteration has finished.
        self.bytes_read: int = 0
        #: Packets yielded so far.
        self.packets_read: int = 0
        #: ``(path, offset, problem)`` for each file whose reading stopped at damage; for a
        #: gzip file the offset is within the decompressed data.
        self.damaged: list[tuple[Path, int, str]] = []

    def __iter__(self) -> Iterator[Batch]:
        self.bytes_read = 0
        self.packets_read = 0
        self.damaged = []
        done = 0
        for f in self._found:
            yield from self._read_file(f, done)
            done += f.size
            self.bytes_read = done

    # ------------------------------------------------------------------ reading

    def _read_file(self, f: _File, done: int) -> Iterator[Batch]:
        try:
            raw = open(f.path, "rb", buffering=0)
        except OSError as exc:
            raise CaptureError(f"{f.path}: cannot open ({exc.strerror or exc})") from None
        with raw:
            stream: Readable = gzip.GzipFile(fileobj=raw, mode="rb") if f.gzipped else raw
            batches = read_batches(
                stream,
                origin=str(f.path),
                first_frame=self.packets_read + 1,
                chunk_bytes=self._chunk_bytes,
                batch_packets=self._batch_packets,
            )
            try:
                for batch in batches:
                    self.packets_read += len(batch)
                    self.bytes_read = done + raw.tell()
                    yield batch
            except CaptureDamaged as exc:
                problem = exc.problem
                if f.gzipped:
                    problem += " (offset in the decompressed data)"
                self.damaged.append((f.path, exc.offset, problem))
                self.warn(
                    f"{f.path}: damaged capture at offset {exc.offset}: {problem}; "
                    "stopped reading this file"
                )
            finally:
                batches.close()

    # ---------------------------------------------------------------- discovery

    def _collect(self, paths: list[Path]) -> list[_File]:
        if not paths:
            raise CaptureError("no capture files given")
        found: list[_File] = []
        seen: set[Path] = set()

        def add(f: _File | None) -> None:
            if f is None:
                return
            key = f.path.resolve()
            if key not in seen:
                seen.add(key)
                found.append(f)

        for path in paths:
            if path.is_dir():
                members = self._directory(path)
                for member in members:
                    add(member)
            elif path.exists():
                add(self._probe(path, strict=True))
            else:
                raise CaptureError(f"{path}: no such file or directory")
        return found

    def _directory(self, directory: Path) -> list[_File]:
        try:
            entries = sorted(directory.iterdir())
        except OSError as exc:
            raise CaptureError(
                f"{directory}: cannot list directory ({exc.strerror or exc})"
            ) from None
        members: list[_File] = []
        empty = 0
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file():
                continue
            try:
                probed = self._probe(entry, strict=False)
            except CaptureError as exc:
                if _CAPTURE_NAME.search(entry.name):
                    self.warn(f"{exc}; skipped")
                continue
            if probed is None:
                empty += 1
            else:
                members.append(probed)
        if not members and not empty:
            raise CaptureError(f"{directory}: directory holds no pcap or pcapng captures")
        return members

    def _probe(self, path: Path, *, strict: bool) -> _File | None:
        """Check that ``path`` is a capture and find its first packet's time.

        Returns ``None`` (after a warning) for an empty file. In a directory
        (``strict=False``) an empty file only draws a warning if its name says capture.
        """
        try:
            size = path.stat().st_size
            with open(path, "rb", buffering=0) as raw:
                head = raw.read(4)
                if not head:
                    if strict or _CAPTURE_NAME.search(path.name):
                        self.warn(f"{path}: empty file; skipped")
                    return None
                gzipped = head[:2] == GZIP_MAGIC
                if not gzipped and capture_format(head) is None:
                    raise CaptureError(f"{path}: {describe_head(head)}")
                raw.seek(0)
                stream: Readable = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
                first_ts = _first_timestamp(stream, str(path))
        except NotACapture as exc:
            if not exc.head:
                self.warn(f"{path}: empty file (after gzip decompression); skipped")
                return None
            raise CaptureError(
                f"{path}: gzip-compressed, and the content is {describe_head(exc.head)}"
            ) from None
        except OSError as exc:
            raise CaptureError(f"{path}: cannot read ({exc.strerror or exc})") from None
        return _File(path=path, size=size, gzipped=gzipped, first_ts=first_ts)


def _first_timestamp(stream: Readable, origin: str) -> int | None:
    """Timestamp of the first packet of ``stream``, or ``None`` if it has none before
    damage (the damage itself is reported when the file is read)."""
    batches = read_batches(stream, origin=origin, chunk_bytes=PROBE_CHUNK_BYTES, batch_packets=1)
    try:
        for batch in batches:
            return int(batch.ts_ns[0])
    except CaptureDamaged:
        return None
    finally:
        batches.close()
    return None
