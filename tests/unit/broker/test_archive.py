"""Archive records survive a crash: complete records read back, a torn tail is detected and skipped."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.errors import ConfigError
from harness.telemetry.archive import MAGIC, ArchiveScan, ArchiveWriter, read_archive

RECORDS = [("devices/a/messages/events/", b"\x00\x01payload", 1, False, False),
           ("devices/b/messages/events/x", b"", 0, True, True),
           ("devices/c/messages/events/", bytes(range(256)) * 3, 1, False, True)]


def write(path: Path) -> list[int]:
    ends = []
    with ArchiveWriter(path) as w:
        for topic, payload, qos, retain, dup in RECORDS:
            w.append(topic, payload, qos=qos, retain=retain, dup=dup, received=1700000000.25)
            ends.append(path.stat().st_size)
    return ends


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


def test_every_torn_length_of_the_last_record_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    ends = write(path)
    whole = path.read_bytes()
    for cut in range(ends[1] + 1, ends[2]):
        path.write_bytes(whole[:cut])
        scan = ArchiveScan()
        got = list(read_archive(path, scan))
        assert len(got) == 2, cut
        assert scan.torn_tail == cut - ends[1], cut


def test_corrupt_record_in_the_middle_is_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    ends = write(path)
    data = bytearray(path.read_bytes())
    data[ends[0] + 20] ^= 0xFF  # inside record 1's body
    path.write_bytes(bytes(data))
    scan = ArchiveScan()
    got = list(read_archive(path, scan))
    assert [r.topic for r in got] == [RECORDS[0][0], RECORDS[2][0]]
    assert scan.corrupt == [ends[0]]


def test_header_only_and_torn_header(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    path.write_bytes(MAGIC[:3])
    scan = ArchiveScan()
    assert list(read_archive(path, scan)) == [] and scan.torn_tail == 3


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
    got = [(r.topic, r.payload) for r in read_archive(path)]
    assert got == msgs[:len(got)]
    if cut >= len(data):
        assert len(got) == len(msgs)


def test_append_returns_the_index_and_topics_past_the_cache_bound_are_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.telemetry.archive as archive_module

    monkeypatch.setattr(archive_module, "TOPIC_CACHE", 2)
    topics = [f"devices/d{i}/messages/events/" for i in range(5)] * 2
    with ArchiveWriter(tmp_path / "t.bin") as w:
        assert [w.append(t, t.encode(), qos=1) for t in topics] == list(range(10))
        assert len(w._topics) == 2
    assert [(r.topic, r.payload) for r in read_archive(tmp_path / "t.bin")] == [(t, t.encode()) for t in topics]
