"""Deliver alerts as RFC 5424 syslog messages over UDP, TCP or a Unix datagram socket.

Each alert becomes one message::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID alert [avmon@32473 rule=".." ...] {json}

``PRI`` is ``facility * 8 + severity`` with avmon's severities mapped to syslog's
(critical -> 2 crit, high -> 3 err, medium -> 4 warning, low -> 5 notice). ``TIMESTAMP`` is
the wall-clock time avmon raised the alert (UTC, microseconds); the capture time is the
record's own ``timestamp``. The structured-data element ``avmon@32473`` repeats the alert
identity and the flow's Community ID so a receiver can route without parsing JSON; its
values are escaped as RFC 5424 §6.3.3 requires (``"``, ``\\`` and ``]``). ``MSG`` is the
EVE record as one line of JSON, ASCII only (non-ASCII characters are ``\\u`` escapes), so
it needs no BOM and none is sent: a BOM in front of JSON breaks most JSON-aware receivers.

Transports (``address``): ``udp://host:port`` sends one datagram per message;
``tcp://host:port`` uses RFC 6587 octet-counting framing (``LEN SP MSG``) and reconnects
with backoff; ``unix:///path`` sends datagrams to a local socket such as ``/dev/log``.
Messages longer than ``max_message`` bytes are cut to fit and carry ``truncated="true"``
in their structured data. A failed delivery is retried with backoff while later alerts
wait in the bounded queue; the caller is never blocked.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import select
import socket
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, Final

from monitor.sinks.base import QueuedSink, rfc3339

__all__ = ["FACILITIES", "SD_ID", "SEVERITY_CODES", "SyslogSink", "format_rfc5424",
           "sd_escape"]

log = logging.getLogger("avmon.sinks")

FACILITIES: Final = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13,
    "console": 14, "solaris-cron": 15, "local0": 16, "local1": 17, "local2": 18,
    "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}
#: avmon severity -> RFC 5424 severity code; anything else is 4 (warning).
SEVERITY_CODES: Final = {"critical": 2, "high": 3, "medium": 4, "low": 5}
#: SD-ID of avmon's structured-data element: name@<enterprise number> (RFC 5424 §7.2.2).
SD_ID: Final = "avmon@32473"
MSGID: Final = "alert"
#: RFC 5424 §6.1 lets receivers refuse more than 480 octets but recommends 2048 and up;
#: rsyslog's default limit is 8 KiB, and an avmon alert record is about 3 KiB.
DEFAULT_MAX_MESSAGE: Final = 8192
MIN_MESSAGE: Final = 480
#: Records taken from the queue per loop turn.
MAX_BATCH: Final = 1000
DEFAULT_PORT: Final = 514
#: Header field limits (RFC 5424 §6.2).
MAX_HOSTNAME: Final = 255
MAX_APP_NAME: Final = 48

_NOT_PRINTUSASCII = re.compile(r"[^\x21-\x7e]")


def sd_escape(value: str) -> str:
    """Escape a PARAM-VALUE: ``"``, ``\\`` and ``]`` get a backslash (RFC 5424 §6.3.3)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header_field(value: str, limit: int) -> str:
    """A PRINTUSASCII header field of at most ``limit`` octets; "-" (NILVALUE) if empty."""
    value = _NOT_PRINTUSASCII.sub("_", value)[:limit]
    return value or "-"


def _flagged(av: dict[str, Any]) -> str:
    return ",".join(sorted({str(f["code"]) for f in av.get("flagged") or () if f.get("code")}))


def format_rfc5424(record: dict[str, Any], *, timestamp: float, hostname: str,
                   app_name: str = "avmon", procid: str = "-", facility: int = 16,
                   max_message: int = DEFAULT_MAX_MESSAGE) -> bytes:
    """One alert record as an RFC 5424 message (no transport framing).

    Raises TypeError or ValueError if the record cannot be serialised as JSON.
    """
    av = record.get("avmon") or {}
    severity = SEVERITY_CODES.get(str(av.get("severity")), 4)
    params = [(k, v) for k, v in (
        ("rule", av.get("rule")),
        ("severity", av.get("severity")),
        ("segment", av.get("segment")),
        ("classification", av.get("classification")),
        ("vendor", av.get("vendor")),
        ("jurisdiction", _flagged(av) or None),
        ("community_id", record.get("community_id")),
    ) if v is not None]
    body = json.dumps(record, ensure_ascii=True, separators=(",", ":"), allow_nan=False)

    def build(extra: str) -> bytes:
        sd = " ".join(f'{k}="{sd_escape(str(v))}"' for k, v in params)
        head = (f"<{facility * 8 + severity}>1 {rfc3339(timestamp)} "
                f"{_header_field(hostname, MAX_HOSTNAME)} {_header_field(app_name, MAX_APP_NAME)} "
                f"{_header_field(procid, 128)} {MSGID} [{SD_ID} {sd}{extra}] ")
        return head.encode()

    head = build("")
    msg = body.encode("ascii")
    if len(head) + len(msg) <= max_message:
        return head + msg
    head = build(' truncated="true"')
    return (head + msg)[:max_message]


