"""What a board's telemetry showed since its last boot: the messages and events the clauses of the
suite judge, gathered once per board and shared (the suite overlaps what can overlap)."""

from __future__ import annotations

from dataclasses import dataclass

from harness.board.board import Board
from harness.telemetry.model import Event, PayloadType
from harness.telemetry.streams import Received

_SEEN: dict[str, Observation] = {}
FRESH = 0.5  # s: a collection that arrived this recently starts the window a clause sends its traffic in


@dataclass
class Observation:
    board: Board
    messages: list[Received]
    events: list[tuple[Event, float]]  # unique events with the harness time they arrived

    def of(self, kind: PayloadType) -> list[tuple[Event, float]]:
        return [(e, t) for e, t in self.events if e.kind == kind]


def over_tls(board: Board) -> bool:
    """The board talks to the hub over TLS (provisioned so): its link capture holds TLS records, in
    which no MQTT frame (no security PUBLISH, no window end) can be seen."""
    return board.provisioning is not None and board.provisioning.transport == "tls"


def observe(board: Board, low_intervals: int = 2) -> Observation:
    """The board's telemetry since its boot, once it covers ``low_intervals`` + 1 low-priority
    collections (Heartbeat where the build sends it, else SystemInformation): waits as long as the
    device's own intervals require and no longer; cached per board and boot."""
    key = f"{board.name}:{board.boot_mark}"
    if key in _SEEN:
        return _SEEN[key]
    assert board.telemetry is not None and board.build is not None
    collector = board.telemetry.collector
    b = board.build.manifest.behaviour
    first_hi = b.first_collection_window[1]
    within = first_hi + (low_intervals + 1) * b.intervals_s.low + 15
    collector.expect_events(board.device_id, low_intervals + 1, within, kind=PayloadType.SYSTEM_INFORMATION,
                            since=board.boot_mark)
    stream = collector.stream(board.device_id)
    start = stream.event_index(board.boot_mark)
    seen = Observation(board, collector.messages(board.device_id, since=board.boot_mark),
                       [(a.event, a.received) for a in stream.events[start:]])
    _SEEN[key] = seen
    return seen
