"""Decode through flatc's generated accessors, with no verification at all.

For trusted buffers only: a malformed buffer makes these accessors raise anything, read garbage or
loop over huge vectors. The harness decodes with ``harness.telemetry.codec.decode``; this reader
exists to cross-check that decoder against the generated code (tests) and as the speed baseline
(``benchmarks/codec_decode.py``).
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from harness.telemetry import generated as fbs
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


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8")


def _v4(word: int) -> IPv4Address:
    return IPv4Address(struct.pack("<I", word))


def _v6(words: list[int]) -> IPv6Address:
    return IPv6Address(struct.pack("<4I", *words))


def _flow(activity: Any, v6: bool) -> Flow:
    addresses, common = activity.Addresses(), activity.Common()
    if v6:
        local: IPv4Address | IPv6Address = _v6(addresses.LocalAddress())
        remote: IPv4Address | IPv6Address = _v6(addresses.RemoteAddress())
    else:
        local, remote = _v4(addresses.LocalAddress()), _v4(addresses.RemoteAddress())
    return Flow(
        local,
        remote,
        common.LocalPort(),
        common.RemotePort(),
        Protocol(common.Protocol()),
        common.BytesIn(),
        common.BytesOut(),
        common.ProcessId(),
        common.UserId(),
        _text(common.Executable()),
        _text(common.Commandline()),
    )


def _payload(kind: int, table: Any) -> Payload:
    if kind == PayloadType.NETWORK_ACTIVITY:
        na = fbs.NetworkActivity.NetworkActivity()
        na.Init(table.Bytes, table.Pos)
        return NetworkActivity(
            tuple(_flow(na.Ipv4Activity(i), False) for i in range(na.Ipv4ActivityLength())),
            tuple(_flow(na.Ipv6Activity(i), True) for i in range(na.Ipv6ActivityLength())),
        )
    if kind == PayloadType.SYSTEM_INFORMATION:
        si = fbs.SystemInformation.SystemInformation()
        si.Init(table.Bytes, table.Pos)
        return SystemInformation(_text(si.OsInfo()), _text(si.KernelInfo()), _text(si.HwInfo()))
    if kind == PayloadType.HEARTBEAT:
        return Heartbeat()
    if kind == PayloadType.LISTENING_PORTS:
        lp = fbs.ListeningPorts.ListeningPorts()
        lp.Init(table.Bytes, table.Pos)
        v4 = [lp.Ipv4Ports(i) for i in range(lp.Ipv4PortsLength())]
        v6 = [lp.Ipv6Ports(i) for i in range(lp.Ipv6PortsLength())]
        return ListeningPorts(
            tuple(ListeningPort(_v4(p.LocalAddress()), p.LocalPort(), Protocol(p.Protocol())) for p in v4),
            tuple(ListeningPort(_v6(p.LocalAddress()), p.LocalPort(), Protocol(p.Protocol())) for p in v6),
        )
    if kind == PayloadType.BASELINE:
        bl = fbs.Baseline.Baseline()
        bl.Init(table.Bytes, table.Pos)
        checks = [bl.BaselineChecks(i) for i in range(bl.BaselineChecksLength())]
        return Baseline(
            tuple(
                BaselineCheck(
                    c.Id().decode("utf-8"),
                    BaselineCheckResult(c.Result()),
                    _text(c.Error()),
                    _text(c.Description()),
                    BaselineCheckSeverity(c.Severity()),
                    _text(c.Remediation()),
                )
                for c in checks
            )
        )
    if kind == PayloadType.PROCESS:
        pr = fbs.Process.Process()
        pr.Init(table.Bytes, table.Pos)
        return Process(
            _text(pr.Executable()),
            pr.ProcessId(),
            pr.ParentProcessId(),
            pr.UserId(),
            _text(pr.UserName()),
            _text(pr.Commandline()),
            ProcessEventType(pr.EventType()),
            pr.HitCount(),
        )
    if kind == PayloadType.LOG:
        lg = fbs.Log.Log()
        lg.Init(table.Bytes, table.Pos)
        records = [lg.Logs(i) for i in range(lg.LogsLength())]
        return Log(
            tuple(
                LogRecord(
                    r.Message().decode("utf-8"),
                    r.Filename().decode("utf-8"),
                    LogLevel(r.Level()),
                    r.Timestamp(),
                    r.Line(),
                )
                for r in records
            )
        )
    raise ValueError(f"payload type {kind} is not in the schema")


def decode_unchecked(data: bytes) -> SecurityMessage:
    """Read ``data`` into the model through the generated accessors (trusted input only)."""
    msg = fbs.Message.Message.GetRootAs(data, 0)
    events = []
    for i in range(msg.EventsLength()):
        ev = msg.Events(i)
        events.append(
            Event(bytes(ev.Id().Value()), ev.Time(), ev.CollectionInterval(), _payload(ev.PayloadType(), ev.Payload()))
        )
    return SecurityMessage(
        msg.SecurityModuleId().decode("utf-8"),
        ModuleVersion.from_int(msg.SecurityModuleVersion()),
        tuple(events),
        msg.Timezone(),
    )