class _Transport:
    """One destination; ``send`` raises OSError on failure (the caller reconnects)."""

    def send(self, msg: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _Datagram(_Transport):
    def __init__(self, family: int, target: Any, timeout: float) -> None:
        self.family = family
        self.target = target
        self.timeout = timeout
        self.sock: socket.socket | None = None

    def send(self, msg: bytes) -> None:
        if self.sock is None:
            self.sock = socket.socket(self.family, socket.SOCK_DGRAM)
            self.sock.settimeout(self.timeout)
        self.sock.sendto(msg, self.target)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None


class _Udp(_Datagram):
    def __init__(self, host: str, port: int, timeout: float) -> None:
        super().__init__(socket.AF_INET, None, timeout)
        self.host = host
        self.port = port

    def send(self, msg: bytes) -> None:
        if self.target is None:
            family, _, _, _, addr = socket.getaddrinfo(self.host, self.port,
                                                       type=socket.SOCK_DGRAM)[0]
            self.family, self.target = family, addr
        super().send(msg)

    def close(self) -> None:
        super().close()
        self.target = None  # resolve again: the receiver may have moved


class _Tcp(_Transport):
    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.sock: socket.socket | None = None

    def send(self, msg: bytes) -> None:
        sock = self.sock
        if sock is not None and self._peer_closed(sock):
            self.close()
            sock = None
        if sock is None:
            sock = self.sock = socket.create_connection((self.host, self.port), self.timeout)
            sock.settimeout(self.timeout)
        # RFC 6587 §3.4.1 octet counting: MSG-LEN SP SYSLOG-MSG.
        sock.sendall(str(len(msg)).encode() + b" " + msg)

    @staticmethod
    def _peer_closed(sock: socket.socket) -> bool:
        """A syslog receiver never writes, so a readable socket means EOF or a reset."""
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        try:
            return sock.recv(4096, socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None


def _transport(address: str, timeout: float) -> _Transport:
    parts = urllib.parse.urlsplit(address)
    if parts.scheme == "unix":
        path = parts.path or parts.netloc
        if not path:
            raise ValueError(f"syslog address {address!r}: unix:///path needs a path")
        return _Datagram(socket.AF_UNIX, path, timeout)
    if parts.scheme in ("udp", "tcp"):
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise ValueError(f"syslog address {address!r}: bad port") from None
        if not parts.hostname:
            raise ValueError(f"syslog address {address!r}: no host")
        if parts.scheme == "udp":
            return _Udp(parts.hostname, port, timeout)
        return _Tcp(parts.hostname, port, timeout)
    raise ValueError(f"syslog address {address!r}: expected udp://host:port, "
                     f"tcp://host:port or unix:///path")


class SyslogSink(QueuedSink):
    """Sends avmon alerts as RFC 5424 messages; never blocks its caller.

    A syslog sink has no spool: alerts still queued when :meth:`close` gives up are
    counted as errors.
    """

    def __init__(self, address: str, *, app_name: str = "avmon", facility: str = "local0",
                 hostname: str | None = None, max_message: int = DEFAULT_MAX_MESSAGE,
                 timeout: float = 5.0, backoff_initial: float = 0.5,
                 backoff_max: float = 30.0, clock: Callable[[], float] = time.time,
                 name: str = "syslog", queue_limit: int | None = None) -> None:
        if facility not in FACILITIES:
            raise ValueError(f"syslog facility {facility!r}: expected one of "
                             f"{', '.join(FACILITIES)}")
        if max_message < MIN_MESSAGE:
            raise ValueError(f"syslog max_message must be at least {MIN_MESSAGE}")
        if not timeout > 0:
            raise ValueError("syslog timeout must be positive")
        self._conn = _transport(address, timeout)
        super().__init__(name, clock=clock, backoff_initial=backoff_initial,
                         backoff_max=backoff_max, queue_limit=queue_limit)
        self.address = address
        self.app_name = app_name
        self.facility = facility
        self.hostname = hostname or socket.gethostname()
        self.max_message = max_message
        self._procid = str(os.getpid())

    def format(self, record: dict[str, Any], raised: float) -> bytes:
        """The message this sink sends for ``record`` raised at ``raised``."""
        return format_rfc5424(record, timestamp=raised, hostname=self.hostname,
                              app_name=self.app_name, procid=self._procid,
                              facility=FACILITIES[self.facility],
                              max_message=self.max_message)

    def _run(self) -> None:
        try:
            while True:
                stopping = self._stopping.is_set()
                batch = self._take(MAX_BATCH, 0.0 if stopping else None)
                if not batch:
                    if stopping:
                        return
                    continue
                for i, (raised, record) in enumerate(batch):
                    if not self._deliver(raised, record):
                        rest = len(batch) - i
                        self.count(errors=rest)
                        log.warning("%s: closing with %s unreachable: %d alert(s) dropped",
                                    self.name, self.address, rest)
                        return
        finally:
            self._conn.close()

    def _deliver(self, raised: float, record: dict[str, Any]) -> bool:
        """Send one record, retrying with backoff; False if the sink closed meanwhile."""
        try:
            msg = self.format(record, raised)
        except (TypeError, ValueError) as e:
            self.count(errors=1)
            log.error("%s: alert record not serialisable (%s), dropped", self.name, e)
            return True
        while True:
            try:
                self._conn.send(msg)
            except OSError as e:
                self.count(errors=1)
                if e.errno == errno.EMSGSIZE:
                    log.error("%s: %s refuses a %d-byte datagram; alert dropped (lower "
                              "max_message)", self.name, self.address, len(msg))
                    return True
                self._conn.close()
                if self._backoff.failures == 0:
                    log.warning("%s: cannot send to %s (%s); retrying", self.name,
                                self.address, e)
                if self._sleep(self._backoff.next_delay()):
                    return False
                continue
            if self._backoff.failures:
                log.warning("%s: sending to %s again after %d failed attempt(s)", self.name,
                            self.address, self._backoff.failures)
                self._backoff.reset()
            self.count(sent=1)
            return True
