"""Alert sinks against real receivers: Debian's Alertmanager, and syslog sockets on loopback.

The Alertmanager tests start ``prometheus-alertmanager`` on a free loopback port with a
null receiver, feed it the demo's real alert records through :class:`AlertmanagerSink`,
and read back ``GET /api/v2/alerts``: labels, annotations, re-sending, resolution, and
delivery across an outage (spooled, then delivered by a new sink or by re-sending after
Alertmanager restarts). The syslog tests parse what arrives on UDP, TCP and Unix datagram
sockets as RFC 5424 / RFC 6587.
"""

from __future__ import annotations

import copy
import datetime as dt
import http.server
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from geo import GeoDatabases
from monitor.config import load_config
from monitor.errors import ConfigError
from monitor.sinks import (
    AlertmanagerSink,
    AlertSink,
    Spool,
    SyslogSink,
    build_sinks,
    format_rfc5424,
)
from tests.helpers import replay
from tests.tshark_oracle import require_tool

DATA = Path(__file__).resolve().parent.parent / "monitor" / "data"
LOOPBACK = "127.0.0.1"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
FAST: dict[str, Any] = {"backoff_initial": 0.05, "backoff_max": 0.3}


# -- fixtures and helpers ------------------------------------------------------------------

@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The demo's real EVE alert records, in the order avmon wrote them."""
    out = tmp_path_factory.mktemp("sinks-demo")
    recs, _ = replay([DATA / "demo.pcap"], out, config=load_config(DATA / "demo.toml"),
                     geo=GeoDatabases())
    alerts = [r for r in recs if r["event_type"] == "alert"]
    assert len(alerts) == 7
    return alerts


def variants(records: list[dict[str, Any]], n: int, tag: str = "v") -> list[dict[str, Any]]:
    """``n`` real records made into ``n`` distinct alert identities (segment renamed)."""
    out = []
    for i in range(n):
        r = copy.deepcopy(records[i % len(records)])
        r["avmon"]["segment"] = f"{tag}-seg-{i:03d}"
        r["community_id"] = f"1:{tag}{i:03d}"
        out.append(r)
    return out


def expected_labels(r: dict[str, Any]) -> dict[str, str]:
    av = r["avmon"]
    return {"alertname": "AvmonFlaggedJurisdiction", "rule": av["rule"],
            "segment": av["segment"], "classification": av["classification"],
            "vendor": av["vendor"],
            "jurisdiction": ",".join(sorted({f["code"] for f in av["flagged"]})),
            "severity": av["severity"]}


