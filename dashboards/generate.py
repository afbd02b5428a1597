"""Write avmon's Grafana dashboards (JSON) and Prometheus alerting rules (YAML).

    python dashboards/generate.py [--out DIR]

DIR defaults to this directory; the output is ``DIR/json/avmon-*.json`` and
``DIR/rules/avmon-alerts.yml``. Both are committed: edit this file, run it, commit the
result (tests/test_dashboards.py checks that the committed files are what this writes).
The output is deterministic: sorted keys, two-space indent, no timestamps.

Every query reads only metrics declared in monitor/metrics.py (METRIC_NAMES), plus
Prometheus' own ``up``. Counters are read through rate() (per second, over
``$__rate_interval``) in graphs and through increase() over the dashboard's time range
(``$__range``) in stats, tables, bar gauges and pie charts.

Dashboard variables:
  datasource  the Prometheus data source (every panel and query uses it)
  job         scrape job(s) of the avmon sensors (label_values(avmon_build_info, job))
  instance    sensor(s) within those jobs
  flagged     jurisdiction codes treated as flagged (regex matcher on `jurisdiction`);
              keep it in line with [policy] flagged_jurisdictions in avmon's config
  segment     (segment dashboard) configured segment, from avmon_av_flows_total
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

DS = {"type": "prometheus", "uid": "${datasource}"}
#: Every avmon selector on a dashboard is scoped to the chosen sensors.
SCOPE = ('job=~"$job"', 'instance=~"$instance"')
#: Jurisdictions offered by the `flagged` variable (the first is the default).
FLAGGED_CHOICES = ("RU", "BY", "CN", "IR", "KP")
SEVERITY_COLORS = {"critical": "red", "high": "orange", "medium": "yellow", "low": "blue"}
DAY = 86_400


# --- PromQL helpers -------------------------------------------------------------------

def sel(metric: str, *matchers: str) -> str:
    """``metric{matchers..., job=~"$job", instance=~"$instance"}``."""
    return f"{metric}{{{', '.join((*matchers, *SCOPE))}}}"


def severity(name: str) -> str:
    return f'severity="{name}"'


def rate(metric: str, *matchers: str) -> str:
    """Per-second rate of a counter over Grafana's $__rate_interval."""
    return f"rate({sel(metric, *matchers)}[$__rate_interval])"


def total(metric: str, *matchers: str) -> str:
    """How much a counter grew over the dashboard's time range."""
    return f"increase({sel(metric, *matchers)}[$__range])"


def count_over_range(metric: str, *matchers: str, by: str = "") -> str:
    """A whole number for stats and tables (increase() extrapolates to fractions)."""
    grouping = f" by ({by}) " if by else ""
    return f"round(sum{grouping}({total(metric, *matchers)}))"


# --- panels ---------------------------------------------------------------------------

def target(expr: str, legend: str = "", *, instant: bool = False, table: bool = False,
           ref: str = "A") -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DS, "editorMode": "code", "expr": expr,
                         "instant": instant or table, "range": not (instant or table),
                         "refId": ref}
    if legend:
        t["legendFormat"] = legend
    if table:
        t["format"] = "table"
    return t


def thresholds(*steps: tuple[float, str]) -> dict[str, Any]:
    return {"mode": "absolute",
            "steps": [{"color": "green", "value": None}]
            + [{"color": color, "value": value} for value, color in steps]}


def color_by_name(colors: dict[str, str]) -> list[dict[str, Any]]:
    """Overrides giving fixed colours to series named by their legend."""
    return [{"matcher": {"id": "byName", "options": name},
             "properties": [{"id": "color", "value": {"fixedColor": color, "mode": "fixed"}}]}
            for name, color in colors.items()]


def panel(kind: str, title: str, description: str, targets: list[dict[str, Any]], *,
          unit: str = "short", w: int = 12, h: int = 8, options: dict[str, Any] | None = None,
          custom: dict[str, Any] | None = None, overrides: list[dict[str, Any]] | None = None,
          steps: tuple[tuple[float, str], ...] = (), color: str = "palette-classic",
          transformations: list[dict[str, Any]] | None = None,
          no_value: str | None = None) -> dict[str, Any]:
    defaults: dict[str, Any] = {"color": {"mode": color}, "min": 0, "unit": unit,
                                "thresholds": thresholds(*steps)}
    if no_value is not None:
        defaults["noValue"] = no_value  # shown instead of "No data"
    if custom:
        defaults["custom"] = custom
    p: dict[str, Any] = {
        "datasource": DS, "description": description, "type": kind, "title": title,
        "targets": targets, "options": options or {},
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "gridPos": {"w": w, "h": h},
    }
    if transformations:
        p["transformations"] = transformations
    return p


LEGEND_TABLE = {"calcs": ["mean", "max"], "displayMode": "table", "placement": "bottom",
                "showLegend": True, "sortBy": "Max", "sortDesc": True}
LEGEND_LIST = {"calcs": [], "displayMode": "list", "placement": "bottom", "showLegend": True}
LAST = {"calcs": ["lastNotNull"], "fields": "", "values": False}


