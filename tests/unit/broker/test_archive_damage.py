"""A damaged archive: every record the damage did not touch is read, with the number its writer gave
it; each damaged range is named with the records lost there; reopening keeps every byte; format 1
(an older harness's archives) is read and resynchronised too; a file that is no archive gets an
ArchiveError naming it, without hanging or reading it whole."""

from __future__ import annotations

import os
import re
import struct
import threading
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.telemetry.archive import ArchiveError, ArchiveScan, ArchiveWriter, RawRecord, read_archive
from harness.telemetry.archive_format import MAGIC, PAGE, SYNC, encode_body, encode_record

TOPIC = "devices/dev-a/messages/events/"
T0 = 1_700_000_000.0
MAGIC_V1 = b"HILTLM1\n"


def write(path: Path, count: int = 5, size: int = 300, *, closed: bool = True) -> bytes:
    """An archive of ``count`` records of ``size`` payload bytes; its bytes as the writer left them
    (``closed=False``: while it was still open, zeros after the records)."""
    path.unlink(missing_ok=True)
    w = ArchiveWriter(path)
    for i in range(count):
        w.append(TOPIC, bytes([i % 256]) * size, qos=1, received=T0 + i)
    left = path.read_bytes()
    w.close()
    return path.read_bytes() if closed else left


def extents(data: bytes, path: Path) -> list[tuple[int, int]]:
    """(offset, end) of each record in the undamaged archive ``data``."""
    path.write_bytes(data)
    scan = ArchiveScan()
    offsets = [r.offset for r in read_archive(path, scan)]
    return list(zip(offsets, [*offsets[1:], scan.end], strict=True))


def untouched(before: bytes, after: bytes, spans: list[tuple[int, int]]) -> list[int]:
    """The records whose bytes are all still there, unchanged."""
    return [i for i, (a, b) in enumerate(spans) if b <= len(after) and after[a:b] == before[a:b]]


def length_field(data: bytes, offset: int) -> slice:
    """Where the body length of the record at ``offset`` is (format 2 after the sync marker; format 1
    first), so that these tests damage the same field in either format."""
    return slice(offset + 4, offset + 8) if data.startswith(MAGIC) else slice(offset, offset + 4)


def length_ffffffff(data: bytearray, spans: list[tuple[int, int]]) -> None:
    data[length_field(data, spans[1][0])] = b"\xff\xff\xff\xff"


def length_zero(data: bytearray, spans: list[tuple[int, int]]) -> None:
    data[length_field(data, spans[1][0])] = bytes(4)


def zeroed_page(data: bytearray, spans: list[tuple[int, int]]) -> None:
    data[PAGE:2 * PAGE] = bytes(PAGE)


DAMAGE: dict[str, Callable[[bytearray, list[tuple[int, int]]], None]] = {
    "length 0xffffffff": length_ffffffff, "length 0": length_zero, "a zeroed page": zeroed_page}


def damaged_archive(path: Path, damage: str) -> tuple[bytes, bytes, list[tuple[int, int]], list[int]]:
    """Twelve records with ``damage`` done to them: (the bytes before, after, the records' extents,
    the records left untouched)."""
    whole = write(path, count=12, size=1000)
    spans = extents(whole, path)
    data = bytearray(whole)
    DAMAGE[damage](data, spans)
    path.write_bytes(data)
    keep = untouched(whole, data, spans)
    assert 0 < len(keep) < len(spans) and keep[-1] == len(spans) - 1  # some lost, the last kept
    return whole, bytes(data), spans, keep