def identity(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_for(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def spool_lines(d: Path) -> list[dict[str, Any]]:
    out = []
    for f in sorted(d.glob("*.jsonl")):
        try:
            text = f.read_text()
        except FileNotFoundError:  # the sink dropped this segment since the glob
            continue
        out += [json.loads(line) for line in text.splitlines()]
    return out


def parse_time(s: str) -> float:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


class Alertmanager:
    """Debian's Alertmanager on a loopback port, clustering off, one null receiver."""

    def __init__(self, binary: str, workdir: Path, port: int) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port
        self.url = f"http://{LOOPBACK}:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "am.yml").write_text(
            'route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n')

    def start(self) -> None:
        log = open(self.workdir / "am.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={self.workdir / 'am.yml'}",
             f"--storage.path={self.workdir / 'data'}",
             f"--web.listen-address={LOOPBACK}:{self.port}", "--cluster.listen-address="],
            stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                pytest.fail("alertmanager exited: "
                            + (self.workdir / "am.log").read_text()[-2000:])
            try:
                with NO_PROXY.open(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("alertmanager not ready")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def alerts(self) -> list[dict[str, Any]]:
        with NO_PROXY.open(f"{self.url}/api/v2/alerts", timeout=5) as r:
            body: list[dict[str, Any]] = json.load(r)
        return [a for a in body if a["labels"].get("alertname") == "AvmonFlaggedJurisdiction"]

    def by_identity(self) -> dict[tuple[tuple[str, str], ...], dict[str, Any]]:
        return {identity(a["labels"]): a for a in self.alerts()}


@pytest.fixture(scope="module")
def am_binary() -> str:
    return shutil.which("alertmanager") or require_tool("prometheus-alertmanager")


@pytest.fixture
def am(am_binary: str, tmp_path: Path) -> Iterator[Alertmanager]:
    server = Alertmanager(am_binary, tmp_path / "am", free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def am_stopped(am_binary: str, tmp_path: Path) -> Iterator[Alertmanager]:
    """An Alertmanager whose port is chosen but which is not running yet."""
    server = Alertmanager(am_binary, tmp_path / "am", free_port())
    yield server
    server.stop()


# -- Alertmanager ------------------------------------------------------------------------

def test_sinks_implement_the_protocol(tmp_path: Path) -> None:
    am_sink = AlertmanagerSink("http://127.0.0.1:9", spool_dir=tmp_path / "s")
    sys_sink = SyslogSink("udp://127.0.0.1:9")
    assert isinstance(am_sink, AlertSink) and isinstance(sys_sink, AlertSink)
    assert (am_sink.name, sys_sink.name) == ("alertmanager", "syslog")


def test_alertmanager_receives_every_identity(am: Alertmanager, records: list[dict[str, Any]],
                                              tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    sink = AlertmanagerSink(am.url, spool_dir=spool, resolve_after=300,
                            generator_url="https://sensor.example/avmon")
    sink.start()
    t0 = time.time()
    for r in records:
        sink.send(r)
    wait_for(lambda: sink.stats.sent == len(records), what="delivery")
    sink.close()
    assert sink.stats.errors == 0
    assert sink.stats.queue_length == 0 and sink.stats.spool_bytes == 0
    assert list(spool.glob("*.jsonl")) == []

    latest: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for r in records:
        latest[identity(expected_labels(r))] = r  # same labels: one alert, latest details
    got = am.by_identity()
    assert set(got) == set(latest)
    assert len(got) == 2  # the SECRET host's six alerts and the OFFICIAL one
    for key, r in latest.items():
        a = got[key]
        assert a["labels"] == expected_labels(r)
        ann = a["annotations"]
        assert ann["summary"] == r["alert"]["signature"]
        assert ann["community_id"] == r["community_id"]
        assert ann["flow_id"] == str(r["flow_id"])
        assert ann["src_ip"] == r["src_ip"] and ann["dest_ip"] == r["dest_ip"]
        assert ann["dest_port"] == str(r["dest_port"])
        assert ann["server_name"] == r["avmon"]["server_name"]
        assert ann["indicator"] == r["avmon"]["indicator"]["type"]
        assert ann["pcap_cnt"] == str(r["pcap_cnt"])
        assert ann["capture_timestamp"] == r["timestamp"]
        assert f"{r['src_ip']} -> {r['dest_ip']}:{r['dest_port']}" in ann["description"]
        assert r["avmon"]["server_name"] in ann["description"]
        for label_only in ("rule", "segment", "vendor", "severity"):
            assert label_only not in ann
        assert a["status"]["state"] == "active"
        assert a["generatorURL"] == "https://sensor.example/avmon"
        starts, ends = parse_time(a["startsAt"]), parse_time(a["endsAt"])
        assert t0 - 1 <= starts <= time.time() + 1  # when avmon raised it, not capture time
        assert 299 <= ends - starts <= 301
    secret = got[identity(expected_labels(records[0]))]["annotations"]
    esc = records[-1]["avmon"]["escalation"]  # the upload escalation is the last record
    assert secret["escalation_bytes_toserver"] == str(esc["bytes_toserver"])
    assert secret["escalation_threshold_bytes"] == str(esc["threshold_bytes"])


def test_outage_spools_and_a_new_sink_delivers(am_stopped: Alertmanager,
                                               records: list[dict[str, Any]],
                                               tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    batch = variants(records, 20, "outage")
    sink = AlertmanagerSink(am_stopped.url, spool_dir=spool, **FAST)
    sink.start()
    for r in batch:
        sink.send(r)
    wait_for(lambda: len(spool_lines(spool)) == 20 and sink.stats.errors > 0,
             what="alerts spooled during the outage")
    sink.close(timeout=1)
    assert sink.stats.sent == 0
    assert oct(spool.stat().st_mode & 0o777) == oct(0o700)
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in spool.glob("*.jsonl"))
    assert [e["record"]["community_id"] for e in spool_lines(spool)] == \
        [r["community_id"] for r in batch]

    am_stopped.start()
    again = AlertmanagerSink(am_stopped.url, spool_dir=spool, **FAST)
    assert again.stats.spool_bytes > 0
    again.start()
    wait_for(lambda: again.stats.sent == 20, what="spooled alerts delivered")
    got = am_stopped.by_identity()
    assert set(got) == {identity(expected_labels(r)) for r in batch}
    for r in batch:
        assert got[identity(expected_labels(r))]["annotations"]["community_id"] == \
            r["community_id"]
    again.close()
    assert list(spool.glob("*.jsonl")) == [] and again.stats.spool_bytes == 0


def test_queue_overflow_goes_to_the_spool_and_is_delivered(
        am: Alertmanager, records: list[dict[str, Any]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("monitor.sinks.base.MAX_QUEUE", 5)
    spool = tmp_path / "spool"
    batch = variants(records, 12, "overflow")
    sink = AlertmanagerSink(am.url, spool_dir=spool, **FAST)
    for r in batch:  # not started yet: the queue fills after five
        sink.send(r)
    assert sink.stats.queue_length == 5
    assert [e["record"]["community_id"] for e in spool_lines(spool)] == \
        [r["community_id"] for r in batch[5:]]
    sink.start()
    wait_for(lambda: sink.stats.sent == 12, what="queued and overflowed alerts delivered")
    sink.close()
    assert set(am.by_identity()) == {identity(expected_labels(r)) for r in batch}
    assert sink.stats.errors == 0 and list(spool.glob("*.jsonl")) == []


def test_alertmanager_restart_mid_stream_loses_nothing(am: Alertmanager,
                                                       records: list[dict[str, Any]],
                                                       tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    first, second = variants(records, 10, "before"), variants(records, 10, "during")
    sink = AlertmanagerSink(am.url, spool_dir=spool, resend_interval=0.5, **FAST)
    sink.start()
    for r in first:
        sink.send(r)
    wait_for(lambda: sink.stats.sent == 10, what="first half delivered")
    assert len(am.alerts()) == 10

    am.stop()  # Alertmanager keeps alerts in memory only: the first half is gone with it
    for r in second:
        sink.send(r)
    wait_for(lambda: len(spool_lines(spool)) == 10 and sink.stats.errors > 0,
             what="second half spooled")
    assert sink.stats.sent == 10

    am.start()
    want = {identity(expected_labels(r)) for r in first + second}
    wait_for(lambda: set(am.by_identity()) == want, what="every alert back in Alertmanager")
    wait_for(lambda: sink.stats.sent == 20 and not list(spool.glob("*.jsonl")),
             what="spool emptied")
    sink.close()


def test_resend_keeps_alert_fresh_and_recurrence_extends_it(
        am: Alertmanager, records: list[dict[str, Any]], tmp_path: Path) -> None:
    sink = AlertmanagerSink(am.url, resend_interval=0.5, resolve_after=120,
                            spool_dir=tmp_path / "spool")
    sink.start()
    a, b = records[0], records[1]  # same identity, different flows
    assert expected_labels(a) == expected_labels(b)
    key = identity(expected_labels(a))
    sink.send(a)
    wait_for(lambda: key in am.by_identity(), what="alert in Alertmanager")
    first = am.by_identity()[key]
    # No new alerts: only re-sending can move updatedAt.
    wait_for(lambda: parse_time(am.by_identity()[key]["updatedAt"])
             > parse_time(first["updatedAt"]) + 0.3, timeout=5, what="a re-send")
    assert am.by_identity()[key]["endsAt"] == first["endsAt"]
    assert parse_time(first["endsAt"]) > time.time() + 100

    time.sleep(0.05)
    sink.send(b)
    wait_for(lambda: am.by_identity()[key]["annotations"]["community_id"]
             == b["community_id"], what="recurrence delivered")
    now = am.by_identity()[key]
    assert parse_time(now["endsAt"]) > parse_time(first["endsAt"])
    assert now["startsAt"] == first["startsAt"]
    assert sink.stats.sent == 2
    sink.close()


def test_alert_resolves_after_violations_stop(am: Alertmanager,
                                              records: list[dict[str, Any]]) -> None:
    sink = AlertmanagerSink(am.url, resend_interval=0.3, resolve_after=1.0)
    sink.start()
    sink.send(records[-2])
    key = identity(expected_labels(records[-2]))
    wait_for(lambda: key in am.by_identity(), what="alert in Alertmanager")
    wait_for(lambda: key not in am.by_identity(), timeout=5, what="resolution")
    wait_for(lambda: not sink._active, timeout=2, what="sink forgets the resolved alert")
    sink.close()
    assert sink.stats.sent == 1 and sink.stats.errors == 0


def test_endsat_follows_last_raise_with_injected_clock(am: Alertmanager,
                                                       records: list[dict[str, Any]]) -> None:
    now = [time.time()]
    sink = AlertmanagerSink(am.url, resolve_after=600, clock=lambda: now[0])
    sink.start()
    key = identity(expected_labels(records[0]))
    start = now[0]
    sink.send(records[0])
    wait_for(lambda: sink.stats.sent == 1, what="delivery")
    now[0] += 30
    sink.send(records[1])
    wait_for(lambda: sink.stats.sent == 2, what="delivery")
    sink.close()
    got = am.by_identity()[key]
    assert abs(parse_time(got["startsAt"]) - start) < 0.001
    assert abs(parse_time(got["endsAt"]) - (start + 30 + 600)) < 0.001


# -- the spool -----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", [0o777, 0o770, 0o722])
def test_unsafe_spool_dir_is_refused(tmp_path: Path, mode: int, records: list[dict[str, Any]],
                                     caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "spool"
    d.mkdir()
    d.chmod(mode)
    with caplog.at_level(logging.ERROR, logger="avmon.sinks"):
        sink = AlertmanagerSink("http://127.0.0.1:9", spool_dir=d)
    assert sink.error is not None and "writable by group or others" in sink.error
    assert str(d) in sink.error and "\n" not in sink.error
    assert [r.getMessage() for r in caplog.records] == [f"alertmanager: disabled: {sink.error}"]
    assert sink.stats.errors == 1
    sink.start()
    sink.send(records[0])
    sink.close(timeout=0.1)
    assert sink.stats.errors == 2 and sink.stats.sent == 0
    assert list(d.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the directory to nobody")
def test_spool_dir_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "spool"
    d.mkdir(mode=0o700)
    os.chown(d, 65534, 65534)
    sink = AlertmanagerSink("http://127.0.0.1:9", spool_dir=d)
    assert sink.error is not None and "owned by uid 65534" in sink.error


def test_spool_bound_drops_oldest_and_counts(records: list[dict[str, Any]],
                                             tmp_path: Path) -> None:
    d = tmp_path / "spool"
    batch = variants(records, 30, "bound")
    sink = AlertmanagerSink(f"http://{LOOPBACK}:{free_port()}", spool_dir=d,
                            spool_max_bytes=16384, **FAST)
    sink.start()
    for r in batch:
        sink.send(r)
    spool = sink.spool
    assert spool is not None
    wait_for(lambda: len(spool_lines(d)) + spool.dropped == 30, what="all spooled or dropped")
    kept = [e["record"]["community_id"] for e in spool_lines(d)]
    assert spool.dropped > 0 and len(kept) > 0
    assert sum(f.stat().st_size for f in d.glob("*.jsonl")) <= 16384
    assert kept == [r["community_id"] for r in batch[-len(kept):]]  # the newest survive
    assert sink.stats.errors >= spool.dropped
    sink.close(timeout=0.5)


def test_spool_skips_torn_lines_and_acks_only_what_was_read(tmp_path: Path) -> None:
    d = tmp_path / "spool"
    s = Spool(d, 1 << 20)
    s.append([{"n": 1}, {"n": 2}])
    s.close()
    seg = next(d.glob("*.jsonl"))
    with open(seg, "ab") as f:
        f.write(b'{"n": 3, "torn')  # a crash in the middle of a write
    again = Spool(d, 1 << 20)
    assert again.has_unread
    again.append([{"n": 4}], unread=True)
    assert [e["n"] for e in again.read_unread()] == [1, 2, 4]
    assert again.dropped == 1
    again.append([{"n": 5}], unread=True)
    mark = again.seal()
    again.ack(mark)
    assert [e["n"] for e in again.read_unread()] == [5]  # unread at ack time: kept
    again.ack(again.seal())
    assert list(d.glob("*.jsonl")) == [] and again.bytes == 0


# -- rejection and retry, against a scripted HTTP server ------------------------------------

class Scripted(http.server.BaseHTTPRequestHandler):
    statuses: list[int] = []
    bodies: list[list[dict[str, Any]]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        n = int(self.headers["Content-Length"])
        type(self).bodies.append(json.loads(self.rfile.read(n)))
        status = type(self).statuses.pop(0) if type(self).statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"no")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[tuple[str, type[Scripted]]]:
    handler = type("Handler", (Scripted,), {"statuses": [], "bodies": []})
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://{LOOPBACK}:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_bad_payload_dropped_but_wrong_url_and_5xx_retried(
        scripted: tuple[str, type[Scripted]], records: list[dict[str, Any]],
        tmp_path: Path) -> None:
    url, handler = scripted
    d = tmp_path / "spool"
    # 503 and 404 are retried; then the batch of two gets 400, and alone one is refused
    # (422) and the other accepted.
    handler.statuses = [503, 404, 400, 422, 200]
    sink = AlertmanagerSink(url, spool_dir=d, **FAST)
    sink.start()
    sink.send(records[0])
    sink.send(records[-2])
    wait_for(lambda: not handler.statuses and sink.stats.sent == 1, what="the script")
    wait_for(lambda: not list(d.glob("*.jsonl")), what="spool acked")
    sink.close()
    assert [len(b) for b in handler.bodies] == [2, 2, 2, 1, 1]
    # Four failed POSTs (503, 404, 400, 422) and the one alert lost to the 422.
    assert sink.stats.errors == 5
    assert len(sink._active) == 1


# -- syslog --------------------------------------------------------------------------------

HEADER = re.compile(
    rb"^<(?P<pri>\d{1,3})>(?P<version>1) (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) "
    rb"(?P<procid>\S+) (?P<msgid>\S+) (?P<rest>.*)$", re.S)
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def parse_sd(data: bytes) -> tuple[str, dict[str, str], bytes]:
    """One SD-ELEMENT (RFC 5424 §6.3), unescaping values; returns (id, params, MSG)."""
    text = data.decode()
    assert text[0] == "["
    i = text.index(" ")
    sd_id, params, i = text[1:i], {}, i
    while text[i] == " ":
        eq = text.index("=", i)
        name = text[i + 1:eq]
        assert text[eq + 1] == '"'
        j, value = eq + 2, []
        while text[j] != '"':
            if text[j] == "\\" and text[j + 1] in '"\\]':
                j += 1
            else:
                assert text[j] not in '"]'
            value.append(text[j])
            j += 1
        params[name] = "".join(value)
        i = j + 1
    assert text[i] == "]" and text[i + 1] == " "
    return sd_id, params, text[i + 2:].encode()


def check_message(msg: bytes, record: dict[str, Any], *, host: str = "sensor-1",
                  facility: int = 16) -> dict[str, str]:
    m = HEADER.match(msg)
    assert m is not None, msg[:200]
    sev = {"critical": 2, "high": 3, "medium": 4, "low": 5}[record["avmon"]["severity"]]
    assert int(m["pri"]) == facility * 8 + sev
    assert m["version"] == b"1"
    assert TIMESTAMP.match(m["ts"].decode())
    assert abs(parse_time(m["ts"].decode()) - time.time()) < 60
    assert (m["host"], m["app"], m["msgid"]) == (host.encode(), b"avmon", b"alert")
    assert m["procid"] == str(os.getpid()).encode()
    sd_id, params, body = parse_sd(m["rest"])
    assert sd_id == "avmon@32473"
    av = record["avmon"]
    assert params["rule"] == av["rule"] and params["severity"] == av["severity"]
    assert params["segment"] == av["segment"]
    assert params["community_id"] == record["community_id"]
    assert not body.startswith(b"\xef\xbb\xbf")
    assert json.loads(body) == record
    return params


def odd_record(records: list[dict[str, Any]]) -> dict[str, Any]:
    r = copy.deepcopy(records[-2])
    r["avmon"]["rule"] = 'odd"rule]with\\escapes'
    r["avmon"]["segment"] = "Zürich ]lab["
    return r


def test_syslog_udp_rfc5424(records: list[dict[str, Any]]) -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind((LOOPBACK, 0))
    rx.settimeout(5)
    sink = SyslogSink(f"udp://{LOOPBACK}:{rx.getsockname()[1]}", hostname="sensor-1")
    sink.start()
    sent = [*records, odd_record(records)]
    for r in sent:
        sink.send(r)
    got = [rx.recv(65535) for _ in sent]
    rx.close()
    sink.close()
    for msg, r in zip(got, sent, strict=True):
        check_message(msg, r)
    params = check_message(got[-1], sent[-1])
    assert params["rule"] == 'odd"rule]with\\escapes' and params["segment"] == "Zürich ]lab["
    assert b'rule="odd\\"rule\\]with\\\\escapes"' in got[-1]
    assert sink.stats.sent == len(sent) and sink.stats.errors == 0
    print(got[0].decode())  # the example in docs/alert-sinks.md


def test_syslog_unix_datagram(records: list[dict[str, Any]], tmp_path: Path) -> None:
    path = tmp_path / "log.sock"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(path))
    rx.settimeout(5)
    sink = SyslogSink(f"unix://{path}", hostname="sensor-1", facility="auth")
    sink.start()
    for r in records:
        sink.send(r)
    got = [rx.recv(65535) for _ in records]
    rx.close()
    sink.close()
    for msg, r in zip(got, records, strict=True):
        check_message(msg, r, facility=4)


def test_syslog_udp_truncates_to_max_message(records: list[dict[str, Any]]) -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind((LOOPBACK, 0))
    rx.settimeout(5)
    sink = SyslogSink(f"udp://{LOOPBACK}:{rx.getsockname()[1]}", max_message=1024)
    sink.start()
    sink.send(records[0])
    msg = rx.recv(65535)
    rx.close()
    sink.close()
    assert len(msg) == 1024
    assert b' truncated="true"] {"timestamp":' in msg


class TcpReceiver:
    """Accepts connections on a loopback port and collects the bytes of each."""

    def __init__(self, port: int = 0, *, read: bool = True) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((LOOPBACK, port))
        self.sock.listen()
        self.port = int(self.sock.getsockname()[1])
        self.read = read
        self.streams: list[bytearray] = []
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            buf = bytearray()
            self.streams.append(buf)
            if self.read:
                threading.Thread(target=self._read, args=(conn, buf), daemon=True).start()

    @staticmethod
    def _read(conn: socket.socket, buf: bytearray) -> None:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data

    def messages(self) -> list[bytes]:
        """Every complete octet-counted frame (RFC 6587 §3.4.1) received."""
        out = []
        for stream in self.streams:
            data = bytes(stream)
            while data:
                m = re.match(rb"^([1-9]\d*) ", data)
                assert m is not None, data[:40]
                n, start = int(m.group(1)), m.end()
                if len(data) < start + n:
                    break
                out.append(data[start:start + n])
                data = data[start + n:]
        return out

    def close(self) -> None:
        for s in (self.sock, *self.conns):
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes the accept()/recv() blocked on it
            except OSError:
                pass
            s.close()
        self.thread.join(5)


def test_syslog_tcp_octet_counting_and_reconnect(records: list[dict[str, Any]]) -> None:
    rx = TcpReceiver()
    sink = SyslogSink(f"tcp://{LOOPBACK}:{rx.port}", hostname="sensor-1", **FAST)
    sink.start()
    for r in records:
        sink.send(r)
    wait_for(lambda: len(rx.messages()) == len(records), what="frames")
    for msg, r in zip(rx.messages(), records, strict=True):
        check_message(msg, r)

    port = rx.port
    rx.close()  # the receiver restarts: the sink notices the closed connection
    time.sleep(0.1)
    rx2 = TcpReceiver(port)
    later = variants(records, 3, "after-restart")
    for r in later:
        sink.send(r)
    wait_for(lambda: len(rx2.messages()) == 3, what="frames after reconnect")
    for msg, r in zip(rx2.messages(), later, strict=True):
        check_message(msg, r)
    sink.close()
    rx2.close()
    assert sink.stats.sent == len(records) + 3


def test_syslog_dead_tcp_receiver_never_blocks(records: list[dict[str, Any]]) -> None:
    sink = SyslogSink(f"tcp://{LOOPBACK}:{free_port()}")
    sink.start()
    t0 = time.perf_counter()
    for i in range(1000):
        sink.send(records[i % len(records)])
    assert time.perf_counter() - t0 < 0.5
    wait_for(lambda: sink.stats.errors >= 1, what="a counted connection failure")
    t0 = time.perf_counter()
    sink.close(timeout=0.5)
    assert time.perf_counter() - t0 < 1.0
    assert sink.stats.sent == 0 and sink.stats.errors >= 1000
    assert sink.stats.queue_length == 0


def test_syslog_stalled_tcp_receiver_never_blocks(records: list[dict[str, Any]]) -> None:
    rx = TcpReceiver(read=False)  # accepts, never reads: the socket buffers fill up
    sink = SyslogSink(f"tcp://{LOOPBACK}:{rx.port}", timeout=0.3, **FAST)
    sink.start()
    big = copy.deepcopy(records[0])
    big["avmon"]["padding"] = "x" * 6000
    t0 = time.perf_counter()
    for _ in range(1000):
        sink.send(big)
    assert time.perf_counter() - t0 < 0.5
    wait_for(lambda: sink.stats.errors >= 1, what="a send timeout")
    t0 = time.perf_counter()
    sink.close(timeout=0.5)
    assert time.perf_counter() - t0 < 1.0
    rx.close()
    assert sink.stats.sent < 1000


def test_format_rfc5424_escapes_and_pri(records: list[dict[str, Any]]) -> None:
    r = odd_record(records)
    msg = format_rfc5424(r, timestamp=0.0, hostname="h o\nst", facility=23)
    assert msg.startswith(b"<188>1 1970-01-01T00:00:00.000000Z h_o_st avmon - alert ")
    assert b'segment="Z\xc3\xbcrich \\]lab["' in msg


# -- configuration -------------------------------------------------------------------------

def test_build_sinks_from_option_tables(tmp_path: Path) -> None:
    assert build_sinks(None, None) == []
    am_sink, sys_sink = build_sinks(
        {"url": "http://127.0.0.1:9093/", "resend_seconds": 30, "resolve_after_seconds": 600,
         "timeout_seconds": 2, "spool_dir": str(tmp_path / "spool"),
         "spool_max_bytes": 1 << 20},
        {"address": "udp://127.0.0.1:514", "app_name": "avmon-s1", "facility": "local3"})
    assert isinstance(am_sink, AlertmanagerSink) and isinstance(sys_sink, SyslogSink)
    assert am_sink.endpoint == "http://127.0.0.1:9093/api/v2/alerts"
    assert (am_sink.resend_interval, am_sink.resolve_after, am_sink.timeout) == (30, 600, 2)
    assert am_sink.spool is not None and am_sink.spool.max_bytes == 1 << 20
    assert (sys_sink.app_name, sys_sink.facility) == ("avmon-s1", "local3")
    with pytest.raises(ConfigError, match=r"key 'alertmanager.resend': unknown option"):
        build_sinks({"url": "http://x:1", "resend": 3}, None)
    with pytest.raises(ConfigError, match=r"key 'alertmanager.url': required"):
        build_sinks({}, None)
    with pytest.raises(ConfigError, match=r"key 'alertmanager.timeout_seconds': must be a "):
        build_sinks({"url": "http://x:1", "timeout_seconds": -1}, None)
    with pytest.raises(ConfigError, match=r"key 'alertmanager': alertmanager url must be"):
        build_sinks({"url": "x:1"}, None)
    with pytest.raises(ConfigError, match=r"spool_max_bytes must be at least 4096"):
        build_sinks({"url": "http://x:1", "spool_max_bytes": 100}, None)
    with pytest.raises(ConfigError, match=r"key 'syslog': syslog facility 'local9'"):
        build_sinks(None, {"address": "udp://h:514", "facility": "local9"})
    with pytest.raises(ConfigError, match=r"key 'syslog': syslog address 'http://h'"):
        build_sinks(None, {"address": "http://h"})


# -- the CLI wires the sinks from the configuration --------------------------------------

def test_replay_routes_alerts_to_alertmanager_and_syslog(am: Alertmanager,
                                                         tmp_path: Path) -> None:
    """`avmon replay -c CONFIG` with [alertmanager] and [syslog]: both receive the demo's
    alerts, and the sink counters appear in the metrics textfile."""
    demo = Path(__file__).resolve().parent.parent / "monitor" / "data"
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((LOOPBACK, 0))
    udp.settimeout(5)
    config = tmp_path / "avmon.toml"
    config.write_text((demo / "demo.toml").read_text()
                      + f'\n[alertmanager]\nurl = "{am.url}"\nspool_dir = "spool"\n'
                      + f'\n[syslog]\naddress = "udp://{LOOPBACK}:{udp.getsockname()[1]}"\n')
    textfile = tmp_path / "avmon.prom"
    proc = subprocess.run([sys.executable, "-m", "monitor.cli", "replay",
                           str(demo / "demo.pcap"), "-c", str(config), "-q",
                           "--metrics-textfile", str(textfile)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    messages = []
    while len(messages) < 7:
        messages.append(udp.recv(65536))
    udp.close()
    assert all(b" alert [avmon@32473 " in m for m in messages)
    wait_for(lambda: len(am.alerts()) == 2, what="both alert identities in Alertmanager")
    labels = {a["labels"]["segment"]: a["labels"] for a in am.alerts()}
    assert labels["secret-enclave"]["severity"] == "critical"
    assert labels["official"]["severity"] == "medium"
    metrics = textfile.read_text()
    assert 'avmon_alert_sink_sent_total{sink="syslog"} 7.0' in metrics
    assert 'avmon_alert_sink_errors_total{sink="alertmanager"} 0.0' in metrics
