"""Reloading a running pipeline (SIGHUP): all or nothing, and the new set is really used.

The demo capture is replayed in two parts with a reload in between (at 09:00:40, after
the SECRET enclave's Kaspersky flows and before the OFFICIAL workstation's and the guest
network's); the alerts of the second part show which configuration was in force.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from geo import BUNDLED_COUNTRY_DB, GeoDatabases
from monitor.capture.batch import Batch
from monitor.capture.files import CaptureReader
from monitor.config import load_config
from monitor.errors import CaptureError, ConfigError
from monitor.metrics import PipelineCollector, build_registry
from monitor.pipeline import Pipeline
from monitor.privileges import PrivilegeError, capabilities_note, drop_privileges
from monitor.reload import ReloadRequest, ReloadResult, reload_pipeline
from signatures import bundled_directory

ROOT = Path(__file__).resolve().parent.parent
DEMO_PCAP = ROOT / "monitor" / "data" / "demo.pcap"
#: The reload happens before the first packet at or after this capture time.
SPLIT_NS = int(dt.datetime(2026, 3, 2, 9, 0, 40, tzinfo=dt.UTC).timestamp() * 1e9)

DEMO_SEGMENTS = """
[[segments]]
name = "secret-enclave"
cidrs = ["10.20.0.0/16", "fd00:20::/48"]
classification = "SECRET"

