"""Parallel boards under pytest-xdist: every test of one board in the same worker, one board per
worker (``--hil-board-per-worker``), so a worker's session owns its board from bring-up to the
last test and no two workers ever want the same board.

The board of a test is its ``hil_board`` parameter, found in the node id among the run's
``--hil-board`` names; a test without one is grouped by its module, as ``--dist loadscope`` does.
(xdist's own ``--dist loadgroup`` would do this with ``xdist_group`` marks, but with pytest 9.2 it
silently stops grouping: pytest-xdist issue 1386.)
"""

from __future__ import annotations

from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling


def board_of(nodeid: str, boards: list[str]) -> str | None:
    """The board among ``boards`` that a node id's parameters name (``test_x[qemu-an385-HEARTBEAT]``)."""
    params = nodeid.rsplit("::", 1)[-1].partition("[")[2].removesuffix("]")
    if not params:
        return None
    for board in sorted(boards, key=len, reverse=True):  # "qemu-an385-2" before "qemu-an385"
        if params == board or params.startswith(f"{board}-") or params.endswith(f"-{board}") \
                or f"-{board}-" in params:
            return board
    return None


class BoardScheduling(LoadScopeScheduling):
    """One work unit per board: a worker runs every test of the board it was given."""

    def __init__(self, config: pytest.Config, log: Any = None) -> None:
        super().__init__(config, log)
        self.boards = list(config.getoption("hil_board") or [])

    def _split_scope(self, nodeid: str) -> str:
        board = board_of(nodeid, self.boards)
        return f"board {board}" if board is not None else super()._split_scope(nodeid)
