"""Processes the harness owns (QEMU, dnsmasq, chronyd): started, health-checked, always stopped.

Each process runs in its own process group (``start_new_session=True``) with its output in a log
file in the run folder. :func:`stop_all` (registered with ``atexit``) stops whatever is still
running when the interpreter exits; :func:`install_sigterm_exit` turns SIGTERM into
``SystemExit`` so ``finally`` blocks and context managers run on it as they do on Ctrl-C.
Only processes started here are ever signalled, by their own process group id.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from harness.errors import InfrastructureError, ServiceTimeout

log = logging.getLogger(__name__)

_LIVE: set[OwnedProcess] = set()
_LIVE_LOCK = threading.Lock()


class OwnedProcess:
    """One external process in its own session; use as a context manager or call :meth:`stop`."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, *,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        log.debug("starting %s: %s", name, " ".join(self.argv))
        try:
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
                cwd=cwd, start_new_session=True)
        except OSError as exc:
            self._log_file.close()
            raise InfrastructureError(f"could not start {name}", actual=str(exc),
                                      fix=f"check that {self.argv[0]!r} is installed") from exc
        with _LIVE_LOCK:
            _LIVE.add(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _exited(self) -> bool:
        """True once the process has exited; a zombie is left unreaped (WNOWAIT), so its process
        group id cannot be reused before :meth:`stop` has signalled the group."""
        if self.popen.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def alive(self) -> bool:
        return not self._exited()

    def wait_exit(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the process to exit by itself; True if it did."""
        deadline = time.monotonic() + timeout
        while not self._exited():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)  # no portable wait-with-timeout that leaves the zombie in place
        return True

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def check_alive(self) -> None:
        """Raise InfrastructureError (with the log's tail) if the process has exited."""
        if not self.alive():
            self._signal(signal.SIGKILL)  # what it left in its group, before the group id is freed
            raise InfrastructureError(
                f"{self.name} exited with status {self.popen.wait()}",
                expected=f"{self.name} running", actual=self.log_tail(), evidence=self.log_path)

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``condition`` until true; fail early if the process dies, or at the deadline."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while not condition():
            self.check_alive()
            if time.monotonic() > deadline:
                raise ServiceTimeout(f"{self.name}: timed out after {timeout:.1f}s waiting for {what}",
                                  expected=what, actual=self.log_tail(), evidence=self.log_path)
            time.sleep(delay)  # polling a file/socket the process creates: no event to wait on
            delay = min(delay * 2, 0.1)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout``; idempotent."""
        if self.popen.returncode is None:  # not reaped yet: the process group id is still ours
            if not self._exited():
                self._signal(signal.SIGTERM)
                if not self.wait_exit(timeout):
                    log.warning("%s (pid %d) ignored SIGTERM for %.1fs; killing", self.name, self.pid,
                                timeout)
                    self._signal(signal.SIGKILL)
            # children in its group (QEMU's guestfwd pipes) may outlive the leader
            self._signal(signal.SIGKILL)
            self.popen.wait(timeout)
        self._log_file.close()
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def __enter__(self) -> OwnedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"OwnedProcess({self.name!r}, pid={self.pid})"


def stop_all() -> None:
    """Stop every process this interpreter started and has not stopped yet."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        try:
            proc.stop(timeout=2.0)
        except Exception:  # exiting: keep stopping the others
            log.exception("could not stop %r", proc)


atexit.register(stop_all)


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def install_sigterm_exit() -> None:
    """Make SIGTERM run cleanups (as SystemExit) if nobody else handles it; main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_exit)


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (zombies count as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def run(argv: Sequence[str], what: str, timeout: float = 10.0, check: bool = True) -> str:
    """Run a short command (``ip ...``) to completion; raise InfrastructureError on failure."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise ServiceTimeout(f"{what}: {' '.join(argv)} did not finish in {timeout}s") from exc
    if check and done.returncode != 0:
        raise InfrastructureError(f"{what} failed: {' '.join(argv)}", actual=done.stderr.strip())
    return done.stdout
