"""Broker outages under QEMU (fast preset: pending time 20 s, NetworkActivity every 2 s,
SystemInformation and Heartbeat every 6 s): PENDING when the connection closes, SUSPENDED past the
pending time, ACTIVE again with the collectors running when the broker is back; with
UPSTREAM_SUSPEND_LEAK=1, NetworkActivity stays gone after enough outbound packets while suspended."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest

from harness.telemetry.model import PayloadType
from harness.traffic import ping

from .conftest import NEEDS, AgentBoard

pytestmark = [pytest.mark.needs(*NEEDS)]

PENDING_TIME_S = 20
STATE_LINE = r"^\[INFO\] Security Module inserted to '{}' state$"


def _ping_burst(address: str, count: int) -> None:
    """`count` echo requests without waiting for replies (each reply is an outbound packet), paced
    for the emulated controller's receive FIFO."""
    ping(address, count, size=0, wait=False, interval=0.005)


def _outage(board: AgentBoard, during_suspension: Callable[[], None] | None = None) -> int:
    """Stop the broker until the agent is SUSPENDED, then start it again; returns the collector
    mark taken once the agent is ACTIVE again."""
    console = board.console
    board.broker.stop()
    stopped = time.monotonic()
    console.expect(r"^mqtt: disconnected from .* \((closed by broker|reset)\)", timeout=10)
    console.expect(STATE_LINE.format("Pending"), timeout=10)  # at the next send (2 s windows)
    pending = time.monotonic()
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
        mark = _outage(board, lambda: _ping_burst(board.address, 80))
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
        mark = _outage(board, lambda: _ping_burst(board.address, 80))
        # SystemInformation/Heartbeat come back; NetworkActivity does not, although the board talks
        # (its publishes and their acknowledgements would make a flow in every 2 s window). The
        # outage outlasted every interval, so all collectors were overdue at the restart and no
        # message from before the outage is sent after it.
        board.collector.expect_events(board.device, 3, within=30, kind=PayloadType.HEARTBEAT, since=mark)
        network = board.collector.events(board.device, since=mark, kind=PayloadType.NETWORK_ACTIVITY)
        assert not network, f"NetworkActivity after the leak: {network}"
