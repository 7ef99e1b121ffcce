"""`hil reset BOARD`: reset a board the way its board file says (a pyOCD reset, or a power-cycle)."""

from __future__ import annotations

import argparse

from harness.cli._board import add_board_argument, session_for


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("reset", help="reset a board (its board file's reset method)")
    add_board_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    _, session = session_for(args, args.board)
    with session:
        board = session.board(args.board)
        board.reset()
        print(f"{board.name}: reset ({board.parts.reset_kind})")
    return 0
