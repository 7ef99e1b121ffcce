"""The raw-telemetry archive: every MQTT message as it arrived, before any decoding.

Binary, append-only, one record per message, written with a single unbuffered ``write`` so a
crashed or SIGKILLed writer leaves every complete record readable::

    file   := MAGIC record*
    record := u32 body length | u32 CRC-32 of body | body            (big-endian)
    body   := f64 receive time (Unix s) | u8 QoS | u8 flags (1 retain, 2 dup) | u16 topic length
              | topic (UTF-8) | payload

A reader stops at a record that runs past the end of the file (the torn last record of a crash)
and reports it; a record whose CRC does not match is skipped and counted.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import ConfigError

MAGIC = b"HILTLM1\n"
_HEAD = struct.Struct(">II")
_BODY = struct.Struct(">dBBH")
MAX_RECORD = 64 * 1024 * 1024
RETAIN, DUP = 1, 2
TOPIC_CACHE = 10_000


@dataclass(frozen=True)
class RawRecord:
    """One archived message."""

    index: int  # position in the archive, from 0
    offset: int  # byte offset of the record in the file
    received: float
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool


class ArchiveWriter:
    """Appends records; thread-safe; each record reaches the kernel before ``append`` returns."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._lock = threading.Lock()
        self.count = 0
        self._topics: dict[str, bytes] = {}  # encoded topics: each device repeats its own
        if os.fstat(self._fd).st_size == 0:
            os.write(self._fd, MAGIC)

    def append(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False, dup: bool = False,
               received: float | None = None) -> int:
        """Write one record; return its index in the archive."""
        t = self._topics.get(topic)
        if t is None:
            t = topic.encode()
            if len(self._topics) < TOPIC_CACHE:
                self._topics[topic] = t
        body = _BODY.pack(time.time() if received is None else received, qos,
                          (RETAIN if retain else 0) | (DUP if dup else 0), len(t)) + t + payload
        record = _HEAD.pack(len(body), zlib.crc32(body)) + body
        with self._lock:
            if self._fd < 0:
                raise ValueError(f"archive {self.path} is closed")
            os.write(self._fd, record)
            self.count += 1
            return self.count - 1

    def fsync(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class ArchiveScan:
    """What reading an archive found besides its records."""

    records: int = 0
    corrupt: list[int] = field(default_factory=list)  # offsets of records whose CRC failed
    torn_tail: int = 0  # bytes of an incomplete last record (0 when the file ends cleanly)


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
    pos, index = len(MAGIC), 0
    while pos < len(data):
        if pos + _HEAD.size > len(data):
            scan.torn_tail = len(data) - pos
            return
        length, crc = _HEAD.unpack_from(data, pos)
        end = pos + _HEAD.size + length
        if length < _BODY.size or length > MAX_RECORD or end > len(data):
            if end > len(data) or length > MAX_RECORD:
                scan.torn_tail = len(data) - pos
                return
            scan.corrupt.append(pos)
            pos = end
            continue
        body = data[pos + _HEAD.size:end]
        if zlib.crc32(body) != crc:
            scan.corrupt.append(pos)
            pos = end
            continue
        received, qos, flags, tlen = _BODY.unpack_from(body)
        topic = body[_BODY.size:_BODY.size + tlen].decode(errors="replace")
        payload = body[_BODY.size + tlen:]
        yield RawRecord(index, pos, received, topic, payload, qos, bool(flags & RETAIN), bool(flags & DUP))
        scan.records += 1
        index += 1
        pos = end
