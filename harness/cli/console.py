"""`hil console BOARD`: the board's console, interactive: what it prints on standard output, what
you type sent to it line by line. Ctrl-] (or end of input) leaves. The console reconnects by
itself when the port goes away and returns; everything read is also in the run folder's log."""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import sys
import termios
import threading
import tty

from harness.cli._board import add_board_argument, session_for
from harness.errors import HarnessError

CTRL_RBRACKET = b"\x1d"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("console", help="the board's console, interactive (Ctrl-] leaves)")
    add_board_argument(p)
    p.set_defaults(func=run)


def _pump_output(console, stop: threading.Event) -> None:  # type: ignore[no-untyped-def]
    shown = 0
    while not stop.is_set():
        text = console.observe(0.1)
        if len(text) > shown:
            sys.stdout.write(text[shown:])
            sys.stdout.flush()
            shown = len(text)


def _first_line(console, limit: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Until the board printed a whole line (its console is up), or ``limit`` seconds."""
    with contextlib.suppress(HarnessError):
        console.expect(r"^.+$", timeout=limit)


def _until_quiet(console, quiet: float = 1.0, limit: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    import time

    end = time.monotonic() + limit
    seen = len(console.text)
    while time.monotonic() < end:
        now = len(console.observe(quiet))
        if now == seen:
            return
        seen = now


def run(args: argparse.Namespace) -> int:
    _, session = session_for(args, args.board)
    with session:
        board = session.board(args.board)
        board.parts.release()  # an emulated board waits halted until someone lets it run
        console = board.console
        print(f"{board.name}: console {console.url} (Ctrl-] leaves)", file=sys.stderr, flush=True)
        stop = threading.Event()
        reader = threading.Thread(target=_pump_output, args=(console, stop), daemon=True)
        reader.start()
        fd = sys.stdin.fileno()
        interactive = os.isatty(fd)
        saved = termios.tcgetattr(fd) if interactive else None
        try:
            if interactive:
                tty.setcbreak(fd)
            else:  # piped input: typed once the board prints (a board drops what comes before its UART is up)
                _first_line(console)
            while True:
                ready, _, _ = select.select([fd], [], [], 0.5)
                if not ready:
                    continue
                data = os.read(fd, 1024)
                if not data or CTRL_RBRACKET in data:
                    data = data.split(CTRL_RBRACKET)[0]
                    if data:
                        console.write(data.replace(b"\n", b"\r\n"))
                    break
                console.write(data.replace(b"\n", b"\r\n"))
            if not interactive:  # piped input: show what the board answers until it goes quiet
                _until_quiet(console)
        finally:
            if saved is not None:
                with contextlib.suppress(termios.error):
                    termios.tcsetattr(fd, termios.TCSADRAIN, saved)
            stop.set()
            reader.join(1.0)
    return 0
