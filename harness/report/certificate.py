"""The certificate: the verdict per clause and board, with evidence links and a timeline per
clause, as ``certificate.json`` and ``certificate.html``, rewritten (atomically) after every clause
so that a run killed halfway leaves valid files covering what finished (``complete`` says whether
the run ended)."""

from __future__ import annotations

import datetime as _dt
import html
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.report.files import write_atomically
from harness.report.junit import write_junit
from harness.report.page import key_rows, page
from harness.report.timeline import timeline_svg
from harness.report.verdict import ClauseResult, Verdict, overall

JSON_NAME, HTML_NAME, JUNIT_NAME = "certificate.json", "certificate.html", "junit.xml"
COLOURS = {Verdict.PASSED: "#2e7d32", Verdict.FAILED: "#c62828", Verdict.INFRASTRUCTURE: "#6a1b9a",
           Verdict.KNOWN_DEFECT: "#ef6c00", Verdict.NOT_APPLICABLE: "#607d8b"}


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


@dataclass
class Certificate:
    """The reports of one run in ``folder``; :meth:`add` a clause's result as it finishes."""

    folder: Path
    run_id: str
    firmware: dict[str, str] = field(default_factory=dict)
    provenance: dict[str, dict[str, str]] = field(default_factory=dict)  # board -> what was certified how
    results: list[ClauseResult] = field(default_factory=list)
    started: str = field(default_factory=_now)
    complete: bool = False

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "timelines").mkdir(exist_ok=True)

    def add(self, result: ClauseResult) -> None:
        if result.timeline:
            svg = timeline_svg(self.folder / "timelines" / f"{_slug(result.board, result.clause)}.svg",
                               f"{result.clause} on {result.board}", result.timeline)
            if svg is not None:
                result.evidence.setdefault("timeline", str(svg.relative_to(self.folder)))
        self.results.append(result)
        self.write()

    def finish(self, complete: bool = True) -> Verdict:
        self.complete = complete
        self.write()
        return overall(self.results)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "started": self.started, "updated": _now(), "complete": self.complete,
            "verdict": overall(self.results).value if self.results else None,
            "firmware": self.firmware, "provenance": self.provenance,
            "clauses": [r.to_json() for r in self.results],
        }

    def write(self) -> None:
        write_atomically(self.folder / JSON_NAME, json.dumps(self.to_json(), indent=2))
        write_junit(self.folder / JUNIT_NAME, self.results, self.provenance)
        write_atomically(self.folder / HTML_NAME, self.html())

    def html(self) -> str:
        e = html.escape
        verdict = overall(self.results) if self.results else None
        rows = []
        for r in self.results:
            links = " ".join(f'<a href="{e(v)}">{e(k)}</a>' for k, v in sorted(r.evidence.items()))
            plot = (f'<img class="timeline" src="{e(r.evidence["timeline"])}" alt="timeline of {e(r.clause)}">'
                    if "timeline" in r.evidence else "")
            rows.append(
                f'<tr data-board="{e(r.board)}" data-clause="{e(r.clause)}" data-verdict="{r.verdict.value}">'
                f"<td>{e(r.board)}</td><td>{e(r.clause)}</td><td>{e(r.title)}</td>"
                f'<td class="verdict" style="color:{COLOURS[r.verdict]}">{r.verdict.value}</td>'
                f"<td>{r.duration:.1f} s</td><td><pre>{e(r.message[:2000])}</pre>{plot}</td><td>{links}</td></tr>")
        prov = "".join(f"<h3>{e(board)}</h3><table>" + key_rows(sorted(items.items())) + "</table>"
                       for board, items in sorted(self.provenance.items()))
        state = "complete" if self.complete else "in progress (or stopped before the end)"
        headline = verdict.value if verdict else "no clause finished"
        return page(f"Certificate {self.run_id}", f"""<h1>Certificate {e(self.run_id)}</h1>
<p id="verdict" data-verdict="{e(headline)}">Verdict: <b>{e(headline)}</b> — {e(state)}; started {e(self.started)}</p>
<h2>Firmware</h2><table>{key_rows(sorted(self.firmware.items()))}
</table>
<h2>Clauses</h2>
<table id="clauses"><thead><tr><th>board</th><th>clause</th><th>what</th><th>verdict</th><th>time</th>
<th>detail</th><th>evidence</th></tr></thead><tbody>
{"".join(rows)}
</tbody></table>
<h2>Provenance</h2>{prov}""")


def _slug(*parts: str) -> str:
    return "-".join("".join(c if c.isalnum() or c in "._-" else "_" for c in p) for p in parts)


def read_certificate(folder: Path) -> Mapping[str, Any]:
    return json.loads((folder / JSON_NAME).read_text())
