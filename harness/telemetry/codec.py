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
"the fast path" below); anything else, and every fault, goes through the diagnosing ``_Reader``.

``encode`` (``encoder.py``, re-exported here) writes Google's layout through flatc's generated
builder functions; scalars equal to their default are not written, as on the device.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from typing import Any, NamedTuple, TypeVar

from harness.errors import CheckFailed
from harness.telemetry.encoder import encode
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
    ModuleVersion,
    NetworkActivity,
    Payload,
    PayloadType,
    Process,
    ProcessEventType,
    Protocol,
    SecurityMessage,
    SystemInformation,
)

_I8 = struct.Struct("<b").unpack_from
_U16 = struct.Struct("<H").unpack_from
_I32 = struct.Struct("<i").unpack_from
_U32 = struct.Struct("<I").unpack_from
_U64 = struct.Struct("<Q").unpack_from
_HH = struct.Struct("<HH").unpack_from
_VTABLE_ENTRIES = [struct.Struct(f"<{n}H").unpack_from for n in range(16)]

E = TypeVar("E")
T = TypeVar("T")


class DecodeError(CheckFailed):
    """A buffer is not a valid ``AzureIoTSecurity.Message``; ``offset`` is where it went wrong."""

    def __init__(self, message: str, *, offset: int, **kwargs: Any) -> None:
        super().__init__(f"offset {offset} (0x{offset:x}): {message}", **kwargs)
        self.offset = offset


class _Spec:
    """A table's fields in id order: names (for messages) and inline sizes (for bounds checks)."""

    __slots__ = ("layouts", "name", "names", "sizes")

    def __init__(self, name: str, fields: str) -> None:
        pairs = [item.split(":") for item in fields.split()]
        self.name = name
        self.names = tuple(f"{name}.{field}" for field, _ in pairs)
        self.sizes = tuple(int(size) for _, size in pairs)
        self.layouts: dict[bytes, tuple[int, ...]] = {}  # vtable bytes -> checked field offsets


# Field ids and inline sizes of schema/AzureIoTSecurity.fbs ("name:size" in id order; offsets are 4
# bytes, a union is its type byte then its offset).
_MESSAGE = _Spec("Message", "security_module_id:4 security_module_version:4 timezone:1 events:4")
_EVENT = _Spec("Event", "id:16 time:4 collection_interval:4 payload_type:1 payload:4")
_NETWORK_ACTIVITY = _Spec("NetworkActivity", "ipv4_activity:4 ipv6_activity:4")
_NETWORK_V4 = _Spec("NetworkActivityV4", "addresses:8 common:4")
_NETWORK_V6 = _Spec("NetworkActivityV6", "addresses:32 common:4")
_COMMON = _Spec(
    "NetworkActivityCommon",
    "local_port:2 remote_port:2 bytes_in:4 bytes_out:4 protocol:1 process_id:2 user_id:2 executable:4 commandline:4",
)
_SYSTEM_INFORMATION = _Spec("SystemInformation", "os_info:4 kernel_info:4 hw_info:4")
_LISTENING_PORTS = _Spec("ListeningPorts", "ipv4_ports:4 ipv6_ports:4")
_HEARTBEAT = _Spec("Heartbeat", "")
_BASELINE = _Spec("Baseline", "baseline_checks:4")
_BASELINE_CHECK = _Spec("BaselineCheck", "id:4 result:1 error:4 description:4 severity:1 remediation:4")
_PROCESS = _Spec(
    "Process",
    "executable:4 process_id:4 parent_process_id:4 user_id:4 user_name:4 commandline:4 event_type:1 hit_count:4",
)
_LOG = _Spec("Log", "logs:4")
_RECORD = _Spec("Record", "message:4 level:1 timestamp:8 line:4 filename:4")


_ZEROS = tuple((0,) * n for n in range(16))
_CACHE_LIMIT = 4096  # entries per cache of layouts, addresses and versions


