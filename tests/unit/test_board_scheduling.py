"""Which board a test's node id names, for one worker per board under xdist."""

from __future__ import annotations

import pytest

from harness.board_scheduling import board_of

BOARDS = ["qemu-an385", "qemu-an385-2", "qemu-an386"]


@pytest.mark.parametrize(("nodeid", "board"), [
    ("test_events.py::test_event_order[qemu-an385]", "qemu-an385"),
    ("test_events.py::test_event_order[qemu-an385-2]", "qemu-an385-2"),
    ("test_events.py::test_low_priority_cadence[qemu-an386-HEARTBEAT]", "qemu-an386"),
    ("test_events.py::test_low_priority_cadence[HEARTBEAT-qemu-an385-2]", "qemu-an385-2"),
    ("test_x.py::test_y[a-qemu-an385-b]", "qemu-an385"),
    ("test_x.py::test_y", None),
    ("test_x.py::test_y[qemu-an3850]", None),
    ("test_x.py::test_y[other]", None),
])
def test_board_of_a_node_id(nodeid: str, board: str | None) -> None:
    assert board_of(nodeid, BOARDS) == board
