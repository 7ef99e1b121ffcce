"""The bad-input suite's closing note: after the run, the count of cases by surface and outcome.

Its hooks are installed by ``tests/conftest.py``, which pytest loads in every process: with
pytest-xdist a folder's own conftest is loaded only by the workers that collect it, never by the
controller that prints the summary."""

from __future__ import annotations

import json

import pytest

from tests.badinput import summary

PROPERTY = "badinput"
_seen: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # user properties travel with the report, so this also counts cases run by xdist workers
    if report.when != "call":
        return
    for name, value in report.user_properties:
        if name == PROPERTY:
            row = json.loads(str(value))
            _seen.append((row["surface"], row["outcome"]))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _seen:
        terminalreporter.write_sep("=", f"bad-input suite: {len(_seen)} case(s) by surface and outcome")
        terminalreporter.write_line(summary.table(_seen))
