"""The pieces of the collector's waits: a pending wait (:class:`Watch`) and where it has read up to
in a device's events (:class:`Cursor`). The collector's network thread runs a watch's check as the
device's messages arrive; the waiting thread blocks on the watch's Event."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from harness.telemetry.streams import Arrival, DeviceStream

T = TypeVar("T")


class Watch(Generic[T]):
    """One pending wait: its check, and the Event the waiting thread blocks on."""

    def __init__(self, device: str, check: Callable[[DeviceStream], T | None],
                 need: Callable[[DeviceStream], int] | None = None, what: str = "") -> None:
        self.device = device
        self.what = what
        self.deadline = 0.0  # time.monotonic() when the waiter gives up (set when it starts waiting)
        self.aborted: BaseException | None = None
        self.check = check
        self._need = need
        self.need = 0  # run the check once the device's stream holds this many unique events
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None

    def run(self, stream: DeviceStream) -> bool:
        """Run the check (a predicate's exception ends the wait and is raised in the waiter)."""
        try:
            self.result = self.check(stream)
            if self.result is None:  # every check reads events: wait for more of them
                self.need = max(len(stream.events) + 1, self._need(stream) if self._need else 0)
        except Exception as exc:
            self.error = exc
        if self.result is None and self.error is None:
            return False
        self.done.set()
        return True

    def abort(self, error: BaseException) -> None:
        """End the wait from outside (the collector lost its integrity): the waiter raises ``error``
        unless the check was satisfied first."""
        self.aborted = error
        self.done.set()

    def outcome(self) -> T:
        if self.result is not None:
            return self.result
        if self.error is not None:
            raise self.error
        assert self.aborted is not None
        raise self.aborted


class Cursor:
    """Where a wait has read up to in one device's events, so each wake-up looks only at new ones."""

    def __init__(self, since: int) -> None:
        self.since = since
        self.first: int | None = None
        self.pos: int | None = None

    def start(self, stream: DeviceStream) -> int:
        """Index of the first event after the mark (fixed once found)."""
        if self.first is None:
            self.first = stream.event_index(self.since)
        return self.first

    def new(self, stream: DeviceStream) -> list[Arrival]:
        start = stream.event_index(self.since) if self.pos is None else self.pos
        self.pos = len(stream.events)
        return stream.events[start:]
