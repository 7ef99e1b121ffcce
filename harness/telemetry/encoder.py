"""FlatBuffers encoder for the ``AzureIoTSecurity`` message (``harness.telemetry.codec.encode``).

Writes Google's layout with the ``flatbuffers`` Builder through flatc's generated builder functions
(``generated/``); scalars equal to their default are not written, as on the device. It does not
reproduce flatcc's bytes (the firmware's C encoder does that).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import flatbuffers

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
    NetworkActivity,
    Process,
    ProcessEventType,
    Protocol,
    SecurityMessage,
    SystemInformation,
)

# ---- encoding through the generated builder functions ------------------------------------------


def _uint(value: int, bits: int, what: str) -> int:
    if not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise ValueError(f"{what} = {value!r} does not fit in an unsigned {bits}-bit field")
    return value


def _string(b: flatbuffers.Builder, value: str | None) -> int:
    return 0 if value is None else b.CreateString(value)


def _offsets_vector(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _address_words(address: IPv4Address | IPv6Address, v6: bool, what: str) -> list[int]:
    """The address bytes in network order, as the little-endian uint32 words the schema holds."""
    if v6 != isinstance(address, IPv6Address) or not isinstance(address, IPv4Address | IPv6Address):
        raise ValueError(f"{what} = {address!r} is not an {'IPv6' if v6 else 'IPv4'} address")
    packed = address.packed
    return list(struct.unpack(f"<{len(packed) // 4}I", packed))


def _encode_flow(b: flatbuffers.Builder, flow: Flow, v6: bool) -> int:
    what = "NetworkActivity.ipv6" if v6 else "NetworkActivity.ipv4"
    local = _address_words(flow.local_address, v6, f"{what} local_address")
    remote = _address_words(flow.remote_address, v6, f"{what} remote_address")
    executable = _string(b, flow.executable)
    commandline = _string(b, flow.commandline)
    fbs.NetworkActivityCommon.Start(b)
    fbs.NetworkActivityCommon.AddLocalPort(b, _uint(flow.local_port, 16, "Flow.local_port"))
    fbs.NetworkActivityCommon.AddRemotePort(b, _uint(flow.remote_port, 16, "Flow.remote_port"))
    fbs.NetworkActivityCommon.AddBytesIn(b, _uint(flow.bytes_in, 32, "Flow.bytes_in"))
    fbs.NetworkActivityCommon.AddBytesOut(b, _uint(flow.bytes_out, 32, "Flow.bytes_out"))
    fbs.NetworkActivityCommon.AddProtocol(b, Protocol(flow.protocol))
    fbs.NetworkActivityCommon.AddProcessId(b, _uint(flow.process_id, 16, "Flow.process_id"))
    fbs.NetworkActivityCommon.AddUserId(b, _uint(flow.user_id, 16, "Flow.user_id"))
    fbs.NetworkActivityCommon.AddExecutable(b, executable)
    fbs.NetworkActivityCommon.AddCommandline(b, commandline)
    common = fbs.NetworkActivityCommon.End(b)
    if v6:
        fbs.NetworkActivityV6.Start(b)
        fbs.NetworkActivityV6.AddAddresses(b, fbs.IPv6Addresses.CreateIPv6Addresses(b, local, remote))
        fbs.NetworkActivityV6.AddCommon(b, common)
        return int(fbs.NetworkActivityV6.End(b))
    fbs.NetworkActivityV4.Start(b)
    fbs.NetworkActivityV4.AddAddresses(b, fbs.IPv4Addresses.CreateIPv4Addresses(b, local[0], remote[0]))
    fbs.NetworkActivityV4.AddCommon(b, common)
    return int(fbs.NetworkActivityV4.End(b))


def _encode_network_activity(b: flatbuffers.Builder, p: NetworkActivity) -> int:
    ipv4 = _offsets_vector(b, [_encode_flow(b, f, False) for f in p.ipv4]) if p.ipv4 else 0
    ipv6 = _offsets_vector(b, [_encode_flow(b, f, True) for f in p.ipv6]) if p.ipv6 else 0
    fbs.NetworkActivity.Start(b)
    fbs.NetworkActivity.AddIpv4Activity(b, ipv4)
    fbs.NetworkActivity.AddIpv6Activity(b, ipv6)
    return int(fbs.NetworkActivity.End(b))


def _encode_system_information(b: flatbuffers.Builder, p: SystemInformation) -> int:
    os_info, kernel_info, hw_info = (_string(b, s) for s in (p.os_info, p.kernel_info, p.hw_info))
    fbs.SystemInformation.Start(b)
    fbs.SystemInformation.AddOsInfo(b, os_info)
    fbs.SystemInformation.AddKernelInfo(b, kernel_info)
    fbs.SystemInformation.AddHwInfo(b, hw_info)
    return int(fbs.SystemInformation.End(b))


def _encode_ports(b: flatbuffers.Builder, ports: tuple[ListeningPort, ...], v6: bool) -> int:
    what = "ListeningPorts.ipv6_ports" if v6 else "ListeningPorts.ipv4_ports"
    b.StartVector(20 if v6 else 8, len(ports), 4)
    for port in reversed(ports):
        words = _address_words(port.local_address, v6, f"{what} local_address")
        number = _uint(port.local_port, 16, f"{what} local_port")
        if v6:
            fbs.ListeningPortsV6.CreateListeningPortsV6(b, words, number, Protocol(port.protocol))
        else:
            fbs.ListeningPortsV4.CreateListeningPortsV4(b, words[0], number, Protocol(port.protocol))
    return int(b.EndVector())


def _encode_listening_ports(b: flatbuffers.Builder, p: ListeningPorts) -> int:
    ipv4 = _encode_ports(b, p.ipv4_ports, False) if p.ipv4_ports else 0
    ipv6 = _encode_ports(b, p.ipv6_ports, True) if p.ipv6_ports else 0
    fbs.ListeningPorts.Start(b)
    fbs.ListeningPorts.AddIpv4Ports(b, ipv4)
    fbs.ListeningPorts.AddIpv6Ports(b, ipv6)
    return int(fbs.ListeningPorts.End(b))


def _encode_heartbeat(b: flatbuffers.Builder, p: Heartbeat) -> int:
    fbs.Heartbeat.Start(b)
    return int(fbs.Heartbeat.End(b))


def _encode_baseline_check(b: flatbuffers.Builder, c: BaselineCheck) -> int:
    id_, error, description, remediation = (_string(b, s) for s in (c.id, c.error, c.description, c.remediation))
    fbs.BaselineCheck.Start(b)
    fbs.BaselineCheck.AddId(b, id_)
    fbs.BaselineCheck.AddResult(b, BaselineCheckResult(c.result))
    fbs.BaselineCheck.AddError(b, error)
    fbs.BaselineCheck.AddDescription(b, description)
    fbs.BaselineCheck.AddSeverity(b, BaselineCheckSeverity(c.severity))
    fbs.BaselineCheck.AddRemediation(b, remediation)
    return int(fbs.BaselineCheck.End(b))


def _encode_baseline(b: flatbuffers.Builder, p: Baseline) -> int:
    checks = [_encode_baseline_check(b, c) for c in p.baseline_checks]
    vector = _offsets_vector(b, checks) if checks else 0
    fbs.Baseline.Start(b)
    fbs.Baseline.AddBaselineChecks(b, vector)
    return int(fbs.Baseline.End(b))


def _encode_process(b: flatbuffers.Builder, p: Process) -> int:
    executable, user_name, commandline = (_string(b, s) for s in (p.executable, p.user_name, p.commandline))
    fbs.Process.Start(b)
    fbs.Process.AddExecutable(b, executable)
    fbs.Process.AddProcessId(b, _uint(p.process_id, 32, "Process.process_id"))
    fbs.Process.AddParentProcessId(b, _uint(p.parent_process_id, 32, "Process.parent_process_id"))
    fbs.Process.AddUserId(b, _uint(p.user_id, 32, "Process.user_id"))
    fbs.Process.AddUserName(b, user_name)
    fbs.Process.AddCommandline(b, commandline)
    fbs.Process.AddEventType(b, ProcessEventType(p.event_type))
    fbs.Process.AddHitCount(b, _uint(p.hit_count, 32, "Process.hit_count"))
    return int(fbs.Process.End(b))


def _encode_record(b: flatbuffers.Builder, rec: LogRecord) -> int:
    message, filename = b.CreateString(rec.message), b.CreateString(rec.filename)
    fbs.Record.Start(b)
    fbs.Record.AddMessage(b, message)
    fbs.Record.AddLevel(b, LogLevel(rec.level))
    fbs.Record.AddTimestamp(b, _uint(rec.timestamp, 64, "Record.timestamp"))
    fbs.Record.AddLine(b, _uint(rec.line, 32, "Record.line"))
    fbs.Record.AddFilename(b, filename)
    return int(fbs.Record.End(b))


def _encode_log(b: flatbuffers.Builder, p: Log) -> int:
    records = [_encode_record(b, rec) for rec in p.logs]
    vector = _offsets_vector(b, records) if records else 0
    fbs.Log.Start(b)
    fbs.Log.AddLogs(b, vector)
    return int(fbs.Log.End(b))


_PAYLOAD_WRITERS: dict[type, Callable[[flatbuffers.Builder, Any], int]] = {
    NetworkActivity: _encode_network_activity,
    SystemInformation: _encode_system_information,
    ListeningPorts: _encode_listening_ports,
    Heartbeat: _encode_heartbeat,
    Baseline: _encode_baseline,
    Process: _encode_process,
    Log: _encode_log,
}


def _encode_event(b: flatbuffers.Builder, event: Event) -> int:
    write = _PAYLOAD_WRITERS.get(type(event.payload))
    if write is None:
        raise ValueError(f"Event.payload {event.payload!r} is not one of the schema's payload types")
    if not isinstance(event.id, bytes | bytearray) or len(event.id) != 16:
        raise ValueError(f"Event.id = {event.id!r} must be 16 bytes")
    payload = write(b, event.payload)
    fbs.Event.Start(b)
    fbs.Event.AddTime(b, _uint(event.time, 32, "Event.time"))
    fbs.Event.AddCollectionInterval(b, _uint(event.collection_interval, 32, "Event.collection_interval"))
    fbs.Event.AddPayloadType(b, event.payload.KIND)
    fbs.Event.AddPayload(b, payload)
    fbs.Event.AddId(b, fbs.UUID.CreateUUID(b, list(event.id)))
    return int(fbs.Event.End(b))


def encode(msg: SecurityMessage) -> bytes:
    """Encode ``msg`` as a FlatBuffers ``AzureIoTSecurity.Message`` (Google's layout)."""
    b = flatbuffers.Builder(256)
    events = _offsets_vector(b, [_encode_event(b, e) for e in msg.events])
    module_id = b.CreateString(msg.security_module_id)
    if not -128 <= msg.timezone <= 127:
        raise ValueError(f"SecurityMessage.timezone = {msg.timezone!r} does not fit in int8")
    fbs.Message.Start(b)
    fbs.Message.AddSecurityModuleId(b, module_id)
    fbs.Message.AddSecurityModuleVersion(b, msg.security_module_version.to_int())
    fbs.Message.AddTimezone(b, msg.timezone)
    fbs.Message.AddEvents(b, events)
    b.Finish(fbs.Message.End(b))
    return bytes(b.Output())
