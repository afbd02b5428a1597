"""The replay/live pipeline: batches in, flows, events and alerts out.

``Pipeline.process`` takes one batch from any source through decode, the flow table and
the later stages; ``Pipeline.finish`` ends every open flow. The pipeline owns no I/O of
its own: records go to the sinks it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from monitor.capture.batch import Batch
from monitor.decode import Undecoded, decode_all
from monitor.eve import EveWriter, flow_record
from monitor.flow.table import MAX_FLOWS, Flow, FlowTable, FlowTimeouts

__all__ = ["Pipeline", "PipelineStats"]

_REASONS: Final = [r for r in Undecoded if r != Undecoded.OK]


@dataclass(slots=True)
class PipelineStats:
    packets: int = 0
    bytes: int = 0
    first_ns: int = 0
    last_ns: int = 0
    tunnelled_packets: int = 0
    flows_ended: int = 0
    #: Packets with no L3/L4 columns, by reason label.
    undecoded: dict[str, int] = field(default_factory=lambda: {r.label: 0 for r in _REASONS})


class Pipeline:
    """Source-agnostic processing of batches."""

    def __init__(self, *, eve: EveWriter | None = None,
                 timeouts: FlowTimeouts | None = None, max_flows: int | None = None,
                 community_id_seed: int = 0,
                 listeners: Sequence[Callable[[dict[str, Any]], None]] = ()) -> None:
        self.eve = eve or EveWriter(None)
        #: Called with every record written (besides the EVE file), e.g. by `avmon demo`.
        self.listeners = tuple(listeners)
        self.table = FlowTable(timeouts=timeouts, on_expire=self._flow_ended,
                               max_flows=MAX_FLOWS if max_flows is None else max_flows,
                               community_id_seed=community_id_seed)
        self.stats = PipelineStats()

    def process(self, batch: Batch) -> None:
        n = len(batch)
        if n == 0:
            return
        st = self.stats
        st.packets += n
        st.bytes += int(batch.wirelens.sum())
        if not st.first_ns:
            st.first_ns = int(batch.ts_ns[0])
        st.last_ns = max(st.last_ns, int(batch.ts_ns[-1]))
        layers = decode_all(batch)
        reasons = np.bincount(layers[0].reason, minlength=len(Undecoded))
        for r in _REASONS:
            st.undecoded[r.label] += int(reasons[r])
        for cols in layers:
            if cols.depth:
                st.tunnelled_packets += len(cols)
            self.table.update(cols, batch.ts_ns, batch.wirelens, batch.first_frame)
        self.table.expire()
        self.eve.flush()

    def emit(self, record: dict[str, Any]) -> None:
        self.eve.write(record)
        for listener in self.listeners:
            listener(record)

    def _flow_ended(self, flow: Flow) -> None:
        self.stats.flows_ended += 1
        self.emit(flow_record(flow))

    def finish(self) -> None:
        """End of input: write out every open flow."""
        self.table.flush()
        self.eve.flush()
