"""Broker outages under QEMU (fast preset: pending time 20 s, NetworkActivity every 2 s,
SystemInformation and Heartbeat every 6 s), each timed (spec 3.3): a broker that closes the
connection is noticed at once and the agent is PENDING at the next send; a cut link is noticed when
TCP gives up, about 10 s after the first unacknowledged publish, and the publishes it swallowed are
published again with DUP after the reconnect; a frozen broker whose host still acknowledges is never
noticed, and publishes that cannot be kept fail and are retried without touching the connection.
SUSPENDED past the pending time, ACTIVE again with the collectors running when the broker is back;
with UPSTREAM_SUSPEND_LEAK=1, NetworkActivity stays gone after enough outbound packets while
suspended. Measured timings are printed and written to the run folder (timings.json)."""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest

from harness.telemetry.codec import decode
from harness.telemetry.model import PayloadType
from harness.traffic import ping

from .conftest import NEEDS, STATE_LINE, AgentBoard, mqtt_from_board, publish_payload, wait_until

pytestmark = [pytest.mark.needs(*NEEDS)]

PENDING_TIME_S = 20
NA_INTERVAL_S = 2
SLACK_S = 1.5  # console and scheduling latency on a loaded machine
DISCONNECTED = r"^mqtt: disconnected from .* \({}\), reconnecting in \d+ s$"


def _timings(board: AgentBoard, name: str, **seconds: float) -> None:
    """Print measured timings and add them to the run folder's timings.json."""
    path = board.run / "timings.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = {k: round(v, 2) for k, v in seconds.items()}
    path.write_text(json.dumps(data, indent=1))
    print(f"timings {name}: " + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()))


def _ping_burst(board: AgentBoard, count: int) -> None:
    """`count` echo requests without waiting for replies (each reply is an outbound packet), paced
    for the emulated controller's receive FIFO."""
    ping(board.address, count, size=0, wait=False, interval=0.005, policy=board.policy)


def _outage(board: AgentBoard, during_suspension: Callable[[], None] | None = None) -> int:
    """Stop the broker until the agent is SUSPENDED, then start it again; returns the collector
    mark taken once the agent is ACTIVE again."""
    console = board.console
    board.broker.stop()
    stopped = time.monotonic()
    console.expect(DISCONNECTED.format("closed by broker|reset"), timeout=10)
    disconnected = time.monotonic()
    console.expect(STATE_LINE.format("Pending"), timeout=10)
    pending = time.monotonic()
    _timings(board, "broker closes", noticed=disconnected - stopped, pending=pending - disconnected)
    assert disconnected - stopped < SLACK_S, "a closed connection is noticed at once"
    assert pending - disconnected < NA_INTERVAL_S + SLACK_S, "PENDING at the next send"
    console.expect(STATE_LINE.format("Suspended"), timeout=PENDING_TIME_S + 15)
    suspended = time.monotonic()
    assert PENDING_TIME_S - 1 < suspended - pending < PENDING_TIME_S + 6, (
        f"PENDING for {suspended - pending:.1f} s before SUSPENDED (pending time {PENDING_TIME_S} s)"
    )
    if during_suspension is not None:
        during_suspension()
    board.broker.start()
    board.collector.wait_connected(timeout=20)
    # the board's back-off after ~25 s of refusals is at most 32 s
    console.expect(r"^mqtt: connected to ", timeout=45)
    console.expect(STATE_LINE.format("Connected"), timeout=5)  # the 3 s check
    assert time.monotonic() - stopped < 90
    return board.collector.mark()


@pytest.mark.timeout(240)
def test_outage_pending_suspended_and_back(
    agent_board_factory: Callable[..., AbstractContextManager[AgentBoard]],
) -> None:
    with agent_board_factory("hil-agent-outage-1") as board:
        before = len(board.collector.events(board.device))
        mark = _outage(board, lambda: _ping_burst(board, 80))
        got = board.collector.expect_events(board.device, 2, within=20, kind=PayloadType.SYSTEM_INFORMATION, since=mark)
        assert got, "collectors not restarted"
        board.collector.expect_event(board.device, PayloadType.NETWORK_ACTIVITY, within=10, since=mark)
        assert before > 0


