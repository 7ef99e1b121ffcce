"""Owned processes: own process group, stopped with everything they started, failures explained."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from harness.emulation.process import OwnedProcess, pid_alive
from harness.errors import InfrastructureError, ServiceTimeout


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)  # polling /proc for a process we do not own
    return True


@pytest.mark.timeout(30)
def test_stop_ends_the_process_and_the_children_in_its_group(tmp_path: Path) -> None:
    child_pid_file = tmp_path / "child.pid"
    script = f"trap '' TERM; sleep 60 & echo $! > {child_pid_file}; wait"  # both ignore SIGTERM
    proc = OwnedProcess("shell", ["sh", "-c", script], tmp_path / "shell.log")
    proc.wait_until(lambda: child_pid_file.exists() and child_pid_file.read_text().strip() != "", 5,
                    "the child's pid file")
    child = int(child_pid_file.read_text())
    assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)  # a session of its own
    assert os.getpgid(child) == proc.pid
    proc.stop(timeout=0.5)  # SIGTERM is ignored: stop() escalates to SIGKILL
    assert not proc.alive()
    assert _wait_gone(child), "the child in the process group survived stop()"
    proc.stop()  # idempotent


@pytest.mark.timeout(30)
def test_a_process_that_dies_while_awaited_is_reported_with_its_log(tmp_path: Path) -> None:
    proc = OwnedProcess("failing", ["sh", "-c", "echo cannot bind port 53 >&2; exit 3"], tmp_path / "f.log")
    with pytest.raises(InfrastructureError, match="exited with status 3") as info:
        proc.wait_until(lambda: False, 5, "a DNS answer")
    assert "cannot bind port 53" in str(info.value.actual)
    assert info.value.evidence == tmp_path / "f.log"
    proc.stop()


@pytest.mark.timeout(30)
def test_a_wait_that_times_out_says_what_it_waited_for(tmp_path: Path) -> None:
    with OwnedProcess("sleeper", ["sleep", "30"], tmp_path / "s.log") as proc, \
            pytest.raises(ServiceTimeout, match="waiting for the moon"):
        proc.wait_until(lambda: False, 0.2, "the moon")
    assert not pid_alive(proc.pid)


@pytest.mark.timeout(30)
def test_a_missing_program_is_an_infrastructure_error_with_a_fix(tmp_path: Path) -> None:
    with pytest.raises(InfrastructureError, match="could not start") as info:
        OwnedProcess("nothing", ["/nonexistent/qemu"], tmp_path / "n.log")
    assert info.value.fix and "installed" in info.value.fix


def test_pid_alive_sees_zombies_as_dead(tmp_path: Path) -> None:
    proc = OwnedProcess("quick", ["true"], tmp_path / "q.log")
    assert proc.wait_exit(5)
    assert not pid_alive(proc.pid)  # exited but not reaped yet: a zombie
    proc.stop()
