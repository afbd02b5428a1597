"""Cyclic garbage collection tuned for packet processing.

CPython's collector runs by counts of container objects: a young collection every 700
more allocated than freed (default thresholds ``(700, 10, 10)``), an older one every 10 of
those, and a full one every 10 older ones (once enough has piled up). A replay builds a
few container objects per flow that live as long as the flow (the flow, its state, its
record header), so the table's contents are examined again and again: on the 1M-packet
benchmark capture, the collector took about 0.3 s of a 4.5 s replay, two full collections
of 65 ms each among them, and found about 750 objects in cycles in the whole run.

While packets are processed, the collector runs less often:

- what start-up built (modules, configuration, signature set, geo readers) is frozen out
  of collection (:func:`gc.freeze`); it lives to the end anyway, and processes forked
  after it (workers) do not copy the pages the collector would otherwise write to;
- young collections every :data:`YOUNG` allocations in live capture, in pauses of about
  ten milliseconds that the capture ring absorbs; a replay has no ring to overflow and
  collects every :data:`REPLAY_YOUNG` allocations: a young collection examines the
  objects still alive, and the fewer collections, the more of a batch's objects have
  died before one comes (on the 1M-packet benchmark capture, 0.16-0.18 s of collections
  at 10,000, 0.11 s at 100,000);
- older and full collections :data:`OLDER` and :data:`FULL` times rarer than young ones,
  so the flow table is not walked while it is in use; cycles (rare here) are still
  collected.

And when the command is done (:func:`before_exit`), the interpreter's own final
collections are skipped: they walked everything still alive (caches, the signature set)
and took 0.1-0.2 s of every run, after the last record was written.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

__all__ = ["FULL", "OLDER", "REPLAY_YOUNG", "YOUNG", "before_exit", "packet_processing"]

#: Net container allocations between young collections (live capture).
YOUNG: Final = 10_000
#: The same in a replay, where a longer pause costs nothing (at most one young generation
#: of this many objects awaits collection: cycles are still freed).
REPLAY_YOUNG: Final = 100_000
#: Young collections between collections of the middle generation.
OLDER: Final = 20
#: Middle-generation collections between full ones (CPython also waits until the objects
#: awaiting their first full collection are a quarter of those that had one).
FULL: Final = 100


@contextmanager
def packet_processing(young: int = YOUNG) -> Iterator[None]:
    """Collector settings for a replay or capture (``young``: allocations between young
    collections); the previous ones are restored on exit, and what was frozen, with
    what is still alive, joins the oldest generation (rather than the young one being
    examined at once under the restored thresholds)."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(young, OLDER, FULL)
    try:
        yield
    finally:
        gc.freeze()
        gc.set_threshold(*before)
        gc.unfreeze()


def before_exit() -> None:
    """The process ends next, with every output closed: what is left is freed as the
    interpreter ends, without the collector's final passes over it. (Objects in cycles are
    then not finalised; nothing of avmon's relies on that: files, sinks and the EVE writer
    are closed explicitly.)"""
    gc.freeze()
