"""Environment variables the CLI reads: ``HIL_LAB`` (the lab folder) and ``HIL_STATE`` (its state)."""

from __future__ import annotations

from tests.badinput.case import board, build, error, folder, good_lab, lab, mode, refused, write

SURFACE = "environment"

CASES = [
    error("lab-missing", "boards --check", r"lab folder nowhere \(from HIL_LAB\) does not exist",
          env={"HIL_LAB": "nowhere"}),
    error("lab-a-file", "boards", r"lab folder f \(from HIL_LAB\) is a file", write("f", "x"), env={"HIL_LAB": "f"}),
    error("lab-unreadable", "boards --check", r"HIL_LAB.*permission denied", good_lab(), mode("lab", 0),
          env={"HIL_LAB": "lab"}, unprivileged=True),
    error("default-lab-missing", "boards", r"lab folder boards \(the default: no --lab and no HIL_LAB\) does not"),
    refused("lab-bad-board", "boards --check", r"lab/b\.yaml.*probe\.id", good_lab(),
            board({"name": "b", "probe.id": "x"}, file="lab/b.yaml"), env={"HIL_LAB": "lab"}),
    error("state-a-file", "--lab lab boards", r"state folder s \(from HIL_STATE\) is a file, not a folder",
          good_lab(), write("s", "x"), env={"HIL_STATE": "s"}),
    error("state-under-a-file", "--lab lab boards", r"state folder s/sub \(from HIL_STATE\).*not a folder",
          good_lab(), write("s", "x"), env={"HIL_STATE": "s/sub"}),
    error("state-unwritable", "--lab lab boards", r"state folder.*\(from HIL_STATE\).*permission denied",
          good_lab(), folder("s"), mode("s", 0o555), env={"HIL_STATE": "s"}, unprivileged=True),
    error("state-a-file-clear", "--lab lab boards --clear rt1060-a", r"HIL_STATE.*is a file",
          good_lab(), write("s", "x"), env={"HIL_STATE": "s"}),
    error("state-a-file-watch", "--lab lab watch rt1060-a --firmware build", r"HIL_STATE.*is a file",
          good_lab(), build(), write("s", "x"), env={"HIL_STATE": "s"}),
    error("lab-state-dir-overridden-by-env", "--lab lab boards", r"HIL_STATE.*is a file",
          lab({"state_dir": "st"}), board(), write("s", "x"), env={"HIL_STATE": "s"}),
]
