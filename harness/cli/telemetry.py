"""`hil telemetry`: security telemetry tools.

- ``hil telemetry decode FILE...``: decode FlatBuffers security messages (``-`` reads stdin) and print
  one JSON object per input, in input order: ``{"file": NAME, "message": {...}}``. A malformed
  buffer exits 1 naming the file and the offset; a missing or unreadable file exits 2.

Each action is one ``_add_<action>(actions)`` function below, listed in ``ACTIONS``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from harness.errors import CheckFailed, UsageError
from harness.telemetry.codec import DecodeError, decode

EXIT_USAGE = 2


def _read_input(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    path = Path(name)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{name}: no such file", fix="give the path of a FlatBuffers security message") from None
    except IsADirectoryError:
        raise UsageError(f"{name}: is a directory, not a message file") from None
    except OSError as exc:
        raise UsageError(f"{name}: cannot read ({exc.strerror})") from None


def run_decode(args: argparse.Namespace) -> int:
    for name in args.files:
        data = _read_input(name)
        try:
            message = decode(data)
        except DecodeError as exc:
            raise CheckFailed(
                f"{name}: not a valid security message ({len(data)} bytes): {exc}",
                fix="check the file is a raw AzureIoTSecurity.Message payload (no MQTT header, no size prefix)",
            ) from None
        record = {"file": name, "message": message.to_json()}
        print(json.dumps(record, indent=2 if args.pretty else None), flush=True)
    return 0


def _add_decode(actions: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = actions.add_parser("decode", help="decode FlatBuffers security messages to JSON")
    p.add_argument("files", nargs="+", metavar="FILE", help="message file(s); '-' reads stdin")
    p.add_argument("--pretty", action="store_true", help="indent the JSON")
    p.set_defaults(func=run_decode)


ACTIONS: list[Callable[[argparse._SubParsersAction], None]] = [_add_decode]  # type: ignore[type-arg]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = sub.add_parser("telemetry", help="decode and show security telemetry")

    def usage(args: argparse.Namespace) -> int:
        group.print_help(sys.stderr)
        return EXIT_USAGE

    group.set_defaults(func=usage)
    actions = group.add_subparsers(dest="telemetry_action", metavar="ACTION", parser_class=type(group))
    for add in ACTIONS:
        add(actions)
