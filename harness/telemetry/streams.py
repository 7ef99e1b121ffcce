"""What the collector keeps per device: messages in arrival order, unique events, undecodable ones.

Plain data, no MQTT and no locking (the collector holds its lock around every use). Brief text
renderings here are what a timeout message shows of what did arrive.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import itertools
import operator
import statistics
from dataclasses import dataclass, field

from harness.errors import CheckFailed
from harness.telemetry.codec import DecodeError
from harness.telemetry.flowmatch import describe_flow
from harness.telemetry.model import Event, NetworkActivity, PayloadType, SecurityMessage


@dataclass(slots=True)
class Received:
    """One message from a device, as the collector saw it."""

    seq: int  # collector-wide arrival number, from 1
    record: int  # index of its record in the archive
    received: float  # Unix time
    topic: str
    device_id: str
    module_id: str | None
    payload: bytes
    security: bool
    message: SecurityMessage | None = None
    error: DecodeError | None = None
    new_events: tuple[Event, ...] = ()
    duplicate_events: int = 0
    dup: bool = False
    qos: int = 1
    retain: bool = False

    def brief(self) -> str:
        stamp = _dt.datetime.fromtimestamp(self.received, _dt.UTC).strftime("%H:%M:%S.%f")[:-3]
        where = f"{self.device_id}/{self.module_id}" if self.module_id else self.device_id
        if not self.security:
            return f"{stamp} {where} application telemetry, {len(self.payload)} bytes"
        if self.error is not None:
            return f"{stamp} {where} UNDECODABLE ({len(self.payload)} bytes): {self.error}"
        assert self.message is not None
        parts = [brief_event(e) for e in self.message.events]
        dup = f" [{self.duplicate_events} duplicate event(s)]" if self.duplicate_events else ""
        return f"{stamp} {where} " + "; ".join(parts or ["no events"]) + dup


def brief_event(event: Event, max_flows: int = 3) -> str:
    text = f"{event.kind.name} id={event.id.hex()} t={event.time}"
    payload = event.payload
    if isinstance(payload, NetworkActivity):
        flows = payload.flows
        shown = ", ".join(describe_flow(f) for f in flows[:max_flows])
        more = f", +{len(flows) - max_flows} more" if len(flows) > max_flows else ""
        text += f" ({len(flows)} flows: {shown}{more})" if flows else " (no flows)"
    return text


@dataclass(slots=True)
class Arrival:
    """A unique event and the message that first brought it."""

    event: Event
    seq: int
    received: float


_SEQ = operator.attrgetter("seq")  # arrivals and messages are in seq order


@dataclass
class DeviceStream:
    device_id: str
    messages: list[Received] = field(default_factory=list)  # security messages, decodable or not
    events: list[Arrival] = field(default_factory=list)  # unique events, in arrival order
    application: list[Received] = field(default_factory=list)  # non-security telemetry
    duplicate_events: int = 0
    _ids: set[bytes] = field(default_factory=set)

    def take_new(self, events: tuple[Event, ...]) -> tuple[tuple[Event, ...], int]:
        """Split into events not seen before (remembered now) and a count of duplicates."""
        ids = self._ids
        if len(events) == 1:  # what devices mostly send: no list, no new tuple
            if events[0].id in ids:
                self.duplicate_events += 1
                return (), 1
            ids.add(events[0].id)
            return events, 0
        new = []
        for e in events:
            if e.id in ids:
                continue
            ids.add(e.id)
            new.append(e)
        self.duplicate_events += len(events) - len(new)
        return tuple(new), len(events) - len(new)

    def add(self, item: Received) -> None:
        if not item.security:
            self.application.append(item)
            return
        self.messages.append(item)
        for e in item.new_events:
            self.events.append(Arrival(e, item.seq, item.received))

    def event_index(self, since: int) -> int:
        """Index of the first event that arrived after collector mark ``since``."""
        return bisect.bisect_right(self.events, since, key=_SEQ)

    def messages_since(self, since: int) -> list[Received]:
        return self.messages[bisect.bisect_right(self.messages, since, key=_SEQ):]

    @property
    def undecodable(self) -> list[Received]:
        return [m for m in self.messages if m.error is not None]


@dataclass(frozen=True)
class Gap:
    """A time the collector was not connected; messages may be lost when the session was."""

    start: float
    end: float | None
    reason: str
    session_kept: bool | None = None  # after reconnecting: did the broker still hold our session?
    expected: str | None = None  # the outage the harness made on purpose, when it began in one

    def describe(self) -> str:
        def t(x: float) -> str:
            return _dt.datetime.fromtimestamp(x, _dt.UTC).strftime("%H:%M:%S.%f")[:-3]

        end = t(self.end) if self.end is not None else "(still disconnected)"
        length = f" ({self.end - self.start:.3f} s)" if self.end is not None else ""
        kept = {None: "", True: ", session kept", False: ", SESSION LOST: messages may be missing"}
        made = f" (expected: {self.expected})" if self.expected else ""
        return f"disconnected {t(self.start)} - {end}{length}: {self.reason}{made}{kept[self.session_kept]}"


@dataclass(frozen=True)
class Cadence:
    """Intervals between successive events of one kind from one device."""

    kind: PayloadType
    received_intervals: tuple[float, ...]  # by arrival time at the collector, seconds
    reported_intervals: tuple[int, ...]  # by the events' own time field, seconds

    @classmethod
    def of(cls, kind: PayloadType, arrivals: list[Arrival]) -> Cadence:
        got = [a for a in arrivals if a.event.kind == kind]
        return cls(kind,
                   tuple(b.received - a.received for a, b in itertools.pairwise(got)),
                   tuple(b.event.time - a.event.time for a, b in itertools.pairwise(got)))

    @property
    def count(self) -> int:
        return len(self.received_intervals) + 1 if self.received_intervals else 0

    def describe(self) -> str:
        r = self.received_intervals
        if not r:
            return f"{self.kind.name}: fewer than two events, no interval"
        return (f"{self.kind.name}: {len(r)} intervals, mean {statistics.fmean(r):.3f} s, "
                f"min {min(r):.3f} s, max {max(r):.3f} s; reported {list(self.reported_intervals)[:10]}")

    def check(self, period: float, tolerance: float) -> None:
        """Every measured interval within ``period ± tolerance``, else CheckFailed."""
        bad = [x for x in self.received_intervals if abs(x - period) > tolerance]
        if not self.received_intervals or bad:
            raise CheckFailed(f"{self.kind.name} cadence is not {period:g} s ± {tolerance:g} s",
                              expected=f"intervals within {period - tolerance:g}..{period + tolerance:g} s",
                              actual=self.describe())
