"""Dashboards and alerting rules: lint, PromQL validity, determinism.

Every query on a dashboard and in the alerting rules may only read metrics that avmon
declares (monitor.metrics.METRIC_NAMES, as exposed: counters end in ``_total``) and
Prometheus' ``up``; only with labels those metrics have; counters only through a range
(rate/increase), gauges never through rate(). promtool checks the PromQL syntax of
every expression and runs the rules' unit tests.

``dashboard_queries()`` and ``rule_queries()`` give every expression with the dashboard
variables substituted, for tests that run them against a real Prometheus.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from monitor.metrics import METRIC_NAMES
from tests.tshark_oracle import require_tool

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "dashboards"
JSON_DIR = DASHBOARDS / "json"
RULES = DASHBOARDS / "rules" / "avmon-alerts.yml"
RULE_TESTS = DASHBOARDS / "rules" / "avmon-alerts.test.yml"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
PANEL_TYPES = {"row", "timeseries", "stat", "table", "bargauge", "piechart"}

#: How the dashboards' variables are replaced to run a query outside Grafana.
SUBSTITUTIONS = {
    "__rate_interval": "1m",
    "__range": "1h",
    "segment": ".*",
    "flagged": "RU",
    "job": ".*",
    "instance": ".*",
}
#: Metrics that are not avmon's but may be queried.
FOREIGN_METRICS = {"up"}
#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without",
                "on", "ignoring", "group_left", "group_right"}
VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


# --- helpers for other tests ----------------------------------------------------------

def substitute(expr: str) -> str:
    """``expr`` with Grafana variables replaced as in SUBSTITUTIONS."""
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in SUBSTITUTIONS:
            raise KeyError(f"no substitution for ${name} in {expr!r}")
        return SUBSTITUTIONS[name]
    return VARIABLE.sub(repl, expr)


def dashboard_files() -> list[Path]:
    return sorted(JSON_DIR.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])


def raw_queries(dash: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, expr) for every panel target and every Prometheus annotation."""
    for p in panels(dash):
        for t in p.get("targets", []):
            yield p["title"], t["expr"]
    for a in dash["annotations"]["list"]:
        if "expr" in a:
            yield f"annotation: {a['name']}", a["expr"]


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr with variables substituted) for every query."""
    return [(path.name, title, substitute(expr))
            for path in dashboard_files() for title, expr in raw_queries(load(path))]


@cache
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("avmon_dashboards_generate",
                                                  DASHBOARDS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rule_queries() -> list[tuple[str, str]]:
    """(alert name, expr) for every alerting rule (as written to avmon-alerts.yml)."""
    return [(r["alert"], r["expr"]) for _, rules in generator().RULE_GROUPS for r in rules]


# --- PromQL inspection ----------------------------------------------------------------

def _strip(expr: str) -> str:
    """``expr`` without strings, label matchers, ranges, offsets and grouping lists."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\boffset\s+\w+", " ", s)
    return re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)


def metric_names(expr: str) -> set[str]:
    """Names of the series an expression selects (not functions, keywords or labels)."""
    s = _strip(expr)
    names = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", s):
        if m.group() in PROMQL_WORDS or s[m.end():].lstrip().startswith("("):
            continue
        names.add(m.group())
    return names


