"""`hil telemetry decode|show` arguments."""

from __future__ import annotations

from pathlib import Path

from tests.badinput.case import error, refused, write

VECTOR = (Path(__file__).resolve().parents[3] / "fixtures" / "vectors" / "heartbeat-flatcc.bin").read_bytes()
QUIET = r"\A\Z"  # a reader that went away is told nothing

SURFACE = "cli-telemetry"

CASES = [
    refused("show-without-archive", "telemetry show", r"the following arguments are required: ARCHIVE"),
    refused("show-two-archives", "telemetry show a b", r"unrecognized arguments: b"),
    refused("decode-unknown-option", "telemetry decode --hex x", r"unrecognized arguments: --hex"),
    refused("unknown-action", "telemetry replay x", r"invalid choice: 'replay'"),
    refused("decode-pretty-only", "telemetry decode --pretty", r"the following arguments are required: FILE"),
    error("decode-into-closed-pipe", "telemetry decode --pretty m.bin m.bin m.bin", QUIET, write("m.bin", VECTOR),
          code=141, closed_stdout=True),
]
