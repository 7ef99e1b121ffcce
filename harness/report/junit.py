"""JUnit XML with junit-xml: one test suite per board, provenance as properties, a test case per
clause. ``failed`` is a failure, ``infrastructure`` an error (never a failure), ``known-defect`` and
``not-applicable`` are skipped with their kind as the type and the reason as the message."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from junit_xml import TestCase, TestSuite, to_xml_report_string

from harness.report.files import write_atomically
from harness.report.verdict import ClauseResult, Verdict


def junit_text(results: Sequence[ClauseResult], provenance: Mapping[str, Mapping[str, str]]) -> str:
    suites = []
    for board in sorted({r.board for r in results} | set(provenance)):
        cases = []
        for r in (r for r in results if r.board == board):
            case = TestCase(name=f"{r.clause} {r.title}", classname=f"certification.{board}", elapsed_sec=r.duration,
                            stdout="\n".join(f"evidence {k}: {v}" for k, v in r.evidence.items()) or None,
                            file=r.test)
            if r.verdict is Verdict.FAILED:
                case.add_failure_info(message=r.message.splitlines()[0] if r.message else "failed", output=r.message,
                                      failure_type="firmware")
            elif r.verdict is Verdict.INFRASTRUCTURE:
                case.add_error_info(message=r.message.splitlines()[0] if r.message else "infrastructure error",
                                    output=r.message, error_type="infrastructure")
            elif r.verdict in (Verdict.KNOWN_DEFECT, Verdict.NOT_APPLICABLE):
                case.add_skipped_info(message=f"{r.verdict.value}: {r.message}", output=r.message)
            cases.append(case)
        props = dict(provenance.get(board, {}))
        verdicts = [r.verdict for r in results if r.board == board]
        props["verdicts"] = ", ".join(f"{v.value}={verdicts.count(v)}" for v in Verdict if verdicts.count(v))
        suites.append(TestSuite(f"certification {board}", cases, properties=props))
    return to_xml_report_string(suites, prettyprint=True)


def write_junit(path: Path, results: Sequence[ClauseResult], provenance: Mapping[str, Mapping[str, str]]) -> Path:
    return write_atomically(path, junit_text(results, provenance))
