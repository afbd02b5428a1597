"""Draw a layout preview of each dashboard: an HTML page, and a PNG through headless Chromium.

    python dashboards/render_preview.py [--html-dir DIR] [--png]

The preview places every panel where Grafana would (24-column grid, row height in grid
units) and shows its title, type, unit and queries. It draws no data: it documents the
layout, it is not a Grafana screenshot. With --png, headless Chromium (`chromium` on
PATH) renders each page to dashboards/img/<dashboard>.png.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WIDTH = 1600  # page width in CSS pixels
PAD = 16
COL = (WIDTH - 2 * PAD) / 24
ROW_H = 30  # Grafana's grid unit height
HEADER_H = 110
FOOTER_H = 40
SCOPE = re.compile(r',?\s*job=~"\$job",\s*instance=~"\$instance"')

#: Faint glyphs hinting at each panel type (no data is drawn).
GLYPHS = {
    "timeseries": '<polyline points="0,40 20,30 40,34 60,16 80,22 100,8" />',
    "stat": '<rect x="50" y="26" width="50" height="24" rx="3" />',
    "bargauge": '<rect x="0" y="4" width="90" height="10"/><rect x="0" y="20" width="60" '
                'height="10"/><rect x="0" y="36" width="35" height="10"/>',
    "piechart": '<circle cx="50" cy="25" r="22" /><circle cx="50" cy="25" r="11" />',
    "table": '<line x1="0" y1="8" x2="100" y2="8"/><line x1="0" y1="20" x2="100" y2="20"/>'
             '<line x1="0" y1="32" x2="100" y2="32"/><line x1="0" y1="44" x2="100" y2="44"/>',
}

CSS = """
body { margin: 0; background: #111217; color: #ccccdc; font: 13px 'DejaVu Sans', sans-serif; }
header { height: %(header)dpx; padding: 10px %(pad)dpx 0; box-sizing: border-box; }
h1 { margin: 0 0 8px; font-size: 20px; font-weight: normal; color: #fff; }
.vars span { display: inline-block; margin: 0 6px 4px 0; padding: 3px 8px; background: #22252b;
  border: 1px solid #2f3238; border-radius: 2px; font-size: 12px; }
.vars b { color: #6e9fff; font-weight: normal; margin-right: 6px; }
.grid { position: relative; margin: 0 %(pad)dpx; }
.panel { position: absolute; box-sizing: border-box; background: #181b1f;
  border: 1px solid #2c3235; border-radius: 2px; padding: 6px 8px; overflow: hidden; }
.panel .title { position: relative; color: #fff; font-size: 13px; white-space: nowrap;
  overflow: hidden; text-overflow: ellipsis; }
.panel .kind { position: absolute; bottom: 6px; left: 8px; font-size: 10px; color: #8e8e8e;
  text-transform: uppercase; letter-spacing: 0.05em; }
.panel pre { position: relative; margin: 6px 0 0; color: #9fb4d8;
  font: 10.5px 'DejaVu Sans Mono', monospace; white-space: pre-wrap; word-break: break-all; }
.panel .unit { position: relative; color: #73bf69; font-size: 10px; margin-top: 4px; }
.panel svg { position: absolute; right: 10px; bottom: 8px; width: 100px; height: 50px;
  fill: none; stroke: #3d71d9; stroke-width: 2; opacity: 0.3; }
.panel.stat svg, .panel.bargauge svg { fill: #3d71d9; stroke: none; }
.row { position: absolute; color: #fff; font-size: 15px; border-bottom: 1px solid #2c3235;
  box-sizing: border-box; padding-top: 4px; }
footer { position: absolute; left: %(pad)dpx; right: %(pad)dpx; font-size: 11px;
  color: #8e8e8e; }
"""


def variable_chip(v: dict[str, Any]) -> str:
    if v["type"] == "datasource":
        value = "Prometheus"
    elif v["type"] == "custom":
        value = " + ".join(v["current"]["value"])
    else:
        value = f"All ({v['definition']})" if v.get("includeAll") else v["definition"]
    return (f"<span><b>{html.escape(v.get('label') or v['name'])}</b>"
            f"{html.escape(value)}</span>")


def panel_html(p: dict[str, Any]) -> str:
    g = p["gridPos"]
    left, top = g["x"] * COL, g["y"] * ROW_H
    width, height = g["w"] * COL - 6, g["h"] * ROW_H - 6
    box = f"left:{left:.0f}px;top:{top}px;width:{width:.0f}px;height:{height}px"
    if p["type"] == "row":
        return f'<div class="row" style="{box}">{html.escape(p["title"])}</div>'
    queries = "\n".join(SCOPE.sub("", t["expr"]).replace("{}", "") for t in p["targets"])
    unit = p["fieldConfig"]["defaults"].get("unit", "")
    return (f'<div class="panel {p["type"]}" style="{box}">'
            f'<svg viewBox="0 0 100 50">{GLYPHS[p["type"]]}</svg>'
            f'<div class="kind">{p["type"]}</div>'
            f'<div class="title">{html.escape(p["title"])}</div>'
            f'<div class="unit">unit: {html.escape(unit)}</div>'
            f"<pre>{html.escape(queries)}</pre></div>")


def page(dash: dict[str, Any], source: str) -> tuple[str, int]:
    """The HTML page and its height in pixels."""
    grid_h = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dash["panels"]) * ROW_H
    height = HEADER_H + grid_h + FOOTER_H
    chips = "".join(variable_chip(v) for v in dash["templating"]["list"])
    chips += f'<span><b>Time</b>{html.escape(dash["time"]["from"])} to now</span>'
    body = "".join(panel_html(p) for p in dash["panels"])
    css = CSS % {"header": HEADER_H, "pad": PAD}
    text = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(dash['title'])}</title>
<style>{css}</style></head>
<body style="width:{WIDTH}px;height:{height}px">
<header><h1>{html.escape(dash['title'])}</h1><div class="vars">{chips}</div></header>
<div class="grid" style="height:{grid_h}px">{body}</div>
<footer style="top:{HEADER_H + grid_h + 12}px">Layout preview of {html.escape(source)}
drawn by dashboards/render_preview.py: panel positions, titles, types, units and queries
(job/instance matchers omitted); no data, not a Grafana screenshot.</footer>
</body></html>
"""
    return text, height


def screenshot(chromium: str, page_path: Path, png: Path, height: int) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--hide-scrollbars", "--force-device-scale-factor=1",
             f"--user-data-dir={profile}", f"--screenshot={png}",
             f"--window-size={WIDTH},{height}", page_path.as_uri()],
            check=True, capture_output=True, timeout=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html-dir", type=Path, help="where to write the HTML pages "
                        "(default: a temporary directory)")
    parser.add_argument("--png", action="store_true",
                        help="render dashboards/img/<dashboard>.png with headless Chromium")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if args.png and chromium is None:
        print("render_preview: chromium not found on PATH", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        out = args.html_dir or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        for path in sorted((HERE / "json").glob("*.json")):
            dash = json.loads(path.read_text(encoding="utf-8"))
            text, height = page(dash, f"dashboards/json/{path.name}")
            page_path = (out / path.stem).with_suffix(".html")
            page_path.write_text(text, encoding="utf-8")
            print(page_path)
            if args.png and chromium is not None:
                png = HERE / "img" / f"{path.stem}.png"
                png.parent.mkdir(exist_ok=True)
                screenshot(chromium, page_path.resolve(), png, height)
                print(png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
