"""The reproduction report: ``reproduction.json`` and ``reproduction.html`` (the certificate's look),
with a timeline per side, matches and differences side by side, and how the windows were aligned."""

from __future__ import annotations

import datetime as _dt
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.report.files import write_atomically
from harness.report.page import key_rows, page
from harness.report.timeline import timeline_svg

JSON_NAME, HTML_NAME = "reproduction.json", "reproduction.html"
COLOURS = {"reproduced": "#2e7d32", "differs": "#c62828", "match": "#2e7d32", "incomplete": "#6a1b9a",
           "infrastructure": "#6a1b9a", "error": "#6a1b9a"}


def _timeline(windows: Sequence[Mapping[str, Any]], gaps: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"arrivals": [[w["at"], k] for w in windows for k in w["kinds"]],
            "outages": [[g["after"], g["after"] + g["length"]] for g in gaps]}


def write_reproduction(folder: Path, data: dict[str, Any]) -> Path:
    """Write the JSON and HTML (and the timelines) into ``folder``; return the HTML's path.
    ``data``: what :func:`harness.bundle.run` gathered, as JSON (``comparison`` may be missing when
    the run ended before there was anything to compare)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {**data, "written": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    comparison = data.get("comparison")
    timelines: dict[str, str] = {}
    if comparison:
        for side in ("bundle", "bench"):
            svg = timeline_svg(folder / f"timeline-{side}.svg", f"{side}: arrivals by kind, gaps shaded",
                               _timeline(comparison["windows"][side], comparison["gaps"][side]),
                               xlabel=f"seconds since the {side}'s first security message")
            if svg is not None:
                timelines[side] = svg.name
    data["timelines"] = timelines
    write_atomically(folder / JSON_NAME, json.dumps(data, indent=2, default=str))
    return write_atomically(folder / HTML_NAME, _html(data))


def _word(same: bool) -> str:
    return "match" if same else "differs"


def _io(values: Sequence[int] | None) -> str:
    return "absent" if values is None else f"in {values[0]} / out {values[1]}"


def _html(data: Mapping[str, Any]) -> str:
    e = html.escape
    verdict = data.get("verdict", "incomplete")
    comparison = data.get("comparison") or {}
    groups = []
    for g in comparison.get("groups", []):
        flows = "".join(
            f'<tr class="{"match" if r["same"] else "differs"}"><td>{e(r["flow"])}</td>'
            f'<td>{e(_io(r["bundle"]))}</td><td>{e(_io(r["bench"]))}</td>'
            f'<td style="color:{COLOURS[_word(r["same"])]}">{"same" if r["same"] else "differs"}</td>'
            f"</tr>" for r in g["flows"])
        groups.append(
            f'<tr data-verdict="{e(g["verdict"])}"><td>{e(", ".join(map(str, g["bundle_windows"])) or "-")}</td>'
            f'<td>{e(", ".join(map(str, g["bench_windows"])) or "-")}</td>'
            f'<td class="verdict" style="color:{COLOURS[g["verdict"]]}">{e(g["verdict"])}</td>'
            f'<td>{e(g["how"])}</td><td><table><tr><th>flow</th><th>bundle</th><th>bench</th><th></th></tr>'
            f"{flows}</table></td></tr>")
    totals = "".join(f'<tr><td>{e(r["flow"])}</td><td>{e(_io(r["bundle"]))}</td><td>{e(_io(r["bench"]))}</td>'
                     f'<td>{"same" if r["same"] else "differs"}</td></tr>' for r in comparison.get("totals", []))
    events = comparison.get("events", {})
    cadence = "".join(f'<tr><td>{e(c["kind"])}</td><td>{c["bundle_s"]:g} s</td><td>{c["bench_s"]:g} s</td>'
                      f'<td>{"same" if c["same"] else "differs"}</td></tr>' for c in comparison.get("cadence", []))
    gaps = comparison.get("gaps", {})
    background = "".join(f'<tr><td>{e(b["flow"])}</td><td>{b["bundle_windows"]}</td><td>{b["bench_windows"]}</td></tr>'
                         for b in comparison.get("background", []))
    diffs = "".join(f"<li>{e(d)}</li>" for d in comparison.get("differences", []))
    notes = "".join(f"<li>{e(n)}</li>" for n in data.get("notes", []))
    plots = "".join(f'<h3>{e(side)}</h3><img class="timeline" src="{e(name)}" alt="timeline of the {e(side)}">'
                    for side, name in data.get("timelines", {}).items())
    evidence = "".join(f'<li><a href="{e(v)}">{e(k)}</a></li>' for k, v in sorted(data.get("evidence", {}).items()))
    return page(f"Reproduction {data.get('bundle', {}).get('path', '')}", f"""<h1>Reproduction of a field bundle</h1>
<p id="verdict" data-verdict="{e(verdict)}">Verdict: <b style="color:{COLOURS.get(verdict, '#000')}">{e(verdict)}</b>
 — {e("complete" if data.get("complete") else "stopped before the end")}</p>
<ul id="differences">{diffs or "<li>none</li>"}</ul>
{f'<pre id="error">{e(data["error"])}</pre>' if data.get("error") else ""}
<h2>Bundle and bench</h2><table>{key_rows((k, v) for k, v in data.get("bundle", {}).items() if k != "notes")}</table>
<p>Bundle notes: {e(str(data.get("bundle", {}).get("notes") or "-"))}</p>
<table>{key_rows(data.get("bench", {}).items())}</table>
<ul>{notes}</ul>
<h2>Replayed traffic, window by window</h2>
<table id="groups"><thead><tr><th>bundle windows</th><th>bench windows</th><th>verdict</th><th>alignment</th>
<th>flows side by side (bytes in / out)</th></tr></thead><tbody>
{"".join(groups)}
</tbody></table>
<h2>Replayed traffic over the whole run</h2>
<table id="totals"><tr><th>flow</th><th>bundle</th><th>bench</th><th></th></tr>{totals}</table>
<h2>Events and intervals</h2>
<table id="events"><tr><th>bundle</th><td>{e(str(events.get("bundle", [])))}</td></tr>
<tr><th>bench</th><td>{e(str(events.get("bench", [])))}</td></tr></table>
<table id="cadence"><tr><th>kind</th><th>bundle every</th><th>bench every</th><th></th></tr>{cadence}</table>
<h2>Gaps (PENDING, SUSPENDED)</h2>
<table id="gaps"><tr><th>bundle</th><td>{e(str(gaps.get("bundle", [])))}</td></tr>
<tr><th>bench</th><td>{e(str(gaps.get("bench", [])))}</td></tr></table>
<h2>Timelines</h2>{plots}
<h2>Background (listed, not judged)</h2>
<table id="background"><tr><th>flow</th><th>bundle windows</th><th>bench windows</th></tr>{background}</table>
<h2>How the windows were aligned</h2><pre>{e(comparison.get("method", ""))}</pre>
<h2>Evidence</h2><ul>{evidence}</ul>""")
