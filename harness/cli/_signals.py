"""Waiting at the command line until Ctrl-C or SIGTERM, without a deadlock and without a gap.

A signal handler that calls ``threading.Event.set()`` can deadlock: the handler runs in the main
thread between two bytecodes, possibly while that thread is inside the same Event's lock (in
``wait()``), and the lock is not reentrant. So the handler raises, and only while the main thread
waits in :meth:`StopSignals.wait`, where the exception unwinds the wait and releases what it held.
A signal that lands before the wait (while the command is still starting) is remembered, and the
wait then returns at once: a stop sent as soon as the command announced itself is never lost.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Signalled(KeyboardInterrupt):
    """Raised by the handler into the wait; a KeyboardInterrupt, so one that escapes (a second
    signal in the wait's last instructions) still ends the command as an interruption."""


class StopSignals:
    """``with StopSignals() as stop: ...; stop.wait(timeout)``: SIGINT and SIGTERM stop the wait;
    the previous handlers are back when the block ends."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._waiting = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        if self._waiting:
            raise _Signalled(signum)

    def __enter__(self) -> StopSignals:
        self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until SIGINT or SIGTERM (True, at once if one came already) or ``timeout`` seconds
        (False)."""
        try:
            self._waiting = True
            if self.received is not None:
                return True
            threading.Event().wait(timeout)  # an Event no one else holds: nothing to deadlock on
            return False
        except _Signalled:
            return True
        finally:
            self._waiting = False
