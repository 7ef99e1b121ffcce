"""One device's telemetry as a test sees it: the collector's view of that device, from a mark.

    view = DeviceTelemetry(collector, "board-1")
    view.restart()                       # at a test's start: what arrives from now on
    view.expect_event(PayloadType.HEARTBEAT, within=70)
    view.expect_flows([FlowSpec(...)], within=30)
    view.events()                        # decoded events since the mark

Every method is the collector's, with the device filled in and ``since`` defaulting to the mark.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from harness.telemetry.collector import Collector, EventPredicate
from harness.telemetry.flowmatch import FlowMatch, FlowSpec
from harness.telemetry.model import Event, PayloadType
from harness.telemetry.streams import Cadence


class DeviceTelemetry:
    def __init__(self, collector: Collector, device_id: str) -> None:
        self.collector = collector
        self.device_id = device_id
        self.since = collector.mark()

    def restart(self) -> int:
        """Move the mark to now: later calls see only what arrives from here on."""
        self.since = self.collector.mark()
        return self.since

    def next_window(self, within: float, *, fresh: float = 0.0) -> int:
        """Wait for the module's next collection (its next security message arrives) and move the
        mark just after it: what a test sends from now on is counted in windows reported after the
        mark, and nothing before the mark is summed with it.

        With ``fresh``, a collection that arrived less than ``fresh`` seconds ago will do: its
        window has only just begun (the module collected before it published, so anything sent
        from now on falls after the collection). A test that follows another's window then starts
        at once instead of a whole interval later."""
        latest = self.collector.latest_collection(self.device_id) if fresh > 0 else None
        if latest is not None and time.time() - latest.received < fresh:
            self.since = latest.seq
            return self.since
        self.restart()
        self.expect_events(1, within)
        return self.restart()

    def events(self, kind: PayloadType | None = None) -> list[Event]:
        return self.collector.events(self.device_id, since=self.since, kind=kind)

    def wait_for(self, predicate: EventPredicate, timeout: float, **kw: Any) -> Event:
        return self.collector.wait_for(self.device_id, predicate, timeout, since=kw.pop("since", self.since), **kw)

    def expect_event(self, kind: PayloadType, within: float, **kw: Any) -> Event:
        return self.collector.expect_event(self.device_id, kind, within, since=kw.pop("since", self.since))

    def expect_events(self, count: int, within: float, **kw: Any) -> list[Event]:
        return self.collector.expect_events(self.device_id, count, within, since=kw.pop("since", self.since), **kw)

    def expect_flows(self, flows: Sequence[FlowSpec], within: float, **kw: Any) -> FlowMatch:
        return self.collector.expect_flows(self.device_id, flows, within, since=kw.pop("since", self.since), **kw)

    def assert_none(self, predicate: EventPredicate, during: float, **kw: Any) -> None:
        self.collector.assert_none(self.device_id, predicate, during, since=kw.pop("since", self.since), **kw)

    def cadence(self, kind: PayloadType) -> Cadence:
        return self.collector.cadence(self.device_id, kind, since=self.since)