def _open(buf: bytes, size: int, pos: int, spec: _Spec) -> tuple[int, ...] | None:
    """Field offsets (relative to ``pos``, 0 where absent, one per field of ``spec``) of the table at
    ``pos``, or None if the table, its vtable or a field is out of bounds (``_Reader`` says which).
    What depends on the vtable's bytes alone is checked once per distinct vtable (``spec.layouts``)."""
    if pos + 4 > size:
        return None
    vt = pos - _I32(buf, pos)[0]
    if vt < 0 or vt + 4 > size:
        return None
    vt_size, tbl_size = _HH(buf, vt)
    if vt_size < 4 or vt + vt_size > size or pos + tbl_size > size:
        return None
    vtable = buf[vt : vt + vt_size]
    offsets = spec.layouts.get(vtable)
    if offsets is None:
        offsets = _layout(vtable, spec.sizes)
        if offsets is not None and len(spec.layouts) < _CACHE_LIMIT:
            spec.layouts[vtable] = offsets
    return offsets


def _layout(vtable: bytes, sizes: tuple[int, ...]) -> tuple[int, ...] | None:
    """The field offsets a vtable (at least 4 bytes) gives, or None if it is malformed or a field
    runs past the table's end."""
    vt_size, tbl_size = _HH(vtable, 0)
    if vt_size & 1 or tbl_size < 4:
        return None
    n, have = len(sizes), (vt_size - 4) >> 1
    offsets = _VTABLE_ENTRIES[n](vtable, 4) if have >= n else _VTABLE_ENTRIES[have](vtable, 4) + _ZEROS[n - have]
    for off, width in zip(offsets, sizes, strict=True):
        if off and off + width > tbl_size:
            return None
    return offsets


def _text(buf: bytes, size: int, target: int) -> str | None:
    """The NUL-terminated UTF-8 string at ``target``, or None if it is out of bounds or malformed."""
    if target + 4 > size:
        return None
    end = target + 4 + _U32(buf, target)[0]
    if end >= size or buf[end] != 0:
        return None
    try:
        return buf[target + 4 : end].decode("utf-8")
    except UnicodeDecodeError:
        return None


_V4_CACHE: dict[bytes, IPv4Address] = {}
_V6_CACHE: dict[bytes, IPv6Address] = {}
_VERSIONS: dict[int, ModuleVersion] = {}
_HEARTBEAT_PAYLOAD = Heartbeat()


def _v4(raw: bytes) -> IPv4Address:
    """An address object per packed address (devices repeat theirs in every flow); cached, bounded."""
    address = _V4_CACHE.get(raw)
    if address is None:
        address = IPv4Address(raw)
        if len(_V4_CACHE) < _CACHE_LIMIT:
            _V4_CACHE[raw] = address
    return address


def _v6(raw: bytes) -> IPv6Address:
    address = _V6_CACHE.get(raw)
    if address is None:
        address = IPv6Address(raw)
        if len(_V6_CACHE) < _CACHE_LIMIT:
            _V6_CACHE[raw] = address
    return address


def _version(value: int) -> ModuleVersion:
    version = _VERSIONS.get(value)
    if version is None:
        version = ModuleVersion.from_int(value)
        if len(_VERSIONS) < _CACHE_LIMIT:
            _VERSIONS[value] = version
    return version


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


_PROTOCOLS = {p.value: p for p in Protocol}
_RESULTS = {v.value: v for v in BaselineCheckResult}
_SEVERITIES = {v.value: v for v in BaselineCheckSeverity}
_PROCESS_EVENTS = {v.value: v for v in ProcessEventType}
_LEVELS = {v.value: v for v in LogLevel}


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


