"""`hil capture BOARD --out BUNDLE [--duration S]`: record a field bundle from a bench run.

Brings the board up through its RunSession (as `hil watch` does), waits for its first security
message (the end of its boot), then records for the duration — the
board link's pcap, the telemetry archive, the console log — and writes the bundle (a folder, or a
``.tar.gz`` when BUNDLE ends so) with the build's identity in ``bundle.yaml``. Ctrl-C or SIGTERM
ends the recording early and the bundle is written with what was recorded. Exit 0 written, 1 no
security message arrived (written anyway), 2 usage, 3 infrastructure (the collector lost its
session: written anyway, and said so).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.bundle.run import FIRST_MESSAGE_SLACK
from harness.bundle.write import check_out, write_bundle
from harness.cli import seconds
from harness.cli._board import add_board_argument, lab_for, resolve_build, session_for
from harness.cli._signals import StopSignals
from harness.errors import InfrastructureError, UsageError
from harness.session import RunSession
from harness.traffic.capture import read_pcap


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("capture", help="record a field bundle (pcap, telemetry, console, build identity) "
                                       "from a bench run")
    add_board_argument(p)
    p.add_argument("--out", required=True, metavar="BUNDLE", type=Path,
                   help="the bundle to write: a new folder, or a file ending .tar.gz")
    p.add_argument("--firmware", metavar="BUILD",
                   help="a build folder (default for an emulated board: the reference firmware, fast preset)")
    p.add_argument("--duration", type=seconds, default=30.0, metavar="S", help="seconds to record (default 30)")
    p.add_argument("--notes", metavar="TEXT", help="free notes for bundle.yaml")
    p.add_argument("--outage", type=outage, metavar="START+LENGTH",
                   help="stop the run's broker START s into the recording for LENGTH s, then start it again "
                        "(a bundle of how the device lives through losing its hub)")
    p.set_defaults(func=run)


def outage(text: str) -> tuple[float, float]:
    """An argument type: ``START+LENGTH`` in seconds (e.g. 4+10)."""
    start, plus, length = text.partition("+")
    try:
        values = (seconds(start), seconds(length)) if plus else None
    except argparse.ArgumentTypeError:
        values = None
    if values is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not START+LENGTH in seconds (e.g. 4+10)")
    return values


def _record(stop: StopSignals, session: RunSession, args: argparse.Namespace) -> bool:
    """Wait out the recording (with the outage, if asked); True when stopped early."""
    if args.outage is None:
        return stop.wait(args.duration)
    start, length = args.outage
    assert session.broker is not None
    if stop.wait(start):
        return True
    print(f"broker stopped for {length:g} s", file=sys.stderr, flush=True)
    session.broker.stop()
    try:
        if stop.wait(length):
            return True
    finally:
        session.broker.start()
    print("broker started again", file=sys.stderr, flush=True)
    return stop.wait(args.duration - start - length)


def run(args: argparse.Namespace) -> int:
    out = check_out(args.out)
    if args.outage is not None and sum(args.outage) >= args.duration:
        raise UsageError(f"--outage {args.outage[0]:g}+{args.outage[1]:g} does not end within --duration "
                         f"{args.duration:g}", fix="make the outage end before the recording does")
    lab = lab_for(args, args.board)
    config = lab.board(args.board)
    build = resolve_build(args.firmware, config, "--firmware BUILD")
    _, session = session_for(args, args.board, lab=lab)
    broken: InfrastructureError | None = None
    # signals from the start: a stop while the board comes up is remembered (not the default SIGTERM
    # death that would leave no bundle), and the recording then ends at once
    with StopSignals() as stop, session:
        board = session.bring_up(args.board, build)
        assert session.collector is not None
        pcap = board.parts.link_capture()
        if pcap is None:
            raise InfrastructureError(f"board {board.name}: its link is not captured here, so no bundle can be made",
                                      fix="run as root with tcpdump installed (or use an emulated board)")
        # the boot ends with the first security message: what the link saw until then is bring-up (the
        # bench does its own), not field traffic; the recording is announced after it
        first_due = build.manifest.behaviour.first_collection_window[1] + FIRST_MESSAGE_SLACK
        session.collector.wait_for(board.device_id, lambda e: True, first_due, since=board.boot_mark,
                                   what="the board's first security message")
        frames = list(read_pcap(pcap))
        replay_from = frames[-1][0] if frames else None
        print(f"{board.name} up at {board.address}, device {board.device_id}; recording for {args.duration:g} s "
              "(Ctrl-C ends it, keeping what was recorded)", file=sys.stderr, flush=True)
        stopped = _record(stop, session, args)
        seen = len(session.collector.messages(board.device_id, since=board.boot_mark))
        try:
            session.collector.require_intact()
        except InfrastructureError as exc:
            broken = exc
        address, device_id, archive = str(board.address), board.device_id, session.archive
    console = next((p for p in (session.run_dir / f"{board.name}-console.log",
                                session.run_dir / f"{board.name}-console-read.log") if p.is_file()), None)
    write_bundle(out, build=build, board_type=config.probe.target, device_id=device_id, device_address=address,
                 pcap=pcap, archive=archive, console=console, replay_from=replay_from, notes=args.notes)
    print(f"bundle written: {out} ({seen} security message(s){', stopped early' if stopped else ''})",
          file=sys.stderr, flush=True)
    if broken is not None:
        raise broken
    return 0 if seen else 1
