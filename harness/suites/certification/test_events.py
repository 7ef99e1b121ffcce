"""Spec 2 and 3.1: the events themselves, their order, ids and times; SystemInformation; the
collectors' cadence and the first collection."""

from __future__ import annotations

import itertools

import pytest

from harness.board.board import Board
from harness.firmware import Behaviour
from harness.report.plugin import ClauseRecord
from harness.suites.certification.observe import observe
from harness.telemetry.model import PayloadType, SystemInformation

ORDER = [PayloadType.NETWORK_ACTIVITY, PayloadType.SYSTEM_INFORMATION, PayloadType.HEARTBEAT]
TICK = 1.0  # the module's timers run once a second
CLOCK = 2.0  # event time against the harness clock


@pytest.mark.clause("2.order", "events in a message: NetworkActivity, SystemInformation, Heartbeat")
def test_event_order(hil_board: Board) -> None:
    for m in observe(hil_board).messages:
        if m.message is None:
            continue
        kinds = [e.kind for e in m.message.events]
        assert kinds == sorted(kinds, key=ORDER.index), f"message {m.seq}: events in the order {kinds}"
        assert len(set(kinds)) == len(kinds), f"message {m.seq}: a kind twice: {kinds}"


@pytest.mark.clause("2.ids", "event ids: two 64-bit counters, +1 for each event of a message")
def test_event_ids(hil_board: Board) -> None:
    for m in observe(hil_board).messages:
        if m.message is None:
            continue
        halves = [(int.from_bytes(e.id[:8], "little"), int.from_bytes(e.id[8:], "little")) for e in m.message.events]
        for (a0, b0), (a1, b1) in itertools.pairwise(halves):
            assert (a1 - a0) % (1 << 64) == 1 and (b1 - b0) % (1 << 64) == 1, (
                f"message {m.seq}: event ids {[e.id.hex() for e in m.message.events]} do not count up by 1")


@pytest.mark.clause("2.time", "event time: unix seconds at collection, within 2 s of the harness clock")
def test_event_time(hil_board: Board) -> None:
    late = [(e.kind.name, e.time, round(t, 1)) for e, t in observe(hil_board).events
            if not -CLOCK <= t - e.time <= CLOCK + TICK]
    assert not late, f"events whose time is off the harness clock at arrival (kind, time, arrived): {late[:5]}"


@pytest.mark.clause("3.1.system-information", "SystemInformation: os_info as the build links it")
def test_system_information(hil_board: Board, behaviour: Behaviour, clause: ClauseRecord) -> None:
    infos = observe(hil_board).of(PayloadType.SYSTEM_INFORMATION)
    assert infos, "no SystemInformation event"
    for event, _ in infos:
        assert isinstance(event.payload, SystemInformation)
        if behaviour.os_info is not None:
            assert event.payload.os_info == behaviour.os_info, (
                f"os_info {event.payload.os_info!r}, the manifest says {behaviour.os_info!r}")
        else:
            assert (event.payload.os_info or "").startswith("Azure RTOS "), f"os_info {event.payload.os_info!r}"


@pytest.mark.clause("3.1.cadence", "Heartbeat and SystemInformation every low interval, with collection_interval")
@pytest.mark.parametrize("kind", [PayloadType.HEARTBEAT, PayloadType.SYSTEM_INFORMATION], ids=lambda k: k.name)
def test_low_priority_cadence(kind: PayloadType, hil_board: Board, behaviour: Behaviour,
                              clause: ClauseRecord) -> None:
    seen = observe(hil_board)
    events = seen.of(kind)
    interval = behaviour.intervals_s.low
    start = hil_board.boot_time
    clause.timeline.update(
        arrivals=[[round(t - start, 2), e.kind.name] for e, t in seen.events],
        due=[[round(events[0][0].time - start + k * interval, 2), kind.name] for k in range(len(events))]
        if events else [])
    assert len(events) >= 2, f"{len(events)} {kind.name} event(s) in {seen.events[-1][1] - start:.0f} s since boot"
    assert all(e.collection_interval == interval for e, _ in events), (
        f"collection_interval {sorted({e.collection_interval for e, _ in events})}, the manifest says {interval}")
    gaps = [b.time - a.time for (a, _), (b, _) in itertools.pairwise(events)]
    off = [g for g in gaps if abs(g - interval) > TICK]
    assert not off, f"{kind.name} every {gaps} s, the manifest says every {interval} s (within the 1 s tick)"


@pytest.mark.clause("3.1.network-activity-interval", "NetworkActivity carries the high interval")
def test_network_activity_interval(hil_board: Board, behaviour: Behaviour) -> None:
    events = observe(hil_board).of(PayloadType.NETWORK_ACTIVITY)
    assert events, "no NetworkActivity event (the board's own MQTT connection shows in nearly every window)"
    assert {e.collection_interval for e, _ in events} == {behaviour.intervals_s.high}, (
        f"collection_interval {sorted({e.collection_interval for e, _ in events})}, "
        f"the manifest says {behaviour.intervals_s.high}")


@pytest.mark.clause("3.1.first-collection", "the first collection within the declared delay of connecting")
def test_first_collection(hil_board: Board, behaviour: Behaviour, clause: ClauseRecord) -> None:
    seen = observe(hil_board)
    connects = hil_board.broker.connections() if hil_board.broker is not None else None
    if not connects:
        clause.not_applicable("this broker kind does not report when the device connected")
    mine = [c for c in connects if c.client_id == hil_board.device_id]
    assert mine, "the device never connected"
    import datetime as _dt

    connected = _dt.datetime.fromisoformat(mine[0].time).replace(tzinfo=_dt.UTC).timestamp()
    first = min(e.time for e, _ in seen.events)
    low, high = behaviour.first_collection_window
    # enabled no later than connected; collected at most the declared delay after enabling, and
    # sent at once, or within the 3 s PENDING check (timestamps are whole seconds: one tick either way)
    assert first <= connected + high + 3 + TICK, (
        f"the first collection at {first}, {first - connected:.0f} s after connecting; the manifest allows "
        f"{low}-{high} s after enabling")
