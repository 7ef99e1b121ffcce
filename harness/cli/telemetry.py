"""`hil telemetry`: security telemetry tools.

- ``hil telemetry decode FILE...``: decode FlatBuffers security messages (``-`` reads stdin) and print
  one JSON object per input, in input order: ``{"file": NAME, "message": {...}}``. Every input is
  tried and each failure reported: a malformed or empty buffer is exit 1 naming the file and the
  offset; a missing, unreadable or oversized input (more than the archive's record limit) exit 2.
- ``hil telemetry show ARCHIVE [--json]``: print a collector's raw archive decoded, one message per
  line, every good record even after damage; undecodable messages are shown with their error. Each
  damaged byte range is named on stderr (offsets, length, the records lost there) and makes it exit 1,
  as does a record whose fields are invalid (a NaN time, a topic not UTF-8); a torn last record (a
  killed writer) and an unclosed archive are reported on stderr, exit 0. A file that is no archive
  (empty, a directory, a FIFO, unreadable) exits 2.

Each action is one ``_add_<action>(actions)`` function below, listed in ``ACTIONS``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
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


def _print_archive(records: Iterable[RawRecord], scan: ArchiveScan, path: Path, *, as_json: bool) -> None:
    said = 0  # damaged ranges reported so far: each on stderr where it is, between the records
    for rec in records:
        said = _say_damage(path, scan, said)
        try:
            device = parse_topic(rec.topic).device_id
        except TopicError:
            device = None
        timed = math.isfinite(rec.received)
        row: dict[str, object] = {"index": rec.index, "received": rec.received if timed else None, "topic": rec.topic,
                                  "device": device, "qos": rec.qos, "retain": rec.retain, "dup": rec.dup}
        if rec.problem:
            row["problem"] = rec.problem
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
            dup = " DUP" if rec.dup else ""
            bad = f" INVALID RECORD ({rec.problem})" if rec.problem else ""
            print(f"{rec.index} {_stamp(rec.received)} {device or rec.topic}{dup}{bad} {text}", flush=True)
    _say_damage(path, scan, said)


def _stamp(received: float) -> str:
    try:
        return _dt.datetime.fromtimestamp(received, _dt.UTC).isoformat(timespec="milliseconds")
    except (ValueError, OverflowError, OSError):  # NaN, infinite, out of range: the record says so
        return f"time={received!r}"


def _say_damage(path: Path, scan: ArchiveScan, said: int) -> int:
    for damage in scan.damaged[said:]:
        print(f"hil: {path}: DAMAGED {damage.describe()}", file=sys.stderr, flush=True)
    return len(scan.damaged)


def run_show(args: argparse.Namespace) -> int:
    path = Path(args.archive)
    scan = ArchiveScan()
    try:
        _print_archive(read_archive(path, scan), scan, path, as_json=args.json)
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    for kept in scan.kept:
        print(f"hil: {path}: kept {kept.describe()}", file=sys.stderr)
    if scan.torn_tail:
        print(f"hil: {path}: last record incomplete ({scan.torn_tail} bytes at byte {scan.end}: its writer "
              "stopped in the middle of it, or is writing it now; the broker has no acknowledgement for it), "
              "skipped", file=sys.stderr)
    elif scan.unclosed:
        print(f"hil: {path}: not closed: its collector is still writing it, or died; "
              f"{scan.records} complete record(s) shown", file=sys.stderr)
    if scan.renumbered is not None:
        print(f"hil: {path}: record numbers from byte {scan.renumbered} on are counted from there (format 1 "
              "does not store them): they may be lower than the numbers its collector logged", file=sys.stderr)
    if scan.damage:
        lost = sum(d.length for d in scan.damaged)
        parts = [f"{len(scan.damaged)} damaged range(s), {lost} bytes"] if scan.damaged else []
        if scan.invalid:
            parts.append(f"{len(scan.invalid)} invalid record(s) (numbers "
                         f"{', '.join(str(i) for i, _, _ in scan.invalid[:10])}"
                         f"{', ...' if len(scan.invalid) > 10 else ''})")
        raise CheckFailed(f"{path}: damaged archive: {'; '.join(parts)} (each named above)",
                          actual=f"{scan.records} good record(s) shown",
                          fix="every record shown is whole and its checksums hold; keep the file as it is (it is "
                              "evidence: hil never rewrites it) and find what damaged it (disk, copy, edit)")
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