# ---- the fast path: the shapes devices send -----------------------------------------------------
# ``decode`` tries this first, for messages whose events are NetworkActivity, SystemInformation or
# Heartbeat. ``_plan`` walks the buffer with the _Reader's checks (``_open``, ``_span``, ``_text``,
# the same bounds, required fields, enums and object budget) and notes where each value lies;
# ``_build`` makes the objects from those positions. A device sends the same shape again and again,
# differing only in values (event ids, times, counters, addresses, payload strings), so a plan is
# kept with a mask of its buffer's structural bytes (offsets, vtables, lengths, NULs, union types,
# enums, module id, version, timezone): a later buffer of the same size whose structural bytes are
# all equal passes every check the walk made, and is built from the plan without walking (its
# strings are still decoded, so UTF-8 is still checked). At any irregularity the fast path returns
# None and the _Reader decodes the buffer again, raising the DecodeError that names the fault (or
# decoding a payload kind left to it). Tests check that both agree on every fuzzed buffer.

Span = tuple[int, int] | None  # (start, end) of a string's bytes, None when absent
_SHAPES_PER_SIZE = 8
_SHAPE_SIZES = 256  # sizes with kept shapes, each buffer at most _SHAPE_MAX_BYTES: memory stays bounded
_SHAPE_MAX_BYTES = 16 * 1024  # a message at the flow caps (64 + 64) is ~9 KB
_HEARTBEAT_KIND, _SYSTEM_INFORMATION_KIND, _NETWORK_ACTIVITY_KIND = (
    int(PayloadType.HEARTBEAT), int(PayloadType.SYSTEM_INFORMATION), int(PayloadType.NETWORK_ACTIVITY))


class _FlowPlan(NamedTuple):
    addresses: int
    v6: bool
    local_port: int  # positions, 0 where absent
    remote_port: int
    protocol: Protocol
    bytes_in: int
    bytes_out: int
    process_id: int
    user_id: int
    executable: Span
    commandline: Span


class _EventPlan(NamedTuple):
    id: int
    time: int
    collection_interval: int
    kind: int
    payload: tuple[Span, ...] | tuple[tuple[_FlowPlan, ...], tuple[_FlowPlan, ...]] | None


class _Plan(NamedTuple):
    values: tuple[tuple[int, int], ...]  # (start, end) of every value; the other bytes are structural
    module_id: str  # these three are structural too: a device does not change them
    version: ModuleVersion
    timezone: int
    events: tuple[_EventPlan, ...]


_SHAPES: dict[int, list[_Shape]] = {}  # by buffer size; an empty list: the size was seen once


def _span(buf: bytes, size: int, pos: int, values: list[tuple[int, int]]) -> Span:
    """The bytes of the string the uoffset at ``pos`` points to (noted as values), or None."""
    target = pos + _U32(buf, pos)[0]
    if target + 4 > size:
        return None
    end = target + 4 + _U32(buf, target)[0]
    if end >= size or buf[end] != 0:
        return None
    values.append((target + 4, end))
    return target + 4, end


def _vector(buf: bytes, size: int, pos: int, width: int) -> tuple[int, int] | None:
    """(start, count) of the vector the uoffset at ``pos`` points to, or None if out of bounds."""
    target = pos + _U32(buf, pos)[0]
    if target + 4 > size:
        return None
    count = _U32(buf, target)[0]
    if target + 4 + count * width > size:
        return None
    return target + 4, count


def _scalars(pos: int, offsets: tuple[int, ...], widths: tuple[int, ...], values: list[tuple[int, int]]) -> list[int]:
    """Positions of a table's scalar fields (0 where absent), noted as values."""
    got = []
    for off, width in zip(offsets, widths, strict=True):
        if off:
            values.append((pos + off, pos + off + width))
        got.append(pos + off if off else 0)
    return got


