"""`hil boards [--check | --clear NAME]`."""

from __future__ import annotations

from tests.badinput.case import error, good_lab, refused

QUIET = r"\A\Z"  # a reader that went away is told nothing

SURFACE = "cli-boards"

CASES = [
    error("clear-unknown-board", "--lab lab boards --clear nope", r"no board named 'nope'.*rt1060-a", good_lab()),
    error("clear-empty-name", ("--lab", "lab", "boards", "--clear", ""), r"no board named ''", good_lab()),
    error("clear-path-like", "--lab lab boards --clear ../../etc/passwd", r"no board named '\.\./\.\./etc/passwd'",
          good_lab()),
    refused("clear-without-name", "--lab lab boards --clear", r"--clear: expected one argument", good_lab()),
    refused("check-and-clear", "--lab lab boards --check --clear rt1060-a", r"not allowed with", good_lab()),
    error("table-into-closed-pipe", "--lab lab boards", QUIET, good_lab(), code=141, closed_stdout=True),
    refused("positional", "--lab lab boards rt1060-a", r"unrecognized arguments: rt1060-a", good_lab()),
]
