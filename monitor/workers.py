"""Live capture across worker processes: PACKET_FANOUT_HASH rings, shared DNS names.

One core cannot keep up with every link. ``avmon live --workers N`` opens N TPACKET_V3
rings on each interface in one fan-out group; the kernel hashes each packet's flow
symmetrically, so each worker sees both directions of whole flows and runs its own
pipeline (flow table, dissectors, attribution, policy) on them.

A flow's name often comes from a DNS answer that another worker saw. Every worker sends
the (client, address, name) entries its DNS answers produce to every other worker, and
publishes a watermark: the capture time up to which it has processed and sent its
answers (``avmon replay --workers`` uses frame numbers instead: every worker reads the
same frames). A worker judges a flow only once every other worker's watermark has passed
the flow's start (live: or after ``WAIT_SECONDS``), so the flow's naming does not depend
on which worker parsed the answer.

The parent process owns the outputs: it feeds the alert sinks and serves /metrics,
summing the workers' metric snapshots; the workers append their EVE lines to the file
themselves (the parent writes them when the output is a pipe or terminal). Signals go
to the parent and are passed on: SIGTERM/SIGINT make every worker flush its flows;
SIGHUP makes each reload.

``avmon replay --workers`` uses the same workers without rings: each reads and decodes
the whole input and keeps the packets whose address pair hashes to it.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkContext
from multiprocessing.queues import SimpleQueue
from typing import Any, Final

from monitor.attribution import DnsCache
from monitor.limits import Limits

__all__ = ["END", "DnsExchange", "Outbox", "SharedDnsCache", "WorkerDns", "ended_how",
           "run_workers"]

#: Entries from other workers held before this worker takes them in; beyond it they are
#: dropped and counted as DNS cache evictions (a worker far behind would otherwise grow
#: without bound).
MAX_INBOX: Final = 200_000
#: How often a worker sends its metrics to the parent (seconds).
METRICS_SECONDS: Final = 1.0

#: How long workers stopped because the first process failed get to end by themselves.
STOP_SECONDS: Final = 5.0

#: A watermark past any capture time: the worker has sent everything.
END: Final = 2**63 - 1

DnsEntry = tuple[bytes, bytes, str, tuple[str, ...], int, int]


class SharedDnsCache(DnsCache):
    """A DNS cache that also keeps what this worker added, to be sent to the others."""

    def __init__(self, limits: Limits) -> None:
        super().__init__(limits.dns_cache_entries, limits.dns_names_per_address)
        self.outbox: list[DnsEntry] = []

    def add(self, client: bytes, address: bytes, qname: str, chain: tuple[str, ...], ttl: int,
            now_ns: int) -> None:
        super().add(client, address, qname, chain, ttl, now_ns)
        self.outbox.append((client, address, qname, chain, ttl, now_ns))

    def add_shared(self, entry: DnsEntry) -> None:
        """An entry another worker's DNS answer produced (not sent on again)."""
        DnsCache.add(self, *entry)


class DnsExchange:
    """The shared state, made before the workers fork: one inbox per worker and one
    watermark per worker (capture time in ns, in shared memory)."""

    def __init__(self, workers: int, ctx: ForkContext) -> None:
        self.workers = workers
        self.watermarks = ctx.RawArray("q", workers)
        #: sent[i * workers + j]: messages worker i has put in worker j's inbox.
        self.sent = ctx.RawArray("q", workers * workers)
        self.inboxes: list[SimpleQueue[tuple[int, list[DnsEntry]] | None]] = \
            [ctx.SimpleQueue() for _ in range(workers)]