def timeseries(title: str, description: str, targets: list[dict[str, Any]], *,
               unit: str = "short", axis: str = "", stack: bool = False, bars: bool = False,
               table_legend: bool = True, **kw: Any) -> dict[str, Any]:
    custom = {"axisLabel": axis, "drawStyle": "bars" if bars else "line",
              "fillOpacity": 60 if bars else 15, "lineWidth": 1, "showPoints": "auto",
              "spanNulls": False,
              "stacking": {"group": "A", "mode": "normal" if stack else "none"}}
    options = {"legend": LEGEND_TABLE if table_legend else LEGEND_LIST,
               "tooltip": {"mode": "multi", "sort": "desc"}}
    return panel("timeseries", title, description, targets, unit=unit, options=options,
                 custom=custom, **kw)


def stat(title: str, description: str, expr: str, *, unit: str = "short",
         steps: tuple[tuple[float, str], ...] = (), legend: str = "", text: str = "value",
         w: int = 3, h: int = 4, **kw: Any) -> dict[str, Any]:
    options = {"colorMode": "background" if steps else "none", "graphMode": "none",
               "justifyMode": "center", "orientation": "auto", "reduceOptions": LAST,
               "textMode": text}
    return panel("stat", title, description, [target(expr, legend, instant=True)],
                 unit=unit, options=options, steps=steps, color="thresholds", w=w, h=h, **kw)


def bargauge(title: str, description: str, expr: str, legend: str, *, unit: str = "short",
             steps: tuple[tuple[float, str], ...] = (), **kw: Any) -> dict[str, Any]:
    options = {"displayMode": "gradient", "orientation": "horizontal",
               "reduceOptions": LAST, "showUnfilled": True, "valueMode": "color"}
    return panel("bargauge", title, description, [target(expr, legend, instant=True)],
                 unit=unit, options=options, steps=steps,
                 color="thresholds" if steps else "continuous-BlYlRd", **kw)


def piechart(title: str, description: str, expr: str, legend: str, *, unit: str = "short",
             **kw: Any) -> dict[str, Any]:
    options = {"displayLabels": ["percent"], "pieType": "donut", "reduceOptions": LAST,
               "legend": {"displayMode": "table", "placement": "right", "showLegend": True,
                          "values": ["value", "percent"]},
               "tooltip": {"mode": "single", "sort": "none"}}
    return panel("piechart", title, description, [target(expr, legend, instant=True)],
                 unit=unit, options=options, **kw)


def table(title: str, description: str, targets: list[dict[str, Any]], columns: list[str],
          values: dict[str, str], sort: str, *, overrides: list[dict[str, Any]] | None = None,
          **kw: Any) -> dict[str, Any]:
    """Instant table queries merged into one table; ``values`` renames the value columns."""
    order = {name: i for i, name in enumerate(columns + list(values.values()))}
    transformations = [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {"excludeByName": {"Time": True}, "indexByName": order,
                                       "renameByName": values}},
        {"id": "sortBy", "options": {"sort": [{"desc": True, "field": sort}]}},
    ]
    options = {"cellHeight": "sm", "footer": {"show": False}, "showHeader": True}
    return panel("table", title, description, targets, options=options,
                 custom={"align": "auto", "cellOptions": {"type": "auto"}},
                 overrides=overrides, transformations=transformations, **kw)


def row(title: str) -> dict[str, Any]:
    return {"collapsed": False, "datasource": DS, "panels": [], "title": title, "type": "row",
            "gridPos": {"w": 24, "h": 1}}


def layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give panels ids and grid positions: left to right, wrapping at 24 columns."""
    x = y = line_h = 0
    for pid, p in enumerate(panels, start=1):
        pos = p["gridPos"]
        if p["type"] == "row" or x + pos["w"] > 24:
            x, y, line_h = 0, y + line_h, 0
        pos["x"], pos["y"] = x, y
        p["id"] = pid
        x += pos["w"]
        line_h = max(line_h, pos["h"])
        if p["type"] == "row":
            x, y, line_h = 0, y + 1, 0
    return panels


# --- variables ------------------------------------------------------------------------

def datasource_var() -> dict[str, Any]:
    return {"name": "datasource", "label": "Data source", "type": "datasource",
            "query": "prometheus", "current": {}, "hide": 0, "includeAll": False,
            "multi": False, "options": [], "refresh": 1, "regex": ""}


def query_var(name: str, label: str, query: str, *, multi: bool = True) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "definition": query,
            "query": {"qryType": 1, "query": query,  # 1: label values
                      "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "current": {}, "hide": 0, "includeAll": True, "allValue": ".*", "multi": multi,
            "options": [], "refresh": 2, "regex": "", "sort": 1}


def flagged_var() -> dict[str, Any]:
    default = FLAGGED_CHOICES[0]
    return {"name": "flagged", "label": "Flagged jurisdictions", "type": "custom",
            "description": "Jurisdiction codes treated as flagged (as in avmon's "
                           "[policy] flagged_jurisdictions)",
            "query": ",".join(FLAGGED_CHOICES),
            "current": {"selected": True, "text": [default], "value": [default]},
            "hide": 0, "includeAll": False, "multi": True,
            "options": [{"selected": c == default, "text": c, "value": c}
                        for c in FLAGGED_CHOICES]}


def scope_vars() -> list[dict[str, Any]]:
    return [datasource_var(),
            query_var("job", "Job", "label_values(avmon_build_info, job)"),
            query_var("instance", "Sensor", 'label_values(avmon_build_info{job=~"$job"}, '
                                            'instance)')]


# --- dashboards -----------------------------------------------------------------------

def dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]],
              variables: list[dict[str, Any]],
              annotations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    builtin = {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
               "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
               "name": "Annotations & Alerts", "type": "dashboard"}
    return {
        "annotations": {"list": [builtin, *(annotations or [])]},
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [{"asDropdown": False, "icon": "external link", "includeVars": True,
                   "keepTime": True, "tags": ["avmon"], "targetBlank": False,
                   "title": "avmon dashboards", "type": "dashboards"}],
        "panels": layout(panels),
        "refresh": "1m",
        "schemaVersion": 39,
        "tags": ["avmon"],
        "templating": {"list": variables},
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


def critical_alert_annotation() -> dict[str, Any]:
    """Red markers on every graph where avmon raised a critical alert."""
    return {"datasource": DS, "enable": True, "hide": False, "iconColor": "red",
            "name": "Critical avmon alerts", "step": "1m",
            "expr": "sum by (rule, segment) "
                    f"(increase({sel('avmon_alerts_total', severity('critical'))}[2m])) > 0",
            "titleFormat": "{{rule}}", "textFormat": "segment {{segment}}"}


SEGMENT_LINK = [{
    "matcher": {"id": "byName", "options": "segment"},
    "properties": [{"id": "links", "value": [{
        "title": "Open the segment dashboard",
        "url": "/d/avmon-segment/avmon-segment?${__url_time_range}&var-datasource=${datasource}"
               "&var-segment=${__value.raw}"}]}],
}]


def overview() -> dict[str, Any]:
    flagged = 'jurisdiction=~"$flagged"'
    severity_stats = [
        stat(f"{sev.capitalize()} alerts",
             f"Alerts of severity {sev} raised in the time range.",
             f"{count_over_range('avmon_alerts_total', severity(sev))} or vector(0)",
             steps=((1, color),), w=4)
        for sev, color in SEVERITY_COLORS.items()
    ]
    panels = [
        row("Alerts"),
        *severity_stats,
        stat("Upload escalations",
             "Alerts escalated because a flow sent more than the upload threshold "
             "(a sample upload rather than a hash lookup).",
             f"{count_over_range('avmon_alert_escalations_total')} or vector(0)",
             steps=((1, "red"),), w=4),
        stat("Allowed by exception",
             "Flows that broke a rule but matched an exception in force (no alert raised).",
             f"{count_over_range('avmon_alerts_allowed_by_exception_total')} or vector(0)",
             steps=((1, "purple"),), w=4),
        timeseries("Alerts by severity",
                   "Alerts raised per minute, by severity.",
                   [target(f"60 * sum by (severity) ({rate('avmon_alerts_total')})",
                           "{{severity}}")],
                   unit="cpm", axis="alerts/min", stack=True, bars=True,
                   overrides=color_by_name(SEVERITY_COLORS)),
        table("Alerts by rule and segment",
              "Alerts raised in the time range, per policy rule, segment and severity. "
              "Click a segment to open its dashboard.",
              [target(count_over_range("avmon_alerts_total", by="rule, segment, severity"),
                      table=True)],
              ["rule", "segment", "severity"], {"Value": "alerts"}, "alerts",
              overrides=SEGMENT_LINK),
        row("Egress to flagged jurisdictions"),
        stat("AV flows to flagged jurisdictions",
             "Flows to AV vendors whose jurisdiction of control is flagged ($flagged).",
             f"{count_over_range('avmon_av_flows_total', flagged)} or vector(0)",
             steps=((1, "orange"),), w=4, h=8),
        stat("Bytes sent to flagged jurisdictions",
             "Bytes sent (client to server) to AV vendors whose jurisdiction is flagged.",
             f"sum({total('avmon_av_egress_bytes_total', flagged)}) or vector(0)",
             unit="bytes", steps=((1, "orange"),), w=4, h=8),
        timeseries("Egress to flagged jurisdictions by segment",
                   "Bytes per second sent to AV vendors whose jurisdiction of control is "
                   "flagged, by source segment ('unclassified': in no configured segment).",
                   [target(f"sum by (segment) ({rate('avmon_av_egress_bytes_total', flagged)})",
                           "{{segment}}")],
                   unit="Bps", stack=True, w=10),
        bargauge("Bytes to flagged jurisdictions by segment and vendor",
                 "Bytes sent in the time range to flagged-jurisdiction vendors, per segment "
                 "and vendor.",
                 "sum by (segment, vendor) "
                 f"({total('avmon_av_egress_bytes_total', flagged)}) > 0",
                 "{{segment}} / {{vendor}}", unit="bytes", w=6),
        row("AV traffic by vendor"),
        timeseries("AV flows by vendor and segment (top 10)",
                   "New flows per second to AV vendors' clouds: the ten busiest "
                   "vendor/segment pairs at each point in time.",
                   [target("topk(10, sum by (vendor, segment) "
                           f"({rate('avmon_av_flows_total')}) > 0)",
                           "{{vendor}} / {{segment}}")],
                   unit="cps", axis="flows/s"),
        timeseries("AV egress by vendor and segment (top 10)",
                   "Bytes per second sent to AV vendors' clouds: the ten busiest "
                   "vendor/segment pairs at each point in time.",
                   [target("topk(10, sum by (vendor, segment) "
                           f"({rate('avmon_av_egress_bytes_total')}) > 0)",
                           "{{vendor}} / {{segment}}")],
                   unit="Bps"),
        bargauge("Top vendors by egress",
                 "The ten vendor/segment pairs that received the most bytes in the time range.",
                 "topk(10, sum by (vendor, segment) "
                 f"({total('avmon_av_egress_bytes_total')}) > 0)",
                 "{{vendor}} / {{segment}}", unit="bytes", w=8),
        piechart("AV flows by jurisdiction",
                 "AV flows in the time range by the vendor's jurisdiction of control.",
                 "sum by (jurisdiction) "
                 f"({total('avmon_av_flows_total')}) > 0", "{{jurisdiction}}", w=8),
        piechart("Identification method share",
                 "How AV flows were named: TLS SNI, QUIC Initial, DNS answer, HTTP Host, "
                 "proxy CONNECT, JA4 or IP.",
                 "sum by (indicator) "
                 f"({total('avmon_identifications_total')}) > 0", "{{indicator}}", w=8),
    ]
    return dashboard(
        "avmon-overview", "avmon / overview",
        "Alerts, egress to flagged jurisdictions and AV cloud traffic across all sensors.",
        panels, [*scope_vars(), flagged_var()], [critical_alert_annotation()])


def segment() -> dict[str, Any]:
    seg = 'segment=~"$segment"'
    flagged = 'jurisdiction=~"$flagged"'
    panels = [
        row("Segment summary"),
        stat("Alerts", "Alerts raised in the segment in the time range.",
             f"{count_over_range('avmon_alerts_total', seg)} or vector(0)",
             steps=((1, "orange"),), w=4),
        stat("Critical alerts", "Critical alerts raised in the segment in the time range.",
             f"{count_over_range('avmon_alerts_total', seg, severity('critical'))}"
             " or vector(0)", steps=((1, "red"),), w=4),
        stat("AV flows", "Flows from the segment to AV vendors' clouds in the time range.",
             f"{count_over_range('avmon_av_flows_total', seg)} or vector(0)", w=4),
        stat("Vendors seen", "AV vendors the segment talked to in the time range.",
             f"count(sum by (vendor) ({total('avmon_av_flows_total', seg)}) > 0)"
             " or vector(0)", w=4),
        stat("AV egress", "Bytes the segment sent to AV vendors' clouds in the time range.",
             f"sum({total('avmon_av_egress_bytes_total', seg)}) or vector(0)",
             unit="bytes", w=4),
        stat("Bytes sent to flagged jurisdictions",
             "Bytes the segment sent to vendors whose jurisdiction is flagged ($flagged).",
             f"sum({total('avmon_av_egress_bytes_total', seg, flagged)}) or vector(0)",
             unit="bytes", steps=((1, "red"),), w=4),
        row("Vendors"),
        timeseries("AV flows by vendor", "New AV flows per second from the segment, by vendor.",
                   [target(f"sum by (vendor) ({rate('avmon_av_flows_total', seg)}) > 0",
                           "{{vendor}}")], unit="cps", axis="flows/s"),
        timeseries("AV egress by vendor",
                   "Bytes per second the segment sent to AV vendors' clouds, by vendor.",
                   [target("sum by (vendor) "
                           f"({rate('avmon_av_egress_bytes_total', seg)}) > 0",
                           "{{vendor}}")], unit="Bps", stack=True),
        row("Purposes and jurisdictions"),
        piechart("Egress by purpose",
                 "Bytes sent in the time range by the purpose of the endpoint (lookup, "
                 "telemetry, sample upload, update, console).",
                 f"sum by (purpose) ({total('avmon_av_egress_bytes_total', seg)}) > 0",
                 "{{purpose}}", unit="bytes", w=8),
        bargauge("Egress by jurisdiction",
                 "Bytes sent in the time range by the vendor's jurisdiction of control.",
                 f"sum by (jurisdiction) ({total('avmon_av_egress_bytes_total', seg)}) > 0",
                 "{{jurisdiction}}", unit="bytes", w=8),
        timeseries("Egress to flagged jurisdictions",
                   "Bytes per second sent to flagged-jurisdiction vendors, by vendor and "
                   "purpose.",
                   [target("sum by (vendor, purpose) "
                           f"({rate('avmon_av_egress_bytes_total', seg, flagged)}) > 0",
                           "{{vendor}} {{purpose}}")],
                   unit="Bps", w=8, table_legend=False),
        table("Vendors, purposes and jurisdictions",
              "AV flows and bytes sent in the time range per vendor, purpose and "
              "jurisdiction (only what was seen).",
              [target(count_over_range("avmon_av_flows_total", seg,
                                       by="vendor, purpose, jurisdiction") + " > 0",
                      table=True, ref="A"),
               target("sum by (vendor, purpose, jurisdiction) "
                      f"({total('avmon_av_egress_bytes_total', seg)}) > 0",
                      table=True, ref="B")],
              ["vendor", "purpose", "jurisdiction"],
              {"Value #A": "flows", "Value #B": "bytes sent"}, "bytes sent",
              overrides=[{"matcher": {"id": "byName", "options": "bytes sent"},
                          "properties": [{"id": "unit", "value": "bytes"}]}],
              w=24),
        row("Alerts"),
        timeseries("Alerts by rule and severity",
                   "Alerts raised per minute in the segment, by rule and severity.",
                   [target("60 * sum by (rule, severity) "
                           f"({rate('avmon_alerts_total', seg)})",
                           "{{rule}} ({{severity}})")],
                   unit="cpm", axis="alerts/min", stack=True, bars=True),
        table("Alerts by rule",
              "Alerts raised in the segment in the time range, per rule and severity.",
              [target(count_over_range("avmon_alerts_total", seg, by="rule, severity"),
                      table=True)],
              ["rule", "severity"], {"Value": "alerts"}, "alerts"),
    ]
    variables = [*scope_vars(),
                 query_var("segment", "Segment",
                           'label_values(avmon_av_flows_total{job=~"$job", '
                           'instance=~"$instance"}, segment)', multi=False),
                 flagged_var()]
    return dashboard(
        "avmon-segment", "avmon / segment",
        "One network segment: the AV vendors, purposes and jurisdictions its hosts talk to, "
        "the bytes they send and the alerts raised.", panels, variables)


def sensor_health() -> dict[str, Any]:
    ninety_days, sixty_days = 90 * DAY, 60 * DAY
    panels = [
        row("Sensor"),
        stat("Sensors down", "Scrape targets of the selected jobs whose last scrape failed "
             "(Prometheus' up metric).",
             'count(up{job=~"$job", instance=~"$instance"} == 0) or vector(0)',
             steps=((1, "red"),), w=4),
        stat("avmon version", "avmon_build_info: the version each sensor runs.",
             f"max by (version) ({sel('avmon_build_info')})", legend="{{version}}",
             text="name", w=4),
        stat("Signature set", "avmon_signatures_info: the loaded signature set's version.",
             f"max by (version) ({sel('avmon_signatures_info')})", legend="{{version}}",
             text="name", w=4),
        stat("Signature vendors", "Vendors in the loaded signature set.",
             f"min({sel('avmon_signature_vendors')})", w=4),
        stat("Time since last packet",
             "Now minus the capture time of the newest packet processed (for a replay, "
             "the age of the capture).",
             f"time() - max({sel('avmon_last_packet_timestamp_seconds')})", unit="s",
             steps=((300, "orange"),), w=4),
        stat("Capture files damaged", "Capture files read only up to damage (replays).",
             f"{count_over_range('avmon_capture_damaged_files_total')} or vector(0)",
             steps=((1, "orange"),), w=4),
        row("Capture and decode"),
        timeseries("Packets per second", "Frames read from capture sources.",
                   [target(f"sum by (instance, source) ({rate('avmon_packets_total')})",
                           "{{instance}} {{source}}")], unit="pps"),
        timeseries("Bytes per second", "Frame bytes (on the wire) read.",
                   [target(f"sum by (instance, source) ({rate('avmon_bytes_total')})",
                           "{{instance}} {{source}}")], unit="Bps"),
        timeseries("Capture drops",
                   "Packets the capture source lost (kernel drops on live capture): traffic "
                   "avmon never saw.",
                   [target("sum by (instance, source) "
                           f"({rate('avmon_capture_dropped_packets_total')})",
                           "{{instance}} {{source}}")],
                   unit="pps", w=8, table_legend=False),
        timeseries("Decode failures by reason", "Frames without L3/L4 columns, by reason.",
                   [target(f"sum by (reason) ({rate('avmon_decode_failures_total')}) > 0",
                           "{{reason}}")], unit="pps", w=8, stack=True, no_value="0"),
        timeseries("Tunnels and fragments",
                   "Packets found inside tunnels, and IP fragments that could not be given "
                   "to a flow.",
                   [target(f"sum({rate('avmon_tunnelled_packets_total')})", "tunnelled",
                           ref="A"),
                    target(f"sum({rate('avmon_fragments_unattributed_total')})",
                           "fragments unattributed", ref="B")],
                   unit="pps", w=8, table_legend=False),
        row("Dissection"),
        timeseries("Protocol units dissected", "DNS messages, TLS and QUIC ClientHellos and "
                   "HTTP requests dissected per second.",
                   [target(f"sum by (protocol) ({rate('avmon_protocol_units_total')})",
                           "{{protocol}}")], unit="cps", w=8),
        timeseries("Parse errors by protocol and reason",
                   "Protocol units a parser rejected, per second.",
                   [target("sum by (protocol, reason) "
                           f"({rate('avmon_parse_errors_total')}) > 0",
                           "{{protocol}} {{reason}}")], unit="cps", w=8, stack=True,
                   no_value="0"),
        timeseries("Dissection abandoned",
                   "Flows no longer inspected at a cap with nothing found, and packets "
                   "whose dissection failed on an avmon bug (internal errors: the log has "
                   "them), per second.",
                   [target(f"sum({rate('avmon_dissection_abandoned_total')})", "abandoned",
                           ref="A"),
                    target(f"sum({rate('avmon_internal_errors_total')})", "internal errors",
                           ref="B")],
                   unit="cps", w=8, table_legend=False),
        row("Flows and DNS cache"),
        timeseries("Flows active", "Flows in the flow table.",
                   [target(f"sum by (instance) ({sel('avmon_flows_active')})",
                           "{{instance}}")], w=8, table_legend=False),
        timeseries("Flows created and ended",
                   "Flows created, and flow records written by reason, per second.",
                   [target(f"sum({rate('avmon_flows_created_total')})", "created", ref="A"),
                    target(f"sum by (reason) ({rate('avmon_flows_ended_total')})",
                           "ended: {{reason}}", ref="B")], unit="cps", w=8),
        timeseries("Flow table evictions",
                   "Flows written out early because the flow table was full, per second.",
                   [target(f"sum by (instance) ({rate('avmon_flow_table_evictions_total')})",
                           "{{instance}}")], unit="cps", w=8, table_legend=False),
        timeseries("DNS cache entries", "(client, address) pairs in the DNS naming cache.",
                   [target(f"sum by (instance) ({sel('avmon_dns_cache_entries')})",
                           "{{instance}}")], w=12, table_legend=False),
        timeseries("DNS cache evictions",
                   "DNS cache entries dropped because the cache was full, per second.",
                   [target(f"sum by (instance) ({rate('avmon_dns_cache_evictions_total')})",
                           "{{instance}}")], unit="cps", w=12, table_legend=False),
        row("Resource limits"),
        timeseries("Resource limits acting",
                   "Times per second a resource limit acted (docs/limits.md), by limit: "
                   "the oldest state went so that new traffic is still watched.",
                   [target(f"sum by (limit) ({rate('avmon_limit_hits_total')}) > 0",
                           "{{limit}}", ref="A"),
                    target("sum by (sink, limit) "
                           f"({rate('avmon_alert_sink_limit_hits_total')}) > 0",
                           "{{sink}}: {{limit}}", ref="B")],
                   unit="cps", w=12, stack=True, no_value="0"),
        timeseries("Reassembly bytes held",
                   "Bytes flows hold while waiting for the rest of a ClientHello, DNS "
                   "message, QUIC Initial or fragmented datagram "
                   "(limits.reassembly_bytes_total caps it).",
                   [target(f"sum by (instance) ({sel('avmon_reassembly_bytes')})",
                           "{{instance}}")], unit="bytes", w=12, table_legend=False),
        row("Latency and data freshness"),
        timeseries("Processing lag",
                   "Wall-clock time minus the newest packet's capture time (live capture; "
                   "0 for replays).",
                   [target(f"max by (instance) ({sel('avmon_processing_lag_seconds')})",
                           "{{instance}}")], unit="s", w=8, table_legend=False),
        bargauge("Geo database age",
                 "Time since each geo database was built; avmon's alerting rules warn after "
                 "90 days.",
                 "max by (database) "
                 f"(time() - {sel('avmon_geo_database_build_timestamp_seconds')})",
                 "{{database}}", unit="s", steps=((sixty_days, "yellow"), (ninety_days, "red")),
                 w=8),
        stat("Reloads rejected",
             "Geo database and configuration/signature reloads rejected in the time range "
             "(the old data stays in use).",
             f"({count_over_range('avmon_geo_reload_errors_total')} or vector(0)) + "
             f"({count_over_range('avmon_config_reload_errors_total')} or vector(0))",
             steps=((1, "red"),), w=8, h=8),
        row("Alert sinks"),
        timeseries("Alerts delivered by sink", "Alerts delivered per second, by sink.",
                   [target(f"sum by (sink) ({rate('avmon_alert_sink_sent_total')})",
                           "{{sink}}")], unit="cps", w=6, table_legend=False),
        timeseries("Sink errors", "Delivery failures per second, by sink.",
                   [target(f"sum by (sink) ({rate('avmon_alert_sink_errors_total')})",
                           "{{sink}}")], unit="cps", w=6, table_legend=False),
        timeseries("Sink queue length", "Alerts waiting in each sink's queue.",
                   [target(f"sum by (sink) ({sel('avmon_alert_sink_queue_length')})",
                           "{{sink}}")], w=6, table_legend=False),
        timeseries("Sink spool size", "Bytes in each sink's on-disk spool.",
                   [target(f"sum by (sink) ({sel('avmon_alert_spool_bytes')})", "{{sink}}")],
                   unit="bytes", w=6, table_legend=False),
    ]
    return dashboard(
        "avmon-sensor-health", "avmon / sensor health",
        "Is the sensor seeing, decoding and dissecting everything, are its tables and caches "
        "big enough, is its data fresh and are its alerts delivered?",
        panels, scope_vars())


DASHBOARDS = {
    "avmon-overview.json": overview,
    "avmon-segment.json": segment,
    "avmon-sensor-health.json": sensor_health,
}


# --- alerting rules -------------------------------------------------------------------

def rule(alert: str, expr: str, for_: str, severity: str, summary: str, description: str,
         why: str) -> dict[str, Any]:
    return {"alert": alert, "expr": expr, "for": for_, "labels": {"severity": severity},
            "annotations": {"summary": summary, "description": description}, "why": why}


RULE_GROUPS: list[tuple[str, list[dict[str, Any]]]] = [
    ("avmon-policy", [
        rule("AvmonCriticalAlert",
             "sum by (job, instance, rule, segment) (\n"
             '  increase(avmon_alerts_total{severity="critical"}[5m])\n) > 0',
             "0m", "critical",
             "avmon raised a critical alert in segment {{ $labels.segment }}",
             "Sensor {{ $labels.instance }} raised {{ $value | humanize }} critical alert(s) "
             "for rule {{ $labels.rule }} in segment {{ $labels.segment }} in the last 5 "
             "minutes. The EVE alert records hold the flow, the vendor and the evidence.",
             "An avmon alert is already a judged violation, so there is no waiting period."),
        rule("AvmonSecretEgressToFlaggedJurisdiction",
             "sum by (job, instance, rule, segment) (\n"
             '  increase(avmon_alerts_total{rule=~"(top-)?secret-.*"}[5m])\n) > 0',
             "0m", "critical",
             "SECRET segment {{ $labels.segment }} talked to an AV cloud controlled by a "
             "flagged jurisdiction",
             "Sensor {{ $labels.instance }}: rule {{ $labels.rule }} fired "
             "{{ $value | humanize }} time(s) in the last 5 minutes for segment "
             "{{ $labels.segment }}. NCSC guidance: an AV product controlled by a hostile "
             "state must never be used on systems processing SECRET and above.",
             "Which segments are SECRET or above, and which jurisdictions are flagged, is "
             "avmon's configuration, not Prometheus'. avmon's policy rule "
             "secret-flagged-jurisdiction (and operator rules whose id starts with "
             "'secret-' or 'top-secret-') judges every flow against both, on all bases "
             "(vendor, registration, geolocation, ASN) and after exceptions, so this rule "
             "follows the avmon_alerts_total series of those rules instead of repeating the "
             "segment list and flagged set here."),
    ]),
    ("avmon-sensor", [
        rule("AvmonSensorDown",
             'up{job="avmon"} == 0',
             "2m", "critical",
             "avmon sensor {{ $labels.instance }} is down",
             "Prometheus could not scrape avmon at {{ $labels.instance }} for 2 minutes: "
             "egress from the segments it watches is not being monitored.",
             "A failed scrape; the scrape job must be named avmon."),
        rule("AvmonSensorAbsent",
             'absent(avmon_packets_total{job="avmon"})',
             "10m", "critical",
             "No avmon sensor is reporting",
             "No avmon_packets_total series from job {{ $labels.job }} for 10 minutes: no "
             "sensor is "
             "scraped (removed from service discovery, or the scrape job is not named "
             "avmon).",
             "AvmonSensorDown needs a target to be down; this one catches targets that are "
             "gone altogether."),
        rule("AvmonCaptureDropping",
             "sum by (job, instance, source) (\n"
             "  rate(avmon_capture_dropped_packets_total[5m])\n) > 0",
             "5m", "warning",
             "avmon sensor {{ $labels.instance }} is dropping packets",
             "Capture source {{ $labels.source }} on {{ $labels.instance }} loses "
             "{{ $value | humanize }} packets/s: traffic avmon never sees cannot raise "
             "alerts.",
             "Kernel drops mean blind spots."),
        rule("AvmonProcessingLag",
             "max by (job, instance) (avmon_processing_lag_seconds) > 300",
             "5m", "warning",
             "avmon sensor {{ $labels.instance }} is behind or sees no traffic",
             "The newest packet processed on {{ $labels.instance }} was captured "
             "{{ $value | humanizeDuration }} ago: the sensor is falling behind, or its "
             "capture interface receives nothing.",
             "Live capture only (replays report 0)."),
        rule("AvmonFlowTableFull",
             "sum by (job, instance) (\n"
             "  rate(avmon_flow_table_evictions_total[10m])\n) > 0",
             "15m", "warning",
             "avmon flow table on {{ $labels.instance }} is full",
             "Flows are being evicted early ({{ $value | humanize }}/s) because the flow "
             "table is full; raise max_flows or shorten the idle timeout.",
             "Evicted flows are still written out, but late flows lose their history."),
        rule("AvmonLimitHit",
             "sum by (job, instance, limit) (\n"
             "  rate(avmon_limit_hits_total{limit!=\"flows\"}[10m])\n) > 0",
             "10m", "warning",
             "avmon limit {{ $labels.limit }} is acting on {{ $labels.instance }}",
             "The {{ $labels.limit }} limit on {{ $labels.instance }} has acted "
             "{{ $value | humanize }} times/s for 10 minutes: the oldest state is being "
             "dropped (a flood, or a limit too small for this link; see docs/limits.md).",
             "Sustained pressure on a limit is a flood or an undersized sensor "
             "(the flow table has its own rule)."),
        rule("AvmonParseErrorSpike",
             "sum by (job, instance, protocol) (rate(avmon_parse_errors_total[5m])) > 0.2\n"
             "and\n"
             "sum by (job, instance, protocol) (rate(avmon_parse_errors_total[5m]))\n"
             "  > 5 * sum by (job, instance, protocol) "
             "(rate(avmon_parse_errors_total[1h] offset 5m))",
             "10m", "warning",
             "{{ $labels.protocol }} parse errors spiking on {{ $labels.instance }}",
             "{{ $labels.instance }} rejects {{ $value | humanize }} {{ $labels.protocol }} "
             "units/s, more than five times its rate over the hour before: a new protocol "
             "version, a damaged capture path, or evasion. avmon_parse_errors_total has the "
             "reason.",
             "A spike is at least 0.2 errors/s and five times the previous hour's rate."),
    ]),
    ("avmon-data", [
        rule("AvmonGeoDataStale",
             "time() - avmon_geo_database_build_timestamp_seconds > 90 * 86400",
             "1h", "warning",
             "avmon geo database {{ $labels.database }} is older than 90 days",
             "The {{ $labels.database }} database on {{ $labels.instance }} was built "
             "{{ $value | humanizeDuration }} ago: address allocations move, so "
             "jurisdiction attribution by registration, geolocation and ASN drifts.",
             "Geo data ages; 90 days is a quarter of churn."),
        rule("AvmonReloadRejected",
             "increase(avmon_geo_reload_errors_total[1h]) > 0\n"
             "or\nincrease(avmon_config_reload_errors_total[1h]) > 0",
             "0m", "warning",
             "avmon on {{ $labels.instance }} rejected a data or configuration reload",
             "A geo database or configuration/signature reload was rejected on "
             "{{ $labels.instance }}; the old data stays in use. avmon's log names the file "
             "and the problem.",
             "A rejected reload keeps the old data, so nothing else would show it."),
    ]),
    ("avmon-sinks", [
        rule("AvmonAlertSinkFailing",
             "sum by (job, instance, sink) (\n"
             "  increase(avmon_alert_sink_errors_total[15m])\n) > 0",
             "5m", "warning",
             "avmon alert sink {{ $labels.sink }} on {{ $labels.instance }} is failing",
             "Sink {{ $labels.sink }} failed {{ $value | humanize }} deliveries in the last "
             "15 minutes; alerts wait in its queue and spool until it recovers.",
             "A failing sink means responders do not hear about alerts."),
        rule("AvmonAlertSinkBacklog",
             "max by (job, instance, sink) (avmon_alert_sink_queue_length) > 0",
             "15m", "warning",
             "avmon alert sink {{ $labels.sink }} on {{ $labels.instance }} is not draining",
             "Sink {{ $labels.sink }} has had alerts waiting for 15 minutes (now "
             "{{ $value | humanize }}).",
             "A queue that never empties is a slow or stuck sink even without errors."),
    ]),
]


def yaml_str(s: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is a subset of YAML's)."""
    return json.dumps(s, ensure_ascii=False)


