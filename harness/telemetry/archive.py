"""The raw-telemetry archive: every MQTT message as it arrived, before any decoding.

Binary, append-only, one record per message::

    file   := MAGIC record* zero*
    record := u32 body length | u32 CRC-32 of body | body            (big-endian)
    body   := f64 receive time (Unix s) | u8 QoS | u8 flags (1 retain, 2 dup) | u16 topic length
              | topic (UTF-8) | payload

The writer copies each record into a shared memory map of the file (space allocated ahead with
``posix_fallocate``, :data:`RESERVE` bytes at a time): the record is in the kernel's page cache,
where every reader sees it and where it outlives a crashed or SIGKILLed writer, before ``append``
returns, without a system call per message. (Like ``write(2)``, this does not survive a kernel
crash or power loss; ``fsync()`` is for that.) The body is copied before the header, so a record
whose header is present is whole. Closing cuts the file to its records; a writer that did not
close leaves zeros after them, which readers skip, since no record starts with a zero length.

A reader stops at a record that runs past the end of the data (the torn last record of a crash)
and reports it; a record whose CRC does not match is skipped and counted. Reopening an archive
appends after its last complete record (a torn one is cut off: it was never acknowledged to the
broker, which sends it again). One writer at a time: the writer holds an exclusive ``flock``.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import ConfigError, InfrastructureError

log = logging.getLogger(__name__)

MAGIC = b"HILTLM1\n"
_HEAD = struct.Struct(">II")
_BODY = struct.Struct(">dBBH")
_STAMP = struct.Struct(">dBB")  # the body's fields before the topic length
_TLEN = struct.Struct(">H")
MAX_RECORD = 64 * 1024 * 1024
RETAIN, DUP = 1, 2
TOPIC_CACHE = 10_000
RESERVE = 4 * 1024 * 1024  # bytes mapped and allocated ahead of the records


@dataclass(frozen=True)
class RawRecord:
    """One archived message."""

    index: int  # position in the archive, from 0 (corrupt records keep theirs: the writer's numbering)
    offset: int  # byte offset of the record in the file
    received: float
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool


class ArchiveWriter:
    """Appends records; thread-safe; each record is in the page cache before ``append`` returns."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._topics: dict[str, bytes] = {}  # topic length and bytes: each device repeats its own
        self._map: mmap.mmap | None = None
        self._base = 0  # file offset of the map
        self._room = 0  # bytes in the map
        self._fd = -1
        self._end = self.count = 0
        self._closed_at: tuple[int, int] | None = None  # (inode, size) when this writer closed it
        self.open()

    def open(self) -> ArchiveWriter:
        """Open (again, after :meth:`close`) for appending after the last complete record."""
        with self._lock:
            if self._fd >= 0:
                return self
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise ConfigError(f"{self.path}: another collector is writing this archive",
                                      fix="give each collector its own archive file") from None
                st = os.fstat(fd)
                if self._closed_at != (st.st_ino, st.st_size):  # not as this writer left it: look
                    self._end, self.count = _resume(fd, self.path, st.st_size)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return self

    def append(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False, dup: bool = False,
               received: float | None = None) -> int:
        """Write one record; return its index in the archive."""
        return self.write(topic, payload, qos, (RETAIN if retain else 0) | (DUP if dup else 0),
                          time.time() if received is None else received)

    def write(self, topic: str, payload: bytes, qos: int, flags: int, received: float) -> int:
        """:meth:`append` with positional arguments and the flags already combined (the hot path)."""
        t = self._topics.get(topic)
        if t is None:
            encoded = topic.encode()
            t = _TLEN.pack(len(encoded)) + encoded
            if len(self._topics) < TOPIC_CACHE:
                self._topics[topic] = t
        body = _STAMP.pack(received, qos, flags) + t + payload
        size = len(body)
        if size > MAX_RECORD:
            raise ValueError(f"{self.path}: a {size}-byte record is over the archive's limit of {MAX_RECORD}")
        crc = zlib.crc32(body)
        with self._lock:
            at = self._end - self._base
            if at + 8 + size > self._room:
                at = self._grow(8 + size)
            m = self._map
            assert m is not None
            m[at + 8:at + 8 + size] = body  # the body first: a header means a whole record
            _HEAD.pack_into(m, at, size, crc)
            self._end += 8 + size
            self.count += 1
            return self.count - 1

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
            self._base = self._room = 0
            os.ftruncate(self._fd, self._end)
            self._closed_at = (os.fstat(self._fd).st_ino, self._end)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _resume(fd: int, path: Path, size: int) -> tuple[int, int]:
    """(end of the records, their count) of an archive opened for appending, after cutting the file
    to its records (or writing MAGIC into an empty one). Walks the record headers only."""
    data = os.pread(fd, size, 0)
    if MAGIC.startswith(data):  # empty, or a writer died before MAGIC was whole
        os.ftruncate(fd, 0)
        os.pwrite(fd, MAGIC, 0)
        return len(MAGIC), 0
    if not data.startswith(MAGIC):
        raise ConfigError(f"{path}: not a telemetry archive (bad magic {data[:8]!r}); not appending to it",
                          fix="give the collector a new archive file, or the telemetry.bin a collector wrote")
    pos, count, unpack = len(MAGIC), 0, _HEAD.unpack_from
    while pos + _HEAD.size <= size:
        length = unpack(data, pos)[0]
        if length == 0 or pos + _HEAD.size + length > size:
            break
        pos += _HEAD.size + length
        count += 1
    if data.count(0, pos) != size - pos:
        log.warning("%s: cutting off an incomplete last record (%d bytes) before appending",
                    path, len(data[pos:].rstrip(b"\0")))
    os.ftruncate(fd, pos)
    return pos, count


