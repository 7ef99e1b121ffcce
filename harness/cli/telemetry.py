"""`hil telemetry`: security telemetry tools.

- ``hil telemetry decode FILE...``: decode FlatBuffers security messages (``-`` reads stdin) and print
  one JSON object per input, in input order: ``{"file": NAME, "message": {...}}``. Every input is
  tried and each failure reported: a malformed or empty buffer is exit 1 naming the file and the
  offset; a missing, unreadable or oversized input (more than the archive's record limit) exit 2.
- ``hil telemetry show ARCHIVE [--json]``: print a collector's raw archive decoded, one message per
  line; undecodable messages are shown with their error, a torn last record (a crashed writer) is
  reported on stderr, corrupt records make it exit 1.

Each action is one ``_add_<action>(actions)`` function below, listed in ``ACTIONS``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from harness.cli import each_input
from harness.errors import CheckFailed, UsageError
from harness.telemetry.archive import MAX_RECORD, ArchiveScan, RawRecord, read_archive
from harness.telemetry.codec import DecodeError, decode
from harness.telemetry.streams import brief_event
from harness.telemetry.topic import TopicError, parse_topic
from harness.userfiles import read_bounded, read_user_file

EXIT_USAGE = 2


MESSAGE = "security message"


def _read_input(name: str) -> bytes:
    """One input, bounded: a regular file, a pipe or a character device; ``-`` is stdin."""
    if name == "-":
        return read_bounded(sys.stdin.buffer, "- (stdin)", what=MESSAGE, limit=MAX_RECORD, error=UsageError)
    return read_user_file(name, what=MESSAGE, limit=MAX_RECORD, error=UsageError, streams=True)


def _decode_one(name: str, pretty: bool) -> None:
    data = _read_input(name)
    shown = "- (stdin)" if name == "-" else name
    fix = "check the file is a raw AzureIoTSecurity.Message payload (no MQTT header, no size prefix)"
    if not data:
        raise CheckFailed(f"{shown}: empty (0 bytes): not a security message", fix=fix)
    try:
        message = decode(data)
    except DecodeError as exc:
        raise CheckFailed(f"{shown}: not a valid security message ({len(data)} bytes): {exc}", fix=fix) from None
    record = {"file": name, "message": message.to_json()}
    print(json.dumps(record, indent=2 if pretty else None), flush=True)


def run_decode(args: argparse.Namespace) -> int:
    """Decode every input; each failure is reported, the exit code is the worst of them."""
    return each_input(args.files, lambda name: _decode_one(name, args.pretty), what="input(s)", debug=args.debug)


def _add_decode(actions: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = actions.add_parser("decode", help="decode FlatBuffers security messages to JSON")
    p.add_argument("files", nargs="+", metavar="FILE", help="message file(s); '-' reads stdin")
    p.add_argument("--pretty", action="store_true", help="indent the JSON")
    p.set_defaults(func=run_decode)


def _print_archive(records: Iterable[RawRecord], *, as_json: bool) -> None:
    for rec in records:
        try:
            device = parse_topic(rec.topic).device_id
        except TopicError:
            device = None
        row: dict[str, object] = {"index": rec.index, "received": rec.received, "topic": rec.topic,
                                  "device": device, "qos": rec.qos, "retain": rec.retain, "dup": rec.dup}
        try:
            message = decode(rec.payload)
            row["message"] = message.to_json()
            text = "; ".join(brief_event(e) for e in message.events) or "no events"
        except DecodeError as exc:
            row["error"], row["payload_hex"] = str(exc), rec.payload.hex()
            text = f"UNDECODABLE ({len(rec.payload)} bytes): {exc}"
        if as_json:
            print(json.dumps(row), flush=True)
        else:
            stamp = _dt.datetime.fromtimestamp(rec.received, _dt.UTC).isoformat(timespec="milliseconds")
            dup = " DUP" if rec.dup else ""
            print(f"{rec.index} {stamp} {device or rec.topic}{dup} {text}", flush=True)


def run_show(args: argparse.Namespace) -> int:
    path = Path(args.archive)
    if not path.is_file():
        raise UsageError(f"{path}: no such archive file", fix="give the telemetry.bin a collector wrote")
    scan = ArchiveScan()
    try:
        _print_archive(read_archive(path, scan), as_json=args.json)
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if scan.torn_tail:
        print(f"hil: {path}: last record incomplete ({scan.torn_tail} bytes; the writer stopped mid-record), "
              "skipped", file=sys.stderr)
    elif scan.unclosed:
        print(f"hil: {path}: not closed: its collector is still writing it, or died; "
              f"{scan.records} complete record(s) shown", file=sys.stderr)
    if scan.corrupt:
        raise CheckFailed(f"{path}: {len(scan.corrupt)} corrupt record(s) skipped",
                          actual=f"at byte offsets {scan.corrupt[:10]}")
    return 0


def _add_show(actions: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = actions.add_parser("show", help="print a collector archive decoded, one message per line")
    p.add_argument("archive", metavar="ARCHIVE", help="archive file written by the collector")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run_show)


ACTIONS: list[Callable[[argparse._SubParsersAction], None]] = [_add_decode, _add_show]  # type: ignore[type-arg]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = sub.add_parser("telemetry", help="decode and show security telemetry")

    def usage(args: argparse.Namespace) -> int:
        group.print_help(sys.stderr)
        return EXIT_USAGE

    group.set_defaults(func=usage)
    actions = group.add_subparsers(dest="telemetry_action", metavar="ACTION", parser_class=type(group))
    for add in ACTIONS:
        add(actions)
