"""What every alert sink shares: the interface, the bounded hand-off queue and backoff.

The packet loop calls :meth:`AlertSink.send` and must never wait on the network, so each
sink is a daemon thread fed by a bounded in-memory queue (:data:`MAX_QUEUE`). ``send``
only stamps the record with the wall-clock time it was raised and appends it; when the
queue is full the sink's overflow policy applies (spool or drop, always counted). Every
failure (a refused connection, a rejected payload, a dropped record) adds to
``stats.errors``; every record delivered adds to ``stats.sent``. Nothing a sink does
raises into its caller.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Protocol, runtime_checkable

from monitor.accounting import SinkStats

__all__ = ["MAX_QUEUE", "AlertSink", "Backoff", "QueuedSink", "Raised", "SinkError", "rfc3339"]

log = logging.getLogger("avmon.sinks")

#: Records waiting for a sink's thread. At the alert rates avmon produces (a few per
#: minute on a busy sensor) this holds hours of alerts; it only fills when the receiver
#: stalls, and then the overflow is spooled or counted, never blocked on.
MAX_QUEUE: Final = 10_000

#: Overflow warnings are logged at most this often per sink (the counters say how many).
WARN_INTERVAL_SECONDS: Final = 60.0

#: A record and the wall-clock time (seconds since the epoch) avmon raised it.
Raised = tuple[float, dict[str, Any]]


def rfc3339(t: float) -> str:
    """Seconds since the epoch as RFC 3339 UTC with microseconds (``...T09:00:02.060024Z``)."""
    return dt.datetime.fromtimestamp(t, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SinkError(Exception):
    """An alert sink cannot work as configured (the message is one line)."""


@runtime_checkable
class AlertSink(Protocol):
    """Where alert records go. Implementations never block and never raise into ``send``."""

    #: Short, stable name; the ``sink`` label of the ``avmon_alert_sink_*`` metrics.
    name: str
    #: Live counters, read at scrape time.
    stats: SinkStats

    def send(self, record: dict[str, Any]) -> None:
        """Queue one EVE ``alert`` record for delivery; returns at once."""

    def start(self) -> None:
        """Start the delivery thread."""

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what can be delivered within ``timeout`` seconds, keep or count the rest."""


class Backoff:
    """Exponential backoff with full jitter: ``uniform(d/2, d)`` with ``d`` doubling to a cap."""

    def __init__(self, initial: float, maximum: float,
                 rng: Callable[[], float] = random.random) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("backoff needs 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self.failures = 0
        self._rng = rng

    def next_delay(self) -> float:
        """Record one more failure and return how long to wait before the next attempt."""
        ceiling = min(self.maximum, self.initial * 2.0 ** min(self.failures, 62))
        self.failures += 1
        return ceiling * (0.5 + 0.5 * self._rng())

    def reset(self) -> None:
        self.failures = 0


class QueuedSink:
    """A sink thread behind a bounded queue. Subclasses implement :meth:`_run`."""

    def __init__(self, name: str, *, clock: Callable[[], float] = time.time,
                 backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 queue_limit: int | None = None) -> None:
        self.name = name
        #: Alerts held in memory at most (``limits.sink_pending_alerts``).
        self.queue_limit = MAX_QUEUE if queue_limit is None else queue_limit
        self.stats = SinkStats()
        self._clock = clock
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._cond = threading.Condition()
        self._items: deque[Raised] = deque()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._stats_lock = threading.Lock()
        self._closed = False
        self._warned_at: dict[str, float] = {}

    # -- the caller's side -------------------------------------------------------------

    def send(self, record: dict[str, Any]) -> None:
        item: Raised = (self._clock(), record)
        try:
            with self._cond:
                if not self._closed:
                    if len(self._items) < self.queue_limit:
                        self._items.append(item)
                        self.stats.queue_length = len(self._items)
                        self._cond.notify()
                        return
                    self.limit_hit("sink_pending_alerts")
            self._overflow(item)
        except Exception:  # noqa: BLE001 - a sink never raises into the packet loop
            log.exception("%s: could not queue an alert", self.name)
            self.count(errors=1)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._guarded_run, name=f"avmon-sink-{self.name}",
                                        daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + max(timeout, 0.0)
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(max(deadline - time.monotonic(), 0.0))
        with self._cond:
            self._closed = True
            rest = list(self._items)
            self._items.clear()
            self.stats.queue_length = 0
        self._leftover(rest)

    # -- hooks ---------------------------------------------------------------------------

    def _overflow(self, item: Raised) -> None:
        """The queue is full (or the sink closed): by default the record is dropped."""
        self.count(errors=1)
        self.warn_sometimes("overflow", "%s: %s, alert(s) dropped", self.name,
                            "sink closed" if self._closed else "queue full")

    def _leftover(self, items: list[Raised]) -> None:
        """Records still queued when ``close`` gave up: by default dropped and counted."""
        if items:
            self.count(errors=len(items))
            log.warning("%s: %d alert(s) not delivered before close", self.name, len(items))

    def _run(self) -> None:
        raise NotImplementedError

    # -- the thread's side ---------------------------------------------------------------

    def _guarded_run(self) -> None:
        try:
            self._run()
        except Exception:  # noqa: BLE001 - report and stop, never take the process down
            log.exception("%s: sink thread failed", self.name)
            self.count(errors=1)

    def _take(self, limit: int, timeout: float | None) -> list[Raised]:
        """Up to ``limit`` queued records, waiting at most ``timeout`` s for the first."""
        with self._cond:
            if not self._items and not self._stopping.is_set() and (timeout is None
                                                                      or timeout > 0):
                self._cond.wait(timeout)
            n = min(limit, len(self._items))
            out = [self._items.popleft() for _ in range(n)]
            self.stats.queue_length = len(self._items)
            return out

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless closing; True if the sink is closing."""
        return self._stopping.wait(max(seconds, 0.0))

    def warn_sometimes(self, key: str, msg: str, *args: object) -> None:
        """Log a warning unless the same kind was logged in the last minute."""
        now = time.monotonic()
        last = self._warned_at.get(key)
        if last is None or now - last >= WARN_INTERVAL_SECONDS:
            self._warned_at[key] = now
            log.warning(msg, *args)

    def limit_hit(self, limit: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats.limit_hits[limit] += n

    def count(self, *, sent: int = 0, errors: int = 0) -> None:
        with self._stats_lock:
            self.stats.sent += sent
            self.stats.errors += errors
