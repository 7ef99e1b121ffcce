"""The pytest side of a certification: each test's clause, its verdict kind, its evidence, written
into the run's certificate as the test ends.

Tests declare the clause they certify::

    @pytest.mark.clause("3.1.cadence", "Heartbeat and SystemInformation every low interval")
    def test_cadence(hil_board, clause): ...

and may use the ``clause`` fixture to attach evidence (``clause.evidence(name, path)``), a timeline
(``clause.timeline``) or to report a declared defect (``clause.known_defect(name, detail)``) or
say the clause cannot apply to this board (``clause.not_applicable(reason)``).

How an outcome becomes a verdict: an :class:`~harness.errors.InfrastructureError` anywhere
(setup included) is ``infrastructure``, and so is a :class:`~harness.errors.ConfigError` or
:class:`~harness.errors.UsageError` (the lab's configuration or the run's options cannot serve the
build: never the firmware's failure); a :class:`~harness.errors.CheckFailed` or an assertion is
``failed``; :class:`KnownDefectFound` is ``known-defect``; a skip through ``not_applicable`` is
``not-applicable``. For tests using ``hil_board`` the console lines and the decoded telemetry of
the test's time are kept as evidence in the run folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.errors import ConfigError, HarnessError, InfrastructureError, UsageError
from harness.report.certificate import Certificate
from harness.report.verdict import ClauseResult, Verdict

CERTIFICATE_KEY = pytest.StashKey[Certificate]()
PROVENANCE_KEY = pytest.StashKey[dict[str, dict[str, Any]]]()  # board -> {"board": ..., "firmware": ...}
CLAUSE_PROPERTY, PROVENANCE_PROPERTY = "hil-clause", "hil-provenance"  # carried in a report's user_properties
CLAUSE_KEY = pytest.StashKey["ClauseRecord"]()
NOT_APPLICABLE = "not applicable: "


class KnownDefectFound(Exception):
    """The firmware shows a defect its manifest declares: reported as such, not as a failure."""


@dataclass
class ClauseRecord:
    """What a test collects about its clause as it runs (the ``clause`` fixture)."""

    clause: str
    title: str
    started: float = field(default_factory=time.time)
    evidence_files: dict[str, str] = field(default_factory=dict)
    timeline: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None

    def evidence(self, name: str, path: Path | str) -> None:
        self.evidence_files[name] = str(path)

    def write(self, name: str, content: str | bytes | object) -> Path:
        """Keep ``content`` (text, bytes, or anything JSON) as evidence file ``name``."""
        assert self.folder is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content)
        else:
            path.write_text(json.dumps(content, indent=2, default=str))
        self.evidence(name, path)
        return path

    def known_defect(self, name: str, detail: str) -> None:
        raise KnownDefectFound(f"{name}: {detail}")

    def not_applicable(self, reason: str) -> None:
        pytest.skip(NOT_APPLICABLE + reason)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil")
    group.addoption("--hil-certificate", dest="hil_certificate", metavar="DIR", default=None,
                    help="write junit.xml, certificate.json and certificate.html here as tests end")
    group.addoption("--hil-clause", dest="hil_clause", metavar="C", action="append", default=None,
                    help="only tests whose clause id starts with C (repeatable)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = config.getoption("hil_clause", None)
    if not wanted:
        return
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("clause")
        (keep if marker is not None and str(marker.args[0]).startswith(tuple(wanted)) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "clause(id, title): the clause of the security module's spec a test certifies")
    folder = config.getoption("hil_certificate", None)
    if folder and not hasattr(config, "workerinput"):
        cert = config.stash[CERTIFICATE_KEY] = Certificate(Path(folder), Path(folder).name)
        config.pluginmanager.register(_CertificateWriter(cert), "hil-certificate-writer")


@pytest.fixture
def clause(request: pytest.FixtureRequest) -> ClauseRecord:
    marker = request.node.get_closest_marker("clause")
    if marker is None:
        raise pytest.UsageError(f"{request.node.nodeid} uses the clause fixture without @pytest.mark.clause")
    record = ClauseRecord(str(marker.args[0]), str(marker.args[1]) if len(marker.args) > 1 else "")
    folder = request.config.getoption("hil_certificate", None)
    if folder:
        record.folder = Path(folder) / "evidence" / _slug(request.node.name)
    request.node.stash[CLAUSE_KEY] = record
    return record


def verdict_of(report: pytest.TestReport, call: pytest.CallInfo[Any] | None) -> tuple[Verdict, str]:
    """The verdict kind of a test's outcome, and its message."""
    if report.passed:
        return Verdict.PASSED, ""
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        if reason.startswith(NOT_APPLICABLE):
            return Verdict.NOT_APPLICABLE, reason.removeprefix(NOT_APPLICABLE)
        return Verdict.INFRASTRUCTURE, f"skipped: {reason}"  # a clause that could not run is not a pass
    exc = call.excinfo.value if call is not None and call.excinfo is not None else None
    text = str(exc) if exc is not None else str(report.longreprtext)
    if isinstance(exc, KnownDefectFound):
        return Verdict.KNOWN_DEFECT, text
    if isinstance(exc, InfrastructureError):
        return Verdict.INFRASTRUCTURE, text
    if isinstance(exc, ConfigError | UsageError):  # the lab's configuration or the run's options, not the firmware
        return Verdict.INFRASTRUCTURE, f"the lab or the run is not set up for this: {text}"
    if isinstance(exc, HarnessError | AssertionError):
        return Verdict.FAILED, text
    return Verdict.INFRASTRUCTURE, f"{type(exc).__name__}: {text}" if exc is not None else text


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    marker = item.get_closest_marker("clause")
    if marker is None:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        verdict, message = verdict_of(report, call)
        if verdict is Verdict.PASSED and report.when != "call":
            return
        _record(item, report, verdict, message)


