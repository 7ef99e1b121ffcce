"""`hil` itself: global options (accepted before and after the subcommand), missing commands."""

from __future__ import annotations

from tests.badinput.case import board, build, error, good_lab, refused

SURFACE = "cli-hil"
BAD = board({"name": "b", "probe.id": "nope"}, file="lab/b.yaml")

CASES = [
    refused("lab-after-check", "boards --check --lab lab", r"lab/b\.yaml.*probe\.id", good_lab(), BAD),
    refused("lab-after-table", "boards --lab lab", r"lab/b\.yaml.*probe\.id", good_lab(), BAD),
    error("lab-after-missing", "boards --lab nowhere", r"lab folder nowhere does not exist"),
    error("lab-after-watch", "watch rt1060-a --lab lab", r"rt1060-a is a real board.*--firmware", good_lab()),
    error("lab-after-watch-missing", "watch x --lab nowhere", r"lab folder nowhere does not exist"),
    error("lab-after-clear", "boards --clear nope --lab lab", r"no board named 'nope'", good_lab()),
    refused("lab-twice", "--lab a boards --lab", r"--lab: expected one argument"),
    refused("lab-without-value", "--lab", r"--lab: expected one argument"),
    refused("unknown-option", "--bogus boards", r"unrecognized arguments: --bogus"),
    refused("unknown-command", "flsh", r"invalid choice: 'flsh'"),
    refused("no-command", "", r"usage: hil"),
    refused("firmware-without-action", "firmware", r"usage: hil firmware"),
    refused("telemetry-without-action", "telemetry", r"usage: hil telemetry"),
    refused("firmware-unknown-action", "firmware flash", r"invalid choice: 'flash'"),
    refused("lab-option-after-verify", "firmware verify build --lab", r"--lab: expected one argument", build()),
    refused("option-as-value", "watch --duration", r"--duration: expected one argument"),
]
