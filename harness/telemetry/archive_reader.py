"""Reading an archive (:mod:`harness.telemetry.archive_format`) whatever happened to it.

The file is read in blocks (``pread``), never whole: at most one record (``MAX_RECORD``) and one
block are in memory, and no length field is believed before its header checks. Every good record
is yielded; what is not a record is reported in an :class:`ArchiveScan`:

- ``damaged``: byte ranges that are not records, or records whose checksum fails, with the numbers
  of the records lost there when the records around them tell;
- ``invalid``: records whose checksums hold but whose fields are wrong (a NaN time, a topic that is
  not UTF-8); they are yielded too, with ``RawRecord.problem`` saying what is wrong;
- ``torn_tail``: the last record of a writer killed as it wrote it (its body without its header,
  then zeros to a page boundary: what a killed writer leaves); not damage (damage to the last
  record of an unclosed archive that leaves the same shape cannot be told from it);
- ``unclosed``: zeros after the records, up to a page boundary: the space a writer reserves and cuts
  off when it closes (the writer is running, or died); not damage;
- ``kept``: torn records that a later writer found, kept as they were, and continued after.

A file whose size is not a whole number of pages was closed by its writer, so zeros or a torn
record at its end there are damage (a wiped page, a file cut short), and so is a file that ends
inside a record whose header checks: the writer never leaves one (it writes a body before its
header).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.errors import InfrastructureError
from harness.telemetry.archive_format import (
    BODY,
    CONTROL,
    HCRC,
    HEAD,
    HEAD_V1,
    HEADER,
    MAGIC,
    MAGIC_V1,
    MAX_RECORD,
    MIN_RECORD,
    PAGE,
    RESUME,
    RESUMED,
    SYNC,
    TORN,
    ArchiveError,
    Damage,
    RawRecord,
    parse_body,
)

BLOCK = 1 << 20  # bytes read at a time
# A format-1 body starts with its receive time: a double from 2^29 to 2^32 s (1987-2106) begins
# 0x41 0xC0-0xEF; then QoS 0-2 and flags 0-3. Where one starts, 8 bytes before may be a record.
_V1_BODY = re.compile(rb"\x41[\xc0-\xef].{6}[\x00-\x02][\x00-\x03]", re.DOTALL)
V1_SEARCH_LIMIT = 256 * 1024 * 1024  # bytes a format-1 resynchronisation checksums before giving up
FIX_GIVE_ARCHIVE = "give the telemetry.bin a collector wrote (in its run folder)"


@dataclass
class ArchiveScan:
    """What reading an archive found besides its good records."""

    version: int = 0  # the format (1 or 2)
    size: int = 0  # bytes in the file when it was opened
    records: int = 0  # good records read (invalid ones included)
    damaged: list[Damage] = field(default_factory=list)
    invalid: list[tuple[int, int, str]] = field(default_factory=list)  # (number, offset, problem) of records read
    kept: list[Damage] = field(default_factory=list)  # torn records a later writer kept and continued after
    torn_tail: int = 0  # bytes of the torn last record of a killed writer (0: none)
    end: int = 0  # where the records end (and a torn record, unwritten zeros or damage begin)
    unclosed: bool = False  # zeros follow the records: the writer is running, or died
    next_index: int = 0  # the number a writer continuing this archive gives its next record
    cut_end: int = 0  # where the last record, its header whole, would end if the file had not been cut short
    renumbered: int | None = None  # (format 1) offset from which record numbers are counted, not known

    @property
    def corrupt(self) -> list[int]:
        """Offsets of the damaged ranges."""
        return [d.offset for d in self.damaged]

    @property
    def damage(self) -> bool:
        """Anything wrong besides a torn last record and an unclosed end."""
        return bool(self.damaged or self.invalid)


def open_file(path: Path, *, write: bool) -> tuple[int, os.stat_result]:
    """Open an archive file (created if ``write``), refusing anything but a regular file with an
    :class:`ArchiveError` that names it and the fix. Never blocks (a FIFO is refused, not read)."""
    flags = (os.O_RDWR | os.O_CREAT if write else os.O_RDONLY) | os.O_NONBLOCK | os.O_CLOEXEC
    doing = "write" if write else "read"
    try:
        fd = os.open(path, flags, 0o644)
    except FileNotFoundError:
        if path.is_symlink():
            raise ArchiveError(f"{path}: a link to {os.readlink(path)}, which does not exist",
                               fix="point it at the archive, or give the archive's own path") from None
        raise ArchiveError(f"{path}: no such archive file", fix=FIX_GIVE_ARCHIVE) from None
    except PermissionError:
        raise ArchiveError(f"{path}: cannot {doing} it: permission denied",
                           fix="check the permissions of the file and of its folders") from None
    except IsADirectoryError:
        raise ArchiveError(f"{path}: is a directory, not an archive file", fix=_fix_for_directory(path)) from None
    except OSError as exc:
        what = {errno.ELOOP: "a link loop (a link that leads back to itself)",
                errno.ENOTDIR: "a folder in its path is a file",
                errno.ENXIO: "a socket or a device with nothing behind it, not an archive file"}
        raise ArchiveError(f"{path}: cannot {doing} it: {what.get(exc.errno or 0, exc.strerror)}",
                           fix=FIX_GIVE_ARCHIVE) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ArchiveError(f"{path}: is a directory, not an archive file", fix=_fix_for_directory(path))
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else
                "a character device" if stat.S_ISCHR(st.st_mode) else
                "a block device" if stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else
                "not a regular file")
        raise ArchiveError(f"{path}: is {kind}, not an archive file", fix=FIX_GIVE_ARCHIVE)
    return fd, st


def _fix_for_directory(path: Path) -> str:
    inside = path / "telemetry.bin"
    return f"give {inside}" if inside.is_file() else FIX_GIVE_ARCHIVE


class Source:
    """An archive's bytes, read a block at a time; ``size`` is fixed when opened (a writer may append)."""

    def __init__(self, fd: int, size: int, path: Path) -> None:
        self.fd, self.size, self.path = fd, size, path
        self._buf, self._base = b"", 0

    def window(self, pos: int, n: int) -> tuple[bytes, int]:
        """A buffer holding bytes ``pos`` to ``pos + n`` (fewer at the end of the file), and where
        ``pos`` is in it."""
        end = min(pos + n, self.size)
        if pos >= end:
            return b"", 0
        if self._base <= pos and end <= self._base + len(self._buf):
            return self._buf, pos - self._base
        try:
            buf = os.pread(self.fd, max(end - pos, min(BLOCK, self.size - pos)), pos)
        except OSError as exc:
            raise InfrastructureError(f"{self.path}: cannot read at byte {pos}: {exc.strerror}",
                                      fix="check the disk (dmesg) and copy the file elsewhere") from None
        if len(buf) < end - pos:  # the file shrank (its writer closed it, cutting its reserve)
            self.size = pos + len(buf)
        self._buf, self._base = buf, pos
        return buf, 0

    def read(self, pos: int, n: int) -> bytes:
        buf, o = self.window(pos, n)
        return buf[o:o + n]

    def search(self, find: Callable[[bytes, int], int], start: int, span: int) -> int | None:
        """File offset of the first match at or after ``start`` of ``find`` (``bytes.find``-like; a
        match is at most ``span`` bytes long and starts with a non-zero byte), or None."""
        pos = start
        while pos < self.size:
            pos = self._data(pos)
            if pos >= self.size:
                return None
            buf, o = self.window(pos, BLOCK)
            at = find(buf, o)
            if at >= 0:
                return self._base + at
            if self._base + len(buf) >= self.size:
                return None
            pos = self._base + len(buf) - span + 1
        return None

    def nonzero_end(self, start: int, end: int | None = None) -> int:
        """Offset just after the last non-zero byte from ``start`` to ``end`` (``start`` if none)."""
        hi, pos, last = self.size if end is None else end, start, start
        while (pos := self._data(pos)) < hi:  # the end of the last stretch that is not a hole
            last = pos = min(hi, self._hole(pos))
        hi = last
        while hi > start:
            lo = max(start, hi - BLOCK)
            kept = self.read(lo, hi - lo).rstrip(b"\0")
            if kept:
                return lo + len(kept)
            hi = lo
        return start

    def _data(self, pos: int) -> int:
        """The first offset from ``pos`` that is not in a hole of a sparse file (holes read as zeros,
        so skipping them skips no record: a file of terabytes of holes is not read through)."""
        try:
            return os.lseek(self.fd, pos, os.SEEK_DATA)
        except OSError as exc:
            return self.size if exc.errno == errno.ENXIO else pos  # ENXIO: only a hole follows

    def _hole(self, pos: int) -> int:
        try:
            return os.lseek(self.fd, pos, os.SEEK_HOLE)
        except OSError:
            return self.size

    def crc(self, start: int, end: int) -> int:
        value, pos = 0, start
        while pos < end:
            chunk = self.read(pos, min(BLOCK, end - pos))
            if not chunk:
                break
            value, pos = zlib.crc32(chunk, value), pos + len(chunk)
        return value


