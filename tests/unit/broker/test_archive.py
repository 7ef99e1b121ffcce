"""Archive records survive a crash: complete records read back, a torn last record is told apart
from damage, and a reopened archive continues after its last record without removing a byte.
(Damage, resynchronisation and bad files: test_archive_damage.py.)"""

from __future__ import annotations

import mmap
import os
import signal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import harness.telemetry.archive as archive_module
from harness.errors import ConfigError, InfrastructureError
from harness.telemetry.archive import MAGIC, ArchiveError, ArchiveScan, ArchiveWriter, read_archive
from harness.telemetry.archive_format import HEADER

RECORDS = [("devices/a/messages/events/", b"\x00\x01payload", 1, False, False),
           ("devices/b/messages/events/x", b"", 0, True, True),
           ("devices/c/messages/events/", bytes(range(256)) * 3, 1, False, True)]


def write(path: Path) -> list[int]:
    """Write RECORDS; return where each of them ends in the file."""
    with ArchiveWriter(path) as w:
        for topic, payload, qos, retain, dup in RECORDS:
            w.append(topic, payload, qos=qos, retain=retain, dup=dup, received=1700000000.25)
    return [*[r.offset for r in read_archive(path)][1:], path.stat().st_size]


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    write(path)
    scan = ArchiveScan()
    got = list(read_archive(path, scan))
    assert [(r.topic, r.payload, r.qos, r.retain, r.dup) for r in got] == RECORDS
    assert [r.index for r in got] == [0, 1, 2] and got[0].received == 1700000000.25
    assert scan.records == 3 and scan.torn_tail == 0 and scan.corrupt == []


def test_append_to_existing_archive_keeps_one_header(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    write(path)
    write(path)
    assert path.read_bytes().count(MAGIC) == 1
    assert len(list(read_archive(path))) == 6


def test_every_cut_inside_the_last_record_of_a_closed_archive_is_damage_named_at_that_record(tmp_path: Path) -> None:
    """The writer never leaves a record cut short (it writes a body before its header), so a closed
    archive that ends inside one was cut (a copy stopped early): damage, not a torn record."""
    path = tmp_path / "t.bin"
    ends = write(path)
    whole = path.read_bytes()
    for cut in range(ends[1] + 1, ends[2]):
        path.write_bytes(whole[:cut])
        scan = ArchiveScan()
        got = list(read_archive(path, scan))
        assert len(got) == 2, cut
        assert scan.torn_tail == 0 and [(d.offset, d.length) for d in scan.damaged] == [(ends[1], cut - ends[1])], cut
        if cut >= ends[1] + HEADER:  # its header is whole: its number is known
            assert "cut short" in scan.damaged[0].reason and scan.damaged[0].lost == (2, 2), cut


def test_corrupt_record_in_the_middle_is_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    ends = write(path)
    data = bytearray(path.read_bytes())
    data[ends[0] + 20] ^= 0xFF  # inside record 1's body
    path.write_bytes(bytes(data))
    scan = ArchiveScan()
    got = list(read_archive(path, scan))
    assert [r.topic for r in got] == [RECORDS[0][0], RECORDS[2][0]]
    assert [r.index for r in got] == [0, 2]  # the writer's numbering, which the collector logs
    assert scan.corrupt == [ends[0]] and scan.damaged[0].lost == (1, 1) and "checksum" in scan.damaged[0].reason
    with ArchiveWriter(path) as w:
        assert w.append("devices/d/messages/events/", b"") == 3


def test_header_only_and_a_header_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    path.write_bytes(MAGIC)
    scan = ArchiveScan()
    assert list(read_archive(path, scan)) == [] and not scan.damage and scan.version == 2
    path.write_bytes(MAGIC[:3])  # the writer writes its 8 bytes at once: 3 of them is a file cut short
    scan = ArchiveScan()
    assert list(read_archive(path, scan)) == [] and [(d.offset, d.length) for d in scan.damaged] == [(0, 3)]


def test_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    path.write_text("hello, this is not it")
    with pytest.raises(ConfigError, match=r"t\.bin: not a telemetry archive"):
        list(read_archive(path))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=40), st.binary(max_size=300)), min_size=1, max_size=8),
       st.integers(min_value=0, max_value=10_000))
