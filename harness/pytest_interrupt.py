"""SIGTERM ends a pytest run the way Ctrl-C does, also when the run is spread over xdist workers.

A CI job's timeout or a ``kill`` sends SIGTERM to the one process it knows. Turned into
KeyboardInterrupt, the test under way neither passes nor fails, fixtures are torn down (boards,
QEMU, brokers stopped) and the reports say the run is incomplete. Without this a SIGTERM either
killed pytest with everything it started left running or, turned into SystemExit, failed one test
and let the run go on.

Under pytest-xdist the controller runs no test: the boards, machines and brokers belong to its
workers, and xdist kills a worker that does not end within seconds of the controller stopping,
before the worker could stop what it started. So the controller hands the first SIGTERM on to its
workers (its own child processes, by their pids) and keeps waiting: each worker interrupts its
test and cleans up, reports that it was interrupted, and xdist then ends the run as interrupted. A
second SIGTERM interrupts the controller at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from types import FrameType
from typing import Any

import pytest

INTERRUPT_KEY = pytest.StashKey["SigtermInterrupt"]()


class SigtermInterrupt:
    def __init__(self) -> None:
        self.workers: dict[str, int] = {}  # xdist worker id -> pid (in a controller)
        self.forwarded = False
        self.previous: Any = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.workers and not self.forwarded:
            self.forwarded = True
            for pid in list(self.workers.values()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
            return
        raise KeyboardInterrupt(f"signal {signum}")


def install(config: pytest.Config) -> None:
    """In the main thread, where SIGTERM still has its default action (never over a handler of
    the program that runs pytest)."""
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        handler = SigtermInterrupt()
        handler.previous = signal.signal(signal.SIGTERM, handler)
        config.stash[INTERRUPT_KEY] = handler


def restore(config: pytest.Config) -> None:
    handler = config.stash.get(INTERRUPT_KEY, None)
    if handler is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler.previous)


def worker_up(config: pytest.Config, node: Any) -> None:
    """An xdist worker is ready: note its pid. execnet's popen gateway is the worker process (its
    ``popen`` is not public API; without it the controller falls back to interrupting itself)."""
    handler = config.stash.get(INTERRUPT_KEY, None)
    popen = getattr(getattr(node.gateway, "_io", None), "popen", None)
    pid = getattr(popen, "pid", None)
    if handler is not None and isinstance(pid, int):
        handler.workers[node.gateway.id] = pid


def worker_down(config: pytest.Config, node: Any) -> None:
    handler = config.stash.get(INTERRUPT_KEY, None)
    if handler is not None:
        handler.workers.pop(node.gateway.id, None)
