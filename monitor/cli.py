"""The ``avmon`` command line.

Exit codes: 0 success; 2 bad usage or an invalid config/signature/geo file (one line
naming the file, the key and the problem); 1 runtime failure (for a replay: nothing could
be read).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from monitor.capture.files import CaptureReader
from monitor.errors import CaptureError, ConfigError
from monitor.eve import EveWriter
from monitor.pipeline import Pipeline

__all__ = ["main"]

DEMO_CAPTURE = Path(__file__).parent / "data" / "demo.pcap"


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


def _summary(out: TextIO, reader: CaptureReader, pipe: Pipeline, wall: float,
             eve_target: str | None) -> None:
    st = pipe.stats
    rate = st.packets / wall if wall > 0 else 0.0
    mbps = reader.total_bytes / wall / 1e6 if wall > 0 else 0.0
    span = (st.last_ns - st.first_ns) / 1e9 if st.packets else 0.0
    lines = [
        f"avmon replay: {len(reader.files)} file(s), {st.packets:,} packets, "
        f"{st.bytes:,} bytes, {span:,.1f} s of traffic",
        f"  processed in {wall:.2f} s: {rate:,.0f} packets/s, {mbps:,.1f} MB/s",
        f"  flows: {pipe.table.stats.flows_created:,} created, "
        f"{pipe.table.stats.flows_evicted:,} evicted (table full), "
        f"{st.tunnelled_packets:,} tunnelled packets decapsulated",
    ]
    undecoded = {k: v for k, v in st.undecoded.items() if v}
    if undecoded:
        lines.append("  not decoded: " + ", ".join(f"{k} {v:,}" for k, v in undecoded.items()))
    frag = pipe.table.stats.fragments_unattributed
    if frag:
        lines.append(f"  IP fragments not attributed to a flow: {frag:,}")
    for path, offset, _msg in reader.damaged:
        lines.append(f"  damaged: {path} at offset {offset} (read up to the damage)")
    if eve_target:
        lines.append(f"  EVE records: {pipe.eve.records:,} -> {eve_target}")
    print("\n".join(lines), file=out)


def cmd_replay(args: argparse.Namespace) -> int:
    paths = args.captures or [str(DEMO_CAPTURE)]
    return _replay(paths, args.eve, args.quiet)


def _replay(paths: Sequence[str], eve_target: str | None, quiet: bool,
            listeners: Sequence[Callable[[dict[str, Any]], None]] = (),
            summary_out: TextIO | None = None) -> int:
    def warn(msg: str) -> None:
        print(f"avmon: warning: {msg}", file=sys.stderr)

    reader = CaptureReader(paths, warn=warn)
    eve = EveWriter(eve_target)
    pipe = Pipeline(eve=eve, listeners=listeners)
    progress = _Progress(reader, enabled=not quiet and sys.stderr.isatty())
    t0 = time.perf_counter()
    try:
        for batch in reader:
            pipe.process(batch)
            progress.update(pipe.stats.packets)
        pipe.finish()
    finally:
        progress.close()
        eve.close()
    wall = time.perf_counter() - t0
    if not quiet:
        _summary(summary_out or sys.stderr, reader, pipe, wall, eve_target)
    if pipe.stats.packets == 0 and reader.damaged:
        print("avmon: error: no packets could be read", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Replay the bundled demo capture and print what it shows."""
    records: list[dict[str, Any]] = []
    rc = _replay([str(DEMO_CAPTURE)], args.eve, quiet=False, listeners=[records.append],
                 summary_out=sys.stdout)
    print()
    flow_recs = [r for r in records if r["event_type"] == "flow"]
    flow_recs.sort(key=lambda r: -(r["flow"]["bytes_toserver"] + r["flow"]["bytes_toclient"]))
    print(f"{'client':<22} {'server':<24} {'proto':<5} {'pkts >':>6} {'bytes >':>9} "
          f"{'pkts <':>6} {'bytes <':>9}")
    for r in flow_recs[: args.top]:
        f = r["flow"]
        client = f"{r['src_ip']}:{r.get('src_port', '')}"
        server = f"{r['dest_ip']}:{r.get('dest_port', '')}"
        print(f"{client:<22} {server:<24} {r['proto']:<5} {f['pkts_toserver']:>6} "
              f"{f['bytes_toserver']:>9,} {f['pkts_toclient']:>6} {f['bytes_toclient']:>9,}")
    return rc


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
                   help="write Prometheus metrics in node_exporter textfile format")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar and no summary (for scripts)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("demo", help="replay the bundled demo capture and show the result")
    p.add_argument("--eve", metavar="PATH|-", help="also write EVE JSON lines to PATH")
    p.add_argument("--top", type=int, default=15, help="flows to list (default 15)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"avmon: {exc}", file=sys.stderr)
        return 2
    except CaptureError as exc:
        print(f"avmon: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