@pytest.mark.timeout(240)
def test_upstream_suspend_leak_keeps_network_activity_away(
    agent_board_factory: Callable[..., AbstractContextManager[AgentBoard]],
) -> None:
    with agent_board_factory("hil-agent-leak-1", {"UPSTREAM_SUSPEND_LEAK": 1}) as board:
        board.collector.expect_event(board.device, PayloadType.NETWORK_ACTIVITY, within=10)
        mark = _outage(board, lambda: _ping_burst(board, 80))
        # SystemInformation/Heartbeat come back; NetworkActivity does not, although the board talks
        # (its publishes and their acknowledgements would make a flow in every 2 s window). The
        # outage outlasted every interval, so all collectors were overdue at the restart and no
        # message from before the outage is sent after it.
        board.collector.expect_events(board.device, 3, within=30, kind=PayloadType.HEARTBEAT, since=mark)
        network = board.collector.events(board.device, since=mark, kind=PayloadType.NETWORK_ACTIVITY)
        assert not network, f"NetworkActivity after the leak: {network}"


@pytest.mark.timeout(240)
def test_a_cut_link_is_noticed_when_tcp_gives_up_and_the_lost_publishes_come_again_with_dup(
    agent_board_factory: Callable[..., AbstractContextManager[AgentBoard]],
) -> None:
    with agent_board_factory("hil-agent-cut-1") as board:
        console, collector = board.console, board.collector
        collector.expect_event(board.device, PayloadType.NETWORK_ACTIVITY, within=10)
        before = {e.id for e in collector.events(board.device)}
        cut_at, cut = time.time(), time.monotonic()
        board.machine.link_down()
        console.expect(r"^net: link down$", timeout=5)
        gave_up = console.expect(DISCONNECTED.format(r"no acknowledgement for (\d+\.\d) s"), timeout=30)
        dropped = time.monotonic()
        console.expect(STATE_LINE.format("Pending"), timeout=NA_INTERVAL_S + 5)
        pending = time.monotonic()
        unacknowledged = float(gave_up[1])
        _timings(board, "link cut", first_unacknowledged_to_drop=unacknowledged, cut_to_drop=dropped - cut,
                 drop_to_pending=pending - dropped)
        # NetX: 10 retransmissions 1 s apart, reset at the 11th timeout; ours gives up 0-0.5 s sooner
        assert 9.5 <= unacknowledged <= 11.0
        assert unacknowledged <= dropped - cut <= unacknowledged + NA_INTERVAL_S + SLACK_S
        assert pending - dropped < NA_INTERVAL_S + SLACK_S, "PENDING at the next send"

        relinked_at = time.time()  # the capture's clock (QEMU's) may run behind
        board.machine.link_up()  # the retransmitted SYN may connect before the PHY poll notices
        console.expect(r"^mqtt: connected to ", timeout=40)
        kept = int(console.expect(r"^mqtt: publishing again (\d+) unacknowledged messages? \(DUP\)$", 2)[1])
        console.expect(STATE_LINE.format("Connected"), timeout=5)
        # the messages published into the cut link: ~10 s of 2 s windows (the last one before the
        # cut may have been acknowledged)
        assert kept >= 4

        def replays() -> list[bytes]:  # PUBLISH with DUP on the new connection, from the capture
            return [p for p in mqtt_from_board(board, last_connection=True) if p[0] >> 4 == 3 and p[0] & 0x08]

        wait_until(lambda: len(replays()) >= kept, 10, f"{kept} PUBLISH with DUP in {board.pcap}")
        assert len(replays()) == kept and all(p[0] == 0x3A for p in replays())
        events = [e for p in replays() for e in decode(publish_payload(p)).events]
        times = {e.time for e in events}
        assert cut_at - NA_INTERVAL_S - 1 <= min(times) and max(times) <= relinked_at + 1, times
        ids = [e.id for e in events]
        for event_id in ids:
            collector.wait_for(board.device, lambda e, i=event_id: e.id == i, 20, what=f"event {event_id.hex()}")
        seen = [e.id for e in collector.events(board.device)]
        assert all(seen.count(i) == 1 for i in ids), "a replayed event counted twice"
        print(f"replayed {kept} message(s), {len(ids)} event(s), {len(set(ids) & before)} seen before the cut; "
              f"duplicate events the collector dropped: {collector.stream(board.device).duplicate_events}")