@dataclass
class ArchiveScan:
    """What reading an archive found besides its records."""

    records: int = 0
    corrupt: list[int] = field(default_factory=list)  # offsets of records whose CRC failed
    torn_tail: int = 0  # bytes of an incomplete last record (0 when the records end cleanly)
    end: int = 0  # where the records end (and an incomplete one or the unwritten zeros begin)
    unclosed: bool = False  # zeros follow the records: the writer is running, or died


def read_archive(path: Path, scan: ArchiveScan | None = None) -> Iterator[RawRecord]:
    """Yield every complete record; fill ``scan`` with corrupt and torn ones."""
    scan = scan if scan is not None else ArchiveScan()
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC):
        if MAGIC.startswith(data):  # crashed before the header was complete, or empty
            scan.torn_tail = len(data)
            return
        raise ConfigError(f"{path}: not a telemetry archive (bad magic {data[:8]!r})",
                          fix="give a file written by the collector (telemetry.bin in a run folder)")
    pos, index, size = len(MAGIC), 0, len(data)
    while pos < size:
        scan.end = pos
        if pos + _HEAD.size > size:
            scan.torn_tail = size - pos
            return
        length, crc = _HEAD.unpack_from(data, pos)
        if length == 0:  # no record starts so: the writer's unwritten space, perhaps after a torn body
            scan.unclosed = True
            if data.count(0, pos) != size - pos:
                scan.torn_tail = len(data[pos:].rstrip(b"\0"))
            return
        end = pos + _HEAD.size + length
        if length < _BODY.size or length > MAX_RECORD or end > size:
            if end > size or length > MAX_RECORD:
                scan.torn_tail = size - pos
                return
            scan.corrupt.append(pos)
            pos, index = end, index + 1
            continue
        body = data[pos + _HEAD.size:end]
        if zlib.crc32(body) != crc:
            scan.corrupt.append(pos)
            pos, index = end, index + 1
            continue
        received, qos, flags, tlen = _BODY.unpack_from(body)
        topic = body[_BODY.size:_BODY.size + tlen].decode(errors="replace")
        payload = body[_BODY.size + tlen:]
        yield RawRecord(index, pos, received, topic, payload, qos, bool(flags & RETAIN), bool(flags & DUP))
        scan.records += 1
        index += 1
        pos = end
    scan.end = pos