[[segments]]
name = "official"
cidrs = ["10.30.0.0/16"]
classification = "OFFICIAL"
"""
GUEST_SEGMENT = """
[[segments]]
name = "guest"
cidrs = ["192.168.100.0/24"]
classification = "OFFICIAL-SENSITIVE"
"""


class Sensor:
    """A pipeline on a config file and signature directory of its own, fed the demo."""

    def __init__(self, tmp: Path) -> None:
        self.sigdir = tmp / "signatures"
        self.sigdir.mkdir()
        for f in bundled_directory().glob("*.toml"):
            shutil.copy(f, self.sigdir / f.name)
        self.config_path = tmp / "avmon.toml"
        self.write_config()
        self.records: list[dict[str, Any]] = []
        self.pipe = Pipeline(load_config(self.config_path), listeners=[self.records.append],
                             geo=GeoDatabases())
        self.collector = PipelineCollector(self.pipe)
        self._batches: Iterator[Batch] = iter(CaptureReader([DEMO_PCAP], batch_packets=1))
        self._held: Batch | None = None

    def write_config(self, extra: str = "", segments: str = DEMO_SEGMENTS) -> None:
        self.config_path.write_text(
            f'[signatures]\ndirectory = "{self.sigdir}"\n{extra}\n{segments}', encoding="utf-8")

    def replay_until_split(self) -> None:
        for batch in self._batches:
            if int(batch.ts_ns[0]) >= SPLIT_NS:
                self._held = batch
                return
            self.pipe.process(batch)
        raise AssertionError("the demo ended before the split")

    def replay_rest(self) -> None:
        if self._held is not None:
            self.pipe.process(self._held)
            self._held = None
        for batch in self._batches:
            self.pipe.process(batch)
        self.pipe.finish()

    def reload(self) -> ReloadResult:
        """As the live command does: reload, and count a rejected one."""
        result = reload_pipeline(self.pipe, self.config_path)
        if not result.ok:
            self.collector.config_reload_errors += 1
        return result

    def alerts(self, after_split: bool = True) -> list[dict[str, Any]]:
        return [r for r in self.records if r["event_type"] == "alert"
                and (dt.datetime.fromisoformat(r["timestamp"]).timestamp() * 1e9 >= SPLIT_NS)
                == after_split]

    def alerted(self, after_split: bool = True) -> set[tuple[str, str, str]]:
        return {(a["src_ip"], a["avmon"]["segment"], a["avmon"]["server_name"])
                for a in self.alerts(after_split)}

    def reload_errors_metric(self) -> float:
        text = generate_latest(build_registry(self.collector)).decode()
        (line,) = [ln for ln in text.splitlines()
                   if ln.startswith("avmon_config_reload_errors_total ")]
        return float(line.split()[1])


OFFICIAL_KASPERSKY = ("10.30.5.20", "official", "ksn-verdict-geo.kaspersky-labs.com")
GUEST_KASPERSKY = ("192.168.100.50", "guest", "ksn-url-geo.kaspersky-labs.com")


@pytest.fixture
def sensor(tmp_path: Path) -> Sensor:
    s = Sensor(tmp_path)
    s.replay_until_split()
    assert s.alerted(after_split=False), "the first part of the demo raises alerts"
    return s


def test_without_reload_the_second_part_alerts_as_configured(sensor: Sensor) -> None:
    sensor.replay_rest()
    assert sensor.alerted() == {OFFICIAL_KASPERSKY}


def test_unchanged_reload_changes_nothing(sensor: Sensor) -> None:
    sigs, geo = sensor.pipe.signatures, sensor.pipe.alerts.geo
    result = sensor.reload()
    assert result.ok and result.changed == ()
    assert "changed: nothing" in result.message
    assert sensor.pipe.signatures.version == sigs.version
    assert sensor.pipe.alerts.geo is geo  # same geo paths: the databases are kept
    sensor.replay_rest()
    assert sensor.alerted() == {OFFICIAL_KASPERSKY}


def test_broken_signature_file_keeps_the_running_set(sensor: Sensor) -> None:
    pipe = sensor.pipe
    old_sigs, old_config, old_segments = pipe.signatures, pipe.config, pipe.alerts.segments
    bad = sensor.sigdir / "kaspersky.toml"
    bad.write_text(bad.read_text(encoding="utf-8") + "\nthis is = = not toml\n",
                   encoding="utf-8")
    result = sensor.reload()
    assert not result.ok
    assert result.changed == ()
    assert "kaspersky.toml" in result.message
    assert "\n" not in result.message
    assert pipe.signatures is old_sigs and pipe.signatures.version == old_sigs.version
    assert pipe.config is old_config and pipe.alerts.config is old_config
    assert pipe.alerts.segments is old_segments
    assert sensor.reload_errors_metric() == 1.0

    # A bad key is rejected the same way (and counted again).
    bad.write_text((sensor.sigdir / "eset.toml").read_text(encoding="utf-8")
                   .replace("[vendor]", "[vendor]\nno_such_key = 1", 1), encoding="utf-8")
    result = sensor.reload()
    assert not result.ok and "kaspersky.toml" in result.message
    assert pipe.signatures is old_sigs
    assert sensor.reload_errors_metric() == 2.0

    sensor.replay_rest()
    # The old set (with Kaspersky) was used for the rest of the replay.
    assert sensor.alerted() == {OFFICIAL_KASPERSKY}


def test_fixed_and_changed_signatures_are_used_for_the_rest(sensor: Sensor) -> None:
    pipe = sensor.pipe
    old_version = pipe.signatures.version
    kaspersky = sensor.sigdir / "kaspersky.toml"
    good = kaspersky.read_text(encoding="utf-8")
    kaspersky.write_text(good + "\n[[[broken\n", encoding="utf-8")
    assert not sensor.reload().ok
    assert pipe.signatures.version == old_version

    # Fixed, and changed: Kaspersky's file removed altogether.
    kaspersky.unlink()
    result = sensor.reload()
    assert result.ok, result.message
    assert result.changed == ("signatures",)
    assert pipe.signatures.version != old_version
    assert pipe.signatures.version in result.message
    assert pipe.signatures.match_name("ksn-verdict-geo.kaspersky-labs.com") is None
    assert sensor.reload_errors_metric() == 1.0
    sensor.replay_rest()
    # The OFFICIAL workstation's Kaspersky lookup is no longer AV traffic: no alert.
    assert sensor.alerted() == set()
    flow = [r for r in sensor.records if r["event_type"] == "flow"
            and r["src_ip"] == "10.30.5.20" and r.get("dest_port") == 443
            and r["avmon"].get("server_name") == OFFICIAL_KASPERSKY[2]]
    assert flow and "vendor" not in flow[0]["avmon"]
    # The first part's alerts (old set) stand.
    assert sensor.alerted(after_split=False)


def test_added_vendor_file_matches_differently(sensor: Sensor) -> None:
    # The OFFICIAL workstation's Kaspersky lookup name, claimed instead by a vendor
    # controlled from China (and Kaspersky's pattern for it narrowed).
    kaspersky = sensor.sigdir / "kaspersky.toml"
    text = kaspersky.read_text(encoding="utf-8")
    assert '"ksn-*-geo.kaspersky-labs.com"' in text
    kaspersky.write_text(text.replace('"ksn-*-geo.kaspersky-labs.com"',
                                      '"ksn-file-geo.kaspersky-labs.com"'), encoding="utf-8")
    (sensor.sigdir / "testvendor.toml").write_text(VENDOR_FILE, encoding="utf-8")
    sensor.write_config(extra='[policy]\nflagged_jurisdictions = ["RU", "CN"]\n'
                              'bases = ["vendor"]\n')
    result = sensor.reload()
    assert result.ok, result.message
    assert set(result.changed) == {"signatures", "policy"}
    sensor.replay_rest()
    (alert,) = sensor.alerts()
    assert alert["src_ip"] == "10.30.5.20"
    assert alert["avmon"]["vendor"] == "testvendor"
    assert [(j["code"], j["basis"]) for j in alert["avmon"]["flagged"]] == [("CN", "vendor")]


VENDOR_FILE = """
id = "testvendor"
name = "Test Vendor"
product_lines = ["Test AV"]
jurisdiction = "CN"
jurisdiction_confidence = "medium"
jurisdiction_sources = ["test fixture"]
rev = 1

