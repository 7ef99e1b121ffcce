"""`hil telemetry show` on bad archives, as a user runs it: each case is one row of ``CASES`` (name,
the file's bytes or a setup that makes the path to give, the exit code, a pattern stderr must match,
and how many records stdout must show). Every case ends in bounded time, without a traceback.

Exit codes: 0 a whole archive (also a torn last record or an unclosed one, which lose nothing
acknowledged), 1 damage (each range named on stderr, every good record still shown), 2 a file that
is no archive at all."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.telemetry.archive_format import HEADER, MAGIC, PAGE, encode_body, encode_record
from harness.telemetry.topic import security_topic

REPO = Path(__file__).resolve().parents[2]
VECTOR = (REPO / "fixtures" / "vectors" / "network-flatcc.bin").read_bytes()
TOPIC = security_topic("dev-a").encode()
T0 = 1_700_000_000.0
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def body(i: int, *, received: float | None = None, topic: bytes = TOPIC, qos: int = 1) -> bytes:
    return encode_body(T0 + i if received is None else received, qos, 0, topic, VECTOR)


RECORDS = [encode_record(i, body(i)) for i in range(3)]
WHOLE = MAGIC + b"".join(RECORDS)
AT = [len(MAGIC) + sum(len(r) for r in RECORDS[:i]) for i in range(len(RECORDS) + 1)]  # offsets, then the end


def with_middle(middle: bytes) -> bytes:
    """WHOLE with record 1 replaced by ``middle`` (its bytes as given)."""
    return WHOLE[:AT[1]] + middle + WHOLE[AT[2]:]


def patched(at: int, new: bytes, data: bytes = WHOLE) -> bytes:
    return data[:at] + new + data[at + len(new):]


def unclosed(data: bytes) -> bytes:
    """As a writer that did not close leaves it: zeros to a whole number of pages."""
    return data + bytes(-len(data) % PAGE or PAGE)


def v1(bodies: list[bytes]) -> bytes:
    """Format 1, as an older harness wrote it."""
    return b"HILTLM1\n" + b"".join(struct.pack(">II", len(b), zlib.crc32(b)) + b for b in bodies)


V1 = v1([body(i) for i in range(4)])
V1_AT = [8 + sum(8 + len(body(j)) for j in range(i)) for i in range(5)]


def make_dir(p: Path) -> Path:
    p.mkdir()
    return p


def make_fifo(p: Path) -> Path:
    os.mkfifo(p)
    return p


def link_to(target: str) -> Callable[[Path], Path]:
    def make(p: Path) -> Path:
        p.symlink_to(target if target != "self" else p)
        return p
    return make


def unreadable(p: Path) -> Path:
    p.write_bytes(WHOLE)
    p.chmod(0)
    return p


@dataclass(frozen=True)
class Case:
    name: str
    make: bytes | Callable[[Path], Path]  # the file's bytes, or a setup returning the path to give
    exit: int
    stderr: str  # a pattern the standard error must match
    shown: int | None = None  # records on standard output
    as_nobody: bool = False  # run as an unprivileged user (root reads any file)


CASES = [
    # no archive at all: exit 2, nothing shown
    Case("empty file", b"", 2, r"t\.bin: empty \(0 bytes\): not a telemetry archive\n  fix: ", 0),
    Case("missing file", lambda p: p, 2, r"t\.bin: no such archive file", 0),
    Case("directory", make_dir, 2, r"t\.bin: is a directory, not an archive file", 0),
    Case("FIFO", make_fifo, 2, r"t\.bin: is a FIFO \(named pipe\), not an archive file", 0),
    Case("/dev/zero", lambda p: Path("/dev/zero"), 2, r"/dev/zero: is a character device, not an archive file", 0),
    Case("dangling link", link_to("/nonexistent/telemetry.bin"), 2,
         r"t\.bin: a link to /nonexistent/telemetry\.bin, which does not exist", 0),
    Case("link loop", link_to("self"), 2, r"t\.bin: cannot read it: a link loop", 0),
    Case("unreadable file", unreadable, 2, r"t\.bin: cannot read it: permission denied\n  fix: check the permissions",
         0, as_nobody=True),
    Case("text file", b"hello, this is not an archive\n" * 20, 2,
         r"t\.bin: not a telemetry archive \(it starts with b'hello, t'; an archive starts with", 0),
    Case("zeros only", bytes(2 * PAGE), 2, r"not a telemetry archive \(all 8192 bytes are zero", 0),
    Case("a FlatBuffers message, not an archive", VECTOR, 2, r"not a telemetry archive", 0),
    # whole archives, and what a stopped writer leaves: exit 0
    Case("three good records", WHOLE, 0, r"\A\Z", 3),
    Case("header only", MAGIC, 0, r"\A\Z", 0),
    Case("unclosed: zeros after the records", unclosed(WHOLE), 0,
         r"not closed: its collector is still writing it, or died; 3 complete record\(s\) shown", 3),
    Case("torn last record: its body without its header", unclosed(WHOLE[:AT[2]] + bytes(HEADER) + body(2)), 0,
         rf"last record incomplete \({HEADER + len(body(2).rstrip(bytes(1)))} bytes at byte {AT[2]}", 2),
    Case("torn last record: killed inside its body", unclosed(WHOLE[:AT[2]] + bytes(HEADER) + body(2)[:50]), 0,
         rf"last record incomplete \({HEADER + 50} bytes", 2),
    Case("format 1", V1, 0, r"\A\Z", 4),
    Case("format 1 cut inside its last record (a write(2) writer killed)", V1[:-5], 0,
         r"last record incomplete", 3),
    # damage: exit 1, every good record shown, each damaged range named
    Case("header cut short", MAGIC[:5], 1,
         r"bytes 0\.\.4 \(5 bytes\): the file ends inside the archive's 8-byte header", 0),
    Case("cut inside the sync marker of record 2", WHOLE[:AT[2] + 2], 1,
         rf"DAMAGED bytes {AT[2]}\.\.{AT[2] + 1} \(2 bytes\)", 2),
    Case("cut inside the length of record 2", WHOLE[:AT[2] + 6], 1, rf"DAMAGED bytes {AT[2]}\.\.", 2),
    Case("cut inside the number of record 2", WHOLE[:AT[2] + 12], 1, rf"DAMAGED bytes {AT[2]}\.\.", 2),
    Case("cut inside the body CRC of record 2", WHOLE[:AT[2] + 18], 1, rf"DAMAGED bytes {AT[2]}\.\.", 2),
    Case("cut inside the header CRC of record 2", WHOLE[:AT[2] + 22], 1, rf"DAMAGED bytes {AT[2]}\.\.", 2),
    Case("cut inside the body of record 2", WHOLE[:AT[2] + 40], 1,
         r"record 2 needs \d+ bytes more than the file holds: the file was cut short; record 2 lost", 2),
    Case("length of record 1 is 0xffffffff", patched(AT[1] + 4, b"\xff" * 4), 1,
         rf"DAMAGED bytes {AT[1]}\.\.{AT[2] - 1} \({AT[2] - AT[1]} bytes\): a record header that does not match "
         r"its checksum; record 1 lost", 2),
    Case("length of record 1 is 0", patched(AT[1] + 4, bytes(4)), 1, r"; record 1 lost", 2),
    Case("length beyond the file, header checksum right", with_middle(
        (h := struct.pack(">4sIQI", RECORDS[1][:4], 1 << 20, 1, 0)) + struct.pack(">I", zlib.crc32(h))), 1,
        r"record 1 needs \d+ bytes more than the file holds: the file was cut short", 1),
    Case("length over the 64 MiB limit, header checksum right", with_middle(
        (h := struct.pack(">4sIQI", RECORDS[1][:4], 0xFFFFFFFF, 1, 0)) + struct.pack(">I", zlib.crc32(h)) +
        RECORDS[1][HEADER:]), 1, r"a record header that does not match its checksum; record 1 lost", 2),
    Case("a zeroed page", patched(AT[1], bytes(AT[2] - AT[1])), 1, r"zeros where records were \(a wiped page\?\); "
         r"record 1 lost", 2),
    Case("a flipped byte in the body of record 1", patched(AT[1] + 100, bytes([RECORDS[1][100] ^ 0x20])), 1,
         r"record 1: its body does not match its checksum; record 1 lost", 2),
    Case("a flipped bit in the number of record 1", patched(AT[1] + 15, bytes([RECORDS[1][15] ^ 1])), 1,
         r"; record 1 lost", 2),
    Case("records missing with no damaged bytes", WHOLE[:AT[1]] + WHOLE[AT[2]:], 1,
         rf"DAMAGED at byte {AT[1]}: records missing, with no damaged bytes between their neighbours.*; record 1 lost",
         2),
    Case("damaged archive header", b"HILTLX2\n" + WHOLE[8:], 1, r"DAMAGED bytes 0\.\.7 \(8 bytes\)", 3),
    Case("zeros at the end of a closed archive", WHOLE[:AT[2]] + bytes(AT[3] - AT[2]), 1,
         r"zeros to the end of a file its writer had closed", 2),
    Case("garbage after the last record", WHOLE + b"\x01\x02garbage", 1,
         rf"DAMAGED bytes {AT[3]}\.\..*bytes that are not a record, to the end of the file", 3),
    Case("receive time NaN", with_middle(encode_record(1, body(1, received=float("nan")))), 1,
         r"INVALID RECORD|1 invalid record\(s\) \(numbers 1\)", 3),
    Case("receive time infinite", with_middle(encode_record(1, body(1, received=float("inf")))), 1,
         r"1 invalid record\(s\) \(numbers 1\)", 3),
    Case("receive time negative", with_middle(encode_record(1, body(1, received=-1.0))), 1,
         r"1 invalid record\(s\) \(numbers 1\)", 3),
    Case("topic not UTF-8", with_middle(encode_record(1, body(1, topic=b"devices/\xc3\x28/messages/events/"))), 1,
         r"1 invalid record\(s\)", 3),
    Case("QoS 9", with_middle(encode_record(1, body(1, qos=9))), 1, r"1 invalid record\(s\)", 3),
    Case("topic length past its body", with_middle(encode_record(1, struct.pack(">dBBH", T0, 1, 0, 9000) + b"xy")), 1,
         r"record 1: its topic length 9000 runs past its body \(14 bytes\); record 1 lost", 2),
    Case("format 1, length of record 1 is 0xffffffff", patched(V1_AT[1], b"\xff" * 4, V1), 1,
         r"record 1: its length field is damaged; record 1 lost", 3),
    Case("format 1, a zeroed stretch over two records", patched(V1_AT[1], bytes(V1_AT[2] + 20 - V1_AT[1]), V1), 1,
         rf"DAMAGED bytes {V1_AT[1]}\.\.{V1_AT[3] - 1} .*format 1 does not number its records.*record numbers "
         rf"from byte {V1_AT[3]} on are counted from there", 2),
    Case("format 1, receive time NaN", v1([body(0), body(1, received=float("nan")), body(2)]), 1,
         r"1 invalid record\(s\) \(numbers 1\)", 3),
]


def show(path: Path, *, as_nobody: bool = False) -> subprocess.CompletedProcess[str]:
    prefix = NOBODY if as_nobody and os.geteuid() == 0 else []
    raw = subprocess.run([*prefix, sys.executable, "-m", "harness", "telemetry", "show", str(path)],
                         capture_output=True, timeout=60, check=False, cwd=REPO)
    return subprocess.CompletedProcess(raw.args, raw.returncode, raw.stdout.decode(), raw.stderr.decode())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_show_bad_archive(tmp_path: Path, case: Case) -> None:
    path = tmp_path / "t.bin"
    if isinstance(case.make, bytes):
        path.write_bytes(case.make)
    else:
        path = case.make(path)
    done = show(path, as_nobody=case.as_nobody)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == case.exit, done.stderr
    assert re.search(case.stderr, done.stderr, re.DOTALL), done.stderr
    if case.shown is not None:
        assert len(done.stdout.splitlines()) == case.shown, done.stdout
    if case.exit == 1:  # damage: each range on its own line, then the summary naming the file
        assert f"hil: error: {path}: damaged archive" in done.stderr


def test_the_table_has_a_case_for_every_outcome() -> None:
    assert len(CASES) >= 20 and {c.exit for c in CASES} == {0, 1, 2}
    assert len({c.name for c in CASES}) == len(CASES)


def test_show_lists_every_good_record_around_the_damage_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    path.write_bytes(patched(AT[1] + 4, b"\xff" * 4))
    done = show(path)
    assert done.returncode == 1
    assert [line.split()[0] for line in done.stdout.splitlines()] == ["0", "2"]
    assert " dev-a NETWORK_ACTIVITY " in done.stdout
    lines = done.stderr.splitlines()
    assert lines[0].startswith(f"hil: {path}: DAMAGED bytes {AT[1]}..") and "record 1 lost" in lines[0]
    assert "2 good record(s) shown" in done.stderr


def test_show_json_marks_an_invalid_record_and_stays_json(tmp_path: Path) -> None:
    import json

    path = tmp_path / "t.bin"
    path.write_bytes(with_middle(encode_record(1, body(1, received=float("nan")))))
    raw = subprocess.run([sys.executable, "-m", "harness", "telemetry", "show", "--json", str(path)],
                         capture_output=True, timeout=60, check=False, cwd=REPO, text=True)
    assert raw.returncode == 1 and "Traceback" not in raw.stderr
    rows = [json.loads(line) for line in raw.stdout.splitlines()]  # strict JSON: no NaN
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert rows[1]["received"] is None and "receive time nan is not a time" in rows[1]["problem"]
    assert "problem" not in rows[0] and rows[0]["received"] == T0


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("left", "shown", "code"), [
    (patched(AT[1] + 4, b"\xff" * 4), ["0", "2"], 1),  # the damage is still there, named
    (unclosed(WHOLE[:AT[2]] + bytes(HEADER) + body(2)), ["0", "1"], 0),  # a torn record kept is no damage
], ids=["damaged length", "torn last record"])
def test_hil_broker_continues_an_archive_without_removing_a_byte(tmp_path: Path, left: bytes, shown: list[str],
                                                                 code: int) -> None:
    """The issue's case: `hil broker --archive FILE` on a damaged archive cut it to its first record."""
    archive = tmp_path / "telemetry.bin"
    archive.write_bytes(left)
    proc = subprocess.Popen([sys.executable, "-m", "harness", "broker", "--kind", "embedded", "--json",
                             "--run-dir", str(tmp_path / "run"), "--archive", str(archive)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()  # printed once the collector has opened the archive
        assert banner.startswith("{"), proc.communicate(timeout=30)
    finally:
        proc.send_signal(15)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert archive.read_bytes()[:len(left)] == left
    assert re.search(r"WARNING .*collector: the archive .*telemetry\.bin held bytes that are not records, kept "
                     r"as they are; appending after them: bytes \d+\.\.\d+", err), err
    done = show(archive)
    assert [line.split()[0] for line in done.stdout.splitlines()] == shown and done.returncode == code, done.stderr
