"""avmon's metrics against a real Prometheus: scraped from a replay serving /metrics, every
dashboard and alerting-rule expression evaluated through Prometheus's HTTP API, and the
exposition and textfile checked with promtool. Plus the cardinality bound: 10,000 distinct
destination names and addresses must not add series."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from monitor.metrics import METRIC_NAMES
from tests.recorder import free_port
from tests.tshark_oracle import require_tool

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "monitor" / "data"
pytestmark = pytest.mark.slow


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return bytes(resp.read())


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A replay of the demo serving /metrics, and a Prometheus that has scraped it."""
    prometheus = require_tool("prometheus")
    d = tmp_path_factory.mktemp("prom")
    mport, pport = free_port(), free_port()
    # The demo, paced at 10x, after 3 s (paced) of nothing: Prometheus scrapes the
    # counters at zero first, then sees them grow, as it would on a sensor.
    capture = d / "paced.pcap"
    _prepend_quiet_packet(DEMO / "demo.pcap", capture, seconds=30)
    (d / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 500ms\n  evaluation_interval: 500ms\n"
        "scrape_configs:\n  - job_name: avmon\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{mport}']\n")
    prom = subprocess.Popen(
        [prometheus, f"--config.file={d / 'prometheus.yml'}",
         f"--storage.tsdb.path={d / 'data'}", f"--web.listen-address=127.0.0.1:{pport}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{pport}"
    replay = None
    try:
        _wait(lambda: _get(f"{base}/-/ready"), 60, "prometheus ready")
        replay = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "replay", str(capture), "-c",
             str(DEMO / "demo.toml"), "-q", "--speed", "10", "--metrics-listen",
             f"127.0.0.1:{mport}", "--metrics-linger", "120"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait(lambda: b"avmon_alerts_total" in _get(f"http://127.0.0.1:{mport}/metrics"), 60,
              "avmon /metrics")
        exposition = _get(f"http://127.0.0.1:{mport}/metrics")

        def replayed() -> bool:
            r = query(base, "avmon_packets_total")
            return bool(r) and float(r[0]["value"][1]) == 701

        _wait(replayed, 90, "the paced replay to finish")
        time.sleep(3)  # a few scrapes of the final values
        yield {"base": base, "exposition": exposition, "dir": d}
    finally:
        prom.terminate()
        prom.wait(timeout=20)
        if replay is not None:
            replay.terminate()
            replay.wait(timeout=20)


def _prepend_quiet_packet(src: Path, dst: Path, seconds: float) -> None:
    """``src`` with one ARP frame ``seconds`` before its first packet."""
    import struct

    data = src.read_bytes()
    magic = struct.unpack_from("<I", data)[0]
    scale = 1 if magic == 0xA1B23C4D else 1000  # ns or us resolution
    sec, frac = struct.unpack_from("<II", data, 24)
    t = sec * 10**9 + frac * scale - int(seconds * 1e9)
    arp = bytes.fromhex("ffffffffffff020000000001080600010800060400010200000000010a141401"
                        "0000000000000a141402")
    rec = struct.pack("<IIII", t // 10**9, (t % 10**9) // scale, len(arp), len(arp)) + arp
    dst.write_bytes(data[:24] + rec + data[24:])


def query(base: str, expr: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        body = json.loads(_get(url))
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{expr!r}: {exc.read().decode()}") from None
    assert body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


def test_scrape_target_up(scraped: dict[str, Any]) -> None:
    (up,) = query(scraped["base"], 'up{job="avmon"}')
    assert up["value"][1] == "1"


def test_key_metrics_have_data(scraped: dict[str, Any]) -> None:
    base = scraped["base"]
    crit = query(base, 'avmon_alerts_total{severity="critical",segment="secret-enclave"}')
    assert float(crit[0]["value"][1]) == 6
    egress = query(base, 'sum by (segment) (avmon_av_egress_bytes_total{jurisdiction="RU"})')
    assert {r["metric"]["segment"]: float(r["value"][1]) for r in egress}["secret-enclave"] \
        > 262144
    assert query(base, "avmon_geo_database_build_timestamp_seconds")
    assert float(query(base, "avmon_packets_total")[0]["value"][1]) == 701
    # label sets known from the configuration exist at zero
    zero = query(base, 'avmon_av_flows_total{vendor="eset",segment="official"}')
    assert zero and all(float(r["value"][1]) == 0 for r in zero)


def _dashboard_and_rule_queries() -> list[tuple[str, str]]:
    from tests.test_dashboards import dashboard_queries, rule_queries

    out = [(f"{dash}: {title}", expr) for dash, title, expr in dashboard_queries()]
    out += [(f"rule {name}", expr) for name, expr in rule_queries()]
    return out


def test_every_dashboard_and_rule_expression_runs(scraped: dict[str, Any]) -> None:
    queries = _dashboard_and_rule_queries()
    assert len(queries) >= 20
    empty = []
    for where, expr in queries:
        if not query(scraped["base"], expr):
            empty.append(where)
    # Alerting rules are meant to be empty on a healthy run except the critical-alert one;
    # every panel of the overview must show data.
    panels_empty = [w for w in empty if w.startswith("avmon-overview")]
    assert not panels_empty, panels_empty
    assert "rule AvmonCriticalAlert" not in empty
    assert "rule AvmonSecretEgressToFlaggedJurisdiction" not in empty


def test_promtool_checks_exposition_and_textfile(scraped: dict[str, Any], tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    proc = subprocess.run([promtool, "check", "metrics"], input=scraped["exposition"],
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    textfile = tmp_path / "avmon.prom"
    subprocess.run([sys.executable, "-m", "monitor.cli", "replay", str(DEMO / "demo.pcap"),
                    "-c", str(DEMO / "demo.toml"), "-q", "--metrics-textfile", str(textfile)],
                   check=True, timeout=120)
    proc = subprocess.run([promtool, "check", "metrics"], input=textfile.read_bytes(),
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = {line.split("{")[0].split(" ")[0] for line in textfile.read_text().splitlines()
             if line and not line.startswith("#")}
    assert names <= {n for n in METRIC_NAMES} | {n + "_created" for n in METRIC_NAMES}


def test_metrics_listen_refuses_public_address() -> None:
    proc = subprocess.run([sys.executable, "-m", "monitor.cli", "replay", "-q",
                           "--metrics-listen", "0.0.0.0:9477"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "not a loopback address" in proc.stderr and "Traceback" not in proc.stderr


def _series(exposition: str) -> set[str]:
    return {line.split(" ")[0] for line in exposition.splitlines()
            if line and not line.startswith("#")}


def _names_capture(path: Path, n: int) -> None:
    """n flows, each to its own address and name: DNS answer, then TLS with SNI; every
    tenth name is an AV vendor's."""
    from monitor import synth

    w = synth.PcapWriter(path)
    client = "10.20.1.10"
    t = 1_700_000_000 * 10**9
    for i in range(n):
        av = i % 10 == 0
        name = f"h{i}.ksn.kaspersky-labs.com" if av else f"site{i}.example{i % 97}.org"
        addr = f"198.18.{i // 250}.{i % 250 + 1}"
        query = synth.dns_query(name, qid=i & 0xFFFF)
        answer = synth.dns_response(name, qid=i & 0xFFFF, addresses=[addr])
        frames = synth.udp_exchange(synth.NetPath(client, "10.0.0.53"), 30000 + i % 30000, 53,
                                    [(True, query), (False, answer)], start_ns=t)
        hello = synth.client_hello(name, seed=1)
        tcp = synth.TcpSession(synth.NetPath(client, addr), 40000 + i % 20000, 443,
                               start_ns=t + 1_000_000)
        frames += tcp.handshake() + tcp.client_send(hello) + tcp.close()
        for ts, data in frames:
            w.write(ts, data)
        t += 2_000_000
    w.close()


def _exposition_for(capture: Path, tmp_path: Path) -> str:
    from prometheus_client import generate_latest

    from geo import GeoDatabases
    from monitor.capture.files import CaptureReader
    from monitor.config import load_config
    from monitor.metrics import PipelineCollector, build_registry
    from monitor.pipeline import Pipeline

    pipe = Pipeline(load_config(DEMO / "demo.toml"), geo=GeoDatabases())
    for batch in CaptureReader([capture]):
        pipe.process(batch)
    pipe.finish()
    return generate_latest(build_registry(PipelineCollector(pipe))).decode()


def test_cardinality_is_bounded(tmp_path: Path) -> None:
    """10,000 distinct names and addresses add no series beyond a 100-name capture's:
    labels come only from configuration, signatures and fixed enumerations."""
    small, large = tmp_path / "small.pcap", tmp_path / "large.pcap"
    _names_capture(small, 100)
    _names_capture(large, 10_000)
    s_small = _series(_exposition_for(small, tmp_path))
    s_large = _series(_exposition_for(large, tmp_path))
    assert s_large == s_small
    assert len(s_large) < 2000
    text = "\n".join(s_large)
    assert "198.18." not in text and "example" not in text and "ksn" not in text


def test_a_replay_without_metrics_does_not_load_the_client(tmp_path: Path) -> None:
    """The Prometheus client (with http.server) is a tenth of a second of start-up: a
    replay that neither serves nor writes metrics does not import it; one that writes a
    textfile does, and the file has the metrics."""
    capture = Path(__file__).parent / "data" / "corpus" / "zeek_quic_quicdoq.pcap"
    prom = tmp_path / "replay.prom"
    code = (
        "import sys\n"
        "from monitor.cli import main\n"
        "args = ['replay', sys.argv[1], '--eve', sys.argv[2], '--quiet', '--workers', '1']\n"
        "extra = sys.argv[3:] and ['--metrics-textfile', sys.argv[3]]\n"
        "assert main(args + extra) == 0\n"
        "print('prometheus_client' in sys.modules, 'http.server' in sys.modules)\n")
    plain = subprocess.run([sys.executable, "-c", code, str(capture), str(tmp_path / "a.json")],
                           capture_output=True, text=True, check=True).stdout
    assert plain.split() == ["False", "False"]
    written = subprocess.run([sys.executable, "-c", code, str(capture),
                              str(tmp_path / "b.json"), str(prom)],
                             capture_output=True, text=True, check=True).stdout
    assert written.split()[0] == "True"
    assert "avmon_packets_total" in prom.read_text()