def read_archive(path: Path, scan: ArchiveScan | None = None) -> Iterator[RawRecord]:
    """Yield every good record; fill ``scan`` with the rest. Raises only :class:`ArchiveError` (a
    file that is no archive at all) and :class:`InfrastructureError` (the disk failed to read)."""
    scan = scan if scan is not None else ArchiveScan()
    path = Path(path)
    fd, st = open_file(path, write=False)
    try:
        if st.st_size == 0:
            raise ArchiveError(f"{path}: empty (0 bytes): not a telemetry archive",
                               fix="give the telemetry.bin a collector wrote; an empty one is left by a "
                                   "collector stopped as it created the file, and holds nothing")
        yield from walk(Source(fd, st.st_size, path), scan, bodies=True)
    finally:
        os.close(fd)


def walk(src: Source, scan: ArchiveScan, *, bodies: bool) -> Iterator[RawRecord]:
    """Read the archive in ``src``: yield its records if ``bodies`` (else check headers only and
    count them), fill ``scan``."""
    scan.size = src.size
    head = src.read(0, len(MAGIC))
    if len(head) < len(MAGIC) and (MAGIC.startswith(head) or MAGIC_V1.startswith(head)):
        scan.version = 2 if MAGIC.startswith(head) else 1
        scan.damaged.append(Damage(0, len(head), f"the file ends inside the archive's {len(MAGIC)}-byte "
                                                 "header: it was cut short; no records"))
        scan.end = len(head)
        return
    if head == MAGIC:
        scan.version = 2
        yield from _walk_v2(src, scan, bodies)
        return
    # Format 1 if a format-1 record follows its magic, or no format-2 header is anywhere (one bit
    # turns either magic into the other, and a format-1 file holds no format-2 header that checks)
    first = _v1_record(src, len(MAGIC_V1))
    if (first is not None and zlib.crc32(first[2]) == first[1]) or \
            (head == MAGIC_V1 and _next_header(src, len(MAGIC)) is None):
        scan.version = 1
        if head != MAGIC_V1:
            scan.damaged.append(Damage(0, len(MAGIC_V1), f"the archive's header is damaged ({head!r})"))
        yield from _walk_v1(src, scan, bodies)
        return
    if _next_header(src, 0) is None:  # no header of format 2 anywhere: not an archive
        zeros = src.nonzero_end(0) == 0
        raise ArchiveError(f"{src.path}: not a telemetry archive (" + (
            f"all {src.size} bytes are zero" if zeros else f"it starts with {head!r}") +
            f"; an archive starts with {MAGIC!r})", fix=FIX_GIVE_ARCHIVE)
    scan.version = 2  # its header is damaged, but records of format 2 follow
    yield from _walk_v2(src, scan, bodies, start=0)