def _record(item: pytest.Item, report: pytest.TestReport, verdict: Verdict, message: str) -> None:
    """The clause's result travels with the test's report (``user_properties``), so the process
    that writes the certificate (the only one, or the xdist controller) records it on
    :func:`pytest_runtest_logreport`, whichever process ran the test."""
    folder = item.config.getoption("hil_certificate", None)
    if not folder:
        return
    marker = item.get_closest_marker("clause")
    assert marker is not None
    record = item.stash.get(CLAUSE_KEY, None)
    board = _board_of(item)
    evidence = dict(record.evidence_files) if record is not None else {}
    if board is not None and record is not None and record.folder is not None:
        evidence.update(_board_evidence(board, record))
    evidence = {k: _relative(v, Path(folder)) for k, v in evidence.items()}
    result = ClauseResult(
        clause=str(marker.args[0]), title=str(marker.args[1]) if len(marker.args) > 1 else "",
        board=board.name if board is not None else "-", test=item.nodeid, verdict=verdict, message=message,
        duration=report.duration, started=record.started if record is not None else 0.0, evidence=evidence,
        timeline=record.timeline if record is not None else {})
    if board is not None and board.name in item.config.stash.get(PROVENANCE_KEY, {}):
        report.user_properties.append((PROVENANCE_PROPERTY, item.config.stash[PROVENANCE_KEY][board.name]))
    report.user_properties.append((CLAUSE_PROPERTY, result.to_json()))


class _CertificateWriter:
    """In the process that writes the certificate: each clause's result as its report arrives."""

    def __init__(self, cert: Certificate) -> None:
        self.cert = cert

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if name == PROVENANCE_PROPERTY:
                self.cert.provenance[value["board"]["board"]] = value["board"]
                self.cert.firmware.update(value["firmware"])
            elif name == CLAUSE_PROPERTY:
                self.cert.add(ClauseResult.from_json(value))


def _board_of(item: pytest.Item) -> Any:
    funcargs = getattr(item, "funcargs", {})
    return funcargs.get("hil_board")


def _board_evidence(board: Any, record: ClauseRecord) -> dict[str, str]:
    """The console lines and the decoded telemetry of the test's time, kept in its folder."""
    out = {}
    try:
        if board._console is not None:
            out["console"] = str(record.write("console.txt", board.console.text[-20000:]))
        if board.telemetry is not None:
            out["telemetry"] = str(record.write("telemetry.json", [e.to_json() for e in board.telemetry.events()]))
        capture = board.parts.link_capture()
        if capture is not None:
            out["capture"] = str(capture)
    except Exception as exc:  # evidence is best effort: a broken board must not hide the verdict
        out["evidence-error"] = str(record.write("evidence-error.txt", repr(exc)))
    return out


def _relative(path: str, folder: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(Path(path).resolve())


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)[:120]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The run ended: complete when every selected test ran (passed or not), not when it was
    interrupted (Ctrl-C, SIGTERM) or stopped on an internal error."""
    cert = session.config.stash.get(CERTIFICATE_KEY, None)
    if cert is not None:
        cert.finish(complete=exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED))
