"""The pytest plugin's hil_board: a board of the run's session, online with the kind's default
build (the reference firmware for an emulated board), with a telemetry view marked per test."""

from __future__ import annotations

import pytest

from harness.board.board import Board
from harness.board.state import BoardState
from harness.telemetry.model import PayloadType

pytestmark = [pytest.mark.needs("qemu", "arm-gcc", "root", "mosquitto", "dnsmasq", "chrony", "ip"),
              pytest.mark.timeout(300)]
SEEN_IN_FIRST: list[bytes] = []


@pytest.mark.parametrize("hil_board", ["qemu-an385"], indirect=True)
def test_hil_board_is_online_and_telemetry_arrives(hil_board: Board) -> None:
    assert hil_board.state is BoardState.ONLINE and hil_board.lease is not None
    assert hil_board.telemetry is not None
    event = hil_board.telemetry.expect_event(PayloadType.HEARTBEAT, within=30)
    assert event.collection_interval == hil_board.build.manifest.behaviour.intervals_s.low  # type: ignore[union-attr]
    SEEN_IN_FIRST.extend(e.id for e in hil_board.telemetry.events())


@pytest.mark.parametrize("hil_board", ["qemu-an385"], indirect=True)
def test_each_test_sees_only_what_arrived_during_it(hil_board: Board) -> None:
    assert hil_board.telemetry is not None and SEEN_IN_FIRST
    event = hil_board.telemetry.expect_event(PayloadType.HEARTBEAT, within=30)
    assert event.id not in SEEN_IN_FIRST  # marked again at this test's start: nothing of the first test's
    assert not set(SEEN_IN_FIRST) & {e.id for e in hil_board.telemetry.events()}