def _header(src: Source, pos: int) -> tuple[int, int, int] | None:
    """(body length, number, body CRC) of the format-2 header at ``pos``, if it checks."""
    buf, o = src.window(pos, HEADER)
    if len(buf) - o < HEADER or not buf.startswith(SYNC, o):
        return None
    _, length, index, crc = HEAD.unpack_from(buf, o)
    if zlib.crc32(buf[o:o + HEAD.size]) != HCRC.unpack_from(buf, o + HEAD.size)[0] or length > MAX_RECORD:
        return None
    return length, index, crc


def _next_header(src: Source, start: int) -> int | None:
    """Offset of the next format-2 header that checks, at or after ``start``."""
    while (at := src.search(lambda buf, o: buf.find(SYNC, o), start, len(SYNC))) is not None:
        if _header(src, at) is not None:
            return at
        start = at + 1
    return None


class _Walk2:
    """State of a format-2 walk: the next record number expected, and unreadable bytes pending."""

    def __init__(self, src: Source, scan: ArchiveScan) -> None:
        self.src, self.scan = src, scan
        self.expect = 0
        self.bad: int | None = None  # where bytes that are not records began

    def damage(self, offset: int, length: int, reason: str, lost: tuple[int, int] | None) -> None:
        self.scan.damaged.append(Damage(offset, length, reason, lost))

    def settle(self, pos: int, index: int, control: bytes | None) -> None:
        """Report the unreadable bytes from ``self.bad`` to the record at ``pos`` numbered ``index``
        (``control``: that record's body, if it is a writer's note about them)."""
        bad, self.bad = self.bad, None
        if bad is None:
            if index > self.expect:
                self.damage(pos, 0, "records missing, with no damaged bytes between their neighbours "
                                    "(was the file edited?)", (self.expect, index - 1))
            return
        note = _resume_note(control, bad, pos, self.src)
        if note == TORN:
            self.scan.kept.append(Damage(bad, pos - bad, "the last record of a writer stopped as it wrote it "
                                                         "(kept as found; a later writer continued after it)"))
        elif note is not None and (cut := _header(self.src, bad)) is not None and bad + HEADER + cut[0] == pos:
            self.damage(bad, pos - bad, f"record {cut[1]}, cut short when the file ended inside it; the writer "
                        "that continued after it filled it out with zeros", (cut[1], cut[1]))
        elif note is not None:  # how many records were there is not known: the writer skipped numbers
            self.damage(bad, pos - bad, _what_is_at(self.src, bad, pos) + "; found so by the writer that "
                        "continued after them", None)
        else:
            self.damage(bad, pos - bad, _what_is_at(self.src, bad, pos),
                        (self.expect, index - 1) if index > self.expect else None)


