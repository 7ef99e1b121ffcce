"""`hil reproduce BUNDLE [--board B] [--firmware BUILD | --builds A..B] [--report-dir DIR] [--speed X]`:
replay a field bundle on the bench and say whether the bench reports what the field device reported.

The bundle is checked whole before anything is brought up. The build is the lab build of the
bundle's firmware version and build id (under firmware-builds/), or the one given; the board is
the one given, or the lab's first of the bundle's board type. Writes ``reproduction.json`` and
``reproduction.html`` (with timelines) into the report folder, with the bench run's evidence in
``run/``. Exit 0 reproduced, 1 differs, 2 usage, 3 infrastructure (never reported as a difference).

``--builds A..B`` bisects (:mod:`harness.bundle.bisect`): one report folder per build tried, and
``bisect.json`` naming the first build that differs (exit 1; 0 when every build reproduces).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from harness.board.board import check_build
from harness.bundle.bisect import bisect, build_range
from harness.bundle.builds import pick_build
from harness.bundle.load import Bundle, open_bundle
from harness.bundle.run import Reproduction, fresh_folder, report_data, reproduce
from harness.cli import output_folder
from harness.cli._board import BUILDS, lab_for
from harness.cli._signals import StopSignals
from harness.errors import UsageError
from harness.firmware import FirmwareBuild, load_build
from harness.lab import Lab
from harness.report.files import write_atomically
from harness.report.reproduction import HTML_NAME, write_reproduction

MAX_SPEED = 1000.0


def speed(text: str) -> float:
    """An argument type: the replay's time scale (1 as captured, 2 twice as slow, 0 as fast as possible)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 <= value <= MAX_SPEED:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time scale from 0 to {MAX_SPEED:g} "
                                         "(1: as captured; 0: as fast as possible)")
    return value


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("reproduce", help="replay a field bundle on a bench board and compare its telemetry")
    p.add_argument("bundle", metavar="BUNDLE", help="a bundle folder (holding bundle.yaml) or its .tar.gz")
    p.add_argument("--board", metavar="B", help="a board of the lab (default: the first of the bundle's board type)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--firmware", metavar="BUILD",
                       help=f"a build folder (default: the build under {BUILDS}/ of the bundle's version and build "
                            "id)")
    which.add_argument("--builds", metavar="A..B",
                       help=f"bisect: the builds under {BUILDS}/ from A to B (folder names; ordered by version, "
                            "then build id) for the board's type; name the first that does not reproduce")
    p.add_argument("--report-dir", metavar="DIR", type=output_folder("report folder"),
                   help="where the report and the bench run's evidence go (default: <state>/runs/<run id>)")
    p.add_argument("--speed", type=speed, default=1.0, metavar="X",
                   help="scale the captured timing by X (1: as captured, the default; 0: as fast as possible)")
    p.set_defaults(func=run)


def _board_for(lab: Lab, name: str | None, board_type: str) -> str:
    if name is not None:
        config = lab.board(name)
        if config.probe.target != board_type:
            raise UsageError(f"--board {name} is a {config.probe.target}, the bundle's device a {board_type}",
                             fix="choose a board of the bundle's type (hil boards lists them)")
        return name
    fitting = [c.name for c in lab.boards.values() if c.probe.target == board_type]
    if not fitting:
        there = ", ".join(f"{c.name} ({c.probe.target})" for c in lab.boards.values()) or "none"
        raise UsageError(f"the lab has no board of the bundle's type {board_type}: its boards are {there}",
                         fix="add one to the lab, or use --lab DIR for a lab that has one")
    return sorted(fitting)[0]


def run(args: argparse.Namespace) -> int:
    lab = lab_for(args)
    report = Path(args.report_dir).resolve() if args.report_dir else lab.state.new_run_dir()
    report.mkdir(parents=True, exist_ok=True)
    bundle = open_bundle(args.bundle, fresh_folder(report, "bundle"))
    board = _board_for(lab, args.board, bundle.manifest.board.type)
    target = lab.board(board).probe.target
    if args.builds:
        return _bisect(lab, bundle, board, report, args)
    if args.firmware:
        build, why = load_build(args.firmware), "given with --firmware"
        check_build(build, lab.board(board))
    else:
        choice = pick_build(bundle.manifest, BUILDS, target, where=str(bundle.yaml))
        build, why = choice.build, choice.why
        check_build(build, lab.board(board))
    print(f"reproducing {bundle.root} ({bundle.manifest.firmware.version} build {bundle.manifest.firmware.build_id}) "
          f"on {board} with {build.folder}; report in {report}", file=sys.stderr, flush=True)
    with StopSignals() as stop:
        result = reproduce(lab, bundle, build, why, board, report, speed=args.speed, pause=stop.wait,
                           progress=lambda line: print(line, file=sys.stderr, flush=True))
    return _finish(report, result)


def _bisect(lab: Lab, bundle: Bundle, board: str, report: Path, args: argparse.Namespace) -> int:
    builds = build_range(args.builds, BUILDS, lab.board(board).probe.target)
    print(f"bisecting {len(builds)} build(s) with {bundle.root} on {board}; reports in {report}", file=sys.stderr,
          flush=True)

    def one(build: FirmwareBuild) -> str:
        folder = report / build.folder.name
        folder.mkdir(parents=True, exist_ok=True)
        print(f"{build.folder.name}: reproducing", file=sys.stderr, flush=True)
        with StopSignals() as stop:
            result = reproduce(lab, bundle, build, f"--builds {args.builds}", board, folder, speed=args.speed,
                               pause=stop.wait)
        data = report_data(result)
        write_reproduction(folder, data)
        print(f"{build.folder.name}: {data['verdict']} ({folder / HTML_NAME})", file=sys.stderr, flush=True)
        if result.error is not None and result.error.exit_code != 1:
            raise result.error  # the lab's trouble, not the build's: the bisection cannot go on
        return str(data["verdict"])

    found = bisect(builds, one)
    write_atomically(report / "bisect.json", json.dumps(found.to_json(), indent=2))
    if found.stopped:
        print("bisection stopped before the end", file=sys.stderr)
        return 130
    if found.first_differing is None:
        print(f"every build reproduces the bundle (from {builds[0].folder.name} to {builds[-1].folder.name})",
              file=sys.stderr)
        return 0
    print(f"first build that differs: {found.first_differing}", file=sys.stderr, flush=True)
    return 1


def _finish(report: Path, result: Reproduction) -> int:
    data = report_data(result)
    page = write_reproduction(report, data)
    if result.error is not None:
        print(f"{data['verdict']}: {page}", file=sys.stderr, flush=True)
        raise result.error
    comparison = result.comparison
    for line in (comparison.differences if comparison else []):
        print(f"  differs: {line}", file=sys.stderr)
    print(f"{data['verdict']}: {page}", file=sys.stderr, flush=True)
    if data["verdict"] == "incomplete":
        return 130
    return 0 if data["verdict"] == "reproduced" else 1
