"""FlatBuffers codec for the ``AzureIoTSecurity`` message, as the device sends it.

``decode`` reads both layouts FlatBuffers allows (flatcc's, with vtables after their tables and
negative soffsets, as the firmware writes it; and Google's, vtables before) and verifies as it
reads: every offset, vtable, field, vector and string is bounds-checked against the buffer,
required fields and union tags are checked, enum values must be known, strings must be UTF-8 and
NUL-terminated. Anything malformed raises ``DecodeError`` naming the offset; nothing is read past
the buffer. Offsets (uoffset) only point forward, so the walk cannot loop; the schema is not
recursive, so depth is bounded; and a budget of objects proportional to the buffer size stops
shared sub-tables from amplifying a small buffer into a huge decode. Alignment is not enforced
(Python reads unaligned scalars safely); trailing bytes after the last object are ignored.

The reader is hand-written, not flatc's generated accessors: those verify nothing, so a verifier
would walk the same tables first anyway; checking while reading is one pass, and faster
(``benchmarks/codec_decode.py``). Its field tables follow ``schema/AzureIoTSecurity.fbs``; the
tests decode every buffer through the generated accessors too and compare. For the collector's
rate, the shapes devices send (NetworkActivity, SystemInformation, Heartbeat events) take a fast
path: each distinct vtable is checked once, and a buffer whose structural bytes equal those of one
already checked (a device's next message of the same shape) is read from that one's plan (see
``shapes.py``); anything else, and every fault, goes through the diagnosing ``_Reader``. The
primitives both readers share (table specs, vtable checks, strings, value caches) are ``fbread.py``.

``encode`` (``encoder.py``, re-exported here) writes Google's layout through flatc's generated
builder functions; scalars equal to their default are not written, as on the device.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from typing import Any, TypeVar

from harness.errors import CheckFailed
from harness.telemetry.encoder import encode
from harness.telemetry.fbread import (
    _BASELINE,
    _BASELINE_CHECK,
    _COMMON,
    _EVENT,
    _HEARTBEAT,
    _HEARTBEAT_PAYLOAD,
    _HH,
    _I8,
    _I32,
    _LEVELS,
    _LISTENING_PORTS,
    _LOG,
    _MESSAGE,
    _NETWORK_ACTIVITY,
    _NETWORK_V4,
    _NETWORK_V6,
    _PROCESS,
    _PROCESS_EVENTS,
    _PROTOCOLS,
    _RECORD,
    _RESULTS,
    _SEVERITIES,
    _SYSTEM_INFORMATION,
    _U16,
    _U32,
    _U64,
    _VTABLE_ENTRIES,
    _open,
    _Spec,
    _text,
    _v4,
    _v6,
    _version,
)
from harness.telemetry.model import (
    Baseline,
    BaselineCheck,
    BaselineCheckResult,
    BaselineCheckSeverity,
    Event,
    Flow,
    Heartbeat,
    ListeningPort,
    ListeningPorts,
    Log,
    LogLevel,
    LogRecord,
    NetworkActivity,
    Payload,
    PayloadType,
    Process,
    ProcessEventType,
    Protocol,
    SecurityMessage,
    SystemInformation,
)
from harness.telemetry.shapes import _fast_decode

E = TypeVar("E")
T = TypeVar("T")


class DecodeError(CheckFailed):
    """A buffer is not a valid ``AzureIoTSecurity.Message``; ``offset`` is where it went wrong."""

    def __init__(self, message: str, *, offset: int, **kwargs: Any) -> None:
        super().__init__(f"offset {offset} (0x{offset:x}): {message}", **kwargs)
        self.offset = offset


class _Reader:
    """Bounds-checked access to one buffer; every method raises DecodeError, nothing else."""

    __slots__ = ("budget", "buf", "size", "strings")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.size = len(buf)
        # Tables and vector elements each occupy at least 4 distinct bytes in a buffer without
        # shared sub-objects; twice that leaves room for legitimate sharing.
        self.budget = self.size // 2 + 8
        self.strings: dict[int, str] = {}

    def _spend(self, units: int, pos: int, what: str) -> None:
        self.budget -= units
        if self.budget < 0:
            raise DecodeError(
                f"{what}: more objects than a {self.size}-byte buffer can hold "
                "(shared sub-tables or vectors amplifying the decode)",
                offset=pos,
            )

    def ref(self, pos: int) -> int:
        """The target of the uoffset at ``pos`` (``pos`` is in bounds; the target is checked by its reader)."""
        return pos + _U32(self.buf, pos)[0]

    def table(self, pos: int, spec: _Spec) -> list[int]:
        """Open the table at ``pos``: absolute positions of its fields in id order, 0 where absent."""
        self._spend(1, pos, spec.name)
        offsets = _open(self.buf, self.size, pos, spec)
        if offsets is None:
            raise self._table_error(pos, spec)
        return [pos + off if off else 0 for off in offsets]

    def _table_error(self, pos: int, spec: _Spec) -> DecodeError:
        """Why ``_open`` refused the table at ``pos``."""
        buf, size = self.buf, self.size
        if pos + 4 > size:
            return DecodeError(f"{spec.name}: table starts past the end of the {size}-byte buffer", offset=pos)
        vt = pos - _I32(buf, pos)[0]
        if vt < 0 or vt + 4 > size:
            return DecodeError(f"{spec.name}: vtable at {vt} is outside the {size}-byte buffer", offset=pos)
        vt_size, tbl_size = _HH(buf, vt)
        if vt_size < 4 or vt_size & 1 or vt + vt_size > size:
            return DecodeError(f"{spec.name}: vtable size {vt_size} is odd, below 4 or past the end", offset=vt)
        if tbl_size < 4 or pos + tbl_size > size:
            return DecodeError(
                f"{spec.name}: table size {tbl_size} is below 4 or runs past the end of the {size}-byte buffer",
                offset=vt + 2,
            )
        sizes = spec.sizes
        count = min(len(sizes), (vt_size - 4) >> 1)
        for i, off in enumerate(_VTABLE_ENTRIES[count](buf, vt + 4)):
            if off and off + sizes[i] > tbl_size:
                return DecodeError(
                    f"{spec.names[i]}: field at {off} (+{sizes[i]} bytes) is outside the {tbl_size}-byte table",
                    offset=vt + 4 + 2 * i,
                )
        raise AssertionError(f"{spec.name} at {pos}: _open refused a table that has no fault")  # pragma: no cover

    def string(self, pos: int, what: str) -> str:
        target = pos + _U32(self.buf, pos)[0]
        cached = self.strings.get(target)
        if cached is not None:
            return cached
        text = _text(self.buf, self.size, target)
        if text is None:
            raise self._string_error(pos, target, what)
        self.strings[target] = text
        return text

    def _string_error(self, pos: int, target: int, what: str) -> DecodeError:
        """Why ``_text`` refused the string at ``target``."""
        if target + 4 > self.size:
            return DecodeError(f"{what}: string at {target} is outside the {self.size}-byte buffer", offset=pos)
        end = target + 4 + _U32(self.buf, target)[0]
        if end >= self.size:
            return DecodeError(f"{what}: string of {end - target - 4} bytes runs past the end", offset=target)
        if self.buf[end] != 0:
            return DecodeError(f"{what}: string is not NUL-terminated", offset=end)
        try:
            self.buf[target + 4 : end].decode("utf-8")
        except UnicodeDecodeError as exc:
            return DecodeError(f"{what}: string is not UTF-8 ({exc.reason})", offset=target + 4 + exc.start)
        raise AssertionError(f"{what} at {target}: _text refused a string that has no fault")  # pragma: no cover

    def opt_string(self, pos: int, what: str) -> str | None:
        return self.string(pos, what) if pos else None

    def vector(self, pos: int, elem_size: int, what: str) -> tuple[int, int]:
        """(start, count) of the vector the uoffset at ``pos`` points to."""
        target = pos + _U32(self.buf, pos)[0]
        if target + 4 > self.size:
            raise DecodeError(f"{what}: vector at {target} is outside the {self.size}-byte buffer", offset=pos)
        count = _U32(self.buf, target)[0]
        if target + 4 + count * elem_size > self.size:
            raise DecodeError(
                f"{what}: {count} elements of {elem_size} bytes run past the end of the {self.size}-byte buffer",
                offset=target,
            )
        self._spend(count, target, what)
        return target + 4, count

    def tables(self, pos: int, what: str, read: Callable[[_Reader, int], T]) -> tuple[T, ...]:
        if not pos:
            return ()
        start, count = self.vector(pos, 4, what)
        return tuple([read(self, self.ref(start + 4 * i)) for i in range(count)])

    def enum(self, pos: int, values: dict[int, E], default: E, what: str) -> E:
        if not pos:
            return default
        raw = _I8(self.buf, pos)[0]
        value = values.get(raw)
        if value is None:
            raise DecodeError(f"{what}: {raw} is not one of {', '.join(map(str, values))}", offset=pos)
        return value

    def scalar(self, unpack: Callable[[bytes, int], tuple[int]], pos: int, default: int = 0) -> int:
        return unpack(self.buf, pos)[0] if pos else default


def _required(fields: list[int], index: int, spec: _Spec, table_pos: int) -> int:
    pos = fields[index]
    if not pos:
        raise DecodeError(f"{spec.names[index]} is required but absent", offset=table_pos)
    return pos




# ---- decoding, one function per table ----------------------------------------------------------


def _flow(r: _Reader, pos: int, spec: _Spec, v6: bool) -> Flow:
    f = r.table(pos, spec)
    a = _required(f, 0, spec, pos)
    c_pos = r.ref(_required(f, 1, spec, pos))
    buf = r.buf
    if v6:
        local: IPv4Address | IPv6Address = _v6(buf[a : a + 16])
        remote: IPv4Address | IPv6Address = _v6(buf[a + 16 : a + 32])
    else:
        local = _v4(buf[a : a + 4])
        remote = _v4(buf[a + 4 : a + 8])
    c = r.table(c_pos, _COMMON)
    return Flow(
        local,
        remote,
        _U16(buf, c[0])[0] if c[0] else 0,
        _U16(buf, c[1])[0] if c[1] else 0,
        r.enum(c[4], _PROTOCOLS, Protocol.TCP, "NetworkActivityCommon.protocol"),
        _U32(buf, c[2])[0] if c[2] else 0,
        _U32(buf, c[3])[0] if c[3] else 0,
        _U16(buf, c[5])[0] if c[5] else 0,
        _U16(buf, c[6])[0] if c[6] else 0,
        r.string(c[7], "NetworkActivityCommon.executable") if c[7] else None,
        r.string(c[8], "NetworkActivityCommon.commandline") if c[8] else None,
    )


_flow_v4 = functools.partial(_flow, spec=_NETWORK_V4, v6=False)
_flow_v6 = functools.partial(_flow, spec=_NETWORK_V6, v6=True)


def _network_activity(r: _Reader, pos: int) -> NetworkActivity:
    f = r.table(pos, _NETWORK_ACTIVITY)
    return NetworkActivity(
        r.tables(f[0], "NetworkActivity.ipv4_activity", _flow_v4),
        r.tables(f[1], "NetworkActivity.ipv6_activity", _flow_v6),
    )


def _system_information(r: _Reader, pos: int) -> SystemInformation:
    f = r.table(pos, _SYSTEM_INFORMATION)
    return SystemInformation(
        r.opt_string(f[0], "SystemInformation.os_info"),
        r.opt_string(f[1], "SystemInformation.kernel_info"),
        r.opt_string(f[2], "SystemInformation.hw_info"),
    )


def _ports(r: _Reader, pos: int, v6: bool) -> tuple[ListeningPort, ...]:
    if not pos:
        return ()
    addr_size = 16 if v6 else 4
    what = "ListeningPorts.ipv6_ports" if v6 else "ListeningPorts.ipv4_ports"
    start, count = r.vector(pos, addr_size + 4, what)
    ports = []
    for i in range(count):
        p = start + i * (addr_size + 4)
        raw = r.buf[p : p + addr_size]
        address: IPv4Address | IPv6Address = IPv6Address(raw) if v6 else IPv4Address(raw)
        protocol = r.enum(p + addr_size + 2, _PROTOCOLS, Protocol.TCP, f"{what}[{i}].protocol")
        ports.append(ListeningPort(address, _U16(r.buf, p + addr_size)[0], protocol))
    return tuple(ports)


def _listening_ports(r: _Reader, pos: int) -> ListeningPorts:
    f = r.table(pos, _LISTENING_PORTS)
    return ListeningPorts(_ports(r, f[0], False), _ports(r, f[1], True))


def _heartbeat(r: _Reader, pos: int) -> Heartbeat:
    r.table(pos, _HEARTBEAT)
    return _HEARTBEAT_PAYLOAD


def _baseline_check(r: _Reader, pos: int) -> BaselineCheck:
    f = r.table(pos, _BASELINE_CHECK)
    return BaselineCheck(
        r.string(_required(f, 0, _BASELINE_CHECK, pos), "BaselineCheck.id"),
        r.enum(f[1], _RESULTS, BaselineCheckResult.PASS, "BaselineCheck.result"),
        r.opt_string(f[2], "BaselineCheck.error"),
        r.opt_string(f[3], "BaselineCheck.description"),
        r.enum(f[4], _SEVERITIES, BaselineCheckSeverity.CRITICAL, "BaselineCheck.severity"),
        r.opt_string(f[5], "BaselineCheck.remediation"),
    )


def _baseline(r: _Reader, pos: int) -> Baseline:
    f = r.table(pos, _BASELINE)
    return Baseline(r.tables(f[0], "Baseline.baseline_checks", _baseline_check))


def _process(r: _Reader, pos: int) -> Process:
    f = r.table(pos, _PROCESS)
    return Process(
        r.opt_string(f[0], "Process.executable"),
        r.scalar(_U32, f[1]),
        r.scalar(_U32, f[2]),
        r.scalar(_U32, f[3]),
        r.opt_string(f[4], "Process.user_name"),
        r.opt_string(f[5], "Process.commandline"),
        r.enum(f[6], _PROCESS_EVENTS, ProcessEventType.FORK, "Process.event_type"),
        r.scalar(_U32, f[7], 1),
    )


def _record(r: _Reader, pos: int) -> LogRecord:
    f = r.table(pos, _RECORD)
    return LogRecord(
        message=r.string(_required(f, 0, _RECORD, pos), "Record.message"),
        filename=r.string(_required(f, 4, _RECORD, pos), "Record.filename"),
        level=r.enum(f[1], _LEVELS, LogLevel.NOTSET, "Record.level"),
        timestamp=r.scalar(_U64, f[2]),
        line=r.scalar(_U32, f[3]),
    )


def _log(r: _Reader, pos: int) -> Log:
    f = r.table(pos, _LOG)
    return Log(r.tables(f[0], "Log.logs", _record))


_PAYLOAD_READERS: dict[int, Callable[[_Reader, int], Payload]] = {
    PayloadType.NETWORK_ACTIVITY: _network_activity,
    PayloadType.SYSTEM_INFORMATION: _system_information,
    PayloadType.LISTENING_PORTS: _listening_ports,
    PayloadType.HEARTBEAT: _heartbeat,
    PayloadType.BASELINE: _baseline,
    PayloadType.PROCESS: _process,
    PayloadType.LOG: _log,
}


def _event(r: _Reader, pos: int) -> Event:
    f = r.table(pos, _EVENT)
    id_pos = _required(f, 0, _EVENT, pos)
    value_pos = _required(f, 4, _EVENT, pos)
    kind = r.buf[f[3]] if f[3] else 0
    read = _PAYLOAD_READERS.get(kind)
    if read is None:
        raise DecodeError(
            f"Event.payload_type {kind} is not a Payload type (1..7; 0 is NONE, and the payload is required)",
            offset=f[3] or pos,
        )
    return Event(
        r.buf[id_pos : id_pos + 16],
        r.scalar(_U32, f[1]),
        r.scalar(_U32, f[2]),
        read(r, r.ref(value_pos)),
    )


def decode(data: bytes | bytearray | memoryview) -> SecurityMessage:
    """Verify and decode one ``AzureIoTSecurity.Message`` buffer (no identifier, no size prefix)."""
    if type(data) is bytes:
        buf = data
    elif isinstance(data, bytes | bytearray | memoryview):
        buf = bytes(data)
    else:
        raise TypeError(f"decode() takes bytes, not {type(data).__name__}")
    message = _fast_decode(buf)
    return message if message is not None else _decode_checked(buf)


def _decode_checked(buf: bytes) -> SecurityMessage:
    """The reader that explains: every payload kind, and a DecodeError naming any fault."""
    r = _Reader(buf)
    if r.size < 8:
        raise DecodeError(f"a message needs at least 8 bytes (root offset and a table), got {r.size}", offset=0)
    root = _U32(r.buf, 0)[0]
    f = r.table(root, _MESSAGE)
    module_id = r.string(_required(f, 0, _MESSAGE, root), "Message.security_module_id")
    events = r.tables(_required(f, 3, _MESSAGE, root), "Message.events", _event)
    return SecurityMessage(
        module_id,
        _version(r.scalar(_U32, f[1])),
        events,
        r.scalar(_I8, f[2]),
    )


__all__ = ["DecodeError", "decode", "encode"]
