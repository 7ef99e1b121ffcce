"""The lab folder itself (``--lab DIR``): what is there, what is not, what cannot be read."""

from __future__ import annotations

from tests.badinput.case import board, error, fifo, folder, good_lab, lab, link, mode, refused, write

SURFACE = "lab-folder"
CHECK = "--lab lab boards --check"

CASES = [
    error("missing", CHECK, r"lab folder lab does not exist.*--lab"),
    error("a-file", CHECK, r"lab folder lab is a file, not a folder", write("lab", "x")),
    error("under-a-file", "--lab lab/sub boards --check", r"lab/sub.*lab is a file, not a folder", write("lab", "x")),
    error("unreadable", CHECK, r"lab folder lab.*permission denied", good_lab(), mode("lab", 0), unprivileged=True),
    error("unreadable-table", "--lab lab boards", r"lab folder lab.*permission denied", good_lab(), mode("lab", 0),
          unprivileged=True),
    error("dangling-link", CHECK, r"lab.*link to .*gone.*does not exist", link("lab", "gone")),
    error("link-loop", CHECK, r"lab.*loop", link("lab", "lab")),
    refused("empty-name", ("--lab", "", "boards", "--check"), r"--lab.*empty"),
    error("board-file-a-socket", CHECK, r"lab/s\.yaml.*socket", good_lab(), lambda root: _socket(root / "lab/s.yaml")),
    error("board-fifo-table", "--lab lab boards", r"lab/f\.yaml.*FIFO", good_lab(), fifo("lab/f.yaml")),
    error("board-folder-named-yml", CHECK, r"lab/d\.yml.*is a folder", good_lab(), folder("lab/d.yml")),
    error("board-file-unreadable-table", "--lab lab boards", r"lab/rt1060-a\.yaml.*permission denied", good_lab(),
          mode("lab/rt1060-a.yaml", 0), unprivileged=True),
    error("board-dangling-link-table", "--lab lab boards", r"lab/x\.yaml.*link", good_lab(), link("lab/x.yaml", "y")),
    refused("board-bad-among-good-table", "--lab lab boards", r"lab/b\.yaml.*probe\.id", good_lab(),
            board({"name": "b", "probe.id": "nope"}, file="lab/b.yaml")),
    error("clear-in-unreadable-lab", "--lab lab boards --clear rt1060-a", r"lab.*permission denied", good_lab(),
          mode("lab", 0), unprivileged=True),
    error("lab-yaml-fifo-table", "--lab lab boards", r"lab/lab\.yaml.*FIFO", board(), fifo("lab/lab.yaml")),
    error("state-dir-file-table", "--lab lab boards", r"state_dir.*statefile.*is a file, not a folder",
          lab({"state_dir": "statefile"}), board(), write("lab/statefile", "x")),
    error("state-dir-unwritable-table", "--lab lab boards", r"state folder.*permission denied",
          lab({"state_dir": "st"}), board(), folder("lab/st"), mode("lab/st", 0o555), unprivileged=True),
]


def _socket(path: object) -> None:
    import socket
    from pathlib import Path

    assert isinstance(path, Path)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()