def _plan_flows(buf: bytes, size: int, start: int, count: int, v6: bool,
                values: list[tuple[int, int]]) -> tuple[_FlowPlan, ...] | None:
    spec, width = (_NETWORK_V6, 32) if v6 else (_NETWORK_V4, 8)
    flows = []
    for p in range(start, start + 4 * count, 4):
        p += _U32(buf, p)[0]
        f = _open(buf, size, p, spec)
        if f is None or not f[0] or not f[1]:
            return None
        values.append((p + f[0], p + f[0] + width))
        c = p + f[1]
        c += _U32(buf, c)[0]
        o = _open(buf, size, c, _COMMON)
        if o is None:
            return None
        protocol = _PROTOCOLS.get(_I8(buf, c + o[4])[0]) if o[4] else Protocol.TCP
        exe = _span(buf, size, c + o[7], values) if o[7] else None
        cmd = _span(buf, size, c + o[8], values) if o[8] else None
        if protocol is None or (o[7] and exe is None) or (o[8] and cmd is None):
            return None
        lport, rport, bytes_in, bytes_out = _scalars(c, o[:4], (2, 2, 4, 4), values)
        pid, uid = _scalars(c, o[5:7], (2, 2), values)
        flows.append(_FlowPlan(p + f[0], v6, lport, rport, protocol, bytes_in, bytes_out, pid, uid, exe, cmd))
    return tuple(flows)


def _plan_payload(buf: bytes, size: int, kind: int, pos: int, budget: int,
                  values: list[tuple[int, int]]) -> tuple[Any, int] | None:
    """The plan of the payload table at ``pos`` and what is left of the object budget, or None."""
    if kind == _HEARTBEAT_KIND:
        return (None, budget) if _open(buf, size, pos, _HEARTBEAT) is not None else None
    if kind == _SYSTEM_INFORMATION_KIND:
        f = _open(buf, size, pos, _SYSTEM_INFORMATION)
        if f is None:
            return None
        spans = tuple(_span(buf, size, pos + off, values) if off else None for off in f)
        if any(off and span is None for off, span in zip(f, spans, strict=True)):
            return None
        return spans, budget
    if kind == _NETWORK_ACTIVITY_KIND:
        f = _open(buf, size, pos, _NETWORK_ACTIVITY)
        if f is None:
            return None
        both: list[tuple[_FlowPlan, ...]] = []
        for off, v6 in zip(f, (False, True), strict=True):
            vector = _vector(buf, size, pos + off, 4) if off else (0, 0)
            if vector is None:
                return None
            budget -= 3 * vector[1]  # the vector's elements, and each flow's two tables
            flows = _plan_flows(buf, size, *vector, v6, values) if budget >= 0 else None
            if flows is None:
                return None
            both.append(flows)
        return (both[0], both[1]), budget
    return None


def _plan(buf: bytes) -> _Plan | None:
    """Walk and check the buffer; where its values lie, or None at the first irregularity."""
    size = len(buf)
    if size < 8:
        return None
    budget = size // 2 + 8 - 1  # the Message table
    values: list[tuple[int, int]] = []
    root = _U32(buf, 0)[0]
    m = _open(buf, size, root, _MESSAGE)
    if m is None or not m[0] or not m[3]:
        return None
    module_id = _text(buf, size, root + m[0] + _U32(buf, root + m[0])[0])
    vector = _vector(buf, size, root + m[3], 4)
    if module_id is None or vector is None:
        return None
    version = _version(_U32(buf, root + m[1])[0] if m[1] else 0)
    timezone = _I8(buf, root + m[2])[0] if m[2] else 0
    start, count = vector
    budget -= count
    events = []
    for p in range(start, start + 4 * count, 4):
        budget -= 2  # the Event table and its payload's
        if budget < 0:
            return None
        p += _U32(buf, p)[0]
        e = _open(buf, size, p, _EVENT)
        if e is None or not e[0] or not e[3] or not e[4]:
            return None
        kind, value = buf[p + e[3]], p + e[4]
        got = _plan_payload(buf, size, kind, value + _U32(buf, value)[0], budget, values)
        if got is None:
            return None
        payload, budget = got
        id_pos, time, interval = _scalars(p, e[:3], (16, 4, 4), values)
        events.append(_EventPlan(id_pos, time, interval, kind, payload))
    if budget < 0:
        return None
    return _Plan(tuple(values), module_id, version, timezone, tuple(events))


