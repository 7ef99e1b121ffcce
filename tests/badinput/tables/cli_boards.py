"""`hil boards [--check | --clear NAME]`."""

from __future__ import annotations

from tests.badinput.case import error, good_lab, refused

SURFACE = "cli-boards"

CASES = [
    error("clear-unknown-board", "--lab lab boards --clear nope", r"no board named 'nope'.*rt1060-a", good_lab()),
    error("clear-empty-name", ("--lab", "lab", "boards", "--clear", ""), r"no board named ''", good_lab()),
    error("clear-path-like", "--lab lab boards --clear ../../etc/passwd", r"no board named '\.\./\.\./etc/passwd'",
          good_lab()),
    refused("clear-without-name", "--lab lab boards --clear", r"--clear: expected one argument", good_lab()),
    refused("check-and-clear", "--lab lab boards --check --clear rt1060-a", r"not allowed with", good_lab()),
    refused("positional", "--lab lab boards rt1060-a", r"unrecognized arguments: rt1060-a", good_lab()),
]
