"""The raw-telemetry archive: every MQTT message as it arrived, before any decoding.

Binary, append-only, one record per message, each with a sync marker, its number and a checksummed
header, so that a reader finds every good record after damage (the format:
:mod:`harness.telemetry.archive_format`; reading: :mod:`harness.telemetry.archive_reader`).

The writer copies each record into a shared memory map of the file (space allocated ahead with
``posix_fallocate``, :data:`RESERVE` bytes at a time): the record is in the kernel's page cache,
where every reader sees it and where it outlives a crashed or SIGKILLed writer, before ``append``
returns, without a system call per message. (Like ``write(2)``, this does not survive a kernel
crash or power loss; ``fsync()`` is for that.) The body is copied before the header, so a record
whose header is present is whole. Closing cuts the file to its records; a writer that did not
close leaves zeros after them (the file a whole number of pages long), which readers skip.

Reopening never removes a recorded byte. It continues after the last record, cutting off only the
zeros a writer reserved; when the archive ends in bytes that are not records (the torn last record
of a killed writer, or damage), it keeps them as they are and continues after them, behind a control
record that names them, and :attr:`ArchiveWriter.found` says what it kept. Damage in the middle is
left as it is. Record numbers continue the archive's (after unreadable bytes at the end, past any
number a record there could have had). An archive of format 1 (an older harness) is read, never
appended to. One writer at a time: the writer holds an exclusive ``flock``.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading
import time
import zlib
from pathlib import Path

from harness.errors import InfrastructureError
from harness.telemetry.archive_format import (
    CONTROL,
    DUP,
    FIELDS,
    HEADER,
    MAGIC,
    MAGIC_V1,
    MAX_RECORD,
    MAX_TIME,
    PACKED_HEADER,
    RESUME,
    RESUMED,
    RETAIN,
    STAMP,
    SYNC,
    SYNC_CRC,
    TLEN,
    TORN,
    UNREADABLE,
    ArchiveError,
    Damage,
    RawRecord,
    encode_body,
)
from harness.telemetry.archive_reader import ArchiveScan, Source, open_file, read_archive, walk

__all__ = ["DUP", "MAGIC", "MAX_RECORD", "RETAIN", "ArchiveError", "ArchiveScan", "ArchiveWriter", "Damage",
           "RawRecord", "read_archive"]

TOPIC_CACHE = 10_000
RESERVE = 4 * 1024 * 1024  # bytes mapped and allocated ahead of the records
_pack_header, _pack_fields, _crc32 = PACKED_HEADER.pack_into, FIELDS.pack, zlib.crc32
FIX_NEW_FILE = "give the collector a new archive file (the run folder's telemetry.bin, or --archive FILE)"


class ArchiveWriter:
    """Appends records; thread-safe; each record is in the page cache before ``append`` returns."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._topics: dict[str, bytes] = {}  # topic length and bytes: each device repeats its own
        self._map: mmap.mmap | None = None
        self._base = 0  # file offset of the map
        self._room = 0  # bytes in the map
        self._fd = -1
        self._end = self.count = 0
        self._closed_at: tuple[int, int] | None = None  # (inode, size) when this writer closed it
        self.found: list[Damage] = []  # what the last open found and kept: damage, a torn record
        self.open()

    def open(self) -> ArchiveWriter:
        """Open (again, after :meth:`close`) for appending after the last record."""
        with self._lock:
            if self._fd >= 0:
                return self
            fd = self._open_file()
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise ArchiveError(f"{self.path}: another collector is writing this archive",
                                       fix="give each collector its own archive file") from None
                st = os.fstat(fd)
                note = None
                if self._closed_at != (st.st_ino, st.st_size):  # not as this writer left it: look
                    note = self._resume(fd, st.st_size)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            if note is not None:  # first, right after the bytes it names
                try:
                    self._put(note, zlib.crc32(note), self.count)
                except BaseException:  # e.g. the disk is full: not open, rather than open without it
                    self._release()
                    raise
            return self

    def _open_file(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArchiveError(f"{self.path.parent}: cannot create the archive's folder: {exc.strerror}",
                               fix=FIX_NEW_FILE) from None
        return open_file(self.path, write=True)[0]

    def found_summary(self, most: int = 5) -> str:
        """What the last open found and kept ('' if the archive was whole), the first ``most`` of it."""
        more = len(self.found) - most
        return "; ".join([d.describe() for d in self.found[:most]] + ([f"and {more} more"] if more > 0 else []))

    def append(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False, dup: bool = False,
               received: float | None = None) -> int:
        """Write one record; return its number in the archive."""
        return self.write(topic, payload, qos, (RETAIN if retain else 0) | (DUP if dup else 0),
                          time.time() if received is None else received)

    def write(self, topic: str, payload: bytes, qos: int, flags: int, received: float) -> int:
        """:meth:`append` with positional arguments and the flags already combined (the hot path)."""
        t = self._topics.get(topic)
        if t is None:
            encoded = topic.encode()
            t = TLEN.pack(len(encoded)) + encoded
            if len(self._topics) < TOPIC_CACHE:
                self._topics[topic] = t
        if not 0.0 <= received <= MAX_TIME:  # NaN too
            raise ValueError(f"{self.path}: receive time {received!r} is not a time (Unix seconds); not archived")
        body = STAMP.pack(received, qos, flags) + t + payload
        if len(body) > MAX_RECORD:
            raise ValueError(f"{self.path}: a {len(body)}-byte record is over the archive's limit of {MAX_RECORD}")
        crc = zlib.crc32(body)
        with self._lock:
            index = self.count
            self._put(body, crc, index)
            self.count = index + 1
            return index

    def _put(self, body: bytes, crc: int, index: int) -> None:
        """Copy one record into the map (lock held): the body first, so that a header means a whole
        record; the header's CRC last, so that a torn header does not check."""
        size = len(body)
        at = self._end - self._base
        if at + HEADER + size > self._room:
            at = self._grow(HEADER + size)
        m = self._map
        assert m is not None
        m[at + HEADER:at + HEADER + size] = body
        _pack_header(m, at, SYNC, size, index, crc, _crc32(_pack_fields(size, index, crc), SYNC_CRC))
        self._end += HEADER + size

    def _grow(self, need: int) -> int:
        """Map (and allocate) the next stretch of the file from the end of the records; return
        where the end is in the new map. Called with the lock held."""
        if self._fd < 0:
            raise ValueError(f"archive {self.path} is closed")
        if self._map is not None:
            self._map.close()
            self._map = None
            self._base = self._room = 0  # if what follows fails, the next write tries again
        base = self._end - self._end % mmap.ALLOCATIONGRANULARITY
        room = max(RESERVE, -(-(self._end - base + need) // mmap.PAGESIZE) * mmap.PAGESIZE)
        try:
            os.posix_fallocate(self._fd, base, room)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise InfrastructureError(f"{self.path}: cannot extend the telemetry archive: {exc}",
                                          fix="free space on that file system") from exc
            os.ftruncate(self._fd, max(base + room, os.fstat(self._fd).st_size))  # no fallocate there
        self._map = mmap.mmap(self._fd, room, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                              offset=base)
        self._base, self._room = base, room
        return self._end - base

    def _resume(self, fd: int, size: int) -> bytes | None:
        """Set where to append and the next record number in the archive opened as ``fd``, cutting
        off only a writer's reserved zeros (or writing MAGIC into an empty file); return the body of
        the control record to write first, if the archive ends in bytes kept as they are."""
        self.found = []
        if size < len(MAGIC):
            data = os.pread(fd, size, 0)
            if MAGIC.startswith(data):  # empty, or cut inside MAGIC: complete it
                if data:
                    self.found = [Damage(0, size, "the file ended inside the archive's header (cut short); "
                                                  "completed the header")]
                os.pwrite(fd, MAGIC[size:], size)
                self._end, self.count = len(MAGIC), 0
                return None
        src, scan = Source(fd, size, self.path), ArchiveScan()
        try:
            for _ in walk(src, scan, bodies=False):
                pass
        except ArchiveError as exc:
            raise ArchiveError(f"{exc.message}; not appending to it", fix=FIX_NEW_FILE) from None
        if scan.version != 2:
            raise ArchiveError(f"{self.path}: an archive of format 1 (written by an older harness, {MAGIC_V1!r}); "
                               "not appending to it (hil telemetry show reads it)", fix=FIX_NEW_FILE)
        self.found = list(scan.damaged)
        self._end, self.count = scan.end, scan.next_index
        if scan.end == size or (scan.unclosed and not scan.torn_tail):
            os.ftruncate(fd, scan.end)  # only zeros follow the records: the space a writer reserved
            return None
        what = TORN if scan.torn_tail else UNREADABLE
        if scan.torn_tail:
            self.found.append(Damage(scan.end, size - scan.end, f"the last record, torn when its writer stopped "
                                     f"({scan.torn_tail} bytes) and the zeros after it"))
        if scan.cut_end > size:  # a record cut short: continue past the end it claims, never inside it
            os.ftruncate(fd, scan.cut_end)  # (zeros; the note below names them with the kept bytes)
            size = scan.cut_end
            src = Source(fd, size, self.path)
        self._end = size  # keep them all, and continue after them
        return encode_body(time.time(), 0, CONTROL, RESUMED.encode(),
                           RESUME.pack(scan.end, size - scan.end, src.crc(scan.end, size), what))

    def fsync(self) -> None:
        """Make the records durable against a kernel crash or power loss too."""
        with self._lock:
            if self._map is not None:
                self._map.flush()
            if self._fd >= 0:
                os.fsync(self._fd)

    def close(self) -> None:
        """Cut the file to its records and release it."""
        with self._lock:
            if self._fd < 0:
                return
            if self._map is not None:
                self._map.close()
                self._map = None
            os.ftruncate(self._fd, self._end)
            self._closed_at = (os.fstat(self._fd).st_ino, self._end)
            self._release()

    def _release(self) -> None:
        """Unmap and close the file as it is (lock held)."""
        if self._map is not None:
            self._map.close()
            self._map = None
        self._base = self._room = 0
        os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
