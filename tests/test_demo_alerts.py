"""The bundled demo: its capture, config and geo data give exactly the alerts its network
plan (monitor/data/demo.json) says, with the evidence a responder needs."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from geo import GeoDatabases
from monitor.config import load_config
from tests.helpers import replay

DATA = Path(__file__).resolve().parent.parent / "monitor" / "data"
PLAN = json.loads((DATA / "demo.json").read_text())


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path]:
    out = tmp_path_factory.mktemp("demo")
    evidence = out / "evidence"
    records, _ = replay([DATA / "demo.pcap"], out, config=load_config(DATA / "demo.toml"),
                        geo=GeoDatabases(), evidence_dir=evidence)
    return records, evidence


def _key(r: dict) -> tuple:
    return (r["src_ip"], r.get("src_port"), r["dest_ip"], r.get("dest_port"))


@pytest.mark.parametrize("flow", PLAN["flows"], ids=[f["id"] for f in PLAN["flows"]])
def test_demo_flow_alerts_as_planned(demo, flow: dict) -> None:
    records, _ = demo
    key = (flow["client"], flow["client_port"], flow["server"], flow["server_port"])
    alerts = [r for r in records if r["event_type"] == "alert" and _key(r) == key]
    (flow_rec,) = [r for r in records if r["event_type"] == "flow" and _key(r) == key]
    if not flow["expected_alert"]:
        assert alerts == []
        assert flow_rec["flow"]["alerted"] is False
        return
    assert alerts, f"no alert for {flow['id']}"
    first = alerts[0]
    av = first["avmon"]
    assert av["segment"] == flow["segment"]
    assert av["classification"] == flow["classification"]
    assert av["vendor"] == "kaspersky" and av["vendor_name"] == flow["vendor"]
    assert av["purpose"] == flow["purpose"]
    assert av["server_name"] == flow["name"]
    assert av["indicator"]["type"] == flow["indicator"]
    assert first["community_id"] == flow_rec["community_id"]
    assert first["flow_id"] == flow_rec["flow_id"]
    assert flow_rec["flow"]["alerted"] is True
    assert first["alert"]["severity"] == (1 if flow["classification"] == "SECRET" else 3)
    bases = {(j["code"], j["basis"]) for j in av["jurisdictions"]}
    assert ("RU", "vendor") in bases
    if flow["server_country"] == "RU":
        assert ("RU", "geolocation") in bases and ("RU", "registration") in bases
        assert av["geo"]["country"] == "RU"
    assert {f["basis"] for f in av["flagged"]} <= {b for _, b in bases}
    # the frame number points at the packet that identified the flow
    assert first["pcap_cnt"] >= 1
    escalated = [a for a in alerts if "escalation" in a["avmon"]]
    if flow["bytes_toserver_min"] > 131072:
        (esc,) = escalated
        assert esc["avmon"]["escalation"]["bytes_toserver"] >= 131072
        assert esc["avmon"]["severity"] == "critical"
    else:
        assert not escalated


def test_unclassified_and_non_flagged_raise_nothing(demo) -> None:
    records, _ = demo
    alerted = {_key(r) for r in records if r["event_type"] == "alert"}
    for flow in PLAN["flows"]:
        key = (flow["client"], flow["client_port"], flow["server"], flow["server_port"])
        assert (key in alerted) == flow["expected_alert"], flow["id"]


def test_evidence_files(demo) -> None:
    records, evidence = demo
    alerts = [r for r in records if r["event_type"] == "alert"]
    by_cid = {a["community_id"] for a in alerts}
    pcaps = sorted(evidence.glob("*.pcap"))
    assert len(pcaps) == len(by_cid)
    flows = {r["community_id"]: r for r in records if r["event_type"] == "flow"}
    for pcap in pcaps:
        alert_lines = pcap.with_suffix(".json").read_text().splitlines()
        cid = json.loads(alert_lines[0])["community_id"]
        assert pcap.name.startswith(cid.replace("/", "_").replace("+", "-").replace(":", "_"))
        data = pcap.read_bytes()
        count, pos = 0, 24
        while pos < len(data):
            _, _, incl, _ = struct.unpack_from("<IIII", data, pos)
            pos += 16 + incl
            count += 1
        f = flows[cid]["flow"]
        assert count == f["pkts_toserver"] + f["pkts_toclient"], pcap.name


def test_avmon_demo_command_prints_alerts() -> None:
    proc = subprocess.run([sys.executable, "-m", "monitor.cli", "demo"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "CRITICAL" in proc.stdout and "secret-enclave [SECRET]" in proc.stdout
    assert "ksn-file-geo.kaspersky-labs.com" in proc.stdout


def test_output_does_not_depend_on_batch_boundaries(tmp_path: Path) -> None:
    """Alerts (their frame, indicator and counters) and every other record are the same
    whether the capture is read in one batch or a few packets at a time."""
    from monitor.capture.files import CaptureReader
    from monitor.pipeline import Pipeline

    outs = []
    for size in (65536, 7, 1):
        records: list[dict] = []
        pipe = Pipeline(load_config(DATA / "demo.toml"), geo=GeoDatabases(),
                        listeners=[records.append])
        for batch in CaptureReader([DATA / "demo.pcap"], batch_packets=size):
            pipe.process(batch)
        pipe.finish()
        outs.append(sorted(json.dumps(r, sort_keys=True) for r in records))
    assert outs[0] == outs[1] == outs[2]
    assert any('"event_type": "alert"' in line for line in outs[0])