def _walk_v2(src: Source, scan: ArchiveScan, bodies: bool, start: int = len(MAGIC)) -> Iterator[RawRecord]:
    w = _Walk2(src, scan)
    pos = scan.end = start
    if start == 0:
        w.bad = 0
    while pos < src.size:
        head = _header(src, pos)
        if head is None:
            if w.bad is None:
                w.bad = pos
            nxt = _next_header(src, pos + 1)
            if nxt is None:
                break
            pos = nxt
            continue
        length, index, crc = head
        end = pos + HEADER + length
        if end > src.size:  # a header that checks whose body is not there: the file was cut short
            w.settle(pos, index, None)
            w.damage(pos, src.size - pos, f"record {index} needs {end - src.size} bytes more than the file "
                                          "holds: the file was cut short", (index, index))
            scan.next_index = max(scan.next_index, index + 1)
            scan.end, scan.cut_end = pos, end
            _skip_numbers(scan, src.size - pos)
            return
        buf, o = src.window(pos, HEADER + length if bodies else HEADER + BODY.size)
        o += HEADER
        control = length >= BODY.size and buf[o + 9] & CONTROL
        body = buf[o:o + length] if bodies else None
        if body is None and (control or not _followed(src, end)):
            buf, o = src.window(pos + HEADER, length)
            body = buf[o:o + length]
        if body is not None and zlib.crc32(body) != crc:
            w.settle(pos, index, None)
            scan.next_index = max(scan.next_index, index + 1)
            inner = _next_header(src, pos + 1)
            if inner is not None and inner < end:  # cut short, and written after: unreadable up to there
                w.bad, w.expect, pos = pos, index, inner
                continue
            if _named_by_note(src, pos, end):  # cut short; a later writer filled it out and continued
                w.bad, w.expect, pos = pos, index, end
                continue
            w.damage(pos, end - pos, f"record {index}: its body does not match its checksum", (index, index))
            w.expect = index + 1
            pos = scan.end = end
            continue
        if control:
            w.settle(pos, w.expect if w.bad is None else index, body)
            w.expect = scan.next_index = max(scan.next_index, index)
            pos = scan.end = end
            continue
        if w.bad is not None or index != w.expect:
            w.settle(pos, index, None)
        if bodies:
            assert body is not None
            rec = parse_body(body, index, pos)
            if isinstance(rec, str):
                w.damage(pos, end - pos, rec, (index, index))
            else:
                if index < w.expect:
                    rec = replace(rec, problem="; ".join(
                        p for p in (rec.problem, f"numbered {index} after record {w.expect - 1}") if p))
                if rec.problem:
                    scan.invalid.append((index, pos, rec.problem))
                scan.records += 1
                yield rec
        else:
            scan.records += 1
        w.expect = index + 1
        scan.next_index = max(scan.next_index, w.expect)
        pos = scan.end = end
    tail = w.bad if w.bad is not None else pos
    scan.end = tail
    _tail(src, scan, tail, torn=True)


