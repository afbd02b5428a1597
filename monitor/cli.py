"""The ``avmon`` command line.

Exit codes: 0 success; 2 bad usage or an invalid config/signature/geo file (one line
naming the file, the key and the problem); 1 runtime failure (for a replay: nothing could
be read).
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from geo import GeoDatabases, GeoError, format_geo_lines
from monitor.capture.batch import Batch
from monitor.capture.files import CaptureReader
from monitor.config import Config, load_config
from monitor.errors import CaptureError, ConfigError, OutputError
from monitor.eve import EveWriter
from monitor.gcpolicy import REPLAY_YOUNG, before_exit, packet_processing
from monitor.pipeline import Pipeline
from monitor.sinks import AlertSink, build_sinks
from signatures import (
    SignatureError,
    SignatureSet,
    format_match_lines,
    format_vendor_table,
    load_signature_set,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.registry import Collector

    from monitor.workers import Outbox

__all__ = ["main"]

DEMO_CAPTURE = Path(__file__).parent / "data" / "demo.pcap"
#: How long a replay waits at its end for alert sinks to deliver.
SINK_CLOSE_SECONDS = 10.0
#: A live sensor checks its geo database files for replacement this often (seconds).
GEO_RELOAD_SECONDS = 60.0
DEMO_CONFIG = Path(__file__).parent / "data" / "demo.toml"


class _Progress:
    """A progress bar on a terminal (packets, MB/s); silent otherwise."""

    def __init__(self, reader: CaptureReader, enabled: bool) -> None:
        self.reader = reader
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=reader.total_bytes, unit="B", unit_scale=True,
                            unit_divisor=1024, file=sys.stderr, leave=False,
                            desc="replay", dynamic_ncols=True, mininterval=0.5)
        self._done = 0

    def update(self, packets: int) -> None:
        if self.bar is None:
            return
        now = self.reader.bytes_read
        self.bar.update(now - self._done)
        self._done = now
        self.bar.set_postfix_str(f"{packets:,} pkts", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _totals(pipe: Pipeline) -> dict[str, Any]:
    """What a replay's summary reports about one pipeline (summed over workers)."""
    st, ts = pipe.stats, pipe.table.stats
    return {"packets": st.packets, "bytes": st.bytes, "first_ns": st.first_ns,
            "last_ns": st.last_ns, "flows": ts.flows_created, "evicted": ts.flows_evicted,
            "tunnelled": st.tunnelled_packets, "undecoded": dict(st.undecoded),
            "fragments": ts.fragments_unattributed, "av_flows": sum(pipe.av.flows.values()),
            "alerts": sum(pipe.alerts.stats.alerts.values()), "limits": pipe.limit_hits()}


def _add_totals(into: dict[str, Any], more: dict[str, Any]) -> None:
    for key, value in more.items():
        if key == "first_ns":
            if value and (not into.get(key) or value < into[key]):
                into[key] = value
        elif key == "last_ns":
            into[key] = max(into.get(key, 0), value)
        elif isinstance(value, dict):
            sub = into.setdefault(key, {})
            for k, v in value.items():
                sub[k] = sub.get(k, 0) + v
        else:
            into[key] = into.get(key, 0) + value


