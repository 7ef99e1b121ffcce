"""Archives `hil telemetry show` reads (the basic cases; damaged archives are the archive branch's table)."""

from __future__ import annotations

from tests.badinput.case import error, fifo, folder, mode, write

SURFACE = "archive"
SHOW = "telemetry show a.bin"
ARCHIVE_BRANCH = "telemetry show belongs to the archive branch (it should open ARCHIVE through harness.userfiles)"

CASES = [
    error("missing", SHOW, r"a\.bin.*no such"),
    error("not-an-archive", SHOW, r"a\.bin.*not a telemetry archive", write("a.bin", b"\x7fELF" + bytes(60))),
    error("empty", SHOW, r"a\.bin.*empty", write("a.bin", b"")),
    error("a-folder", SHOW, r"a\.bin.*is a (folder|directory)", folder("a.bin")),
    error("fifo", SHOW, r"a\.bin.*FIFO", fifo("a.bin")),
    error("unreadable", SHOW, r"a\.bin.*permission denied", write("a.bin", b"HILA" + bytes(60)), mode("a.bin", 0),
          unprivileged=True),
    error("text-file", SHOW, r"a\.bin.*not a telemetry archive", write("a.bin", "hello\n" * 10)),
]
