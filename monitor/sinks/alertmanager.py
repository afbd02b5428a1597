"""Deliver alerts to Prometheus Alertmanager through its v2 API (``POST /api/v2/alerts``).

Alertmanager identifies an alert by its label set, so the labels carry only avmon's alert
identity (rule, segment, classification, vendor, flagged jurisdiction, severity) and every
flow detail goes in annotations; alerts with the same labels are one Alertmanager alert,
whose annotations show the latest occurrence. The sink keeps a table of its active alerts
and, as Alertmanager's client contract requires, re-sends all of them every
``resend_interval`` seconds with ``endsAt`` = the last time the identity was raised +
``resolve_after``; once the violations stop, Alertmanager resolves the alert at that time
by itself.

Delivery retries connection errors, timeouts and 5xx answers with jittered exponential
backoff. A 4xx answer that means the payload itself is bad (400, 413, 422, ...) is logged,
counted and dropped, since it will not get better; 401, 403, 404, 405, 407, 408 and 429
mean a wrong URL, missing credentials or throttling and are retried like an outage, so a
misconfiguration never silently discards alerts.

With a spool directory every alert is written to disk before its first delivery attempt
and deleted only after Alertmanager accepted it (2xx), so an outage, a crash or a restart
loses nothing: a new sink on the same directory delivers what was left, first.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any, Final

import msgspec

from monitor.sinks.base import QueuedSink, Raised, rfc3339
from monitor.sinks.spool import MIN_SEGMENT_BYTES, Spool, SpoolError

__all__ = [
    "ALERTNAME",
    "AlertmanagerSink",
    "alert_annotations",
    "alert_labels",
]

log = logging.getLogger("avmon.sinks")

#: The ``alertname`` label of every avmon alert.
ALERTNAME: Final = "AvmonFlaggedJurisdiction"
#: Records taken from the queue per loop turn, so a long queue still leaves time to send.
MAX_BATCH: Final = 1000
#: Alerts per POST; Alertmanager has no hard limit, but a bounded body keeps a retry cheap.
MAX_ALERTS_PER_POST: Final = 500
#: Distinct alert identities held. Identities come from configured rules and segments,
#: signature vendors and jurisdictions, so real tables are tiny; this only bounds a bug.
MAX_ACTIVE_ALERTS: Final = 10_000
#: 4xx answers that say "wrong place or not now" rather than "bad payload": retried.
RETRY_4XX: Final = frozenset({401, 403, 404, 405, 407, 408, 425, 429})
DEFAULT_SPOOL_MAX_BYTES: Final = 64 * 1024 * 1024
_ERROR_BODY_BYTES: Final = 512


class _Outcome(Enum):
    OK = "ok"
    REJECTED = "rejected"
    RETRY = "retry"


class _Active(msgspec.Struct):
    labels: dict[str, str]
    annotations: dict[str, str]
    #: Wall-clock time the identity was first raised in this active period.
    starts_at: float
    #: Wall-clock time it was last raised.
    last_raised: float
    #: Records merged in since Alertmanager last accepted this alert.
    pending: int


def _text(value: Any) -> str:
    if value is None or isinstance(value, (dict, list)):
        raise ValueError(f"expected a scalar, got {value!r:.40}")
    return str(value)


def _label(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"avmon.{name} must be a non-empty string")
    return value


def alert_labels(record: dict[str, Any]) -> dict[str, str]:
    """The identity of an EVE alert record as Alertmanager labels.

    ``jurisdiction`` is the sorted, comma-joined set of the flagged codes. Raises KeyError,
    TypeError or ValueError for a record that is not an avmon alert.
    """
    av = record["avmon"]
    codes = sorted({str(f["code"]) for f in av.get("flagged") or () if f.get("code")})
    return {
        "alertname": ALERTNAME,
        "rule": _label(av["rule"], "rule"),
        "segment": _label(av["segment"], "segment"),
        "classification": _label(av["classification"], "classification"),
        "vendor": _label(av["vendor"], "vendor"),
        "jurisdiction": ",".join(codes) or "unknown",
        "severity": _label(av["severity"], "severity"),
    }


def _bases(av: dict[str, Any]) -> str:
    return ", ".join(f"{f.get('code')} ({f.get('basis')})" for f in av.get("flagged") or ())


def alert_annotations(record: dict[str, Any]) -> dict[str, str]:
    """The details of an EVE alert record as Alertmanager annotations (all strings)."""
    av = record["avmon"]
    alert = record.get("alert") or {}
    indicator = av.get("indicator") or {}
    escalation = av.get("escalation") or {}
    port = record.get("dest_port")
    dest = f"{record.get('dest_ip')}:{port}" if port is not None else f"{record.get('dest_ip')}"
    what = " ".join(str(x) for x in (av.get("vendor_name") or av.get("vendor"),
                                     av.get("purpose"), av.get("server_name")) if x)
    parts = [f"{record.get('src_ip')} -> {dest} {record.get('proto', '')}".rstrip()
             + f": {what}" + (f" (by {indicator['type']})" if indicator.get("type") else "")]
    bases = _bases(av)
    if bases:
        parts.append(f"flagged: {bases}")
    parts.append(f"segment {av.get('segment')} [{av.get('classification')}], "
                 f"rule {av.get('rule')}")
    if record.get("pcap_cnt") is not None:
        parts.append(f"frame {record['pcap_cnt']}")
    if escalation.get("bytes_toserver") is not None:
        parts.append(f"{escalation['bytes_toserver']:,} bytes sent "
                     f"(threshold {escalation.get('threshold_bytes', 0):,})")
    candidates: dict[str, Any] = {
        "summary": alert.get("signature"),
        "description": "; ".join(parts),
        "community_id": record.get("community_id"),
        "flow_id": record.get("flow_id"),
        "src_ip": record.get("src_ip"),
        "src_port": record.get("src_port"),
        "dest_ip": record.get("dest_ip"),
        "dest_port": port,
        "proto": record.get("proto"),
        "server_name": av.get("server_name"),
        "indicator": indicator.get("type"),
        "indicator_value": indicator.get("value"),
        "vendor_name": av.get("vendor_name"),
        "purpose": av.get("purpose"),
        "bases": bases or None,
        "signature_id": alert.get("signature_id"),
        "avmon_signature": (f"{av['signature_id']}@{av.get('signature_rev', 1)}"
                            if av.get("signature_id") else None),
        "pcap_cnt": record.get("pcap_cnt"),
        "capture_timestamp": record.get("timestamp"),
        "escalation_bytes_toserver": escalation.get("bytes_toserver"),
        "escalation_threshold_bytes": escalation.get("threshold_bytes"),
    }
    return {k: _text(v) for k, v in candidates.items() if v is not None and v != ""}


class AlertmanagerSink(QueuedSink):
    """Sends avmon alerts to Alertmanager; re-sends active ones; spools while it is down.

    ``error`` is None, or the one-line reason the sink refused to work (an unsafe spool
    directory); a refused sink counts every record it is given as an error.
    """

    def __init__(self, url: str, *, resend_interval: float = 60.0,
                 resolve_after: float = 300.0, timeout: float = 5.0,
                 spool_dir: Path | None = None,
                 spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
                 clock: Callable[[], float] = time.time,
                 backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 generator_url: str | None = None, name: str = "alertmanager",
                 queue_limit: int | None = None) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"alertmanager url must be http(s)://host:port, not {url!r}")
        for what, value in (("resend_interval", resend_interval),
                            ("resolve_after", resolve_after), ("timeout", timeout)):
            if not value > 0:
                raise ValueError(f"alertmanager {what} must be positive")
        if spool_max_bytes < MIN_SEGMENT_BYTES:
            raise ValueError(f"alertmanager spool_max_bytes must be at least {MIN_SEGMENT_BYTES}")
        super().__init__(name, clock=clock, backoff_initial=backoff_initial,
                         backoff_max=backoff_max, queue_limit=queue_limit)
        self.url = url.rstrip("/")
        self.endpoint = self.url + "/api/v2/alerts"
        self.resend_interval = float(resend_interval)
        self.resolve_after = float(resolve_after)
        self.timeout = float(timeout)
        self.generator_url = generator_url
        self.error: str | None = None
        self.spool: Spool | None = None
        self._active: dict[tuple[tuple[str, str], ...], _Active] = {}
        # Imported here: urllib.request brings http.client, ssl and email, some 20 ms of
        # every start of avmon, and only a configured Alertmanager needs them.
        from urllib.request import ProxyHandler, build_opener

        self._opener = build_opener(ProxyHandler({}))
        self._retry_at = 0.0
        self._resend_at = 0.0
        self._close_deadline = float("inf")
        if spool_dir is not None:
            try:
                self.spool = Spool(Path(spool_dir), spool_max_bytes,
                                   on_drop=self._spool_dropped)
            except SpoolError as e:
                self.error = str(e)
                self.count(errors=1)
                log.error("%s: disabled: %s", self.name, e)
            else:
                self.stats.spool_bytes = self.spool.bytes

    # -- the caller's side -------------------------------------------------------------

    def send(self, record: dict[str, Any]) -> None:
        if self.error is not None:
            self.count(errors=1)
            return
        super().send(record)

    def start(self) -> None:
        if self.error is None:
            super().start()

    def close(self, timeout: float = 5.0) -> None:
        self._close_deadline = time.monotonic() + max(timeout, 0.0)
        super().close(timeout)
        if self.spool is not None:
            try:
                self.spool.close()
            except OSError as e:
                log.error("%s: spool: %s", self.name, e)
                self.count(errors=1)
            self.stats.spool_bytes = self.spool.bytes

    def _spool_dropped(self, n: int) -> None:
        self.count(errors=n)
        self.limit_hit("spool_bytes", n)

    def _overflow(self, item: Raised) -> None:
        self._persist([item], why="queue full" if not self._closed else "sink closed")

    def _leftover(self, items: list[Raised]) -> None:
        if items:
            self._persist(items, why="not delivered before close")

    def _persist(self, items: list[Raised], *, why: str) -> None:
        """Spool records the thread never saw (overflow, or left at close); else count them."""
        if self.spool is None:
            self.count(errors=len(items))
            self.warn_sometimes(why, "%s: %s: %d alert(s) dropped (no spool)", self.name, why,
                                len(items))
            return
        try:
            self.spool.append([{"raised_at": t, "record": r} for t, r in items], unread=True,
                              sync=self._closed)
        except (OSError, TypeError, ValueError) as e:
            self.count(errors=len(items))
            log.error("%s: %s, and the spool failed: %s", self.name, why, e)
        self.stats.spool_bytes = self.spool.bytes

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        self._ingest_unread()
        while True:
            stopping = self._stopping.is_set()
            batch = self._take(MAX_BATCH, 0.0 if stopping else self._wait_seconds())
            if batch:
                self._ingest(batch)
            if self.spool is not None and self.spool.has_unread:
                self._ingest_unread()
            if stopping:
                if batch:
                    continue  # drain the queue before the last attempt
                self._final_flush()
                return
            now = time.monotonic()
            if now >= self._retry_at and (self._has_pending() or now >= self._resend_at):
                self._flush(resend=now >= self._resend_at)

    def _wait_seconds(self) -> float | None:
        now = time.monotonic()
        if not self._active:
            return None
        if self._has_pending():
            return max(self._retry_at - now, 0.0)
        return max(max(self._resend_at, self._retry_at) - now, 0.0)

    def _has_pending(self) -> bool:
        return any(a.pending for a in self._active.values())

    def _ingest(self, batch: list[Raised]) -> None:
        if self.spool is not None:
            try:
                self.spool.append({"raised_at": t, "record": r} for t, r in batch)
            except (OSError, TypeError, ValueError) as e:
                self.count(errors=1)
                log.error("%s: spool write failed (alerts kept in memory only): %s",
                          self.name, e)
            self.stats.spool_bytes = self.spool.bytes
        for t, r in batch:
            self._merge(t, r)

    def _ingest_unread(self) -> None:
        if self.spool is None:
            return
        try:
            entries = self.spool.read_unread()
        except OSError as e:
            self.count(errors=1)
            log.error("%s: cannot read the spool: %s", self.name, e)
            return
        for entry in entries:
            t, r = entry.get("raised_at"), entry.get("record")
            if isinstance(t, (int, float)) and isinstance(r, dict):
                self._merge(float(t), r)
            else:
                self.count(errors=1)
        self.stats.spool_bytes = self.spool.bytes

    def _merge(self, raised: float, record: dict[str, Any]) -> None:
        try:
            labels = alert_labels(record)
            annotations = alert_annotations(record)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            self.count(errors=1)
            log.error("%s: not an avmon alert record (%s), dropped", self.name, e)
            return
        key = tuple(sorted(labels.items()))
        cur = self._active.get(key)
        if cur is None:
            if len(self._active) >= MAX_ACTIVE_ALERTS:
                self.count(errors=1)
                log.error("%s: %d distinct alerts active, dropped one", self.name,
                          MAX_ACTIVE_ALERTS)
                return
            self._active[key] = _Active(labels, annotations, raised, raised, 1)
            return
        if raised > cur.last_raised + self.resolve_after:
            # The earlier period ended (Alertmanager resolved it): a new alert starts.
            cur.starts_at = raised
        else:
            cur.starts_at = min(cur.starts_at, raised)
        if raised >= cur.last_raised:
            cur.last_raised = raised
            cur.annotations = annotations
        cur.pending += 1

    def _payload(self, entry: _Active) -> dict[str, Any]:
        out: dict[str, Any] = {
            "labels": entry.labels,
            "annotations": entry.annotations,
            "startsAt": rfc3339(entry.starts_at),
            "endsAt": rfc3339(entry.last_raised + self.resolve_after),
        }
        if self.generator_url:
            out["generatorURL"] = self.generator_url
        return out

    def _prune(self) -> None:
        """Forget delivered alerts whose ``endsAt`` passed: Alertmanager resolved them."""
        now = self._clock()
        for key in [k for k, a in self._active.items()
                    if a.pending == 0 and a.last_raised + self.resolve_after <= now]:
            del self._active[key]

    def _flush(self, *, resend: bool, timeout: float | None = None) -> bool:
        """Send pending alerts (all active ones if ``resend``); True if delivered."""
        self._prune()
        entries = [a for a in self._active.values() if resend or a.pending]
        if not entries:
            self._resend_at = time.monotonic() + self.resend_interval
            return True
        mark = self.spool.seal() if self.spool is not None else 0
        if self._deliver(entries, self.timeout if timeout is None else timeout):
            if self._backoff.failures:
                log.warning("%s: delivering to %s again after %d failed attempt(s)",
                            self.name, self.endpoint, self._backoff.failures)
            self._backoff.reset()
            self._retry_at = 0.0
            if resend or all(a.pending == 0 for a in self._active.values()):
                self._resend_at = time.monotonic() + self.resend_interval
            if self.spool is not None:
                try:
                    self.spool.ack(mark)
                except OSError as e:
                    self.count(errors=1)
                    log.error("%s: spool: %s", self.name, e)
                self.stats.spool_bytes = self.spool.bytes
            self._prune()
            return True
        self._retry_at = time.monotonic() + self._backoff.next_delay()
        return False

    def _deliver(self, entries: list[_Active], timeout: float) -> bool:
        for i in range(0, len(entries), MAX_ALERTS_PER_POST):
            chunk = entries[i:i + MAX_ALERTS_PER_POST]
            outcome = self._post(chunk, timeout)
            if outcome is _Outcome.RETRY:
                return False
            if outcome is _Outcome.OK:
                self._accepted(chunk)
                continue
            # Alertmanager accepts the valid alerts of a batch and answers 400 for the
            # rest; sending each alone finds the ones it refuses.
            for entry in chunk if len(chunk) > 1 else ():
                single = self._post([entry], timeout)
                if single is _Outcome.RETRY:
                    return False
                if single is _Outcome.OK:
                    self._accepted([entry])
                else:
                    self._rejected(entry)
            if len(chunk) == 1:
                self._rejected(chunk[0])
        return True

    def _accepted(self, entries: list[_Active]) -> None:
        self.count(sent=sum(a.pending for a in entries))
        for a in entries:
            a.pending = 0

    def _rejected(self, entry: _Active) -> None:
        self.count(errors=max(entry.pending, 1))
        self._active.pop(tuple(sorted(entry.labels.items())), None)

    def _post(self, entries: list[_Active], timeout: float) -> _Outcome:
        from http.client import HTTPException  # loaded by __init__'s urllib.request
        from urllib.error import HTTPError
        from urllib.request import Request

        body = json.dumps([self._payload(a) for a in entries]).encode()
        req = Request(self.endpoint, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "avmon"})
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                resp.read()
                return _Outcome.OK
        except HTTPError as e:
            try:
                detail = e.read(_ERROR_BODY_BYTES).decode("utf-8", "replace").strip()
            except (OSError, HTTPException):
                detail = ""
            finally:
                e.close()
            self.count(errors=1)
            if e.code >= 500 or e.code in RETRY_4XX:
                self._log_failure(f"HTTP {e.code} {detail}".strip())
                return _Outcome.RETRY
            log.error("%s: %s rejected %d alert(s): HTTP %d %s", self.name, self.endpoint,
                      len(entries), e.code, detail)
            return _Outcome.REJECTED
        except (OSError, HTTPException) as e:
            self.count(errors=1)
            reason = getattr(e, "reason", None) or e
            self._log_failure(str(reason))
            return _Outcome.RETRY

    def _log_failure(self, reason: str) -> None:
        if self._backoff.failures == 0:
            log.warning("%s: cannot deliver to %s (%s); %s and retrying", self.name,
                        self.endpoint, reason,
                        "spooling" if self.spool is not None else "holding alerts in memory")

    def _final_flush(self) -> None:
        remaining = self._close_deadline - time.monotonic()
        if self._has_pending() and remaining > 0:
            self._flush(resend=False, timeout=min(self.timeout, remaining))
        if self.spool is None:
            lost = sum(a.pending for a in self._active.values())
            if lost:
                self.count(errors=lost)
                log.warning("%s: %d alert(s) not delivered before close (no spool)",
                            self.name, lost)
            for a in self._active.values():
                a.pending = 0