@pytest.mark.timeout(180)
def test_a_frozen_broker_is_never_noticed_while_the_board_publishes(
    agent_board_factory: Callable[..., AbstractContextManager[AgentBoard]],
) -> None:
    """The broker process stopped, its host still acknowledging TCP, for longer than 1.5 keep-alive
    periods (MQTT_KEEPALIVE_S=4 here): publishing every 2 s, the board never pings and has no
    receive-silence check, so it stays connected and ACTIVE. When the broker runs again it judges
    the keep-alive by its own last read and closes the connection; the board notices at once,
    reconnects and publishes the unacknowledged messages again with DUP: every event of the
    freeze arrives, once."""
    with agent_board_factory("hil-agent-frozen-1", {"MQTT_KEEPALIVE_S": 4}) as board:
        console, collector = board.console, board.collector
        collector.expect_event(board.device, PayloadType.NETWORK_ACTIVITY, within=10)
        start = len(console.text)
        with board.broker_frozen():
            frozen_at, frozen = time.time(), time.monotonic()
            during = console.observe(15.0)[start:]  # an observation window: nothing may happen
            thawed = time.monotonic()
        _timings(board, "broker frozen, publishing", frozen=thawed - frozen)
        assert "mqtt: disconnected" not in during and "'Pending'" not in during, during
        for t in range(math.ceil(frozen_at), int(frozen_at) + 14, NA_INTERVAL_S):  # whatever the beat's phase
            collector.wait_for(board.device, lambda e, t=t: e.kind == PayloadType.NETWORK_ACTIVITY
                               and e.time in (t, t + 1), 20, what=f"the window collected at {t} or {t + 1}")
        events = [e.id for e in collector.events(board.device)]
        assert len(events) == len(set(events))
        replayed = [p for p in mqtt_from_board(board) if p[0] >> 4 == 3 and p[0] & 0x08]
        print(f"after the thaw: {len(replayed)} PUBLISH with DUP, duplicate events the collector dropped: "
              f"{collector.stream(board.device).duplicate_events}")


@pytest.mark.timeout(240)
def test_a_publish_that_fails_is_retried_3_s_later_leaving_the_connection(
    agent_board_factory: Callable[..., AbstractContextManager[AgentBoard]],
) -> None:
    """The broker process stopped, its host still acknowledging TCP: the board goes on publishing;
    the copies it keeps until a PUBACK fill its store (MQTT_STORE_BYTES=1024: two or three
    messages), so a publish fails and is retried 3 s later (NetworkActivity every 4 s here, so that
    the retry comes before the next collection replaces the message) - the connection and the
    ACTIVE state untouched for longer than NetX's TCP would wait for an acknowledgement - until the
    broker runs again and a publish goes through."""
    knobs = {"MQTT_STORE_BYTES": 1024, "ASC_HIGH_INTERVAL_S": 4, "ASC_LOW_INTERVAL_S": 30}
    with agent_board_factory("hil-agent-full-1", knobs) as board:
        console, collector = board.console, board.collector
        collector.expect_event(board.device, PayloadType.NETWORK_ACTIVITY, within=15)
        start = len(console.text)
        failed = r"^\[ERROR\] Failed to send Security Message, error=3$"
        with board.broker_frozen():
            frozen = time.monotonic()
            fails = []
            for _ in range(2):
                console.expect(failed, timeout=25)
                fails.append(time.monotonic())
            # then windows without traffic: nothing to send (the module drops its retry timer),
            # and no disconnect however long the broker stays frozen
            console.observe(max(0.0, 15 - (time.monotonic() - frozen)))
            thawed = time.monotonic()
        mark = collector.mark()
        gaps = [b - a for a, b in itertools.pairwise(fails)]
        _timings(board, "broker frozen, store full", frozen=thawed - frozen, first_failure=fails[0] - frozen,
                 **{f"retry_gap_{i}": g for i, g in enumerate(gaps, 1)})
        assert thawed - frozen > 12, "frozen for longer than NetX's TCP would wait for an acknowledgement"
        assert abs(gaps[0] - 3) < SLACK_S, f"the failed publish was not retried 3 s later: {gaps}"
        during = console.text[start:]
        assert "mqtt: disconnected" not in during and "'Pending'" not in during, during
        # the broker takes the kept publish and acknowledges it; the next one goes through
        assert collector.expect_events(board.device, 1, within=15, since=mark)
        assert "mqtt: disconnected" not in console.text[start:] and "'Pending'" not in console.text[start:]
        assert not [p for p in mqtt_from_board(board) if p[0] >> 4 == 3 and p[0] & 0x08], (
            "DUP publishes without a reconnect")
