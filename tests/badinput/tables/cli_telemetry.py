"""`hil telemetry decode|show` arguments."""

from __future__ import annotations

from tests.badinput.case import refused

SURFACE = "cli-telemetry"

CASES = [
    refused("show-without-archive", "telemetry show", r"the following arguments are required: ARCHIVE"),
    refused("show-two-archives", "telemetry show a b", r"unrecognized arguments: b"),
    refused("decode-unknown-option", "telemetry decode --hex x", r"unrecognized arguments: --hex"),
    refused("unknown-action", "telemetry replay x", r"invalid choice: 'replay'"),
    refused("decode-pretty-only", "telemetry decode --pretty", r"the following arguments are required: FILE"),
]