def selectors(expr: str) -> Iterator[tuple[str, list[str], str]]:
    """(metric, label names matched, what follows) for every selector in ``expr``."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)\s*(\{[^}]*\})?", s):
        name = m.group(1)
        if name not in metric_names(expr):
            continue
        labels = re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", m.group(2) or "")
        yield name, labels, s[m.end():].lstrip()[:1]


def grouping_labels(expr: str) -> set[str]:
    found = set()
    for m in re.finditer(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        found |= {x.strip() for x in m.group(1).split(",") if x.strip()}
    return found


@cache
def exposed_labels() -> dict[str, frozenset[str]]:
    """Label names of every sample name avmon exposes (read from a real collector)."""
    from geo import GeoDatabases
    from monitor.config import load_config
    from monitor.metrics import PipelineCollector, SinkStats
    from monitor.pipeline import Pipeline

    pipe = Pipeline(load_config(str(ROOT / "monitor" / "data" / "demo.toml")),
                    geo=GeoDatabases())
    collector = PipelineCollector(pipe, sinks=lambda: {"alertmanager": SinkStats()})
    labels: dict[str, set[str]] = {}
    for family in collector.collect():
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(v) for name, v in labels.items()}


def every_query() -> list[tuple[str, str]]:
    """(where, raw expr) for dashboards and rules."""
    found = [(f"{path.name}: {title}", expr)
             for path in dashboard_files() for title, expr in raw_queries(load(path))]
    return found + [(f"rule {alert}", expr) for alert, expr in rule_queries()]


# --- tests ----------------------------------------------------------------------------

def test_promql_inspection() -> None:
    expr = ('sum by (segment) (rate(avmon_av_flows_total{jurisdiction=~"R.*"}[5m])) > 0.5\n'
            'and on (job) up offset 5m or vector(1e3) unless absent(avmon_typo_total)')
    assert metric_names(expr) == {"avmon_av_flows_total", "up", "avmon_typo_total"}
    assert list(selectors(expr)) == [("avmon_av_flows_total", ["jurisdiction"], "["),
                                     ("up", [], "o"), ("avmon_typo_total", [], ")")]
    assert grouping_labels(expr) == {"segment", "job"}


def test_three_dashboards_with_queries() -> None:
    assert [p.name for p in dashboard_files()] == [
        "avmon-overview.json", "avmon-segment.json", "avmon-sensor-health.json"]
    per_file = {name for name, _, _ in dashboard_queries()}
    assert len(per_file) == 3
    assert len(rule_queries()) >= 7


def test_metric_names_are_declared() -> None:
    allowed = set(METRIC_NAMES) | FOREIGN_METRICS
    for where, expr in every_query():
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        assert names <= allowed, f"{where}: undeclared {sorted(names - allowed)} in {expr!r}"


def test_variable_queries_use_declared_metrics() -> None:
    for path in dashboard_files():
        for var in load(path)["templating"]["list"]:
            if var["type"] != "query":
                continue
            m = re.fullmatch(r"label_values\((\w+)(\{[^}]*\})?,\s*(\w+)\)", var["definition"])
            assert m, f"{path.name}: ${var['name']}: {var['definition']!r}"
            assert m.group(1) in METRIC_NAMES
            assert m.group(3) in exposed_labels()[m.group(1)] | TARGET_LABELS
            assert var["query"]["query"] == var["definition"]
            assert var["datasource"] == DATASOURCE


def test_labels_exist_on_the_metrics() -> None:
    exposed = exposed_labels()
    for where, expr in every_query():
        known = set(TARGET_LABELS)
        for name, labels, _ in selectors(expr):
            if name in FOREIGN_METRICS:
                continue
            assert name in exposed, f"{where}: avmon does not expose {name}"
            assert set(labels) <= exposed[name] | TARGET_LABELS, (where, name, labels)
            known |= exposed[name]
        assert grouping_labels(expr) <= known, (where, grouping_labels(expr) - known)


def test_legends_name_existing_labels() -> None:
    exposed = exposed_labels()
    for path in dashboard_files():
        for p in panels(load(path)):
            for t in p.get("targets", []):
                known = set(TARGET_LABELS)
                for name in metric_names(t["expr"]) - FOREIGN_METRICS:
                    known |= exposed[name]
                used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", t.get("legendFormat", "")))
                assert used <= known, (path.name, p["title"], used - known)


def test_counters_through_ranges_gauges_not_rated() -> None:
    for where, expr in every_query():
        for name, _, after in selectors(expr):
            if name.endswith("_total"):
                assert after == "[" or re.search(rf"absent\(\s*{name}\b", expr), (
                    f"{where}: counter {name} read without rate()/increase()")
        for m in re.finditer(r"\b(?:rate|irate|increase)\(\s*(\w+)", expr):
            assert m.group(1).endswith("_total"), f"{where}: rate of gauge {m.group(1)}"


def test_dashboard_ranges_are_grafana_intervals() -> None:
    """Graphs rate over $__rate_interval; range totals use $__range."""
    for path in dashboard_files():
        for p in panels(load(path)):
            for t in p.get("targets", []):
                for fn, window in re.findall(r"\b(rate|increase)\([^\[]*\[([^\]]*)\]",
                                             t["expr"]):
                    allowed = {"$__rate_interval"} | ({"$__range"} if fn == "increase"
                                                      else set())
                    assert window in allowed, (path.name, p["title"], fn, window)


def test_every_panel_uses_the_datasource_variable() -> None:
    for path in dashboard_files():
        dash = load(path)
        ds_vars = [v for v in dash["templating"]["list"] if v["name"] == "datasource"]
        assert ds_vars and ds_vars[0]["type"] == "datasource"
        assert ds_vars[0]["query"] == "prometheus"
        for p in panels(dash):
            assert p.get("datasource") == DATASOURCE, (path.name, p["title"])
            for t in p.get("targets", []):
                assert t.get("datasource") == DATASOURCE, (path.name, p["title"])
        for a in dash["annotations"]["list"]:
            if "expr" in a:
                assert a["datasource"] == DATASOURCE


def test_variables_are_defined() -> None:
    builtins = {"__rate_interval", "__range"}
    for path in dashboard_files():
        dash = load(path)
        defined = {v["name"] for v in dash["templating"]["list"]} | builtins
        for title, expr in raw_queries(dash):
            used = {a or b for a, b in VARIABLE.findall(expr)}
            assert used <= defined, (path.name, title, used - defined)
            assert used <= set(SUBSTITUTIONS), (path.name, title)
        flagged = [v for v in dash["templating"]["list"] if v["name"] == "flagged"]
        if "overview" in path.name or "segment" in path.name:
            assert flagged and flagged[0]["type"] == "custom"
            assert flagged[0]["current"]["value"] == ["RU"]


def test_panel_ids_unique_and_layout_fits() -> None:
    for path in dashboard_files():
        dash = load(path)
        assert dash["schemaVersion"] == 39
        assert dash["uid"] == path.stem
        ids = [p["id"] for p in panels(dash)]
        assert len(ids) == len(set(ids)), path.name
        titles = [p["title"] for p in panels(dash) if p["type"] != "row"]
        assert len(titles) == len(set(titles)), f"{path.name}: panel titles repeat"
        cells: set[tuple[int, int]] = set()
        for p in panels(dash):
            assert p["type"] in PANEL_TYPES, (path.name, p["title"], p["type"])
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24, (path.name, p["title"])
            mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                    for y in range(g["y"], g["y"] + g["h"])}
            assert not cells & mine, f"{path.name}: {p['title']} overlaps another panel"
            cells |= mine


def test_dashboards_show_what_the_design_asks_for() -> None:
    def exprs(name: str) -> str:
        return "\n".join(e for _, e in raw_queries(load(JSON_DIR / name)))

    overview = exprs("avmon-overview.json")
    for needle in ("avmon_alerts_total", 'jurisdiction=~"$flagged"', "avmon_av_flows_total",
                   "avmon_av_egress_bytes_total", "by (indicator)"):
        assert needle in overview
    segment = exprs("avmon-segment.json")
    for needle in ('segment=~"$segment"', "by (vendor)", "by (purpose)", "by (jurisdiction)",
                   "avmon_alerts_total"):
        assert needle in segment
    health = exprs("avmon-sensor-health.json")
    for metric in ("avmon_packets_total", "avmon_bytes_total",
                   "avmon_capture_dropped_packets_total", "avmon_decode_failures_total",
                   "avmon_parse_errors_total", "avmon_flows_active",
                   "avmon_flow_table_evictions_total", "avmon_dns_cache_entries",
                   "avmon_processing_lag_seconds", "avmon_alert_sink_errors_total",
                   "avmon_alert_sink_queue_length", "avmon_alert_spool_bytes"):
        assert metric in health
    assert "time() - avmon_geo_database_build_timestamp_seconds" in health


def test_rules_have_for_severity_and_annotations() -> None:
    text = RULES.read_text(encoding="utf-8")
    for _, rules in generator().RULE_GROUPS:
        for r in rules:
            assert re.fullmatch(r"\d+[smh]", r["for"]), r["alert"]
            assert r["labels"]["severity"] in {"critical", "warning", "info"}
            assert set(r["annotations"]) == {"summary", "description"}
            assert "$labels" in r["annotations"]["summary"] + r["annotations"]["description"]
            assert f"- alert: {r['alert']}\n" in text
    alerts = dict(rule_queries())
    assert 'severity="critical"' in alerts["AvmonCriticalAlert"]
    assert "avmon_capture_dropped_packets_total" in alerts["AvmonCaptureDropping"]
    assert "90 * 86400" in alerts["AvmonGeoDataStale"]
    assert 'up{job="avmon"} == 0' in alerts["AvmonSensorDown"]


def test_rules_file_matches_rule_queries() -> None:
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    parsed = [(r["alert"], r["expr"]) for g in doc["groups"] for r in g["rules"]]
    assert parsed == rule_queries()


def test_generator_is_deterministic(tmp_path: Path) -> None:
    for out in (tmp_path / "a", tmp_path / "b"):
        subprocess.run([sys.executable, str(DASHBOARDS / "generate.py"), "--out", str(out)],
                       check=True, capture_output=True)
    written = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    assert [p.name for p in dashboard_files()] == [p.name for p in written
                                                   if p.parent.name == "json"]
    for rel in written:
        fresh = (tmp_path / "a" / rel).read_bytes()
        assert fresh == (tmp_path / "b" / rel).read_bytes(), rel
        assert fresh == (DASHBOARDS / rel).read_bytes(), (
            f"dashboards/{rel} is out of date: run python dashboards/generate.py")
        if rel.suffix == ".json":
            dash = json.loads(fresh)
            assert fresh.decode() == json.dumps(dash, indent=2, sort_keys=True,
                                                ensure_ascii=False) + "\n"


def test_readme_documents_every_panel_and_rule() -> None:
    readme = " ".join((DASHBOARDS / "README.md").read_text(encoding="utf-8").split())
    for path in dashboard_files():
        for p in panels(load(path)):
            if p["type"] != "row":
                assert p["title"] in readme, f"README misses panel {p['title']!r}"
    for alert, _ in rule_queries():
        assert alert in readme, f"README misses rule {alert}"


def test_promtool_checks_rules() -> None:
    promtool = require_tool("promtool")
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rule_queries())} rules found" in out.stdout


def test_promtool_rule_unit_tests() -> None:
    promtool = require_tool("promtool")
    out = subprocess.run([promtool, "test", "rules", str(RULE_TESTS)], capture_output=True,
                         text=True, cwd=RULE_TESTS.parent)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every substituted dashboard query parses (as a recording rule, through promtool)."""
    promtool = require_tool("promtool")
    lines = ["groups:", "  - name: dashboard-queries", "    rules:"]
    for i, (_, _, expr) in enumerate(dashboard_queries()):
        lines += [f"      - record: dashboard:query{i}", f"        expr: {json.dumps(expr)}"]
    path = tmp_path / "queries.yml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_substitution_leaves_no_variables() -> None:
    for name, title, expr in dashboard_queries():
        assert "$" not in expr, (name, title, expr)
    with pytest.raises(KeyError):
        substitute("rate(x[$unknown])")
    assert substitute('a{s=~"${segment}"}[$__rate_interval]') == 'a{s=~".*"}[1m]'


def test_provisioning_files() -> None:
    yaml = pytest.importorskip("yaml")
    prov = DASHBOARDS / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "avmon-prometheus.yml").read_text())
    assert ds["apiVersion"] == 1
    assert [d["type"] for d in ds["datasources"]] == ["prometheus"]
    dash = yaml.safe_load((prov / "dashboards" / "avmon.yml").read_text())
    (provider,) = dash["providers"]
    assert provider["type"] == "file" and provider["folder"] == "avmon"
    assert provider["options"]["path"] in (DASHBOARDS / "README.md").read_text()


def test_previews_are_embedded_and_small() -> None:
    readme = (DASHBOARDS / "README.md").read_text(encoding="utf-8")
    for path in dashboard_files():
        png = DASHBOARDS / "img" / f"{path.stem}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size < 300_000, png
        assert f"(img/{png.name})" in readme
