"""Damaged and unusable archives for `hil telemetry show`: the rows of the archive's own table
(tests/e2e/test_archive_inputs.py) whose input is bad (exit 1 or 2), run as bad-input cases. Rows
that show a readable archive (a torn last record, an unclosed one: exit 0) are not bad input and
stay in that table only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.badinput.case import Case, error
from tests.e2e.test_archive_inputs import CASES as ARCHIVE_CASES
from tests.e2e.test_archive_inputs import Case as ArchiveCase

SURFACE = "archive-damage"
SPECIAL_PATHS = {"/dev/zero": "/dev/zero"}


def _setup(case: ArchiveCase) -> Callable[[Path], None]:
    def step(root: Path) -> None:
        target = root / "t.bin"
        if isinstance(case.make, bytes):
            target.write_bytes(case.make)
        else:
            case.make(target)

    return step


def _row(case: ArchiveCase) -> Case:
    argv = ("telemetry", "show", SPECIAL_PATHS.get(case.name, "t.bin"))
    name = case.name.replace(" ", "-").replace("/", "").strip("-")
    return error(name, argv, case.stderr, _setup(case), code=case.exit, unprivileged=case.as_nobody)


CASES = [_row(c) for c in ARCHIVE_CASES if c.exit != 0]
