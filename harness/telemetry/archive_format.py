"""The raw-telemetry archive's bytes: both record formats, and what a reader reports about them.

Format 2 (written since; magic ``HILTLM2\\n``): every record can be found again after damage::

    file   := MAGIC record* zero*
    record := SYNC | u32 body length | u64 record number | u32 CRC-32 of body
              | u32 CRC-32 of the 20 header bytes before it | body                  (big-endian)
    body   := f64 receive time (Unix s) | u8 QoS | u8 flags (1 retain, 2 dup, 0x80 control)
              | u16 topic length | topic (UTF-8) | payload

A reader that meets bytes that are not a record searches forward for the next :data:`SYNC` whose
header checks, and reports the bytes in between as damaged; the record numbers on each side say
which records were lost there. A control record (flag 0x80, topic :data:`RESUMED`) is written by a
writer that reopened an archive ending in bytes it could not read: it keeps them as they are,
continues after them, and the control record names them (offset, length, CRC-32, what they were),
so later readers know those bytes were found at reopening, not damaged since. When they end in a
record cut short (its header whole, its body past the end of the file), the writer first fills that
record out with zeros to the end its header claims, so that its own bytes never complete it.

Format 1 (magic ``HILTLM1\\n``, read only): ``record := u32 body length | u32 CRC-32 of body |
body``, with the same body and no control records. A reader resynchronises on it by searching for a
body whose CRC checks (slower, and only on receive times 1987-2106).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from harness.errors import ConfigError

MAGIC = b"HILTLM2\n"
MAGIC_V1 = b"HILTLM1\n"
SYNC = b"\xa9\xc3\x5e\xd1"  # no zero byte: the zeros a writer reserves never look like a record
HEAD = struct.Struct(">4sIQI")  # sync, body length, record number, body CRC
HCRC = struct.Struct(">I")  # CRC-32 of the HEAD bytes
HEADER = HEAD.size + HCRC.size
PACKED_HEADER = struct.Struct(">4sIQII")  # HEAD then HCRC, packed at once (the CRC is the last field written)
FIELDS = struct.Struct(">IQI")  # HEAD after the sync marker
SYNC_CRC = zlib.crc32(SYNC)  # CRC-32 of HEAD's bytes == zlib.crc32(FIELDS' bytes, SYNC_CRC)
HEAD_V1 = struct.Struct(">II")  # body length, body CRC
BODY = struct.Struct(">dBBH")
STAMP = struct.Struct(">dBB")  # the body's fields before the topic length
TLEN = struct.Struct(">H")
RETAIN, DUP, CONTROL = 1, 2, 0x80
MAX_RECORD = 64 * 1024 * 1024  # largest body a reader accepts (so a damaged length cannot make it read more)
MIN_RECORD = HEADER + BODY.size  # the smallest record: no topic, no payload
MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z: a receive time beyond is not a time
PAGE = 4096  # a writer that did not close leaves the file a whole number of these long

RESUMED = "$archive/resumed"  # the control record a reopening writer writes
RESUME = struct.Struct(">QQIB")  # offset, length, CRC-32 of the bytes kept, what they were
TORN, UNREADABLE = 1, 2


class ArchiveError(ConfigError):
    """A file that cannot be read as an archive at all (missing, unreadable, not an archive)."""


@dataclass(frozen=True)
class RawRecord:
    """One archived message."""

    index: int  # the record's number as the writer gave it (the collector logs it), from 0
    offset: int  # byte offset of the record in the file
    received: float
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    problem: str = ""  # what is wrong with a record whose checksums hold (a NaN time, a topic not UTF-8)


@dataclass(frozen=True)
class Damage:
    """Bytes of an archive that are not records (or a record that does not check), with what was there."""

    offset: int
    length: int
    reason: str
    lost: tuple[int, int] | None = None  # first and last number of the records lost there, when known

    def describe(self) -> str:
        where = f"bytes {self.offset}..{self.offset + self.length - 1} ({self.length} bytes)" if self.length \
            else f"at byte {self.offset}"
        lost = ""
        if self.lost is not None:
            first, last = self.lost
            lost = f"; record {first} lost" if first == last else f"; records {first}-{last} lost"
        return f"{where}: {self.reason}{lost}"


def parse_body(body: bytes, index: int, offset: int) -> RawRecord | str:
    """The record a checked body holds, or why it holds none (fields that do not fit in it)."""
    if len(body) < BODY.size:
        return f"record {index}: its body is {len(body)} bytes, less than its {BODY.size} bytes of fields"
    received, qos, flags, tlen = BODY.unpack_from(body)
    if BODY.size + tlen > len(body):
        return f"record {index}: its topic length {tlen} runs past its body ({len(body)} bytes)"
    raw = body[BODY.size:BODY.size + tlen]
    problems = []
    if not 0.0 <= received <= MAX_TIME:  # NaN fails this too
        problems.append(f"receive time {received!r} is not a time (expected Unix seconds, 0 to {MAX_TIME:.0f})")
    try:
        topic = raw.decode()
    except UnicodeDecodeError as exc:
        topic = raw.decode(errors="backslashreplace")
        problems.append(f"its topic is not UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})")
    if qos > 2:
        problems.append(f"QoS {qos} is not 0, 1 or 2")
    if flags & ~(RETAIN | DUP):
        problems.append(f"unknown flags 0x{flags:02x}")
    return RawRecord(index, offset, received, topic, body[BODY.size + tlen:], qos, bool(flags & RETAIN),
                     bool(flags & DUP), "; ".join(problems))


def encode_body(received: float, qos: int, flags: int, topic: bytes, payload: bytes) -> bytes:
    """A record's body (any field values: tests and tools make damaged archives with it)."""
    return STAMP.pack(received, qos, flags) + TLEN.pack(len(topic)) + topic + payload


def encode_record(index: int, body: bytes) -> bytes:
    """A format-2 record: its header (sync, length, number, CRCs), then ``body``."""
    crc = zlib.crc32(body)
    return PACKED_HEADER.pack(SYNC, len(body), index, crc, zlib.crc32(FIELDS.pack(len(body), index, crc), SYNC_CRC)) \
        + body
