"""The module's timers run once a second with the current time: when the board's clock steps
forward (as an SNTP answer can make it), every due timer runs once with the new time and the
NetworkActivity beat moves to it - no burst of messages for the skipped seconds (fast preset:
NetworkActivity every 2 s, SystemInformation and Heartbeat every 6 s)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest

from harness.telemetry.model import PayloadType

from .conftest import NEEDS, STOCK_CONSOLE, AgentBoard

pytestmark = [pytest.mark.needs(*NEEDS)]

STEP_S = 40


@pytest.mark.timeout(180)
def test_a_forward_step_of_the_clock_runs_late_timers_once(
    agent_board_factory: Callable[..., AbstractContextManager[AgentBoard]],
) -> None:
    with agent_board_factory("hil-agent-clock-1", STOCK_CONSOLE) as board:
        collector = board.collector
        last = collector.expect_event(board.device, PayloadType.NETWORK_ACTIVITY, within=10).time
        mark = collector.mark()
        board.step_clock(STEP_S)
        collector.expect_events(board.device, 4, within=20, kind=PayloadType.NETWORK_ACTIVITY, since=mark)
        messages = [m.message for m in collector.stream(board.device).messages_since(mark) if m.message]
        times = [sorted({e.time for e in m.events}) for m in messages]
        assert all(len(t) == 1 for t in times), f"one collection per message: {times}"
        stamps = [t[0] for t in times]
        # the first collection after the step carries the late time; none for the skipped seconds
        skipped = [t for t in stamps if last + 3 < t < last + STEP_S]
        assert not skipped, f"messages for skipped seconds (a catch-up burst): {stamps}"
        after = [t for t in stamps if t >= last + STEP_S]
        assert len(after) >= 3 and all(b - a == 2 for a, b in itertools.pairwise(after)), stamps
        kinds = [[e.kind for e in m.events] for m in messages if m.events[0].time == after[0]]
        # SystemInformation and Heartbeat were due during the skipped seconds: once, with the NA
        assert kinds == [[PayloadType.NETWORK_ACTIVITY, PayloadType.SYSTEM_INFORMATION, PayloadType.HEARTBEAT]]