def _followed(src: Source, end: int) -> bool:
    """Whether a record ending at ``end`` is followed by the end of the file or a header that checks
    (then its length is believed without reading its body, when only headers are walked)."""
    return end == src.size or _header(src, end) is not None


def _resume_note(control: bytes | None, start: int, end: int, src: Source) -> int | None:
    """What a writer's note (a control record's body) says the bytes ``start`` to ``end`` were, if it
    names exactly them and they are still as it found them."""
    if control is None:
        return None
    rec = parse_body(control, 0, end)
    if isinstance(rec, str) or rec.topic != RESUMED or len(rec.payload) != RESUME.size:
        return None
    offset, length, crc, what = RESUME.unpack(rec.payload)
    if (offset, length) != (start, end - start) or src.crc(start, end) != crc:
        return None
    return what


def _named_by_note(src: Source, start: int, end: int) -> bool:
    """Whether a writer's note at ``end`` names exactly the bytes ``start`` to ``end`` (a record cut
    short, which the writer that continued the archive filled out with zeros to its claimed end)."""
    head = _header(src, end)
    if head is None or head[0] < BODY.size:
        return False
    body = src.read(end + HEADER, head[0])
    return len(body) == head[0] and zlib.crc32(body) == head[2] and bool(body[9] & CONTROL) \
        and _resume_note(body, start, end, src) is not None


def _what_is_at(src: Source, start: int, end: int) -> str:
    if src.nonzero_end(start, end) == start:
        return "zeros where records were (a wiped page?)"
    if start == 0:
        return "the archive's header is damaged, and what follows it is not a record"
    if src.read(start, len(SYNC)) == SYNC:
        return "a record header that does not match its checksum"
    return "bytes that are not a record"


def _tail(src: Source, scan: ArchiveScan, start: int, torn: bool) -> None:
    """Classify what follows the last record: nothing, a writer's reserved zeros, the torn record of
    a killed writer (``torn``: whether the bytes there can be one), or damage."""
    size = src.size
    if start >= size:
        return
    end = src.nonzero_end(start)
    open_size = size % PAGE == 0  # a writer that did not close leaves a whole number of pages
    if end == start and open_size:
        scan.unclosed = True
    elif end == start:
        scan.damaged.append(Damage(start, size - start, "zeros to the end of a file its writer had closed "
                                                        "(not a whole number of pages long): records were wiped"))
    elif open_size and end - start <= HEADER + MAX_RECORD and torn:
        scan.torn_tail, scan.unclosed = end - start, True
        return
    else:
        scan.damaged.append(Damage(start, size - start, _what_is_at(src, start, size) + ", to the end of the file"))
    if not scan.unclosed:
        _skip_numbers(scan, size - start)


