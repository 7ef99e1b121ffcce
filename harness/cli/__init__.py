"""`hil`: the harness's command line.

Each subcommand lives in a module of this package that defines ``register(subparsers)``; the
module adds its parser and sets ``func`` (``(args) -> int``) as the parser default. Modules are
found by listing the package, so adding a command never edits this file.

Exit codes: 0 ok, 1 a check or test failed, 2 usage or configuration error, 3 infrastructure error.
User errors print one clear message and no traceback; ``--debug`` shows the traceback. The global
options (``--lab``, ``--debug``) are accepted after the subcommand too. Argument values are checked
as they are parsed (``seconds``, ``port``, ``output_folder``), so a bad one is refused before a
command brings anything up; commands that take several inputs check each (``each_input``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import pkgutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from harness import __version__
from harness.errors import HarnessError, UsageError
from harness.userfiles import check_folder_path

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INFRA = 3
#: What a shell reports for a command whose reader went away (killed by SIGPIPE: 128 + 13).
EXIT_BROKEN_PIPE = 141


LAB_HELP = "lab folder holding boards/*.yaml (default: $HIL_LAB, else ./boards)"
DEBUG_HELP = "show tracebacks and debug logging"
#: The longest duration a command takes (a year): past it, a number is a typo, not a plan.
MAX_SECONDS = 366 * 24 * 3600.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class _SubParser(_Parser):
    """A subcommand's parser: it also accepts the global options (``hil boards --check --lab DIR``).
    Their default is SUPPRESS, so a value given before the subcommand is kept when none is given after."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.add_argument("--lab", metavar="DIR", default=argparse.SUPPRESS, help=LAB_HELP)
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)


# ---------------------------------------------------------------------------- argument types


def seconds(text: str) -> float:
    """An argument type: a finite number of seconds, more than 0 and at most MAX_SECONDS."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (e.g. 30 or 2.5)")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: give a number of seconds more than 0")
    if value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text}: at most {MAX_SECONDS:.0f} seconds (a year)")
    return value


def port(text: str) -> int:
    """An argument type: a TCP port, 1-65535 (0: a free one)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port: use 1-65535, or 0 for a free one")
    return value


def output_folder(what: str) -> Callable[[str], Path]:
    """An argument type: a folder the command will write into (it exists as a folder, or can be made)."""

    def check(text: str) -> Path:
        try:
            return check_folder_path(text, what=what, error=UsageError)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(exc.message) from None

    check.__name__ = what  # argparse names the type in some messages
    return check


def each_input(names: Sequence[str], check: Callable[[str], None], *, what: str, debug: bool = False) -> int:
    """Check every input, report each failure as it comes, and return the worst exit code (0 if all
    passed; infrastructure 3 > usage 2 > a failed check 1). With several inputs, a closing line
    counts the failures."""
    codes = []
    for name in names:
        try:
            check(name)
            codes.append(EXIT_OK)
        except HarnessError as exc:
            if debug:
                raise
            print(f"hil: error: {exc}", file=sys.stderr, flush=True)
            codes.append(exc.exit_code)
    failed = sum(1 for code in codes if code)
    if failed and len(names) > 1:
        print(f"hil: {failed} of {len(names)} {what} failed", file=sys.stderr, flush=True)
    return max(codes, default=EXIT_OK)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hil", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"hil {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    parser.add_argument("--lab", metavar="DIR", default=None, help=LAB_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_SubParser)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(func(args) or 0)
    except HarnessError as exc:
        if args.debug:
            raise
        print(f"hil: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("hil: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of the output has gone (`hil ... | head`): stop quietly, as a tool killed by
        # SIGPIPE would; standard output goes nowhere from here, so the final flush cannot fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
