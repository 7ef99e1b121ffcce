"""`hil flash BOARD BUILD [--force]`: program a build into a board through pyOCD, verified by
read-back; skipped when the board already holds the image (unless --force); the recovery ladder
runs on failures."""

from __future__ import annotations

import argparse

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from harness.cli._board import add_board_argument, lab_for, resolve_build, session_for


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("flash", help="program a firmware build into a board (verified by read-back)")
    add_board_argument(p)
    p.add_argument("build", metavar="BUILD", nargs="?",
                   help="a build folder (default for an emulated board: the reference firmware)")
    p.add_argument("--force", action="store_true", help="program even if the board already holds the image")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    lab = lab_for(args, args.board)
    build = resolve_build(args.build, lab.board(args.board))
    _, session = session_for(args, args.board, lab=lab)
    with session:
        board = session.board(args.board)
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                   TimeElapsedColumn())
        with Progress(*columns, transient=True) as progress:
            task = progress.add_task(f"flashing {build.manifest.name} into {board.name}", total=1.0)
            result = board.flash(build, force=args.force, progress=lambda f: progress.update(task, completed=f))
    if result.skipped:
        print(f"{board.name}: already holds {build.manifest.name} (read back); nothing programmed")
    else:
        print(f"{board.name}: {build.manifest.name} programmed and verified: {result.bytes_total} bytes, "
              f"{result.pages_written} page(s) written, {result.pages_skipped} unchanged, {result.duration:.1f} s")
    return 0
