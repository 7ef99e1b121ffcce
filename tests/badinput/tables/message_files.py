"""Files `hil telemetry decode` reads: FlatBuffers security messages, one a file (or stdin)."""

from __future__ import annotations

from pathlib import Path

from tests.badinput.case import error, fifo, folder, link, mode, refused, write

SURFACE = "message-file"
VECTOR = (Path(__file__).resolve().parents[3] / "fixtures" / "vectors" / "heartbeat-flatcc.bin").read_bytes()
GOOD = write("good.bin", VECTOR)

CASES = [
    error("dev-zero", "telemetry decode /dev/zero", r"/dev/zero.*more than \d+ bytes"),
    error("fifo-without-writer", "telemetry decode f.bin", r"f\.bin.*empty", fifo("f.bin"), code=1),
    error("dev-null", "telemetry decode /dev/null", r"/dev/null.*empty", code=1),
    error("missing", "telemetry decode nope.bin", r"nope\.bin: no such file"),
    error("a-folder", "telemetry decode d", r"d: is a folder, not a file", folder("d")),
    error("unreadable", "telemetry decode u.bin", r"u\.bin.*permission denied", write("u.bin", VECTOR),
          mode("u.bin", 0), unprivileged=True),
    error("dangling-link", "telemetry decode l.bin", r"l\.bin.*link to.*gone.*does not exist", link("l.bin", "gone")),
    error("link-loop", "telemetry decode l.bin", r"l\.bin.*loop", link("l.bin", "l.bin")),
    error("under-a-file", "telemetry decode good.bin/x", r"good\.bin/x.*good\.bin is a file, not a folder", GOOD),
    error("name-too-long", ("telemetry", "decode", "n" * 5000), r"name too long"),
    error("empty-file", "telemetry decode e.bin", r"e\.bin.*empty", write("e.bin", b""), code=1),
    error("garbage", "telemetry decode g.bin", r"g\.bin: not a valid security message.*offset",
          write("g.bin", b"\xff" * 64), code=1),
    error("truncated", "telemetry decode t.bin", r"t\.bin: not a valid security message", write("t.bin", VECTOR[:24]),
          code=1),
    error("stdin-empty", "telemetry decode -", r"-.*stdin.*empty", code=1),
    error("stdin-65MiB", "telemetry decode -", r"stdin.*more than 67108864 bytes", stdin=bytes(65 << 20)),
    error("three-missing", "telemetry decode a b c", r"\ba: no such file.*\bb: no such file.*\bc: no such file"),
    error("missing-then-good", "telemetry decode nope.bin good.bin", r"nope\.bin: no such file.*1 of 2", GOOD),
    error("good-then-garbage", "telemetry decode good.bin g.bin", r"g\.bin: not a valid security message.*1 of 2",
          GOOD, write("g.bin", b"\x00" * 16), code=1),
    error("garbage-then-missing", "telemetry decode g.bin nope.bin", r"g\.bin: not a valid.*nope\.bin: no such file",
          write("g.bin", b"\x00" * 16)),
    error("a-socket", "telemetry decode s.sock", r"s\.sock.*socket", lambda root: _socket(root / "s.sock")),
    refused("no-files", "telemetry decode", r"the following arguments are required: FILE"),
]


def _socket(path: Path) -> None:
    import socket

    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()
