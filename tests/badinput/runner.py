"""Run one case: ``harness.cli.main(argv)`` in a forked child with limits, then judge what came out.

The child is a fork of a process that has imported the CLI once, so a case costs a fork, not a
Python start-up. It gets its own process group, working folder, environment (``HIL_*`` variables
removed unless the case sets them), standard input, an address-space limit, and stdout/stderr in
files. An exception that escapes ``main`` is printed as Python would print it (a traceback) and
exits 1, as the ``hil`` script would. The parent waits on a pidfd with a deadline: a child still
running then is asked to stop with SIGINT (the CLI's own Ctrl-C path, which stops what it started),
then killed with its process group.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import logging
import os
import re
import resource
import select
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.badinput.case import Case

#: The address space a case may use beyond what the forked CLI process already has mapped.
MEMORY_BUDGET = 512 << 20
#: ... and at least this much in all (the brief's 1 GiB).
MEMORY_FLOOR = 1 << 30
#: Exit status of a child that ran out of memory under the limit.
EXIT_MEMORY = 99
GRACE = 3.0

#: More standard error than this is a flood, not a message (error rendering must be bounded).
MAX_STDERR = 16 << 10

#: What a case can end as, in the order the summary shows them.
OUTCOMES = ("clear error", "refused", "accepted", "traceback", "hang", "memory", "wrong exit", "unclear message",
            "flood")

Entry = Callable[[list[str]], int]


@dataclass(frozen=True)
class Result:
    exit_code: int | None  # None: it did not end in time
    stdout: str
    stderr: str
    seconds: float

    def outcome(self, case: Case) -> str:
        """What the case observably ended as (one of OUTCOMES)."""
        if self.exit_code is None:
            return "hang"
        if self.exit_code == EXIT_MEMORY or "MemoryError" in self.stderr:
            return "memory"
        if "Traceback (most recent call last)" in self.stderr:
            return "traceback"
        if self.exit_code == 0:
            return "accepted"
        if self.exit_code != case.code:
            return "wrong exit"
        if len(self.stderr) > MAX_STDERR:
            return "flood"
        if not re.search(case.message, self.stderr, re.IGNORECASE | re.DOTALL):
            return "unclear message"
        return "refused" if case.expect == "refused" else "clear error"

    def problem(self, case: Case) -> str | None:
        """Why the case failed, with what the CLI printed; None if it ended as the row says."""
        outcome = self.outcome(case)
        if outcome in ("clear error", "refused"):
            return None
        wanted = f"exit {case.code} and a message matching {case.message!r}"
        ran = f"hil {' '.join(case.argv)}"
        return (f"{case.surface}:{case.name}: {outcome} ({ran}: exit {self.exit_code}, "
                f"{self.seconds:.2f} s); wanted {wanted}\n--- stderr\n{self.stderr[-3000:]}"
                f"\n--- stdout\n{self.stdout[-1000:]}")


@functools.cache
def warm_up() -> None:
    """Import the CLI and every subcommand once in this process, so each fork starts warm."""
    from harness.cli import build_parser

    build_parser()


def run_case(case: Case, workdir: Path, entry: Entry | None = None) -> Result:
    """Set the case up in a fresh folder under ``workdir`` and run it (``entry``: what the child
    calls with the arguments instead of ``harness.cli.main``, to test this runner)."""
    folder = workdir / case.name
    folder.mkdir(parents=True)
    for step in case.setup:
        step(folder)
    warm_up()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as inp:
        inp.write(case.stdin)
        inp.seek(0)
        start = time.monotonic()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child never returns)
            _child(case, folder, inp.fileno(), out.fileno(), err.fileno(), entry)
        code = _wait(pid, case.timeout)
        seconds = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        return Result(code, out.read().decode(errors="replace"), err.read().decode(errors="replace"), seconds)


def _wait(pid: int, timeout: float) -> int | None:
    """The child's exit code, or None if it had to be stopped at the deadline."""
    pidfd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
        if not ready:
            _stop(pid, pidfd)
            os.waitpid(pid, 0)
            return None
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)
    finally:
        os.close(pidfd)


def _stop(pid: int, pidfd: int) -> None:
    """Ctrl-C first (the CLI stops what it started), then kill the child's process group."""
    os.kill(pid, signal.SIGINT)
    ready, _, _ = select.select([pidfd], [], [], GRACE)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    if not ready:
        os.kill(pid, signal.SIGKILL)


def _child(case: Case, folder: Path, stdin_fd: int, stdout_fd: int, stderr_fd: int, entry: Entry | None) -> None:
    code = 1
    try:
        os.setpgid(0, 0)
        os.dup2(stdin_fd, 0)
        os.dup2(stdout_fd, 1)
        os.dup2(stderr_fd, 2)
        if case.closed_stdout:
            read_end, write_end = os.pipe()
            os.close(read_end)
            os.dup2(write_end, 1)
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        os.chdir(folder)
        for name in [n for n in os.environ if n.startswith("HIL_")]:
            del os.environ[name]
        os.environ.update(case.env)
        if case.unprivileged:
            _drop_file_capabilities()
        limit = max(MEMORY_FLOOR, _address_space() + MEMORY_BUDGET)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        from harness.cli import main

        main = entry or main
        try:
            code = main(list(case.argv))
        except SystemExit as exc:  # argparse's exits
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except MemoryError:
            code = EXIT_MEMORY
            print("MemoryError: the case went past its address-space limit", file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _address_space() -> int:
    """This process's mapped address space (VmSize), in bytes."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2
_CAP_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_file_capabilities() -> None:
    """As root, give up reading and searching past permission bits (a no-op for other users)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    keep = ~((1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_DAC_READ_SEARCH)) & 0xFFFFFFFF
    data[0].effective &= keep
    data[0].permitted &= keep
    data[0].inheritable &= keep
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
