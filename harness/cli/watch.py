"""`hil watch BOARD [--firmware BUILD]`: bring a board up and show its security telemetry.

Flashes the build and a provisioning block through pyOCD, boots the board, and prints every
security message the collector decodes, one line each, until ``--duration`` seconds have passed or
Ctrl-C. Exit 0 when at least one security message arrived, 1 when none did. Everything the run
produced (console log, raw telemetry archive, pcaps, broker log) stays in the run folder.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from harness.bench import bring_up
from harness.cli import output_folder, seconds
from harness.errors import UsageError
from harness.firmware import FirmwareBuild, load_build
from harness.firmware_build import build_reference
from harness.lab import Board, load_lab
from harness.telemetry.collector import Received


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("watch", help="bring a board up with a firmware build and print its security telemetry")
    p.add_argument("board", metavar="BOARD", help="a board of the lab (see `hil boards`)")
    p.add_argument("--firmware", metavar="BUILD",
                   help="a build folder under firmware-builds/ (default for an emulated board: the reference "
                        "firmware, fast preset, built into firmware-builds/ first)")
    p.add_argument("--duration", type=seconds, default=30.0, metavar="S", help="seconds to watch (default 30)")
    p.add_argument("--report-dir", metavar="DIR", type=output_folder("run folder"),
                   help="run folder (default: <state>/runs/<run id>)")
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


def _reference_build(board: Board) -> FirmwareBuild:
    if board.kind != "qemu":
        raise UsageError(f"board {board.name} is a real board: give the build to flash with --firmware BUILD")
    machine = board.settings.machine
    print(f"building the reference firmware for {machine} (fast preset)", file=sys.stderr, flush=True)
    return load_build(build_reference(machine, {}, "fast", Path("firmware-builds") / f"reference-{machine}-fast"))


def run(args: argparse.Namespace) -> int:
    lab = load_lab(args.lab)
    board = lab.board(args.board)
    build = load_build(args.firmware) if args.firmware else _reference_build(board)
    run_dir = Path(args.report_dir) if args.report_dir else lab.state.new_run_dir()
    done = threading.Event()
    seen = [0]

    def stop(_sig: int, _frame: FrameType | None) -> None:
        done.set()

    previous = signal.signal(signal.SIGINT, stop)
    try:
        print(f"run folder: {run_dir}", file=sys.stderr, flush=True)
        with bring_up(lab, args.board, build, run_dir) as bench:
            print(f"{bench.board.name} up at {bench.address}, device {bench.device_id}, "
                  f"broker {bench.broker.url}", file=sys.stderr, flush=True)

            def show(received: Received) -> None:
                line = _line(received, args.json)
                if line is not None and not done.is_set():
                    seen[0] += 1
                    print(line, flush=True)

            bench.collector.on_received(show)
            done.wait(args.duration)
            done.set()
            print(f"{seen[0]} security message(s) in {args.duration:g} s; archive {bench.archive}",
                  file=sys.stderr, flush=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    return 0 if seen[0] else 1