[[names]]
pattern = "ksn-verdict-geo.kaspersky-labs.com"
purpose = "lookup"
confidence = "high"
role = "test"
source = "test fixture"
"""


def test_new_segment_classifies_new_alerts(sensor: Sensor) -> None:
    sensor.write_config(segments=DEMO_SEGMENTS + GUEST_SEGMENT)
    result = sensor.reload()
    assert result.ok, result.message
    assert result.changed == ("segments",)
    assert [s.name for s in sensor.pipe.config.segments] == ["secret-enclave", "official",
                                                             "guest"]
    assert sensor.pipe.alerts.config is sensor.pipe.config
    sensor.replay_rest()
    assert sensor.alerted() == {OFFICIAL_KASPERSKY, GUEST_KASPERSKY}
    (guest,) = [a for a in sensor.alerts() if a["avmon"]["segment"] == "guest"]
    assert guest["avmon"]["classification"] == "OFFICIAL-SENSITIVE"
    assert guest["avmon"]["severity"] == "high"


def test_broken_config_keeps_the_running_config(sensor: Sensor) -> None:
    pipe = sensor.pipe
    old_config, old_segments = pipe.config, pipe.alerts.segments
    sensor.write_config(segments=DEMO_SEGMENTS + GUEST_SEGMENT.replace("/24", "/33"))
    result = sensor.reload()
    assert not result.ok
    assert str(sensor.config_path) in result.message
    assert "segments[2].cidrs" in result.message and "10.0.0.0" not in result.message
    assert "192.168.100.0/33" in result.message
    assert "\n" not in result.message
    assert pipe.config is old_config and pipe.alerts.config is old_config
    assert pipe.alerts.segments is old_segments
    assert sensor.reload_errors_metric() == 1.0
    sensor.replay_rest()
    assert sensor.alerted() == {OFFICIAL_KASPERSKY}  # the guest network still unclassified


def test_missing_config_file_is_rejected(sensor: Sensor) -> None:
    sensor.config_path.unlink()
    result = sensor.reload()
    assert not result.ok and str(sensor.config_path) in result.message


def test_geo_paths_changed_opens_new_databases(sensor: Sensor, tmp_path: Path) -> None:
    old_geo = sensor.pipe.alerts.geo
    country = tmp_path / "country.mmdb"
    shutil.copy(BUNDLED_COUNTRY_DB, country)
    sensor.write_config(extra=f'[geo]\ncountry_db = "{country}"\n')
    result = sensor.reload()
    assert result.ok, result.message
    assert result.changed == ("geo",)
    new_geo = sensor.pipe.alerts.geo
    assert isinstance(new_geo, GeoDatabases) and new_geo is not old_geo
    assert any(info.path == country for info in new_geo.databases())
    sensor.replay_rest()
    assert sensor.alerted() == {OFFICIAL_KASPERSKY}


def test_bad_geo_database_is_rejected_before_anything_changes(sensor: Sensor,
                                                              tmp_path: Path) -> None:
    pipe = sensor.pipe
    old_geo, old_config, old_sigs = pipe.alerts.geo, pipe.config, pipe.signatures
    country = tmp_path / "country.mmdb"
    country.write_bytes(b"not a MaxMind database at all")
    (sensor.sigdir / "kaspersky.toml").unlink()  # a valid signature change, not applied
    sensor.write_config(extra=f'[geo]\ncountry_db = "{country}"\n',
                        segments=DEMO_SEGMENTS + GUEST_SEGMENT)
    result = sensor.reload()
    assert not result.ok
    assert "country.mmdb" in result.message and "\n" not in result.message
    assert pipe.alerts.geo is old_geo and pipe.config is old_config
    assert pipe.signatures is old_sigs
    sensor.replay_rest()
    assert sensor.alerted() == {OFFICIAL_KASPERSKY}


def test_restart_only_sections_are_reported(sensor: Sensor) -> None:
    sensor.write_config(extra="[flow]\nmax_flows = 1000\n")
    result = sensor.reload()
    assert result.ok
    assert "not applied until restart: flow" in result.message


def test_reload_request_flag() -> None:
    req = ReloadRequest()
    assert req.pending() is False
    req.request()
    req.request()
    assert req.pending() is True
    assert req.pending() is False


def test_reload_request_from_sighup() -> None:
    req = ReloadRequest()
    previous = signal.getsignal(signal.SIGHUP)
    try:
        req.install()
        os.kill(os.getpid(), signal.SIGHUP)
        assert req.pending() is True
        assert req.pending() is False
    finally:
        signal.signal(signal.SIGHUP, previous)


# -- privileges --------------------------------------------------------------------------


def test_unknown_user_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^--user: no such user 'no-such-avmon-user'$"):
        drop_privileges("no-such-avmon-user")


def test_current_user_is_a_no_op() -> None:
    import pwd

    before = (os.getresuid(), os.getresgid(), os.getgroups())
    drop_privileges(pwd.getpwuid(os.getuid()).pw_name)
    assert (os.getresuid(), os.getresgid(), os.getgroups()) == before


def test_capabilities_note_names_the_capability() -> None:
    assert "CAP_NET_RAW" in capabilities_note()
    assert issubclass(PrivilegeError, CaptureError)


@pytest.mark.skipif(os.geteuid() == 0, reason="needs an unprivileged user")
def test_switching_user_without_root_fails_clearly() -> None:
    with pytest.raises(PrivilegeError, match="--user root: cannot"):
        drop_privileges("root")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_root_drops_to_nobody(tmp_path: Path) -> None:
    secret = tmp_path / "root-only"
    secret.write_text("secret\n")
    secret.chmod(0o600)
    tmp_path.chmod(0o755)
    script = textwrap.dedent(f"""
        import os, socket
        from monitor.privileges import PrivilegeError, drop_privileges
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM)  # opened as root
        assert os.getuid() == 0
        os.setgroups([0, 4])  # supplementary groups a root shell may have
        drop_privileges("nobody")
        import pwd
        nobody = pwd.getpwnam("nobody")
        assert os.getresuid() == (nobody.pw_uid,) * 3, os.getresuid()
        assert os.getresgid() == (nobody.pw_gid,) * 3, os.getresgid()
        assert set(os.getgroups()) <= {{nobody.pw_gid}}, os.getgroups()
        try:
            open({str(secret)!r}).read()
        except PermissionError:
            pass
        else:
            raise SystemExit("root-only file still readable")
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise SystemExit("root regained")
        try:
            socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM)
        except PermissionError:
            pass
        else:
            raise SystemExit("CAP_NET_RAW kept")
        sock.close()  # the socket opened before the drop is still ours
        try:
            drop_privileges("root")
        except PrivilegeError as exc:
            print("refused:", exc)
        else:
            raise SystemExit("went back to root")
        print("uid", os.getuid())
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "refused: --user root: cannot" in proc.stdout
    assert proc.stdout.strip().endswith(f"uid {_nobody_uid()}")


