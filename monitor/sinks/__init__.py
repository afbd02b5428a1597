"""Alert sinks: where EVE ``alert`` records go besides the EVE file.

Two sinks exist, both behind the :class:`AlertSink` interface: :class:`AlertmanagerSink`
(Alertmanager v2 API, with re-sending, resolution and an on-disk spool) and
:class:`SyslogSink` (RFC 5424 over UDP, TCP or a Unix socket). Each runs its own thread
behind a bounded queue, so ``send`` never blocks the packet loop and a failing receiver
only shows in the sink's counters. :func:`build_sinks` makes them from the plain option
tables of the configuration file (``[alertmanager]``, ``[syslog]``); the option names are
documented in docs/alert-sinks.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from monitor.errors import ConfigError
from monitor.sinks.alertmanager import (
    ALERTNAME,
    AlertmanagerSink,
    alert_annotations,
    alert_labels,
)
from monitor.sinks.base import MAX_QUEUE, AlertSink, SinkError
from monitor.sinks.spool import Spool, SpoolError
from monitor.sinks.syslog import SyslogSink, format_rfc5424

__all__ = [
    "ALERTNAME",
    "ALERTMANAGER_OPTIONS",
    "MAX_QUEUE",
    "SYSLOG_OPTIONS",
    "AlertSink",
    "AlertmanagerSink",
    "SinkError",
    "Spool",
    "SpoolError",
    "SyslogSink",
    "alert_annotations",
    "alert_labels",
    "build_sinks",
    "format_rfc5424",
]

#: ``[alertmanager]`` option -> (AlertmanagerSink keyword, expected type).
ALERTMANAGER_OPTIONS: Final[dict[str, tuple[str, type]]] = {
    "url": ("url", str),
    "resend_seconds": ("resend_interval", float),
    "resolve_after_seconds": ("resolve_after", float),
    "timeout_seconds": ("timeout", float),
    "spool_dir": ("spool_dir", Path),
    "spool_max_bytes": ("spool_max_bytes", int),
    "generator_url": ("generator_url", str),
}
#: ``[syslog]`` option -> (SyslogSink keyword, expected type).
SYSLOG_OPTIONS: Final[dict[str, tuple[str, type]]] = {
    "address": ("address", str),
    "app_name": ("app_name", str),
    "facility": ("facility", str),
    "hostname": ("hostname", str),
    "max_message_bytes": ("max_message", int),
    "timeout_seconds": ("timeout", float),
}


def _kwargs(section: str, options: Mapping[str, Any],
            known: dict[str, tuple[str, type]], required: str) -> dict[str, Any]:
    if required not in options:
        raise ConfigError(f"key '{section}.{required}': required")
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key not in known:
            raise ConfigError(f"key '{section}.{key}': unknown option (expected one of "
                              f"{', '.join(known)})")
        kw, kind = known[key]
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
            problem = "must be a positive number"
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
            problem = "must be a positive integer"
        else:
            ok = isinstance(value, (str, Path)) and str(value) != ""
            problem = "must be a non-empty string"
        if not ok:
            raise ConfigError(f"key '{section}.{key}': {problem}, not {value!r}")
        out[kw] = Path(value) if kind is Path else (float(value) if kind is float else value)
    return out


def build_sinks(alertmanager: Mapping[str, Any] | None,
                syslog: Mapping[str, Any] | None,
                queue_limit: int | None = None) -> list[AlertSink]:
    """The sinks the ``[alertmanager]`` and ``[syslog]`` option tables ask for (not started).

    A missing table (None) means no such sink. Raises ConfigError (one line: the key and
    the problem) for an unknown option or a bad value. An unusable spool directory does
    not raise: that sink is built disabled, with the reason in its ``error`` attribute.
    """
    sinks: list[AlertSink] = []
    if alertmanager is not None:
        kw = _kwargs("alertmanager", alertmanager, ALERTMANAGER_OPTIONS, "url")
        try:
            sinks.append(AlertmanagerSink(**kw, queue_limit=queue_limit))
        except ValueError as e:
            raise ConfigError(f"key 'alertmanager': {e}") from None
    if syslog is not None:
        kw = _kwargs("syslog", syslog, SYSLOG_OPTIONS, "address")
        try:
            sinks.append(SyslogSink(**kw, queue_limit=queue_limit))
        except ValueError as e:
            raise ConfigError(f"key 'syslog': {e}") from None
    return sinks

