"""`hil watch BOARD [--firmware BUILD] [--duration S] [--report-dir DIR] [--json]`: refused before bring-up."""

from __future__ import annotations

from tests.badinput.case import build, error, folder, good_lab, refused, write

SURFACE = "cli-watch"
W = "--lab lab watch rt1060-a --firmware build"
UP = (good_lab(), build())

CASES = [
    refused("duration-negative", f"{W} --duration -5", r"--duration.*-5.*more than 0", *UP),
    refused("duration-zero", f"{W} --duration 0", r"--duration.*more than 0", *UP),
    refused("duration-nan", f"{W} --duration nan", r"--duration.*'nan'", *UP),
    refused("duration-infinite", f"{W} --duration inf", r"--duration.*'inf'", *UP),
    refused("duration-text", f"{W} --duration soon", r"--duration.*'soon'.*seconds", *UP),
    refused("duration-huge", f"{W} --duration 1e308", r"--duration.*at most", *UP),
    refused("report-dir-a-file", f"{W} --report-dir f", r"--report-dir.*f is a file, not a folder", *UP,
            write("f", "x")),
    refused("report-dir-under-a-file", f"{W} --report-dir f/run", r"--report-dir.*f is a file, not a folder", *UP,
            write("f", "x")),
    refused("report-dir-empty", (*W.split(), "--report-dir", ""), r"--report-dir.*empty", *UP),
    error("unknown-board", "--lab lab watch nope --firmware build", r"no board named 'nope'", *UP),
    error("real-board-without-firmware", "--lab lab watch rt1060-a", r"real board.*--firmware BUILD", good_lab()),
    error("firmware-missing", "--lab lab watch rt1060-a --firmware nowhere", r"nowhere.*no firmware manifest",
          good_lab()),
    error("firmware-a-file", "--lab lab watch rt1060-a --firmware f", r"f.*not valid YAML|f.*mapping", good_lab(),
          write("f", "x")),
    error("firmware-folder-without-manifest", "--lab lab watch rt1060-a --firmware d", r"d.*no firmware manifest",
          good_lab(), folder("d")),
    refused("no-board", "--lab lab watch", r"the following arguments are required: BOARD", good_lab()),
    refused("two-boards", "--lab lab watch a b", r"unrecognized arguments: b", good_lab()),
]
