"""Every row of every table in ``tables/``: the CLI ends with the row's clear error or refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.badinput.case import Case
from tests.badinput.runner import run_case
from tests.badinput.tables import all_cases
from tests.badinput.tally import PROPERTY


def _param(case: Case) -> object:
    marks = [pytest.mark.xfail(reason=case.xfail, strict=True)] if case.xfail else []
    return pytest.param(case, id=f"{case.surface}:{case.name}", marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in all_cases()])
def test_bad_input(case: Case, tmp_path: Path, record_property: pytest.RecordProperty) -> None:
    result = run_case(case, tmp_path)
    record_property(PROPERTY, json.dumps({"surface": case.surface, "outcome": result.outcome(case)}))
    problem = result.problem(case)
    assert problem is None, problem
