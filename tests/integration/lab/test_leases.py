"""Leases with real processes: exclusive under contention, freed at once when a holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.lease import BoardBusy, BoardQuarantined, Lease, clear_quarantine, live_holder, quarantine
from harness.state import StateDir

WORKER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from harness.lease import Lease
    from harness.state import StateDir
    state, rounds, marker = StateDir(Path(sys.argv[1])), int(sys.argv[2]), sys.argv[3]
    overlaps = 0
    lease = Lease(state, "board-x", run_id=f"w{os.getpid()}")
    for _ in range(rounds):
        lease.acquire(timeout=60)
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            overlaps += 1
        else:
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os.unlink(marker)
        lease.release()
    print(overlaps)
    """
)


@pytest.mark.timeout(180)
def test_four_processes_never_hold_one_board_at_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    marker = tmp_path / "inside"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(state), "250", str(marker)],
            stdout=subprocess.PIPE, text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=170)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    overlaps = [int(r.strip()) for r in results]
    print(f"1,000 acquisitions by 4 processes, overlaps per process: {overlaps}")
    assert overlaps == [0, 0, 0, 0]
    assert live_holder(StateDir(state), "board-x") is None


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from harness.lease import Lease
    from harness.state import StateDir
    lease = Lease(StateDir(Path(sys.argv[1])), "board-k", run_id="victim").acquire()
    print("held", flush=True)
    sys.stdin.read()  # hold until killed
    """
)


@pytest.mark.timeout(60)
def test_sigkilled_holder_frees_the_board_at_once(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(state.root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        holder = live_holder(state, "board-k")
        assert holder is not None and holder.pid == proc.pid and holder.run_id == "victim"
        with pytest.raises(BoardBusy, match=f"pid {proc.pid}"):
            Lease(state, "board-k", run_id="me").acquire(timeout=0)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert live_holder(state, "board-k") is None  # the stale record is not shown
        with Lease(state, "board-k", run_id="me").acquire(timeout=0) as lease:
            assert lease.held
            mine = live_holder(state, "board-k")
            assert mine is not None and mine.pid == os.getpid()
        assert live_holder(state, "board-k") is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_quarantine_blocks_until_cleared(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    quarantine(state, "board-q", "flash verify failed 3 times", run_id="r1")
    with pytest.raises(BoardQuarantined) as info:
        Lease(state, "board-q", run_id="me").acquire()
    assert "flash verify failed" in str(info.value) and "hil boards --clear board-q" in str(info.value)
    assert clear_quarantine(state, "board-q") is True
    assert clear_quarantine(state, "board-q") is False
    with Lease(state, "board-q", run_id="me").acquire():
        pass
