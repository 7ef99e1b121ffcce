"""`hil power BOARD on|off|cycle`: the board's power control (its board file's commands, an emulated
board's machine, or pyOCD hardware resets for a board without power control)."""

from __future__ import annotations

import argparse

from harness.cli._board import add_board_argument, session_for


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("power", help="switch a board's power: on, off or cycle")
    add_board_argument(p)
    p.add_argument("action", choices=("on", "off", "cycle"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    _, session = session_for(args, args.board)
    with session:
        board = session.board(args.board)
        power = board.parts.power
        if args.action == "cycle":
            board.power_cycle()
        else:
            getattr(power, args.action)()
            board.log.record(f"power-{args.action}", board=board.name)
        note = "" if power.cuts else " (this board has no power control: a hardware reset through its probe)"
        print(f"{board.name}: power {args.action}{note}")
    return 0