def test_any_truncation_yields_a_prefix(tmp_path_factory: pytest.TempPathFactory,
                                        msgs: list[tuple[str, bytes]], cut: int) -> None:
    path = tmp_path_factory.mktemp("a") / "t.bin"
    with ArchiveWriter(path) as w:
        for topic, payload in msgs:
            w.append(topic, payload)
    data = path.read_bytes()
    path.write_bytes(data[:min(cut, len(data))])
    if cut == 0:
        with pytest.raises(ArchiveError, match=r"t\.bin: empty \(0 bytes\): not a telemetry archive"):
            list(read_archive(path))
        return
    got = [(r.topic, r.payload) for r in read_archive(path)]
    assert got == msgs[:len(got)]
    if cut >= len(data):
        assert len(got) == len(msgs)


def test_append_returns_the_index_and_topics_past_the_cache_bound_are_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive_module, "TOPIC_CACHE", 2)
    topics = [f"devices/d{i}/messages/events/" for i in range(5)] * 2
    with ArchiveWriter(tmp_path / "t.bin") as w:
        assert [w.append(t, t.encode(), qos=1) for t in topics] == list(range(10))
        assert len(w._topics) == 2
    assert [(r.topic, r.payload) for r in read_archive(tmp_path / "t.bin")] == [(t, t.encode()) for t in topics]