@pytest.mark.parametrize("damage", DAMAGE)
def test_damage_hides_no_later_record(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "t.bin"
    whole, data, spans, keep = damaged_archive(path, damage)
    scan = ArchiveScan()
    got = list(read_archive(path, scan))
    assert [r.index for r in got] == keep  # every one the damage left, numbered as its writer did
    assert [r.payload for r in got] == [bytes([i]) * 1000 for i in keep]
    assert scan.corrupt  # the damage is reported
    lost = [i for i in range(len(spans)) if i not in keep]
    assert [i for d in scan.damaged if d.lost for i in range(d.lost[0], d.lost[1] + 1)] == lost
    first_change = next(i for i, (a, b) in enumerate(zip(whole, data, strict=True)) if a != b)
    assert scan.damaged[0].offset <= first_change < scan.damaged[0].offset + scan.damaged[0].length


@pytest.mark.parametrize("damage", DAMAGE)
def test_reopening_a_damaged_archive_keeps_every_byte(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "t.bin"
    _, data, spans, keep = damaged_archive(path, damage)
    with ArchiveWriter(path) as w:
        assert w.append(TOPIC, b"after", received=T0 + 99) == len(spans)  # the number after the last
    assert path.read_bytes()[:len(data)] == data  # nothing cut, nothing rewritten
    assert [r.index for r in read_archive(path)] == [*keep, len(spans)]
    assert w.found  # and says so


def test_the_collector_logs_and_exposes_what_the_archive_held(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    from harness.broker.credentials import DeviceCredentials
    from harness.telemetry.collector import Collector

    path = tmp_path / "t.bin"
    data = bytearray(write(path))
    length_ffffffff(data, extents(bytes(data), path))
    path.write_bytes(data)
    col = Collector("mqtt://127.0.0.1:9", DeviceCredentials("hil-collector", "u", "p"), path)
    with caplog.at_level("WARNING"), pytest.raises(Exception, match="could not subscribe"):
        col.start(timeout=0.2)  # nothing listens there: it opens the archive, then gives up
    assert "record 1 lost" in col.archive_found
    assert any("held bytes that are not records" in r.message and "record 1 lost" in r.message
               for r in caplog.records if r.levelname == "WARNING")
    assert path.read_bytes() == data  # opened and closed: not a byte changed


def test_damage_at_the_end_of_a_closed_archive_is_kept_and_numbers_skip_past_it(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    whole = write(path)
    last = extents(whole, path)[-1][0]
    data = bytearray(whole)
    data[last + 2] ^= 0x40  # the last record's sync marker
    path.write_bytes(data)
    before = ArchiveScan()
    assert [r.index for r in read_archive(path, before)] == [0, 1, 2, 3]
    assert [(d.offset, d.length) for d in before.damaged] == [(last, len(data) - last)] and not before.torn_tail
    with ArchiveWriter(path) as w:
        number = w.append(TOPIC, b"after")
    assert number > 4  # record 4 (and any that might have followed it) may be in the collector's log
    assert path.read_bytes()[:len(data)] == data
    after = ArchiveScan()
    assert [r.index for r in read_archive(path, after)] == [0, 1, 2, 3, number]
    assert [(d.offset, d.length) for d in after.damaged] == [(last, len(data) - last)]
    assert "found so by the writer" in after.damaged[0].reason


def test_a_full_disk_as_the_writer_notes_what_it_kept_leaves_it_closed_and_the_file_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.errors import InfrastructureError
    from harness.telemetry import archive as archive_module

    path = tmp_path / "t.bin"
    data = bytearray(write(path))
    data[extents(bytes(data), path)[-1][0] + 2] ^= 0x40  # damage at the end: reopening writes a note first
    path.write_bytes(data)
    real = os.posix_fallocate

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(archive_module.os, "posix_fallocate", full)
    with pytest.raises(InfrastructureError, match=r"t\.bin: cannot extend the telemetry archive"):
        ArchiveWriter(path)
    assert path.read_bytes() == data
    monkeypatch.setattr(archive_module.os, "posix_fallocate", real)
    with ArchiveWriter(path) as w:  # not left locked: space again, and it continues
        assert w.append(TOPIC, b"after") > 4
    assert path.read_bytes()[:len(data)] == data


def test_zeros_at_the_end_of_a_closed_archive_are_damage_not_an_unclosed_writer(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    whole = write(path)
    assert len(whole) % PAGE
    spans = extents(whole, path)
    path.write_bytes(whole[:spans[3][0]] + bytes(len(whole) - spans[3][0]))  # records 3 and 4 wiped
    scan = ArchiveScan()
    assert [r.index for r in read_archive(path, scan)] == [0, 1, 2]
    assert not scan.unclosed and scan.corrupt == [spans[3][0]] and "wiped" in scan.damaged[0].reason


def test_an_unclosed_archive_with_damage_in_the_middle(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    left = write(path, count=12, size=1000, closed=False)
    spans = extents(write(tmp_path / "closed.bin", count=12, size=1000), tmp_path / "closed.bin")
    data = bytearray(left)
    length_zero(data, spans)
    path.write_bytes(data)
    scan = ArchiveScan()
    assert [r.index for r in read_archive(path, scan)] == [0, *range(2, 12)]
    assert scan.unclosed and not scan.torn_tail and scan.damaged[0].lost == (1, 1)
    with ArchiveWriter(path) as w:
        assert w.append(TOPIC, b"after") == 12
    now = path.read_bytes()
    assert now[:scan.end] == data[:scan.end] and not any(data[scan.end:])  # only reserved zeros went


def test_records_missing_without_damaged_bytes_are_named(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    whole = write(path)
    (a, b) = extents(whole, path)[2]
    path.write_bytes(whole[:a] + whole[b:])  # record 2 cut out whole
    scan = ArchiveScan()
    assert [r.index for r in read_archive(path, scan)] == [0, 1, 3, 4]
    assert [(d.offset, d.length, d.lost) for d in scan.damaged] == [(a, 0, (2, 2))]


def test_a_flipped_bit_in_a_record_number_loses_that_record_not_its_number(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    whole = write(path)
    spans = extents(whole, path)
    data = bytearray(whole)
    data[spans[2][0] + 15] ^= 1  # the low byte of record 2's number
    path.write_bytes(data)
    scan = ArchiveScan()
    assert [r.index for r in read_archive(path, scan)] == [0, 1, 3, 4]
    assert scan.damaged[0].lost == (2, 2) and "does not match its checksum" in scan.damaged[0].reason


def crafted(path: Path, middle: bytes) -> int:
    """An archive of three records whose middle one has the body ``middle``; its offset."""
    first = encode_record(0, encode_body(T0, 1, 0, TOPIC.encode(), b"first"))
    path.write_bytes(MAGIC + first + encode_record(1, middle) + encode_record(2, encode_body(T0, 1, 0, TOPIC.encode(),
                                                                                            b"last")))
    return len(MAGIC) + len(first)


@pytest.mark.parametrize(("body", "problem"), [
    (encode_body(float("nan"), 1, 0, TOPIC.encode(), b"x"), r"receive time nan is not a time"),
    (encode_body(float("inf"), 1, 0, TOPIC.encode(), b"x"), r"receive time inf is not a time"),
    (encode_body(-5.0, 1, 0, TOPIC.encode(), b"x"), r"receive time -5\.0 is not a time"),
    (encode_body(T0, 1, 0, b"devices/\xff\xfe/messages/events/", b"x"), r"topic is not UTF-8 \(byte 8"),
    (encode_body(T0, 7, 0, TOPIC.encode(), b"x"), r"QoS 7 is not 0, 1 or 2"),
    (encode_body(T0, 1, 0x10, TOPIC.encode(), b"x"), r"unknown flags 0x10"),
])
def test_a_record_with_an_invalid_field_is_read_and_reported(tmp_path: Path, body: bytes, problem: str) -> None:
    path = tmp_path / "t.bin"
    at = crafted(path, body)
    scan = ArchiveScan()
    got = list(read_archive(path, scan))
    assert [r.payload for r in got] == [b"first", b"x", b"last"]  # the evidence is still shown
    assert [(i, o) for i, o, _ in scan.invalid] == [(1, at)] and scan.damage and not scan.damaged
    assert got[1].problem == scan.invalid[0][2]
    assert re.search(problem, got[1].problem)


@pytest.mark.parametrize(("body", "reason"), [
    (struct.pack(">dBBH", T0, 1, 0, 500) + b"short", r"record 1: its topic length 500 runs past its body"),
    (b"\x41\xd9", r"record 1: its body is 2 bytes, less than its 12 bytes of fields"),
])
def test_a_record_whose_fields_do_not_fit_is_damage(tmp_path: Path, body: bytes, reason: str) -> None:
    path = tmp_path / "t.bin"
    at = crafted(path, body)
    scan = ArchiveScan()
    assert [r.payload for r in read_archive(path, scan)] == [b"first", b"last"]
    assert len(scan.damaged) == 1 and scan.damaged[0].offset == at and scan.damaged[0].lost == (1, 1)
    assert re.search(reason, scan.damaged[0].reason)


@pytest.mark.parametrize("header", [bytes(8), b"HILTLM1\n", b"HILTLM2\r"])
def test_a_damaged_archive_header_loses_no_record(tmp_path: Path, header: bytes) -> None:
    path = tmp_path / "t.bin"
    whole = write(path)
    path.write_bytes(header + whole[8:])
    scan = ArchiveScan()
    assert [r.index for r in read_archive(path, scan)] == [0, 1, 2, 3, 4]
    assert [(d.offset, d.length) for d in scan.damaged] == [(0, 8)] and scan.version == 2
    with ArchiveWriter(path) as w:
        assert w.append(TOPIC, b"after") == 5
    assert path.read_bytes().startswith(header + whole[8:])


def test_reading_holds_at_most_a_block_and_a_record_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    write(path, count=2400, size=10_000)  # 24 MB
    assert path.stat().st_size > 24_000_000
    tracemalloc.start()
    try:
        count = sum(1 for _ in read_archive(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 2400 and peak < 4_000_000, peak


def test_a_length_of_0xffffffff_reads_nothing_big(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    whole = write(path)
    old = [(T0 + i, b"a" * 300) for i in range(5)]
    for fmt, data, spans in (("2", bytearray(whole), extents(whole, path)),
                             ("1", bytearray(v1_archive(old)), v1_spans(old))):
        length_ffffffff(data, spans)
        path.write_bytes(data)
        tracemalloc.start()
        try:
            scan = ArchiveScan()
            got = sum(1 for _ in read_archive(path, scan))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert got == 4 and scan.damaged[0].lost == (1, 1) and peak < 2_000_000, (fmt, peak)


# -- files that are no archive ---------------------------------------------------------------------

def read_within(path: Path, seconds: float = 10, scan: ArchiveScan | None = None) -> BaseException | None:
    """Read ``path`` in a thread; fail if that hangs; return what it raised."""
    raised: list[BaseException | None] = [None]

    def run() -> None:
        try:
            list(read_archive(path, scan))
        except BaseException as exc:  # handed to the test
            raised[0] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"reading {path} hangs"
    return raised[0]


def test_a_terabyte_of_holes_is_skipped_not_read_through(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    first = MAGIC + encode_record(0, encode_body(T0, 1, 0, TOPIC.encode(), b"first"))
    last = encode_record(1, encode_body(T0, 1, 0, TOPIC.encode(), b"last"))
    with path.open("wb") as f:
        f.write(first)
        f.seek(1 << 40)  # a sparse file: reading its holes would take hours
        f.write(last)
    scan = ArchiveScan()
    assert read_within(path, 60, scan) is None
    assert [(d.offset, d.length) for d in scan.damaged] == [(len(first), (1 << 40) - len(first))]
    assert scan.records == 2 and "zeros where records were" in scan.damaged[0].reason
    with ArchiveWriter(path) as w:  # and a writer continues it as quickly
        assert w.append(TOPIC, b"after") == 2


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p.write_bytes(b""), r"t\.bin: empty \(0 bytes\): not a telemetry archive"),
    (lambda p: p.mkdir(), r"t\.bin: is a directory, not an archive file"),
    (lambda p: os.mkfifo(p), r"t\.bin: is a FIFO \(named pipe\), not an archive file"),
    (lambda p: p.symlink_to("/dev/zero"), r"t\.bin: is a character device, not an archive file"),
    (lambda p: p.symlink_to(p.parent / "gone.bin"), r"t\.bin: a link to .*gone\.bin, which does not exist"),
    (lambda p: p.symlink_to(p), r"t\.bin: cannot read it: a link loop"),
    (lambda p: p.write_bytes(bytes(3 * PAGE)), r"t\.bin: not a telemetry archive \(all 12288 bytes are zero"),
    (lambda p: p.write_text("name: board\n" * 100), r"t\.bin: not a telemetry archive \(it starts with b'name: bo'"),
    (lambda p: None, r"t\.bin: no such archive file"),
])
def test_a_file_that_is_no_archive_is_named_without_hanging(tmp_path: Path, make: Callable[[Path], object],
                                                            message: str) -> None:
    path = tmp_path / "t.bin"
    make(path)
    raised = read_within(path)
    assert isinstance(raised, ArchiveError), raised
    assert re.search(message, str(raised)) and raised.fix


def test_an_unreadable_archive_says_permission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.bin"
    write(path)
    real = os.open

    def denied(name: object, flags: int, *args: object) -> int:
        if Path(str(name)) == path:
            raise PermissionError(13, "Permission denied")
        return real(name, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(ArchiveError, match=r"t\.bin: cannot read it: permission denied") as info:
        list(read_archive(path))
    assert "permissions" in str(info.value.fix)


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p.mkdir(), r"t\.bin: is a directory, not an archive file"),
    (lambda p: os.mkfifo(p), r"t\.bin: is a FIFO \(named pipe\), not an archive file"),
    (lambda p: p.write_bytes(v1_archive([(T0, b"old")])), r"t\.bin: an archive of format 1 .*not appending"),
    (lambda p: p.write_bytes(bytes(100)), r"t\.bin: not a telemetry archive .*; not appending to it"),
])
def test_the_writer_refuses_what_it_must_not_append_to(tmp_path: Path, make: Callable[[Path], object],
                                                       message: str) -> None:
    path = tmp_path / "t.bin"
    make(path)
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(ArchiveError, match=message):
        ArchiveWriter(path)
    assert (path.read_bytes() if path.is_file() else None) == before


def test_the_writer_names_a_folder_it_cannot_create(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("a file where the run folder goes")
    with pytest.raises(ArchiveError, match=r"run: cannot create the archive's folder"):
        ArchiveWriter(tmp_path / "run" / "t.bin")


# -- format 1 ------------------------------------------------------------------------------------

def v1_archive(records: list[tuple[float, bytes]]) -> bytes:
    """An archive as an older harness wrote it (format 1: length, CRC, body)."""
    out = bytearray(MAGIC_V1)
    for received, payload in records:
        body = struct.pack(">dBBH", received, 1, 0, len(TOPIC)) + TOPIC.encode() + payload
        out += struct.pack(">II", len(body), zlib.crc32(body)) + body
    return bytes(out)


def v1_spans(records: list[tuple[float, bytes]]) -> list[tuple[int, int]]:
    spans, pos = [], len(MAGIC_V1)
    for _, payload in records:
        end = pos + 8 + 12 + len(TOPIC) + len(payload)
        spans.append((pos, end))
        pos = end
    return spans


V1_RECORDS = [(T0 + i, bytes([i]) * 1000) for i in range(12)]


def test_a_format_1_archive_is_read(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    path.write_bytes(v1_archive(V1_RECORDS))
    scan = ArchiveScan()
    got = list(read_archive(path, scan))
    assert [(r.index, r.received, r.payload) for r in got] == [(i, t, p) for i, (t, p) in enumerate(V1_RECORDS)]
    assert scan.version == 1 and not scan.damage and not scan.torn_tail


@pytest.mark.parametrize("damage", DAMAGE)
def test_damage_in_a_format_1_archive_hides_no_later_record(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "t.bin"
    whole = v1_archive(V1_RECORDS)
    spans = v1_spans(V1_RECORDS)
    data = bytearray(whole)
    DAMAGE[damage](data, spans)
    path.write_bytes(data)
    keep = untouched(whole, data, spans)
    scan = ArchiveScan()
    got = list(read_archive(path, scan))
    assert [r.payload for r in got] == [V1_RECORDS[i][1] for i in keep]
    assert scan.corrupt
    if damage != "a zeroed page":  # one record lost, told by its CRC: the numbers stay the writer's
        assert [r.index for r in got] == keep and scan.renumbered is None
    else:  # how many records the page held is not known: the numbers after it are counted from there
        assert scan.renumbered is not None


def test_a_format_1_archive_cut_inside_its_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    """An older harness wrote with write(2): killed, it left its last record cut short."""
    path = tmp_path / "t.bin"
    whole = v1_archive(V1_RECORDS[:3])
    last = v1_spans(V1_RECORDS[:3])[-1][0]
    for cut in (last + 3, last + 8, last + 30, len(whole) - 1):
        path.write_bytes(whole[:cut])
        scan = ArchiveScan()
        assert len(list(read_archive(path, scan))) == 2
        assert scan.torn_tail == cut - last and not scan.damage, cut


# -- property tests: damage anywhere ---------------------------------------------------------------

TOPICS = [TOPIC, "devices/dev-b/messages/events/", "devices/dev-c/modules/m/messages/events/x"]
MESSAGES = st.lists(st.tuples(st.sampled_from(TOPICS), st.binary(max_size=900)), min_size=1, max_size=14)
OPS = st.lists(st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(1, 255)),
    st.tuples(st.just("zero"), st.integers(0, 1 << 20), st.sampled_from([1, 4, 24, 100, 700])),
    st.tuples(st.just("page"), st.integers(0, 8), st.just(PAGE)),
    st.tuples(st.just("cut"), st.integers(0, 1 << 20), st.just(0)),
), min_size=1, max_size=3)


def damaged(data: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for op, where, n in ops:
        if not out:
            break
        at = where % len(out)
        if op == "flip":
            out[at] ^= n
        elif op == "zero":
            out[at:at + n] = bytes(len(out[at:at + n]))
        elif op == "page":
            start = (where * PAGE) % (len(out) + PAGE - 1) // PAGE * PAGE
            out[start:start + n] = bytes(len(out[start:start + n]))
        else:
            del out[at:]
    return bytes(out)


def archive_of(path: Path, msgs: list[tuple[str, bytes]], closed: bool) -> bytes:
    path.unlink(missing_ok=True)
    w = ArchiveWriter(path)
    for i, (topic, payload) in enumerate(msgs):
        w.append(topic, payload, qos=1, received=T0 + i)
    left = path.read_bytes()
    w.close()
    return path.read_bytes() if closed else left


def as_read(path: Path, scan: ArchiveScan) -> list[RawRecord] | ArchiveError:
    try:
        return list(read_archive(path, scan))
    except ArchiveError as exc:  # the only thing reading may raise: the file is no archive at all
        return exc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(MESSAGES, OPS, st.booleans())
def test_any_damage_leaves_every_untouched_record_readable(tmp_path_factory: pytest.TempPathFactory,
                                                           msgs: list[tuple[str, bytes]],
                                                           ops: list[tuple[str, int, int]], closed: bool) -> None:
    path = tmp_path_factory.mktemp("d") / "t.bin"
    whole = archive_of(path, msgs, closed)
    good = list(read_archive(path))
    spans = extents(whole, path)
    data = damaged(whole, ops)
    path.write_bytes(data)
    keep = untouched(whole, data, spans)
    scan = ArchiveScan()
    got = as_read(path, scan)
    if isinstance(got, ArchiveError):
        assert keep == [], got
        return
    assert got == [good[i] for i in keep]  # each untouched record, with its number; nothing else
    changed = [i for i in range(len(spans)) if i not in keep and spans[i][1] <= len(data)]
    cut_inside = any(a < len(data) < b for a, b in spans)
    if closed and len(data) % PAGE and (changed or cut_inside):
        assert scan.damage, scan  # a closed archive: any damage to its records is reported
    if keep and any(i < keep[-1] for i in changed):
        assert scan.damage, scan  # damage before a good record is never taken for a torn tail


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(MESSAGES, OPS, st.booleans())
def test_reopening_any_damaged_archive_loses_no_byte_and_no_record(tmp_path_factory: pytest.TempPathFactory,
                                                                   msgs: list[tuple[str, bytes]],
                                                                   ops: list[tuple[str, int, int]],
                                                                   closed: bool) -> None:
    path = tmp_path_factory.mktemp("r") / "t.bin"
    data = damaged(archive_of(path, msgs, closed), ops)
    path.write_bytes(data)
    before = ArchiveScan()
    readable = as_read(path, before)
    try:
        w = ArchiveWriter(path)
    except ArchiveError:
        assert path.read_bytes() == data  # refused, and left as it was
        assert isinstance(readable, ArchiveError) or before.version == 1
        return
    number = w.append(TOPIC, b"after", received=T0 + 99)
    w.close()
    now = path.read_bytes()
    same = next((i for i, (a, b) in enumerate(zip(data, now, strict=False)) if a != b), min(len(data), len(now)))
    assert not any(data[same:]), "a byte that was not a reserved zero was changed or cut"
    after = ArchiveScan()
    got = list(read_archive(path, after))
    assert got[-1].payload == b"after" and got[-1].index == number and not after.torn_tail
    if isinstance(readable, ArchiveError) or len(data) < len(MAGIC):
        return  # it was empty or cut inside its header: the writer completed the header
    held, expected = got[:-1], [(d.offset, d.length) for d in before.damaged]
    if before.cut_end > len(data):  # a record cut short: the writer continued past the end it claims
        cut = before.damaged[-1]
        assert cut.offset + cut.length == len(data) and cut.lost is not None
        if len(held) > len(readable):  # the zeros it filled the record out with were its lost bytes
            assert held[-1].offset == cut.offset and held[-1].index == cut.lost[0]
            held, expected = held[:-1], expected[:-1]
        else:
            expected[-1] = (cut.offset, before.cut_end - cut.offset)
    assert held == readable  # every record it held, as it held them
    assert all(r.index < number for r in readable)  # no number given twice
    assert [(d.offset, d.length) for d in after.damaged] == expected


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=900), min_size=1, max_size=14), OPS)
def test_any_damage_to_a_format_1_archive_leaves_every_untouched_record_readable(
        tmp_path_factory: pytest.TempPathFactory, payloads: list[bytes], ops: list[tuple[str, int, int]]) -> None:
    path = tmp_path_factory.mktemp("v1") / "t.bin"
    records = [(T0 + i, p) for i, p in enumerate(payloads)]
    whole, spans = v1_archive(records), v1_spans(records)
    data = damaged(whole, ops)
    path.write_bytes(data)
    keep = untouched(whole, data, spans)
    got = as_read(path, ArchiveScan())
    if isinstance(got, ArchiveError):
        assert data[:len(MAGIC_V1)] != MAGIC_V1 or len(data) == 0, got  # no magic: format 1 cannot be found
        return
    assert [(r.offset, r.payload) for r in got] == [(spans[i][0], payloads[i]) for i in keep]


def test_a_cut_record_whose_lost_bytes_were_the_sync_marker_loses_no_record(tmp_path: Path) -> None:
    """Found by the property test above: a record whose payload ends with the sync marker, cut
    just before it. A writer continuing the archive used to start its resume record right at the cut,
    with the marker, which completed the cut record: the resume record then read as damage. The
    writer now continues past the end the cut record claims: the cut record is reported lost, by
    number, the resume record reads, and every record after it too."""
    path = tmp_path / "t.bin"
    msgs = [("devices/dev-a/messages/events/", b"\x00"), ("devices/dev-c/modules/m/messages/events/x", SYNC)]
    whole = archive_of(path, msgs, closed=True)
    original = list(read_archive(path))
    path.write_bytes(whole[:-len(SYNC)])
    assert [r.index for r in read_archive(path)] == [0]
    with ArchiveWriter(path) as w:
        w.append(TOPIC, b"after", received=T0 + 99)
    scan = ArchiveScan()
    got = list(read_archive(path, scan))
    assert got[:1] == original[:1] and [r.payload for r in got[1:]] == [b"after"]
    assert [(d.lost, "cut short" in d.reason) for d in scan.damaged] == [((1, 1), True)]
    with ArchiveWriter(path) as w:  # and the archive stays one that a writer continues without finding more
        assert w.found == []
        w.append(TOPIC, b"later", received=T0 + 100)
    assert [r.payload for r in read_archive(path)][-2:] == [b"after", b"later"]


def test_a_cut_record_whose_lost_bytes_were_zeros_reads_whole_after_a_writer_continues(tmp_path: Path) -> None:
    """The zeros a continuing writer fills a cut record out with complete it when its lost bytes were
    zeros: its checksum proves it whole, and nothing is reported lost."""
    path = tmp_path / "t.bin"
    whole = archive_of(path, [(TOPIC, b"\x01"), (TOPIC, b"abc\x00\x00\x00")], closed=True)
    original = list(read_archive(path))
    path.write_bytes(whole[:-2])
    with ArchiveWriter(path) as w:
        w.append(TOPIC, b"after", received=T0 + 99)
    scan = ArchiveScan()
    got = list(read_archive(path, scan))
    assert got[:2] == original and got[-1].payload == b"after" and scan.damaged == []
