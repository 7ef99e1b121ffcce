"""The certificate and the JUnit file: every verdict kind kept apart, files valid after every clause."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.report.certificate import Certificate
from harness.report.verdict import EXIT_CODES, ClauseResult, Verdict, overall


def result(clause: str, verdict: Verdict, board: str = "b1", **kw: object) -> ClauseResult:
    return ClauseResult(clause=clause, title=f"title {clause}", board=board, test=f"t::{clause}", verdict=verdict,
                        message=kw.pop("message", f"because {clause}"), duration=1.5, **kw)  # type: ignore[arg-type]


def test_each_verdict_kind_has_its_own_junit_shape(tmp_path: Path) -> None:
    cert = Certificate(tmp_path, "run-1", provenance={"b1": {"firmware_sha256": "ab" * 32, "probe": "emu:b1"}})
    for clause, verdict in (("1.transport", Verdict.PASSED), ("3.1.cadence", Verdict.FAILED),
                            ("3.3.outage", Verdict.INFRASTRUCTURE), ("3.4.leak", Verdict.KNOWN_DEFECT),
                            ("3.2.icmp", Verdict.NOT_APPLICABLE)):
        cert.add(result(clause, verdict))
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    cases = {c.get("name", "").split()[0]: c for c in suite.iter("testcase")}
    assert list(cases["1.transport"]) == [] or cases["1.transport"].find("failure") is None
    assert cases["3.1.cadence"].find("failure").get("type") == "firmware"  # type: ignore[union-attr]
    assert cases["3.3.outage"].find("error").get("type") == "infrastructure"  # type: ignore[union-attr]
    assert cases["3.3.outage"].find("failure") is None  # never a firmware failure
    assert "known-defect" in cases["3.4.leak"].find("skipped").get("message")  # type: ignore[union-attr,operator]
    assert "not-applicable" in cases["3.2.icmp"].find("skipped").get("message")  # type: ignore[union-attr,operator]
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["firmware_sha256"] == "ab" * 32 and "failed=1" in props["verdicts"]


def test_files_are_valid_after_every_clause_and_say_whether_the_run_ended(tmp_path: Path) -> None:
    cert = Certificate(tmp_path, "run-2")
    cert.add(result("1.transport", Verdict.PASSED))
    data = json.loads((tmp_path / "certificate.json").read_text())
    assert data["complete"] is False and data["verdict"] == "passed" and len(data["clauses"]) == 1
    ET.parse(tmp_path / "junit.xml")  # valid XML at every step
    assert 'data-verdict="passed"' in (tmp_path / "certificate.html").read_text()
    cert.add(result("3.1.cadence", Verdict.FAILED))
    assert cert.finish() is Verdict.FAILED
    data = json.loads((tmp_path / "certificate.json").read_text())
    assert data["complete"] is True and data["verdict"] == "failed"


def test_overall_verdict_and_exit_codes() -> None:
    assert overall([result("a", Verdict.PASSED), result("b", Verdict.KNOWN_DEFECT)]) is Verdict.KNOWN_DEFECT
    assert overall([result("a", Verdict.FAILED), result("b", Verdict.INFRASTRUCTURE)]) is Verdict.INFRASTRUCTURE
    assert overall([]) is Verdict.INFRASTRUCTURE  # nothing certified is not a pass
    assert EXIT_CODES[Verdict.KNOWN_DEFECT] == 0 and EXIT_CODES[Verdict.INFRASTRUCTURE] == 3


def test_a_clause_with_a_timeline_gets_its_plot(tmp_path: Path) -> None:
    cert = Certificate(tmp_path, "run-3")
    cert.add(result("3.1.cadence", Verdict.PASSED, timeline={
        "arrivals": [[1.0, "HEARTBEAT"], [7.1, "HEARTBEAT"]], "due": [[1.0, "HEARTBEAT"], [7.0, "HEARTBEAT"]],
        "outages": [[3.0, 5.0]]}))
    svg = tmp_path / cert.results[0].evidence["timeline"]
    assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()
    assert 'class="timeline"' in (tmp_path / "certificate.html").read_text()
