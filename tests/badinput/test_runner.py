"""The bad-input runner catches what it promises to: a hang, memory beyond the limit, a traceback,
exit 0, a wrong exit code, an unclear or flooding message; and it leaves no child behind."""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.badinput.case import Case, error, refused, write
from tests.badinput.runner import MAX_STDERR, run_case

CASE = error("probe", ("x",), r"clear words", timeout=2.0)


def says(code: int, text: str) -> object:
    def entry(argv: list[str]) -> int:
        print(text, file=sys.stderr)
        return code

    return entry


def hangs(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # even Ctrl-C cannot stop it: the group is killed
    while True:
        time.sleep(1)


def allocates(argv: list[str]) -> int:
    hoard = [bytes(64 << 20) for _ in range(64)]  # 4 GiB (mapped, not touched): past the limit
    return len(hoard)


def raises(argv: list[str]) -> int:
    raise ValueError("not a HarnessError")


@pytest.mark.parametrize(
    ("entry", "outcome"),
    [
        (says(2, "hil: error: clear words"), "clear error"),
        (says(0, ""), "accepted"),
        (says(3, "hil: error: clear words"), "wrong exit"),
        (says(2, "hil: error: something else"), "unclear message"),
        (says(2, "clear words " * (MAX_STDERR // 10)), "flood"),
        (raises, "traceback"),
        (hangs, "hang"),
        (allocates, "memory"),
    ],
    ids=["clear", "accepted", "wrong-exit", "unclear", "flood", "traceback", "hang", "memory"],
)
def test_outcomes(tmp_path: Path, entry: object, outcome: str) -> None:
    case = CASE if outcome == "hang" else replace(CASE, timeout=60.0)  # a busy machine is slow, not hung
    result = run_case(case, tmp_path, entry)  # type: ignore[arg-type]
    assert result.outcome(case) == outcome, result
    assert (result.problem(case) is None) == (outcome == "clear error")


def test_a_refusal_is_counted_as_one(tmp_path: Path) -> None:
    case = refused("r", ("x",), r"clear words")
    assert run_case(case, tmp_path, says(2, "clear words")).outcome(case) == "refused"  # type: ignore[arg-type]


def test_the_child_gets_its_folder_environment_and_stdin(tmp_path: Path) -> None:
    def entry(argv: list[str]) -> int:
        data = sys.stdin.buffer.read()
        print(f"{Path('f').read_text()} {os.environ.get('HIL_LAB')} {os.environ.get('HIL_STATE')} {data!r} {argv}",
              file=sys.stderr)
        return 2

    os.environ["HIL_STATE"] = "from-the-parent"
    try:
        case = Case("env", ("a", "b"), "error", 2, r"here lab None b'in' \['a', 'b'\]", (write("f", "here"),),
                    env={"HIL_LAB": "lab"}, stdin=b"in")
        result = run_case(case, tmp_path, entry)  # type: ignore[arg-type]
    finally:
        del os.environ["HIL_STATE"]
    assert result.outcome(case) == "clear error", result.stderr


def test_a_hung_child_and_its_group_are_gone(tmp_path: Path) -> None:
    marker = tmp_path / "grandchild.pid"

    def entry(argv: list[str]) -> int:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            while True:
                time.sleep(1)
        marker.write_text(str(pid))
        return hangs(argv)

    assert run_case(CASE, tmp_path, entry).outcome(CASE) == "hang"  # type: ignore[arg-type]
    grandchild = int(marker.read_text())
    try:
        pidfd = os.pidfd_open(grandchild)
    except ProcessLookupError:
        return  # gone (and reaped) already
    try:  # killed with its group: it ends at once (as a zombie until its new parent reaps it)
        assert select.select([pidfd], [], [], 10.0)[0], f"process {grandchild} of the hung case still runs"
    finally:
        os.close(pidfd)
