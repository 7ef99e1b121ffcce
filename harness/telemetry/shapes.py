"""The codec's fast path for the shapes devices send (see the comment below); ``codec.decode`` tries
it first and falls back to the diagnosing reader at any irregularity.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Any, NamedTuple

from harness.telemetry.fbread import (
    _COMMON,
    _EVENT,
    _HEARTBEAT,
    _HEARTBEAT_PAYLOAD,
    _I8,
    _MESSAGE,
    _NETWORK_ACTIVITY,
    _NETWORK_V4,
    _NETWORK_V6,
    _PROTOCOLS,
    _SYSTEM_INFORMATION,
    _U16,
    _U32,
    _open,
    _text,
    _v4,
    _v6,
    _version,
)
from harness.telemetry.model import (
    Event,
    Flow,
    ModuleVersion,
    NetworkActivity,
    Payload,
    PayloadType,
    Protocol,
    SecurityMessage,
    SystemInformation,
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


# Event and SecurityMessage are made field by field through their slots: a frozen dataclass's
# __init__ sets each field with object.__setattr__, which costs 0.16 us more per object (measured),
# and these two are made for every message a collector receives. They have no __post_init__ to skip.
_new = object.__new__
_EVENT_ID, _EVENT_TIME, _EVENT_INTERVAL, _EVENT_PAYLOAD = (
    Event.id.__set__, Event.time.__set__, Event.collection_interval.__set__,  # type: ignore[attr-defined]
    Event.payload.__set__)  # type: ignore[attr-defined]
_MESSAGE_MODULE, _MESSAGE_VERSION, _MESSAGE_EVENTS, _MESSAGE_TIMEZONE = (
    SecurityMessage.security_module_id.__set__, SecurityMessage.security_module_version.__set__,  # type: ignore[attr-defined]
    SecurityMessage.events.__set__, SecurityMessage.timezone.__set__)  # type: ignore[attr-defined]


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
            event = _new(Event)
            _EVENT_ID(event, buf[e.id : e.id + 16])
            _EVENT_TIME(event, _U32(buf, e.time)[0] if e.time else 0)
            _EVENT_INTERVAL(event, _U32(buf, e.collection_interval)[0] if e.collection_interval else 0)
            _EVENT_PAYLOAD(event, payload)
            events.append(event)
    except UnicodeDecodeError:
        return None
    message = _new(SecurityMessage)
    _MESSAGE_MODULE(message, plan.module_id)
    _MESSAGE_VERSION(message, plan.version)
    _MESSAGE_EVENTS(message, tuple(events))
    _MESSAGE_TIMEZONE(message, plan.timezone)
    return message


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