def _nobody_uid() -> int:
    import pwd

    return pwd.getpwnam("nobody").pw_uid


# -- the live command ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs CAP_NET_RAW (root)")
def test_live_sighup_reloads_and_counts_rejections(tmp_path: Path) -> None:
    import json
    import socket
    import time
    import urllib.request

    from tests.recorder import free_port

    config = tmp_path / "avmon.toml"
    config.write_text(DEMO_SEGMENTS, encoding="utf-8")
    mport, uport = free_port(), free_port()
    live = subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "live", "-i", "lo", "--source", "ring",
         "-c", str(config), "--eve", str(tmp_path / "eve.json"),
         "--metrics-listen", f"127.0.0.1:{mport}"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def metrics() -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=1) as r:
                return str(r.read().decode())
        except OSError:
            return None

    def reload_errors_after_hup(expected: float) -> float:
        live.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        value = -1.0
        while time.monotonic() < deadline:
            udp.sendto(b"x", ("127.0.0.1", uport))  # packets, so the loop turns
            text = metrics() or ""
            for line in text.splitlines():
                if line.startswith("avmon_config_reload_errors_total "):
                    value = float(line.split()[1])
            if value == expected:
                break
            time.sleep(0.2)
        return value

    try:
        deadline = time.monotonic() + 30
        while metrics() is None:
            assert live.poll() is None and time.monotonic() < deadline, \
                live.stderr.read().decode() if live.stderr else ""
            time.sleep(0.1)
        config.write_text(DEMO_SEGMENTS + GUEST_SEGMENT.replace("/24", "/33"),
                          encoding="utf-8")
        assert reload_errors_after_hup(1.0) == 1.0
        config.write_text(DEMO_SEGMENTS + GUEST_SEGMENT, encoding="utf-8")
        assert reload_errors_after_hup(1.0) == 1.0
        time.sleep(1.0)
    finally:
        udp.close()
        live.send_signal(signal.SIGTERM)
        rc = live.wait(timeout=30)
    assert live.stderr is not None
    err = live.stderr.read().decode()
    assert rc == 0, err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    rejected = [e for e in events if e["event"] == "reload_rejected"]
    assert len(rejected) == 1
    assert str(config) in rejected[0]["error"] and "segments[2].cidrs" in rejected[0]["error"]
    reloaded = [e for e in events if e["event"] == "reload"]
    assert reloaded and reloaded[-1]["changed"] == ["segments"]