class WorkerDns:
    """One worker's end of the exchange."""

    def __init__(self, exchange: DnsExchange, index: int, cache: SharedDnsCache) -> None:
        self.exchange = exchange
        self.index = index
        self.cache = cache
        self._received: collections.deque[list[DnsEntry]] = collections.deque()
        self._held = 0
        #: Messages received from each worker (dropped ones included).
        self._counts = [0] * exchange.workers
        self._others = [j for j in range(exchange.workers) if j != index]
        #: The latest time :meth:`complete` held for: it holds for every earlier one too.
        self._complete_upto = -1
        self._lock = threading.Lock()
        # A thread empties this worker's inbox as entries come, so a sender never blocks
        # on a full pipe while this worker is busy with a batch.
        self._thread = threading.Thread(target=self._receive, daemon=True,
                                        name=f"avmon-dns-inbox-{index}")
        self._thread.start()

    def _receive(self) -> None:
        inbox = self.exchange.inboxes[self.index]
        while True:
            message = inbox.get()
            if message is None:
                return
            sender, entries = message
            with self._lock:
                if self._held + len(entries) > MAX_INBOX:
                    self.cache.evictions += len(entries)  # avmon_dns_cache_evictions_total
                else:
                    self._received.append(entries)
                    self._held += len(entries)
                self._counts[sender] += 1

    def take_in(self) -> None:
        """Add the entries other workers sent to this worker's cache."""
        with self._lock:
            received, self._received = self._received, collections.deque()
            self._held = 0
        for entries in received:
            for entry in entries:
                self.cache.add_shared(entry)

    def publish(self, watermark_ns: int) -> None:
        """Send this worker's new entries to the others, then raise its watermark."""
        out = self.cache.outbox
        if out:
            self.cache.outbox = []
            n = self.exchange.workers
            for j, inbox in enumerate(self.exchange.inboxes):
                if j != self.index:
                    inbox.put((self.index, out))
                    self.exchange.sent[self.index * n + j] += 1
        marks = self.exchange.watermarks
        if watermark_ns > marks[self.index]:
            marks[self.index] = watermark_ns

    def complete(self, ts_ns: int) -> bool:
        """Has every other worker sent its answers seen up to ``ts_ns`` (capture time, or
        frame number in a replay)?"""
        if ts_ns <= self._complete_upto:
            return True  # those entries were taken in when it first held
        ex = self.exchange
        n = ex.workers
        others = self._others
        # The watermark is raised after the entries are sent: once it has passed ts_ns,
        # the entries are complete when every message sent so far has been received.
        if not all(ex.watermarks[j] >= ts_ns for j in others):
            return False
        with self._lock:
            if any(self._counts[j] < ex.sent[j * n + self.index] for j in others):
                return False
        self.take_in()
        self._complete_upto = ts_ns
        return True

    def wait_complete(self, ts_ns: int) -> None:
        """Block until :meth:`complete` holds for ``ts_ns`` (replay: the others get there)."""
        while not self.complete(ts_ns):
            time.sleep(0.001)

    def close(self) -> None:
        self.exchange.inboxes[self.index].put(None)


def run_workers(count: int, make_source: Callable[[int], Any],
                worker: Callable[[int, Any, DnsExchange, Connection], int],
                on_message: Callable[[int, tuple[Any, ...]], None],
                log: Callable[..., None], opened: Callable[[], None] = lambda: None) -> int:
    """Open ``count`` sources (rings, still privileged; None where a worker opens its
    own), call ``opened`` (to drop privileges), fork one worker per source and relay
    their messages to ``on_message`` until every worker has ended. Signals sent to this
    process are passed on. Returns 0 if every worker ended cleanly, else 1."""
    ctx = multiprocessing.get_context("fork")
    rings: list[Any] = []
    try:
        for i in range(count):
            rings.append(make_source(i))
    except BaseException:
        for ring in rings:
            if ring is not None:
                ring.close()
        raise
    opened()
    exchange = DnsExchange(count, ctx)
    procs: list[Any] = []
    conns: dict[Connection, int] = {}
    stopping: list[int] = []

    def forward(signum: int, frame: object) -> None:
        if signum != signal.SIGHUP:
            stopping.append(signum)
        for proc in procs:
            if proc.pid is not None and proc.exitcode is None:
                try:
                    os.kill(proc.pid, signal.SIGTERM if signum == signal.SIGINT else signum)
                except ProcessLookupError:
                    pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    for i, ring in enumerate(rings):
        parent_end, child_end = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(worker, i, ring, exchange, child_end),
                           name=f"avmon-worker-{i}", daemon=False)
        proc.start()
        child_end.close()
        procs.append(proc)
        conns[parent_end] = i
        if stopping:  # a stop that came while forking reaches this worker too
            os.kill(proc.pid, signal.SIGTERM)  # type: ignore[arg-type]
    for ring in rings:
        if ring is not None:
            ring.close()  # the workers hold their own mappings now
    try:
        failed = _relay(procs, conns, on_message)
    except BaseException:
        # This process cannot go on (its output failed): the workers are stopped, not
        # left blocked on pipes nobody reads (and joined at exit: a hang).
        _stop(procs, conns)
        raise
    for i, worker_proc in enumerate(procs):
        worker_proc.join()
        if worker_proc.exitcode != 0:
            failed = True
            log("error", message=ended_how(i, worker_proc.exitcode))
    return 1 if failed else 0