def killed_writer(path: Path, count: int, *, tear_last: bool = False) -> bytes:
    """A child process appends ``count`` records and is SIGKILLed without closing the archive; with
    ``tear_last``, the last record's header is zeroed first (killed between its body and its header).
    Returns the file's bytes as the writer left them."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            w = ArchiveWriter(path)
            for i in range(count):
                w.append("devices/k/messages/events/", i.to_bytes(4, "big") * 40, qos=1)
            if tear_last:
                assert w._map is not None
                at = w._end - w._base - (HEADER + 12 + 26 + 160)
                w._map[at:at + HEADER] = bytes(HEADER)
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    return path.read_bytes()


def test_a_sigkilled_writer_leaves_every_record_and_unwritten_zeros(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    killed_writer(path, 500)
    assert path.stat().st_size >= archive_module.RESERVE  # not cut to its records: it never closed
    scan = ArchiveScan()
    got = [int.from_bytes(r.payload[:4], "big") for r in read_archive(path, scan)]
    assert got == list(range(500))
    assert scan.unclosed and scan.torn_tail == 0 and not scan.damage
    with ArchiveWriter(path) as w:  # reopened: continues after the last record, cuts the zeros it reserved
        assert w.found == []
        assert w.append("devices/k/messages/events/", b"next") == 500
    scan = ArchiveScan()
    assert [r.payload for r in read_archive(path, scan)][-1] == b"next"
    assert scan.records == 501 and not scan.unclosed and path.stat().st_size == scan.end


def test_a_body_without_its_header_is_a_torn_tail_kept_byte_for_byte_on_reopening(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    left = killed_writer(path, 10, tear_last=True)
    scan = ArchiveScan()
    assert len(list(read_archive(path, scan))) == 9
    assert scan.torn_tail == HEADER + 12 + 26 + 160 and scan.unclosed and not scan.damage
    torn_at = scan.end
    with ArchiveWriter(path) as w:
        assert [(d.offset, d.length) for d in w.found] == [(torn_at, len(left) - torn_at)]
        assert "torn" in w.found_summary()
        assert w.append("devices/k/messages/events/", b"after") == 9  # the torn record's number was never given
    assert path.read_bytes()[:len(left)] == left  # every byte kept, the torn record and the zeros after it
    scan = ArchiveScan()
    got = list(read_archive(path, scan))
    assert [r.payload for r in got][9:] == [b"after"] and [r.index for r in got] == list(range(10))
    assert scan.torn_tail == 0 and not scan.damage  # a torn record a writer found and kept is not damage
    assert [(d.offset, d.length) for d in scan.kept] == [(torn_at, len(left) - torn_at)]


def test_records_larger_than_the_reserve_and_across_its_boundaries(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive_module, "RESERVE", mmap.PAGESIZE)
    sizes = [1, mmap.PAGESIZE - 30, 3 * mmap.PAGESIZE + 7, 0, 100] * 20
    path = tmp_path / "t.bin"
    with ArchiveWriter(path) as w:
        for i, n in enumerate(sizes):
            w.append(f"devices/d/messages/events/{i}", bytes([i % 251]) * n)
    got = list(read_archive(path))
    assert [(r.topic, r.payload) for r in got] == \
        [(f"devices/d/messages/events/{i}", bytes([i % 251]) * n) for i, n in enumerate(sizes)]


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    with ArchiveWriter(path), pytest.raises(ConfigError, match=r"t\.bin: another collector is writing"):
        ArchiveWriter(path)
    ArchiveWriter(path).close()  # free again once closed


def test_reopening_continues_the_index_even_after_another_writer_appended(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    w = ArchiveWriter(path)
    assert w.append("devices/a/messages/events/", b"1") == 0
    w.close()
    with ArchiveWriter(path) as other:
        assert other.append("devices/b/messages/events/", b"2") == 1
    w.open()
    assert w.append("devices/a/messages/events/", b"3") == 2
    w.close()
    w.open()  # as it left it: no reading back
    assert w.append("devices/a/messages/events/", b"4") == 3
    w.close()
    assert [r.payload for r in read_archive(path)] == [b"1", b"2", b"3", b"4"]
    with pytest.raises(ValueError, match="is closed"):
        w.append("devices/a/messages/events/", b"5")


def test_a_file_that_is_not_an_archive_is_not_appended_to(tmp_path: Path) -> None:
    for text in ("hello, this is not it", "abc"):
        path = tmp_path / "t.bin"
        path.write_text(text)
        with pytest.raises(ConfigError, match=r"t\.bin: not a telemetry archive.*not appending"):
            ArchiveWriter(path)
        assert path.read_text() == text


def test_a_full_disk_fails_the_write_and_a_later_write_tries_again(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive_module, "RESERVE", mmap.PAGESIZE)
    path = tmp_path / "t.bin"
    real = os.posix_fallocate
    full = [False]

    def fallocate(fd: int, offset: int, length: int) -> None:
        if full[0]:
            raise OSError(28, "No space left on device")
        real(fd, offset, length)

    monkeypatch.setattr(archive_module.os, "posix_fallocate", fallocate)
    with ArchiveWriter(path) as w:
        page = bytes(mmap.PAGESIZE // 2)
        assert w.append("devices/d/messages/events/", page) == 0
        full[0] = True
        with pytest.raises(InfrastructureError, match=r"t\.bin: cannot extend the telemetry archive"):
            for _ in range(4):
                w.append("devices/d/messages/events/", page)
        full[0] = False
        index = w.append("devices/d/messages/events/", b"after")
    got = list(read_archive(path))
    assert got[-1].payload == b"after" and got[-1].index == index == len(got) - 1
    assert path.read_bytes()[:8] == MAGIC and len(got) >= 2


@pytest.mark.parametrize("when", [float("nan"), float("inf"), -1.0, 1e300])
def test_a_receive_time_that_is_not_a_time_is_refused(tmp_path: Path, when: float) -> None:
    with ArchiveWriter(tmp_path / "t.bin") as w, pytest.raises(ValueError, match="is not a time"):
        w.append("devices/d/messages/events/", b"x", received=when)
    assert list(read_archive(tmp_path / "t.bin")) == []


def test_a_record_over_the_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive_module, "MAX_RECORD", 100)
    with ArchiveWriter(tmp_path / "t.bin") as w, pytest.raises(ValueError, match="over the archive's limit"):
        w.append("devices/d/messages/events/", bytes(100))
