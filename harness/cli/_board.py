"""What the board commands share: a run session with one board, and the build to flash."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.board.board import check_build
from harness.board.kinds import default_build_for
from harness.cli import output_folder
from harness.errors import UsageError
from harness.firmware import FirmwareBuild, load_build
from harness.lab import BoardConfig, Lab, load_lab
from harness.session import RunSession

BUILDS = Path("firmware-builds")


def add_board_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("board", metavar="BOARD", help="a board of the lab (see `hil boards`)")
    p.add_argument("--report-dir", metavar="DIR", type=output_folder("run folder"),
                   help="run folder (default: <state>/runs/<run id>)")


def lab_for(args: argparse.Namespace, *boards: str) -> Lab:
    """The lab, with the named boards checked to be in it."""
    lab = load_lab(args.lab)
    for name in boards:
        lab.board(name)
    return lab


def session_for(args: argparse.Namespace, *boards: str, lab: Lab | None = None) -> tuple[Lab, RunSession]:
    lab = lab or lab_for(args, *boards)
    run_dir = Path(args.report_dir) if getattr(args, "report_dir", None) else None
    session = RunSession(lab, boards=boards, run_dir=run_dir)
    print(f"run folder: {session.run_dir}", file=sys.stderr, flush=True)
    return lab, session


def resolve_build(ref: str | None, config: BoardConfig, option: str = "BUILD") -> FirmwareBuild:
    """A build folder (or its manifest), or the kind's default build (emulated boards: the
    reference firmware, fast preset, built into firmware-builds/ first)."""
    if ref:
        build = load_build(ref)
        check_build(build, config)
        return build
    make = default_build_for(config.kind)
    if make is None:
        raise UsageError(f"board {config.name} is a real board: name the build to flash with {option}",
                         fix="give a folder under firmware-builds/ (hil firmware verify BUILD checks it)")
    print(f"building the default firmware for {config.name}", file=sys.stderr, flush=True)
    return load_build(make(config, BUILDS))