def _skip_numbers(scan: ArchiveScan, damaged: int) -> None:
    """Records may have been lost in ``damaged`` bytes at the end: a writer continuing the archive
    skips as many numbers as they could have held, so that no number names two records."""
    scan.next_index += -(-damaged // MIN_RECORD)


# -- format 1 ---------------------------------------------------------------------------------------

def _v1_record(src: Source, pos: int) -> tuple[int, int, bytes] | None:
    """(length, CRC, body) of a format-1 record at ``pos`` whose length fits the file."""
    buf, o = src.window(pos, HEAD_V1.size)
    if len(buf) - o < HEAD_V1.size:
        return None
    length, crc = HEAD_V1.unpack_from(buf, o)
    if length < BODY.size or length > MAX_RECORD or pos + HEAD_V1.size + length > src.size:
        return None
    return length, crc, src.read(pos + HEAD_V1.size, length)


def _v1_good(src: Source, pos: int) -> bool:
    got = _v1_record(src, pos)
    return got is not None and zlib.crc32(got[2]) == got[1]


def _v1_next(src: Source, start: int, budget: list[int]) -> int | None:
    """Offset of the next format-1 record whose CRC checks, at or after ``start`` (None once the
    budget of checksummed bytes is spent)."""

    def find(buf: bytes, o: int) -> int:
        m = _V1_BODY.search(buf, o)
        return -1 if m is None else m.start()

    at = start + HEAD_V1.size
    while budget[0] > 0 and (hit := src.search(find, at, 10)) is not None:
        got = _v1_record(src, hit - HEAD_V1.size)
        if got is not None:
            budget[0] -= got[0]
            if zlib.crc32(got[2]) == got[1]:
                return hit - HEAD_V1.size
        at = hit + 1
    return None


def _walk_v1(src: Source, scan: ArchiveScan, bodies: bool) -> Iterator[RawRecord]:
    pos, index, budget = len(MAGIC_V1), 0, [V1_SEARCH_LIMIT]
    scan.end = pos
    while pos < src.size:
        got = _v1_record(src, pos)
        if got is not None:
            length, crc, body = got
            end = pos + HEAD_V1.size + length
            if zlib.crc32(body) == crc:
                rec = parse_body(body, index, pos)
                if isinstance(rec, str):
                    scan.damaged.append(Damage(pos, end - pos, rec, (index, index)))
                else:
                    if rec.problem:
                        scan.invalid.append((index, pos, rec.problem))
                    scan.records += 1
                    yield rec
                index, pos = index + 1, end
                scan.end = pos
                continue
        nxt = _v1_next(src, pos + 1, budget)
        if got is not None and (nxt is None or nxt >= end) and \
                (end == src.size or src.nonzero_end(end, min(end + PAGE, src.size)) == end or _v1_good(src, end)):
            # the body does not check, but its length leads to a record (or the end), and no record
            # starts inside it: only the body is damaged
            scan.damaged.append(Damage(pos, end - pos, f"record {index}: its body does not match its checksum",
                                       (index, index)))
            index, pos = index + 1, end
            scan.end = pos
            continue
        if nxt is None:
            break
        if nxt - pos >= HEAD_V1.size + BODY.size and \
                zlib.crc32(src.read(pos + HEAD_V1.size, nxt - pos - HEAD_V1.size)) == \
                HEAD_V1.unpack(src.read(pos, HEAD_V1.size))[1]:
            scan.damaged.append(Damage(pos, nxt - pos, f"record {index}: its length field is damaged", (index, index)))
            index += 1
        else:
            scan.damaged.append(Damage(pos, nxt - pos, _what_is_at(src, pos, nxt) + " (format 1 does not number "
                                       "its records: the numbers after this are counted from here)"))
            if scan.renumbered is None:
                scan.renumbered = nxt
        pos = nxt
    scan.end, scan.next_index = pos, index
    if budget[0] <= 0 and pos < src.size:
        scan.damaged.append(Damage(pos, src.size - pos, f"not searched for records past {V1_SEARCH_LIMIT} "
                                   "checksummed bytes (format 1 has no sync marker)"))
        return
    head = src.read(pos, HEAD_V1.size)
    length = HEAD_V1.unpack(head)[0] if len(head) == HEAD_V1.size else None
    if pos < src.size and src.nonzero_end(pos) > pos and (length is None or BODY.size <= length <= MAX_RECORD):
        scan.torn_tail = src.size - pos  # cut inside its header or body: a writer using write(2) was killed
        return
    _tail(src, scan, pos, torn=length == 0)  # zeros where the header goes: the mapping writer was killed