class _Shape(NamedTuple):
    mask: int  # 1 bits over the structural bytes
    expect: int  # a checked buffer's structural bytes
    plan: _Plan

    @classmethod
    def of(cls, plan: _Plan, buf: bytes) -> _Shape:
        mask = bytearray(b"\xff") * len(buf)
        for start, end in plan.values:
            mask[start:end] = bytes(end - start)
        whole = int.from_bytes(mask, "little")
        return cls(whole, int.from_bytes(buf, "little") & whole, plan)


def _build_flows(buf: bytes, plans: tuple[_FlowPlan, ...]) -> tuple[Flow, ...]:
    flows = []
    for f in plans:
        a = f.addresses
        if f.v6:
            local: IPv4Address | IPv6Address = _v6(buf[a : a + 16])
            remote: IPv4Address | IPv6Address = _v6(buf[a + 16 : a + 32])
        else:
            local, remote = _v4(buf[a : a + 4]), _v4(buf[a + 4 : a + 8])
        exe, cmd = f.executable, f.commandline
        flows.append(Flow(
            local, remote,
            _U16(buf, f.local_port)[0] if f.local_port else 0,
            _U16(buf, f.remote_port)[0] if f.remote_port else 0,
            f.protocol,
            _U32(buf, f.bytes_in)[0] if f.bytes_in else 0,
            _U32(buf, f.bytes_out)[0] if f.bytes_out else 0,
            _U16(buf, f.process_id)[0] if f.process_id else 0,
            _U16(buf, f.user_id)[0] if f.user_id else 0,
            buf[exe[0] : exe[1]].decode("utf-8") if exe else None,
            buf[cmd[0] : cmd[1]].decode("utf-8") if cmd else None,
        ))
    return tuple(flows)


def _build(plan: _Plan, buf: bytes) -> SecurityMessage | None:
    """The message a buffer of the plan's shape holds; None if a string is not UTF-8."""
    try:
        events = []
        for e in plan.events:
            p = e.payload
            if e.kind == _HEARTBEAT_KIND:
                payload: Payload = _HEARTBEAT_PAYLOAD
            elif e.kind == _SYSTEM_INFORMATION_KIND:
                payload = SystemInformation(*(buf[s[0] : s[1]].decode("utf-8") if s else None for s in p))  # type: ignore[index, union-attr]
            else:
                payload = NetworkActivity(_build_flows(buf, p[0]), _build_flows(buf, p[1]))  # type: ignore[arg-type, index]
            events.append(Event(
                buf[e.id : e.id + 16],
                _U32(buf, e.time)[0] if e.time else 0,
                _U32(buf, e.collection_interval)[0] if e.collection_interval else 0,
                payload,
            ))
        return SecurityMessage(plan.module_id, plan.version, tuple(events), plan.timezone)
    except UnicodeDecodeError:
        return None


def _fast_decode(buf: bytes) -> SecurityMessage | None:
    shapes = _SHAPES.get(len(buf))
    if shapes:
        whole = int.from_bytes(buf, "little")
        for shape in shapes:
            if whole & shape.mask == shape.expect:
                return _build(shape.plan, buf)
    plan = _plan(buf)
    if plan is None:
        return None
    message = _build(plan, buf)
    if message is None:
        return None
    if shapes is not None:  # the second buffer of this size: worth a shape
        if len(shapes) >= _SHAPES_PER_SIZE:
            del shapes[0]
        shapes.append(_Shape.of(plan, buf))
    elif len(_SHAPES) < _SHAPE_SIZES and len(buf) <= _SHAPE_MAX_BYTES:
        _SHAPES[len(buf)] = []
    return message


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
