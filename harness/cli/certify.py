"""`hil certify`: certify a firmware build on one or more boards with the shipped certification
suite; the reports (junit.xml, certificate.json, certificate.html, evidence) are what is handed over.

With no arguments: board ``qemu-an385`` and the reference firmware (fast preset, built first).
Exit 0 certified (known defects the manifest declares included, reported as such), 1 a clause
failed (the firmware), 2 a usage or configuration error, 3 an infrastructure error (the harness
or the lab: a broker, a machine, a probe, a network — never reported as the firmware's failure).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console as Terminal
from rich.markup import escape

from harness.cli import output_folder
from harness.cli._board import lab_for, resolve_build
from harness.errors import ConfigError, UsageError
from harness.pytest_plugin import pending_waits
from harness.report.certificate import JSON_NAME, read_certificate
from harness.report.verdict import EXIT_CODES, Verdict, overall

DEFAULT_BOARD = "qemu-an385"
SUITE = Path(__file__).resolve().parents[1] / "suites" / "certification"
COLOURS = {"passed": "green", "failed": "red", "infrastructure": "magenta", "known-defect": "yellow",
           "not-applicable": "dim"}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("certify", help="certify a firmware build on boards with the certification suite")
    p.add_argument("--board", action="append", metavar="NAME",
                   help=f"a board of the lab (repeatable; default {DEFAULT_BOARD})")
    p.add_argument("--firmware", metavar="BUILD",
                   help="a build folder (default for an emulated board: the reference firmware, fast preset)")
    p.add_argument("--report-dir", metavar="DIR", type=output_folder("report folder"),
                   help="where the reports and the run's evidence go (default: <state>/runs/<run id>)")
    p.add_argument("--clause", action="append", metavar="C",
                   help="only clauses whose id starts with C (repeatable), e.g. 3.2 or 1.topic")
    p.add_argument("--last-failed", action="store_true",
                   help="only the clauses that did not pass in the report folder's last certificate")
    p.set_defaults(func=run)


class _Live:
    """The terminal's view of the run: a status line with what runs now on each board (clause,
    time in it), the event it awaits and how long it may still take (where the boards run in this
    process), and the time in the run; then each clause's verdict as it ends."""

    def __init__(self, terminal: Terminal) -> None:
        self.terminal = terminal
        self.t0 = time.monotonic()
        self.status = terminal.status("starting", spinner="dots")
        self.running: dict[str, float] = {}  # node id -> when it started
        self.config: pytest.Config | None = None
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="hil-certify-status", daemon=True)

    def pytest_configure(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_sessionstart(self) -> None:
        self.status.start()
        self._ticker.start()

    def pytest_sessionfinish(self) -> None:
        self._stop.set()
        self.status.stop()

    def _tick(self) -> None:
        while not self._stop.wait(0.5):  # the time in the clause and the time left on the awaited event
            self._show()

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:  # the suite itself could not be loaded: say why (no terminal plugin runs)
            self.terminal.print(f"[magenta]cannot collect {escape(report.nodeid)}[/]\n{escape(report.longreprtext)}")

    def _show(self) -> None:
        now = time.monotonic()
        doing = ", ".join(f"{escape(_name(n))} {now - t:.0f} s" for n, t in list(self.running.items())) \
            or "between clauses"
        waits = pending_waits(self.config) if self.config is not None else []
        due = "; ".join(f"awaiting {escape(what[:60])} from {escape(device)}, at most {left:.0f} s more"
                        for device, what, left in waits[:2])
        self.status.update(f"{doing}{' — ' + due if due else ''} [dim](run {now - self.t0:.0f} s)[/]")

    def pytest_runtest_logstart(self, nodeid: str, location: object) -> None:
        self.running[nodeid] = time.monotonic()
        self._show()

    def pytest_runtest_logfinish(self, nodeid: str, location: object) -> None:
        self.running.pop(nodeid, None)
        self._show()

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or (report.when == "setup" and not report.passed):
            verdict = "passed" if report.passed else ("not-applicable" if report.skipped else "failed")
            self.terminal.print(f"[{COLOURS.get(verdict, 'white')}]{verdict:>14}[/] {escape(_name(report.nodeid))} "
                                f"[dim]{report.duration:5.1f} s, {time.monotonic() - self.t0:5.0f} s in[/]")


def _name(nodeid: str) -> str:
    """``test_cadence`` or, on one board of several, ``test_cadence[qemu-an385]``."""
    return nodeid.split("::")[-1]


def _last_failed(folder: Path) -> list[str]:
    if not (folder / JSON_NAME).exists():
        raise UsageError(f"--last-failed: no certificate in {folder}", fix="give the report folder of an earlier run")
    try:
        data = read_certificate(folder)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{folder / JSON_NAME}: cannot read the last certificate ({exc})") from None
    settled = ("passed", "not-applicable")
    return sorted({c["clause"] for c in data.get("clauses", []) if c.get("verdict") not in settled})


def run(args: argparse.Namespace) -> int:
    boards = list(dict.fromkeys(args.board or [DEFAULT_BOARD]))  # a board named twice is certified once
    lab = lab_for(args, *boards)
    builds = {name: resolve_build(args.firmware, lab.board(name), "--firmware BUILD") for name in boards}
    report = Path(args.report_dir).resolve() if args.report_dir else lab.state.new_run_dir()
    report.mkdir(parents=True, exist_ok=True)
    clauses = list(args.clause or [])
    if args.last_failed:
        clauses += _last_failed(report)
        if not clauses:
            print(f"nothing to run again: every clause of the last certificate in {report} passed", file=sys.stderr)
            return 0
        for name in (JSON_NAME, "junit.xml", "certificate.html"):  # the new run's reports replace them
            (report / name).unlink(missing_ok=True)
    terminal = Terminal(stderr=True)
    what = "; ".join(f"{b.manifest.name} {b.manifest.version} on {name}" for name, b in builds.items())
    terminal.print(f"certifying {what}; reports in {report}")
    for name, build in builds.items():
        for why in build.manifest.build.bench_only():  # certified all the same: the bench needs such images
            terminal.print(f"[yellow]warning[/]: {escape(str(build.folder))} (on {escape(name)}) is a bench image, "
                           f"not for release: it {escape(why)}; the certificate says so")
    argv = [str(SUITE), "-p", "harness.report.plugin", "--hil-certificate", str(report), "--report-dir",
            str(report), "--lab", str(lab.root), "-p", "no:cacheprovider",
            "--rootdir", str(SUITE), "-c", os.devnull, "-p", "no:terminal", "-p", "no:randomly",
            "--import-mode=importlib",
            *(f"--hil-board={b}" for b in boards), *(f"--hil-clause={c}" for c in clauses),
            *(f"--hil-firmware={name}={b.folder}" for name, b in builds.items()),
            *(("-n", str(len(boards)), "--hil-board-per-worker") if len(boards) > 1 else ("-p", "no:xdist"))]
    code = pytest.main(argv, plugins=[_Live(terminal)])
    return _outcome(report, int(code), terminal)


def _outcome(report: Path, code: int, terminal: Terminal) -> int:
    try:
        data: dict[str, Any] = json.loads((report / JSON_NAME).read_text())
    except (OSError, ValueError):
        terminal.print(f"[magenta]no certificate was written (pytest exit {code})[/]")
        return 3 if code not in (pytest.ExitCode.USAGE_ERROR,) else 2
    verdicts = [Verdict(c["verdict"]) for c in data.get("clauses", [])]
    if not data.get("complete"):
        terminal.print(f"[magenta]interrupted[/]: the certificate covers the {len(verdicts)} clause(s) that finished; "
                       f"{report / 'certificate.html'}")
        return 130
    if not verdicts:
        terminal.print("[magenta]no clause ran[/]")
        return 3
    from harness.report.verdict import ClauseResult

    result = overall([ClauseResult.from_json(c) for c in data["clauses"]])
    counts = ", ".join(f"{v.value} {verdicts.count(v)}" for v in Verdict if verdicts.count(v))
    terminal.print(f"[{COLOURS[result.value]}]{result.value}[/]: {counts}; {report / 'certificate.html'}")
    return EXIT_CODES[result]