class _WorkerOutputs:
    """What the first process does with its workers' messages: records go to EVE, the
    alert sinks and any listeners; metric snapshots are summed for /metrics (``collector``);
    the totals each worker reports at its end are added up (``totals``)."""

    def __init__(self, eve: EveWriter, to_sinks: Callable[[dict[str, Any]], None],
                 sinks: list[AlertSink],
                 listeners: Sequence[Callable[[dict[str, Any]], None]] = (),
                 damaged: Callable[[], int] | None = None) -> None:
        from monitor.metrics import MergedCollector

        self.eve = eve
        #: The workers append their EVE lines to the file themselves (see
        #: :func:`_worker_outputs`); the records sent here are for the sinks and listeners.
        self.direct = eve.appends_to_file()
        self.to_sinks = to_sinks
        self.listeners = tuple(listeners)
        self.snapshots: dict[int, list[Any]] = {}
        self.totals: dict[str, Any] = {}
        self.collector = MergedCollector(
            lambda: [self.snapshots[i] for i in sorted(self.snapshots)],
            sinks=lambda: {s.name: s.stats for s in sinks}, damaged=damaged)

    def __call__(self, index: int, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "records":
            for record in message[1]:
                if not self.direct:
                    self.eve.write(record)
                self.to_sinks(record)
                for listener in self.listeners:
                    listener(record)
            self.eve.flush()
        elif kind == "metrics":
            self.snapshots[index] = message[1]
        elif kind == "stop":
            _add_totals(self.totals, message[1])


def _worker_outputs(eve: EveWriter | None, out: Outbox, forward_all: bool
                    ) -> tuple[EveWriter | None, list[Callable[[dict[str, Any]], None]]]:
    """A worker's EVE writer and record listeners. With an EVE file, the worker appends
    its own lines to it (one write per batch, on the descriptor it inherited) and sends
    the first process only what the sinks need (alerts), or every record when the first
    process has listeners; otherwise every record goes to the first process to write."""
    if eve is None:
        return None, [out]
    if forward_all:
        return eve, [out]

    def alerts(record: dict[str, Any]) -> None:
        if record["event_type"] == "alert":
            out(record)

    return eve, [alerts]


def _summary(out: TextIO, reader: CaptureReader, t: dict[str, Any], wall: float,
             eve_target: str | None, records: int, workers: int = 1) -> None:
    rate = t["packets"] / wall if wall > 0 else 0.0
    mbps = reader.total_bytes / wall / 1e6 if wall > 0 else 0.0
    span = (t["last_ns"] - t["first_ns"]) / 1e9 if t["packets"] else 0.0
    lines = [
        f"avmon replay: {len(reader.files)} file(s), {t['packets']:,} packets, "
        f"{t['bytes']:,} bytes, {span:,.1f} s of traffic",
        f"  processed in {wall:.2f} s: {rate:,.0f} packets/s, {mbps:,.1f} MB/s"
        + (f" ({workers} workers)" if workers > 1 else ""),
        f"  flows: {t['flows']:,} created, {t['evicted']:,} evicted (table full), "
        f"{t['tunnelled']:,} tunnelled packets decapsulated",
    ]
    undecoded = {k: v for k, v in t["undecoded"].items() if v}
    if undecoded:
        lines.append("  not decoded: " + ", ".join(f"{k} {v:,}" for k, v in undecoded.items()))
    if t["fragments"]:
        lines.append(f"  IP fragments not attributed to a flow: {t['fragments']:,}")
    for path, offset, _msg in reader.damaged:
        lines.append(f"  damaged: {path} at offset {offset} (read up to the damage)")
    acted = {k: v for k, v in t["limits"].items() if v and k != "flows"}
    if acted:
        lines.append("  limits acted (docs/limits.md): "
                     + ", ".join(f"{k} {v:,}" for k, v in acted.items()))
    lines.append(f"  AV flows: {t['av_flows']:,}; alerts: {t['alerts']:,}")
    if eve_target:
        lines.append(f"  EVE records: {records:,} -> {eve_target}")
    print("\n".join(lines), file=out)


#: How many batches a replay worker may run ahead of the slowest other worker.
WORKERS_AHEAD = 8
#: Below this much capture, one process is quicker than starting workers.
WORKERS_MIN_BYTES = 256 << 20


def _default_workers(paths: Sequence[str]) -> int:
    """The cores available for a large input, else 1."""
    total = 0
    for path in paths:
        p = Path(path)
        files = [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else [p]
        for f in files:
            try:
                total += f.stat().st_size
            except OSError:
                continue
    if total < WORKERS_MIN_BYTES:
        return 1
    return max(len(os.sched_getaffinity(0)), 1)


def _replay_workers(paths: Sequence[str], config: Config, signatures: SignatureSet,
                    geo: GeoDatabases, eve_target: str | None, quiet: bool,
                    listeners: Sequence[Callable[[dict[str, Any]], None]],
                    summary_out: TextIO | None, evidence: Path | None,
                    metrics_textfile: str | None, metrics_listen: tuple[str, int] | None,
                    linger: float, workers: int) -> int:
    """``avmon replay --workers N``: every worker reads and decodes the whole input
    (decoding is cheap next to the rest) and keeps the packets whose address pair hashes
    to it, so each owns whole flows; this process checks the input up front and gets
    little more than alerts back. DNS names are shared as in live capture, with each
    worker at most WORKERS_AHEAD batches ahead of the others and flows waiting for names
    as long as needed, so the records are those of one process (in another order). This
    process feeds the sinks, sums the metrics and writes the EVE records itself only
    when they cannot go straight to a file (standard output)."""
    from monitor.workers import run_workers

    def warn(msg: str) -> None:
        print(f"avmon: warning: {msg}", file=sys.stderr)

    reader = CaptureReader(paths, warn=warn)
    eve = EveWriter(eve_target, warn)
    sinks, to_sinks = _start_sinks(config, warn)
    outputs = _WorkerOutputs(eve, to_sinks, sinks, listeners, damaged=lambda: len(reader.damaged))
    metrics = _Metrics(lambda: outputs.collector, metrics_textfile, metrics_listen)
    errors: list[str] = []

    def on_message(index: int, message: tuple[Any, ...]) -> None:
        if message[0] == "damaged":
            reader.damaged = [(Path(path), offset, problem)
                              for path, offset, problem in message[1]]
            return
        if message[0] == "error":
            errors.append(message[1])
            return
        outputs(index, message)
        if message[0] == "records":
            metrics.tick()

    work = functools.partial(_replay_worker, reader, config, signatures, geo, evidence,
                             workers, eve if outputs.direct else None, bool(listeners))
    t0 = time.perf_counter()
    try:
        code = run_workers(workers, lambda i: None, work, on_message,
                           lambda event, **f: warn(str(f.get("message", event))))
    finally:
        eve.close()
        _close_sinks(sinks)
    if errors:
        print(f"avmon: {errors[0]}", file=sys.stderr)
        return 1
    metrics.write()
    wall = time.perf_counter() - t0
    if linger > 0 and metrics.server is not None:
        time.sleep(linger)
    metrics.close()
    if code != 0:
        return 1
    if not quiet:
        _summary(summary_out or sys.stderr, reader, outputs.totals, wall, eve_target,
                 eve.records + outputs.totals.get("eve_records", 0), workers)
    if outputs.totals.get("packets", 0) == 0 and reader.damaged:
        print("avmon: error: no packets could be read", file=sys.stderr)
        return 1
    return 0


def _replay_worker(reader: CaptureReader, config: Config, signatures: SignatureSet,
                   geo: GeoDatabases, evidence: Path | None, workers: int,
                   eve: EveWriter | None, forward_all: bool, index: int, _source: None,
                   exchange: Any, conn: Any) -> int:
    """One ``replay --workers`` process: it reads and decodes the whole input itself
    (its own copy of the first process's reader: the same batches and frame numbers in
    every worker) and keeps this worker's share of the flows. Worker 0 speaks for the
    reader: its warnings, the damage it met, a read error."""
    from monitor import __version__
    from monitor.metrics import PipelineCollector
    from monitor.workers import END, Outbox, SharedDnsCache, WorkerDns

    if index != 0:
        reader.warn = lambda msg: None
    cache = SharedDnsCache(config.limits)
    dns = WorkerDns(exchange, index, cache)
    out = Outbox(conn)
    eve, listeners = _worker_outputs(eve, out, forward_all)
    pipe = Pipeline(config, eve=eve, listeners=listeners, signatures=signatures, geo=geo,
                    evidence_dir=evidence, dns_cache=cache,
                    dns_complete=lambda flow: dns.complete(flow.first_frame),
                    partition=(index, workers))
    pipe.wait_seconds = None  # wait as long as it takes: the other workers get there
    pipe.complete_names = True  # every record as one process writes it
    collector = PipelineCollector(pipe, source="replay", version=__version__)
    snapshot = lambda: list(collector.collect())  # noqa: E731
    # Watermarks are frame numbers: every worker sees the same frames, and one process
    # would have seen every answer in a frame before a flow's first.
    ends: collections.deque[int] = collections.deque([0], maxlen=WORKERS_AHEAD)
    reported = 0

    def report_damage() -> None:
        nonlocal reported
        if index == 0 and len(reader.damaged) != reported:
            reported = len(reader.damaged)
            conn.send(("damaged", [(str(p), o, m) for p, o, m in reader.damaged]))

    def read_error(exc: Exception) -> None:
        if index == 0:
            conn.send(("error", f"error: reading the input: {exc}"))

    try:
        for batch in _read_guarded(reader, read_error):
            # At most WORKERS_AHEAD batches ahead of every other worker: flows waiting
            # for names stay few, and a worker that had a heavier batch than the others
            # does not hold them up at once.
            dns.wait_complete(ends[0])
            dns.take_in()
            pipe.process(batch)
            ends.append(batch.first_frame + len(batch) - 1)
            dns.publish(ends[-1])
            report_damage()
            out.send(snapshot)
        report_damage()  # damage at a file's end is found after its last batch
        dns.publish(END)
        pipe.end_flows()
        dns.wait_complete(END)
        pipe.finish()
        out.send(snapshot, force_metrics=True)
        conn.send(("stop", {**_totals(pipe), "eve_records": pipe.eve.records}))
    except OutputError as exc:  # the EVE file it appends to (a full disk)
        conn.send(("error", str(exc)))
        return 1
    finally:
        dns.close()
    return 0


def _read_guarded(reader: CaptureReader, on_error: Callable[[Exception], None]
                  ) -> Iterator[Batch]:
    """``reader``'s batches; a read error ends them and goes to ``on_error`` (an error
    of the pipeline's own output, raised while a batch is processed, is not caught)."""
    batches = iter(reader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (CaptureError, OSError) as exc:
            on_error(exc)
            return
        yield batch


def cmd_replay(args: argparse.Namespace) -> int:
    paths = args.captures or [str(DEMO_CAPTURE)]
    config = load_config(args.config)
    listen = parse_listen(args.metrics_listen, args.metrics_public) \
        if args.metrics_listen else None
    return _replay(paths, config, args.eve, args.quiet,
                   evidence=Path(args.evidence) if args.evidence else None,
                   metrics_textfile=args.metrics_textfile, metrics_listen=listen,
                   linger=args.metrics_linger, speed=args.speed, workers=args.workers)


def _open_geo(config: Config, auto_reload: float | None = None) -> GeoDatabases:
    g = config.geo
    try:
        return GeoDatabases(country_db=g.country_db, registration_db=g.registration_db,
                            asn_db=g.asn_db, registry=g.registry,
                            auto_reload_seconds=auto_reload)
    except GeoError as exc:
        raise ConfigError(str(exc)) from None


def _open_signatures(config: Config) -> SignatureSet:
    try:
        return load_signature_set(config.signatures)
    except SignatureError as exc:
        raise ConfigError(str(exc)) from None


def parse_listen(text: str, allow_public: bool) -> tuple[str, int]:
    """ADDR:PORT for the metrics endpoint; loopback only unless ``allow_public``."""
    import ipaddress

    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        addr = ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ConfigError(f"--metrics-listen: '{text}' is not ADDR:PORT "
                          "(e.g. 127.0.0.1:9477)") from None
    if not addr.is_loopback and not allow_public:
        raise ConfigError(f"--metrics-listen: {host} is not a loopback address; metrics "
                          "reveal what the sensor sees, so pass --metrics-public to serve "
                          "them beyond this host")
    if not 0 < number < 65536:
        raise ConfigError(f"--metrics-listen: bad port '{port}'")
    return str(addr), number


class _Metrics:
    """Serves and/or writes a replay's metrics. Without a textfile or a listen address
    there is nothing to do, and the collector (with the Prometheus client) is not made."""

    #: A long replay rewrites its textfile this often (wall-clock seconds).
    TEXTFILE_INTERVAL = 30.0

    def __init__(self, collector: Callable[[], Collector], textfile: str | None,
                 listen: tuple[str, int] | None) -> None:
        self.textfile = textfile
        self.server = None
        if textfile is None and listen is None:
            return
        from monitor.metrics import build_registry

        self.registry = build_registry(collector())
        if textfile:
            folder = Path(textfile).parent
            if not folder.is_dir() or not os.access(folder, os.W_OK):
                raise ConfigError(f"--metrics-textfile {textfile}: {folder} is not a "
                                  "writable directory")
        self._next = time.monotonic() + self.TEXTFILE_INTERVAL
        self.server = _serve_metrics(self.registry, listen) if listen is not None else None

    def tick(self) -> None:
        if self.textfile and time.monotonic() >= self._next:
            self.write()
            self._next = time.monotonic() + self.TEXTFILE_INTERVAL

    def write(self) -> None:
        if self.textfile:
            from prometheus_client import write_to_textfile

            try:
                write_to_textfile(self.textfile, self.registry)
            except OSError as e:
                print(f"avmon: warning: --metrics-textfile {self.textfile}: {e.strerror}",
                      file=sys.stderr)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()


def _serve_metrics(registry: CollectorRegistry, listen: tuple[str, int]) -> Any:
    """Serve ``registry`` on /metrics at ``listen`` (a background thread)."""
    from prometheus_client import start_http_server

    try:
        server, _ = start_http_server(listen[1], listen[0], registry=registry)
    except OSError as exc:
        raise ConfigError(f"--metrics-listen: cannot listen on {listen[0]}:{listen[1]}: "
                          f"{exc.strerror}") from None
    return server


def _start_sinks(config: Config, warn: Callable[[str], None]
                 ) -> tuple[list[AlertSink], Callable[[dict[str, Any]], None]]:
    """The alert sinks the configuration asks for, started, and the listener that feeds
    them the alert records."""
    sinks = build_sinks(config.alertmanager, config.syslog, config.limits.sink_pending_alerts)
    for sink in sinks:
        err = getattr(sink, "error", None)
        if err:
            warn(f"{sink.name}: {err}")
        sink.start()

    def to_sinks(record: dict[str, Any]) -> None:
        if record["event_type"] == "alert":
            for sink in sinks:
                sink.send(record)

    return sinks, to_sinks


def _close_sinks(sinks: list[AlertSink]) -> None:
    # Whatever a sink cannot deliver in time stays in its spool for the next run.
    for sink in sinks:
        sink.close(timeout=SINK_CLOSE_SECONDS)


class _Pace:
    """Replays at ``speed`` times capture time (dashboards and alert routing see traffic
    arrive as it did, compressed or stretched)."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.first_ns: int | None = None
        self.start = 0.0

    def wait(self, first_ns: int, last_ns: int) -> None:
        """Sleep until a batch's last packet is due: no packet is processed early."""
        if self.first_ns is None:
            self.first_ns, self.start = first_ns, time.monotonic()
        due = self.start + (last_ns - self.first_ns) / 1e9 / self.speed
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _warn_without_kernels(warn: Callable[[str], None]) -> None:
    """A build without its compiled kernels works, more slowly: say so, unless the
    pure-Python path was asked for (AVMON_PURE_PYTHON)."""
    from monitor import kernels

    if kernels.missing():
        warn(kernels.status())


def _replay(paths: Sequence[str], config: Config, eve_target: str | None, quiet: bool,
            listeners: Sequence[Callable[[dict[str, Any]], None]] = (),
            summary_out: TextIO | None = None, evidence: Path | None = None,
            metrics_textfile: str | None = None, metrics_listen: tuple[str, int] | None = None,
            linger: float = 0.0, speed: float | None = None, workers: int | None = 1) -> int:
    def warn(msg: str) -> None:
        print(f"avmon: warning: {msg}", file=sys.stderr)

    from monitor import __version__

    signatures = _open_signatures(config)
    geo = _open_geo(config)
    _warn_without_kernels(warn)
    if workers is None:
        workers = _default_workers(paths) if speed is None else 1
    if workers > 1:
        if speed is not None:
            raise ConfigError("--speed replays in one process: leave out --workers")
        with packet_processing(young=REPLAY_YOUNG):
            return _replay_workers(paths, config, signatures, geo, eve_target, quiet,
                                   listeners, summary_out, evidence, metrics_textfile,
                                   metrics_listen, linger, workers)
    # Paced replays read small batches so the pace is kept within a batch's span.
    reader = CaptureReader(paths, warn=warn, **({"batch_packets": 32} if speed else {}))
    eve = EveWriter(eve_target, warn)
    sinks, to_sinks = _start_sinks(config, warn)
    # A replay's sinks are fixed (no reload): without any, records need not go by them.
    pipe = Pipeline(config, eve=eve, listeners=[*listeners, *([to_sinks] if sinks else [])],
                    signatures=signatures, geo=geo, evidence_dir=evidence)

    def collector() -> Collector:
        from monitor.metrics import PipelineCollector

        return PipelineCollector(pipe, source="replay", version=__version__,
                                 damaged=lambda: len(reader.damaged),
                                 sinks=lambda: {s.name: s.stats for s in sinks})

    metrics = _Metrics(collector, metrics_textfile, metrics_listen)
    progress = _Progress(reader, enabled=not quiet and sys.stderr.isatty())
    t0 = time.perf_counter()
    pace = _Pace(speed) if speed else None
    try:
        with packet_processing(young=REPLAY_YOUNG):
            for batch in reader:
                if pace is not None:
                    pace.wait(int(batch.ts_ns[0]), int(batch.ts_ns[-1]))
                pipe.process(batch)
                progress.update(pipe.stats.packets)
                metrics.tick()
            pipe.finish()
    finally:
        progress.close()
        eve.close()
        _close_sinks(sinks)
    metrics.write()  # after the sinks closed, so their final counters are included
    wall = time.perf_counter() - t0
    if linger > 0 and metrics.server is not None:
        time.sleep(linger)
    metrics.close()
    if not quiet:
        _summary(summary_out or sys.stderr, reader, _totals(pipe), wall, eve_target,
                 eve.records)
    if pipe.stats.packets == 0 and reader.damaged:
        print("avmon: error: no packets could be read", file=sys.stderr)
        return 1
    return 0


def cmd_live(args: argparse.Namespace) -> int:
    """Capture from interfaces until SIGTERM/SIGINT; then write every open flow."""
    import signal

    from monitor import __version__
    from monitor.metrics import PipelineCollector, build_registry
    from monitor.parsers import dns as dnsp

    config = load_config(args.config)
    listen = parse_listen(args.metrics_listen, args.metrics_public)
    signatures = _open_signatures(config)
    geo = _open_geo(config, auto_reload=GEO_RELOAD_SECONDS)
    _warn_without_kernels(lambda msg: print(f"avmon: warning: {msg}", file=sys.stderr))
    # Nothing imported on first use once packets flow (workers inherit it): a stall of
    # 0.1 s at 120,000 packets/s overflowed the ring.
    dnsp.preload()
    if args.workers > 1:
        with packet_processing():
            return _live_workers(args, config, listen, signatures, geo)
    capture = _open_live_source(args)
    if args.user:
        from monitor.privileges import drop_privileges

        drop_privileges(args.user)  # the capture sockets are open: root is not needed
    sinks, to_sinks = _start_sinks(config, lambda msg: _log("warning", message=msg))
    eve = EveWriter(args.eve, lambda msg: _log("warning", message=msg))
    pipe = Pipeline(config, eve=eve, listeners=[to_sinks], signatures=signatures, geo=geo,
                    evidence_dir=Path(args.evidence) if args.evidence else None)
    collector = PipelineCollector(pipe, source=args.source, live=True, version=__version__,
                                  dropped=capture.dropped,
                                  sinks=lambda: {s.name: s.stats for s in sinks})
    server = _serve_metrics(build_registry(collector), listen)

    from monitor.reload import ReloadRequest, reload_pipeline

    reload = ReloadRequest()

    def stop(signum: int, frame: object) -> None:
        capture.stop()

    def hup(signum: int, frame: object) -> None:
        reload.request()  # the reload itself runs between batches

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, hup)
    _log("start", interfaces=args.interface, source=args.source,
         metrics=f"http://{listen[0]}:{listen[1]}/metrics")
    try:
        with packet_processing():
            for batch in capture:
                if reload.pending():
                    result = reload_pipeline(pipe, args.config,
                                             geo_auto_reload_seconds=GEO_RELOAD_SECONDS)
                    if result.ok:
                        _log("reload", changed=list(result.changed))
                    else:
                        collector.config_reload_errors += 1
                        _log("reload_rejected", error=result.message)
                if len(batch):
                    pipe.process(batch)
                else:
                    pipe.tick(time.time_ns())
            pipe.finish()
    finally:
        capture.close()
        eve.close()
        _close_sinks(sinks)
        server.shutdown()
    _log("stop", packets=pipe.stats.packets, flows=pipe.table.stats.flows_created,
         alerts=sum(pipe.alerts.stats.alerts.values()), dropped=capture.dropped())
    return 0


def _live_workers(args: argparse.Namespace, config: Config, listen: tuple[str, int],
                  signatures: SignatureSet, geo: GeoDatabases) -> int:
    """``avmon live --workers N``: N processes on one PACKET_FANOUT_HASH group per
    interface (see monitor.workers); this process writes EVE, feeds the sinks and serves
    the summed metrics."""
    from monitor.capture.ring import RingCapture, ring_geometry
    from monitor.metrics import build_registry
    from monitor.workers import run_workers

    if args.source != "ring":
        raise ConfigError("--workers needs --source ring (PACKET_FANOUT)")
    group = os.getpid() & 0xFFFF

    def make_ring(index: int) -> RingCapture:
        return RingCapture(args.interface, bpf=args.bpf, promisc=args.promisc,
                           fanout_group=group, **ring_geometry(args.ring_mb))

    def opened() -> None:
        if args.user:
            from monitor.privileges import drop_privileges

            drop_privileges(args.user)  # every ring is open: root is not needed

    sinks, to_sinks = _start_sinks(config, lambda msg: _log("warning", message=msg))
    eve = EveWriter(args.eve, lambda msg: _log("warning", message=msg))
    outputs = _WorkerOutputs(eve, to_sinks, sinks)
    work = functools.partial(_live_worker, args, config, signatures, geo,
                             eve if outputs.direct else None)
    server = _serve_metrics(build_registry(outputs.collector), listen)

    _log("start", interfaces=args.interface, source=args.source, workers=args.workers,
         metrics=f"http://{listen[0]}:{listen[1]}/metrics")
    try:
        code = run_workers(args.workers, make_ring, work, outputs, _log, opened=opened)
    finally:
        eve.close()
        _close_sinks(sinks)
        server.shutdown()
    _log("stop", **outputs.totals)
    return code


def _live_worker(args: argparse.Namespace, config: Config, signatures: SignatureSet,
                 geo: GeoDatabases, eve: EveWriter | None, index: int, ring: Any,
                 exchange: Any, conn: Any) -> int:
    """One ``--workers`` process: its ring, its pipeline, DNS names shared."""
    import signal

    from monitor import __version__
    from monitor.metrics import PipelineCollector
    from monitor.reload import ReloadRequest, reload_pipeline
    from monitor.workers import END, Outbox, SharedDnsCache, WorkerDns

    cache = SharedDnsCache(config.limits)
    dns = WorkerDns(exchange, index, cache)
    out = Outbox(conn)
    eve, listeners = _worker_outputs(eve, out, False)
    pipe = Pipeline(config, eve=eve, listeners=listeners, signatures=signatures, geo=geo,
                    evidence_dir=Path(args.evidence) if args.evidence else None,
                    dns_cache=cache, dns_complete=lambda flow: dns.complete(flow.first_ns))
    collector = PipelineCollector(pipe, source="ring", live=True, version=__version__,
                                  dropped=ring.dropped)
    reload = ReloadRequest()
    signal.signal(signal.SIGTERM, lambda signum, frame: ring.stop())
    signal.signal(signal.SIGHUP, lambda signum, frame: reload.request())
    # On an idle link the ring may still hold packets up to two block timeouts old.
    idle_lag_ns = 2 * ring.block_timeout_ms * 1_000_000
    try:
        for batch in ring:
            if reload.pending():
                result = reload_pipeline(pipe, args.config,
                                         geo_auto_reload_seconds=GEO_RELOAD_SECONDS)
                if result.ok:
                    _log("reload", worker=index, changed=list(result.changed))
                else:
                    collector.config_reload_errors += 1
                    _log("reload_rejected", worker=index, error=result.message)
            dns.take_in()
            if len(batch):
                pipe.process(batch)
                dns.publish(int(batch.ts_ns.max()))
            else:
                now = time.time_ns()
                pipe.tick(now)
                dns.publish(now - idle_lag_ns)
            out.send(lambda: list(collector.collect()))
        dns.publish(END)  # done: it holds nobody up any more
        dns.take_in()
        pipe.finish()
        out.send(lambda: list(collector.collect()), force_metrics=True)
        conn.send(("stop", {"packets": pipe.stats.packets,
                            "flows": pipe.table.stats.flows_created,
                            "alerts": sum(pipe.alerts.stats.alerts.values()),
                            "dropped": ring.dropped()}))
    except OutputError as exc:  # the EVE file it appends to (a full disk)
        _log("error", worker=index, message=str(exc))
        return 1
    finally:
        dns.close()
        ring.close()
    return 0


def _log(event: str, **fields: Any) -> None:
    """A structured log line on standard error (one JSON object per line)."""
    import json

    fields = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": event, **fields}
    print(json.dumps(fields, sort_keys=False), file=sys.stderr, flush=True)


def _open_live_source(args: argparse.Namespace) -> Any:
    """The capture source ``--source`` names, open on ``--interface``."""
    if args.source == "ring":
        from monitor.capture.ring import RingCapture, ring_geometry

        return RingCapture(args.interface, bpf=args.bpf, promisc=args.promisc,
                           **ring_geometry(args.ring_mb))
    if args.source == "socket":
        from monitor.capture.live import LiveCapture

        if args.promisc:
            raise ConfigError("--promisc needs --source ring")
        return LiveCapture(args.interface, bpf=args.bpf)
    if args.source == "tshark":
        from monitor.capture.fallback import TsharkCapture

        return TsharkCapture(args.interface, bpf=args.bpf)
    from monitor.capture.fallback import ScapyCapture

    return ScapyCapture(args.interface, bpf=args.bpf)


def format_alert(rec: dict[str, Any]) -> list[str]:
    """Two lines a person can read for one EVE alert record."""
    av = rec["avmon"]
    flagged = ", ".join(f"{f['code']} ({f['basis']})" for f in av["flagged"])
    port = f":{rec['dest_port']}" if "dest_port" in rec else ""
    ind = av.get("indicator", {})
    first = (f"{av['severity'].upper():<8} {rec['timestamp']}  {av['segment']} "
             f"[{av['classification']}] {rec['src_ip']} -> {rec['dest_ip']}{port} "
             f"{rec['proto']}")
    second = (f"         {av.get('vendor_name', '?')} {av.get('purpose', '')} "
              f"{av.get('server_name', '')} (by {ind.get('type', '?')}); flagged: {flagged}; "
              f"rule {av['rule']}; frame {rec['pcap_cnt']}; {rec['community_id']}")
    if "escalation" in av:
        esc = av["escalation"]
        second += (f"; {esc['bytes_toserver']:,} bytes sent "
                   f"(threshold {esc['threshold_bytes']:,})")
    return [first, second]


def cmd_demo(args: argparse.Namespace) -> int:
    """Replay the bundled demo capture with the demo configuration; print the alerts."""
    records: list[dict[str, Any]] = []
    config = load_config(DEMO_CONFIG)
    rc = _replay([str(DEMO_CAPTURE)], config, args.eve, quiet=False,
                 listeners=[records.append], summary_out=sys.stdout,
                 evidence=Path(args.evidence) if args.evidence else None)
    alerts = sorted((r for r in records if r["event_type"] == "alert"),
                    key=lambda r: (r["timestamp"], r["pcap_cnt"]))
    print(f"\n{len(alerts)} alert(s) (config: {DEMO_CONFIG.name}):")
    for rec in alerts:
        print("\n".join(format_alert(rec)))
    return rc


def cmd_check(args: argparse.Namespace) -> int:
    """Validate configuration, segments, rules, signatures and geo data."""
    import datetime as dt

    from monitor.policy import SegmentMap

    config = load_config(args.config)
    where = str(config.path) if config.path else "built-in defaults"
    sigs = _open_signatures(config)
    geo = _open_geo(config)
    print(f"config: {where}")
    print(f"segments: {len(config.segments)}")
    for seg in config.segments:
        print(f"  {seg.name}: {seg.classification}, {', '.join(map(str, seg.cidrs))}")
    for inner, cidr, outer, ocidr in SegmentMap(config.segments).overlaps():
        print(f"  overlap: {cidr} ({inner}) lies inside {ocidr} ({outer}); "
              "the longest prefix wins")
    pol = config.policy
    print(f"policy: flagged {', '.join(pol.flagged_jurisdictions)}; bases "
          f"{', '.join(pol.bases)}; {len(pol.rules)} rule(s)")
    for rule in pol.rules:
        print(f"  {rule.id} (sid {rule.sid}): {'/'.join(rule.classifications)} -> "
              f"{'/'.join(rule.jurisdictions)} {rule.severity}, escalates to "
              f"{rule.escalate_to} over {rule.upload_threshold_bytes:,} bytes")
    today = dt.date.today()
    expired = 0
    for exc in pol.exceptions:
        state = "EXPIRED, no longer applies" if exc.expired(today) else "in force"
        expired += exc.expired(today)
        print(f"  exception (line {exc.line}) owner {exc.owner}, expires {exc.expires}: "
              f"{state}: {exc.reason}")
    print(f"signatures: {len(sigs.vendors)} vendors, {sigs.pattern_count} patterns, "
          f"version {sigs.version}")
    for info in geo.databases():
        built = info.build_epoch.isoformat() if hasattr(info.build_epoch, "isoformat") \
            else str(info.build_epoch)
        print(f"geo {info.name}: {info.path} ({info.database_type}, built {built})")
    if expired:
        print(f"warning: {expired} exception(s) have expired", file=sys.stderr)
    print("ok")
    return 0


def cmd_geo(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    geo = _open_geo(config)
    for line in format_geo_lines(geo, args.ips):
        print(line)
    return 0


def cmd_signatures(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    sigs = _open_signatures(config)
    lines = format_vendor_table(sigs) if args.action == "list" \
        else format_match_lines(sigs, args.names)
    for line in lines:
        print(line)
    if args.action == "match" and not args.names:
        print("avmon: signatures match needs at least one NAME", file=sys.stderr)
        return 2
    return 0


def _above_zero(text: str, convert: Callable[[str], Any], what: str) -> Any:
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not {what}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _positive_int(text: str) -> int:
    return int(_above_zero(text, int, "a whole number"))


def _positive(text: str) -> float:
    return float(_above_zero(text, float, "a number"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avmon",
        description="Egress monitor for antivirus cloud-lookup and telemetry traffic.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("replay", help="process capture files (pcap, pcapng, .gz, directories)")
    p.add_argument("captures", nargs="*", metavar="CAPTURE",
                   help="capture files or directories (default: the bundled demo capture)")
    p.add_argument("-c", "--config", metavar="CONFIG", help="configuration file (TOML)")
    p.add_argument("--eve", metavar="PATH|-", help="write EVE JSON lines to PATH (- stdout)")
    p.add_argument("--metrics-textfile", metavar="PATH",
                   help="write Prometheus metrics in node_exporter textfile format (at the "
                        "end, and every 30 s during long replays)")
    p.add_argument("--metrics-listen", metavar="ADDR:PORT",
                   help="serve /metrics while replaying (loopback unless --metrics-public)")
    p.add_argument("--metrics-public", action="store_true",
                   help="allow --metrics-listen on a non-loopback address")
    p.add_argument("--metrics-linger", type=float, default=0.0, metavar="SECONDS",
                   help="keep serving /metrics this long after the replay ends")
    p.add_argument("--evidence", metavar="DIR",
                   help="write a pcap and the alert JSON of every alerting flow to DIR")
    p.add_argument("--speed", type=_positive, metavar="FACTOR",
                   help="pace the replay at FACTOR times capture time (default: as fast "
                        "as possible)")
    p.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="processes sharing the work by flow (default: the cores available "
                        "for 256 MB of input or more, else 1)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar and no summary (for scripts)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("live", help="capture from network interfaces (Linux AF_PACKET)")
    p.add_argument("-i", "--interface", action="append", required=True, metavar="IFACE",
                   help="interface to capture on (repeat for several; 'any' for all)")
    p.add_argument("-c", "--config", metavar="CONFIG", help="configuration file (TOML)")
    p.add_argument("--eve", metavar="PATH|-", help="write EVE JSON lines to PATH (- stdout)")
    p.add_argument("--evidence", metavar="DIR",
                   help="write a pcap and the alert JSON of every alerting flow to DIR")
    p.add_argument("--metrics-listen", metavar="ADDR:PORT", default="127.0.0.1:9477",
                   help="serve /metrics here (default 127.0.0.1:9477; loopback unless "
                        "--metrics-public)")
    p.add_argument("--metrics-public", action="store_true",
                   help="allow --metrics-listen on a non-loopback address")
    p.add_argument("--source", choices=("ring", "socket", "tshark", "scapy"), default="ring",
                   help="capture source: AF_PACKET TPACKET_V3 ring (default), plain AF_PACKET "
                        "socket, tshark (link types only Wireshark handles), scapy (other "
                        "platforms)")
    p.add_argument("--bpf", metavar="EXPR", help="kernel capture filter (tcpdump syntax)")
    p.add_argument("--promisc", action="store_true", help="put the interfaces in promiscuous "
                   "mode (a SPAN port or tap)")
    p.add_argument("--user", metavar="USER",
                   help="drop to USER once the capture is open (needs only CAP_NET_RAW "
                        "before that)")
    p.add_argument("--ring-mb", type=_positive_int, default=256, metavar="MB",
                   help="memory of each TPACKET_V3 ring (--source ring; per interface and "
                        "worker), default 256: a burst longer than the ring holds is "
                        "dropped by the kernel and counted")
    p.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                   help="worker processes sharing the link by flow (PACKET_FANOUT_HASH; "
                        "--source ring); default 1")
    p.set_defaults(func=cmd_live)

    p = sub.add_parser("demo", help="replay the bundled demo capture and print its alerts")
    p.add_argument("--eve", metavar="PATH|-", help="also write EVE JSON lines to PATH")
    p.add_argument("--evidence", metavar="DIR", help="write evidence files to DIR")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("check", help="validate config, signatures and geo data (exit 0 or 2)")
    p.add_argument("-c", "--config", metavar="CONFIG", help="configuration file (TOML)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("geo", help="print every jurisdiction basis of addresses")
    p.add_argument("ips", nargs="+", metavar="IP")
    p.add_argument("-c", "--config", metavar="CONFIG", help="configuration file (TOML)")
    p.set_defaults(func=cmd_geo)

    p = sub.add_parser("signatures", help="list AV vendor signatures or match names")
    p.add_argument("action", choices=("list", "match"))
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("-c", "--config", metavar="CONFIG", help="configuration file (TOML)")
    p.set_defaults(func=cmd_signatures)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"avmon: {exc}", file=sys.stderr)
        return 2
    except (CaptureError, OutputError) as exc:
        print(f"avmon: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130


def run() -> None:
    """The ``avmon`` command: :func:`main`, then exit."""
    code = main()
    before_exit()
    sys.exit(code)


if __name__ == "__main__":
    run()
