"""Waiting at the command line until Ctrl-C or SIGTERM, without a deadlock.

A signal handler that calls ``threading.Event.set()`` can deadlock: the handler runs in the main
thread between two bytecodes, possibly while that thread is inside the same Event's lock (in
``wait()``), and the lock is not reentrant. So the handler raises instead, and only while the main
thread waits here, where the exception unwinds the wait and releases what it held.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Signalled(Exception):
    pass


def _raise(signum: int, frame: FrameType | None) -> None:
    raise _Signalled(signum)


def wait_for_signal(timeout: float | None = None) -> bool:
    """Block until SIGINT or SIGTERM (True) or ``timeout`` seconds (False); the previous handlers
    are back when this returns."""
    previous = {s: signal.signal(s, _raise) for s in SIGNALS}
    try:
        threading.Event().wait(timeout)  # an Event no one else holds: nothing to deadlock on
        return False
    except _Signalled:
        return True
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