def rules_yaml() -> str:
    out = [
        "# avmon alerting rules for Prometheus (rule_files). Generated by",
        "# dashboards/generate.py; edit that file and run it again.",
        "# Check: promtool check rules dashboards/rules/avmon-alerts.yml",
        "# Test:  promtool test rules dashboards/rules/avmon-alerts.test.yml",
        "# The avmon scrape job must be named \"avmon\" (AvmonSensorDown/AvmonSensorAbsent).",
        "groups:",
    ]
    for name, rules in RULE_GROUPS:
        out += [f"  - name: {name}", "    rules:"]
        for r in rules:
            why = textwrap.wrap(r["why"], 82, break_on_hyphens=False)
            out += [f"      # {line}" for line in why]
            out += [f"      - alert: {r['alert']}", "        expr: |-"]
            out += [f"          {line}" for line in r["expr"].splitlines()]
            out += [f"        for: {r['for']}", "        labels:"]
            out += [f"          {k}: {v}" for k, v in sorted(r["labels"].items())]
            out += ["        annotations:"]
            out += [f"          {k}: {yaml_str(v)}" for k, v in sorted(r["annotations"].items())]
    return "\n".join(out) + "\n"


# --- output ---------------------------------------------------------------------------

def render(dash: dict[str, Any]) -> str:
    return json.dumps(dash, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(out: Path) -> list[Path]:
    written = []
    (out / "json").mkdir(parents=True, exist_ok=True)
    (out / "rules").mkdir(parents=True, exist_ok=True)
    for filename, build in DASHBOARDS.items():
        path = out / "json" / filename
        path.write_text(render(build()), encoding="utf-8")
        written.append(path)
    path = out / "rules" / "avmon-alerts.yml"
    path.write_text(rules_yaml(), encoding="utf-8")
    written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE,
                        help="directory to write json/ and rules/ into (default: %(default)s)")
    args = parser.parse_args(argv)
    for path in write(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
