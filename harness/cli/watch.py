"""`hil watch BOARD [--firmware BUILD]`: bring a board up and show its security telemetry.

Brings the board up through its RunSession (network, broker, collector; pyOCD flashes the build
and the provisioning block; boot; address) and prints every security message the collector
decodes, one line each, until ``--duration`` seconds have passed or Ctrl-C. Exit 0 when at least
one security message arrived, 1 when none did. Everything the run produced (console log, raw
telemetry archive, pcaps, broker log, run log) stays in the run folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

from harness.board.board import Board
from harness.cli import seconds
from harness.cli._board import add_board_argument, lab_for, resolve_build, session_for
from harness.cli._signals import StopSignals
from harness.session import RunSession
from harness.telemetry.collector import Received


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("watch", help="bring a board up with a firmware build and print its security telemetry")
    add_board_argument(p)
    p.add_argument("--firmware", metavar="BUILD",
                   help="a build folder under firmware-builds/ (default for an emulated board: the reference "
                        "firmware, fast preset, built into firmware-builds/ first)")
    p.add_argument("--duration", type=seconds, default=30.0, metavar="S", help="seconds to watch (default 30)")
    p.add_argument("--json", action="store_true", help="one JSON object per message")
    p.set_defaults(func=run)


def _line(received: Received, as_json: bool) -> str | None:
    message = received.message
    if message is None:
        return None
    if as_json:
        return json.dumps({"device": received.device_id, "message": message.to_json()})
    kinds = ", ".join(e.kind.name for e in message.events)
    flows = sum(len(getattr(e.payload, "ipv4", ())) + len(getattr(e.payload, "ipv6", ())) for e in message.events)
    return f"{received.device_id}: {len(message.events)} event(s) [{kinds}], {flows} flow(s)"


def run(args: argparse.Namespace) -> int:
    lab = lab_for(args, args.board)
    build = resolve_build(args.firmware, lab.board(args.board), "--firmware BUILD")
    _, session = session_for(args, args.board, lab=lab)
    with session:
        board = session.bring_up(args.board, build)
        with StopSignals() as stop:  # before the line that announces the board: a stop after it is kept
            seen, problems = _watch(args, session, board, stop)
    if problems:
        print(f"collector: {problems}", file=sys.stderr)
    return 0 if seen else 1


def _watch(args: argparse.Namespace, session: RunSession, board: Board, stop: StopSignals) -> tuple[int, str]:
    """Print the board's security messages until the duration ends or a stop signal; how many were
    shown, and what the collector had to say."""
    assert session.broker is not None and session.collector is not None
    done = threading.Event()
    seen = [0]
    print(f"{board.name} up at {board.address}, device {board.device_id}, broker {session.broker.url}",
          file=sys.stderr, flush=True)

    def show(received: Received) -> None:
        line = _line(received, args.json)
        if line is not None and received.device_id == board.device_id and not done.is_set():
            seen[0] += 1
            print(line, flush=True)

    session.collector.on_received(show)
    stop.wait(args.duration)  # Ctrl-C or SIGTERM ends the watch early
    done.set()
    print(f"{seen[0]} security message(s) in {args.duration:g} s; archive {session.archive}",
          file=sys.stderr, flush=True)
    problems = session.collector.problems()
    session.collector.require_intact()  # a collector that lost its session or went deaf: exit 3
    return seen[0], problems