def ended_how(index: int, exitcode: int) -> str:
    """What to say of a worker that did not end cleanly (``exitcode`` as
    :attr:`multiprocessing.Process.exitcode` gives it: minus the signal that ended it)."""
    if exitcode >= 0:
        return f"worker {index} ended with exit code {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    return f"worker {index} was ended by {name}"


def _relay(procs: list[Any], conns: dict[Connection, int],
           on_message: Callable[[int, tuple[Any, ...]], None]) -> bool:
    """Pass the workers' messages to ``on_message`` until every worker has ended;
    whether one failed (the others are then stopped)."""
    failed = False
    open_conns = dict(conns)
    while open_conns:
        ready = {id(c) for c in wait(list(open_conns), timeout=1.0)}
        for conn, index in list(open_conns.items()):
            if id(conn) not in ready:
                if procs[index].exitcode is not None and not conn.poll():
                    del open_conns[conn]  # ended without a word (killed)
                continue
            try:
                message: tuple[Any, ...] = conn.recv()
            except (EOFError, OSError):
                del open_conns[conn]
                continue
            on_message(index, message)
        if not failed and any(p.exitcode not in (None, 0) for p in procs):
            # A worker died: stop the others (a replay worker would wait for its DNS
            # answers for ever; a live one writes its flows and ends).
            failed = True
            for other in procs:
                if other.exitcode is None and other.pid is not None:
                    os.kill(other.pid, signal.SIGTERM)
    return failed


def _stop(procs: list[Any], conns: dict[Connection, int]) -> None:
    """End every worker now: its pipe closed (a worker blocked writing to it gets an
    error), SIGTERM, and SIGKILL for one still there after STOP_SECONDS."""
    for conn in conns:
        conn.close()
    for proc in procs:
        if proc.exitcode is None and proc.pid is not None:
            os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for proc in procs:
        proc.join(max(deadline - time.monotonic(), 0))
        if proc.exitcode is None:
            proc.kill()
            proc.join()


def _child(worker: Callable[[int, Any, DnsExchange, Connection], int], index: int,
           ring: Any, exchange: DnsExchange, conn: Connection) -> None:
    # Ctrl-C reaches the whole process group; the parent passes it on as SIGTERM. The
    # parent's forwarding handlers are not the worker's: SIGTERM ends a worker unless it
    # sets its own (a live worker flushes first).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    code = 1
    try:
        code = worker(index, ring, exchange, conn)
    finally:
        conn.close()
        os._exit(code)  # no atexit handlers inherited from the parent


class Outbox:
    """A worker's records, sent to the parent in one message per batch."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.records: list[dict[str, Any]] = []
        self._last_metrics = 0.0

    def __call__(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def send(self, metrics: Callable[[], list[Any]] | None = None, *,
             force_metrics: bool = False) -> None:
        if self.records:
            records, self.records = self.records, []
            self.conn.send(("records", records))
        now = time.monotonic()
        if metrics is not None and (force_metrics or now - self._last_metrics
                                    >= METRICS_SECONDS):
            self._last_metrics = now
            self.conn.send(("metrics", metrics()))
