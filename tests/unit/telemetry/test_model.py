"""Model objects: immutability, version packing, JSON rendering."""

from __future__ import annotations

import dataclasses
import json
from ipaddress import IPv4Address, IPv6Address

import pytest

from harness.telemetry.model import (
    PAYLOAD_CLASSES,
    Event,
    Flow,
    Heartbeat,
    LogLevel,
    LogRecord,
    ModuleVersion,
    NetworkActivity,
    PayloadType,
    Protocol,
    SecurityMessage,
    SystemInformation,
)


def _flow(v6: bool = False) -> Flow:
    if v6:
        return Flow(IPv6Address("2001:db8::1"), IPv6Address("::1"), 1, 2, Protocol.ICMP)
    return Flow(IPv4Address("192.168.1.10"), IPv4Address("10.0.0.1"), 49152, 8883, Protocol.TCP, 100, 200)


def test_version_packing() -> None:
    v = ModuleVersion.from_int(0x03050004)
    assert v == ModuleVersion(3, 5, 4) == ModuleVersion.parse("3.5.4")
    assert (v.to_int(), str(v)) == (0x03050004, "3.5.4")
    assert ModuleVersion(2, 0, 3) < ModuleVersion(3, 5, 4)
    assert ModuleVersion.from_int(0xFFFFFFFF) == ModuleVersion(255, 255, 65535)
    with pytest.raises(ValueError, match=r"3\.5\.4\.1"):
        ModuleVersion.parse("3.5.4.1")
    with pytest.raises(ValueError, match=r"8\.8\.16"):
        ModuleVersion(256, 0, 0).to_int()


def test_objects_are_frozen() -> None:
    flow = _flow()
    with pytest.raises(dataclasses.FrozenInstanceError):
        flow.local_port = 1  # type: ignore[misc]
    assert hash(flow) == hash(_flow())


def test_flows_and_kind() -> None:
    activity = NetworkActivity((_flow(),), (_flow(True),))
    assert activity.flows == (_flow(), _flow(True))
    assert Event(bytes(16), 0, 10, activity).kind is PayloadType.NETWORK_ACTIVITY
    event = Event(bytes(range(0x30, 0x40)), 0, 60, Heartbeat())
    assert event.id_counters == (0x3736353433323130, 0x3F3E3D3C3B3A3938)
    assert _flow().key == (IPv4Address("192.168.1.10"), IPv4Address("10.0.0.1"), 49152, 8883, Protocol.TCP)
    assert set(PAYLOAD_CLASSES) == set(PayloadType) - {PayloadType.NONE}
    assert all(cls.KIND is kind for kind, cls in PAYLOAD_CLASSES.items())


def test_to_json() -> None:
    msg = SecurityMessage(
        "defender-iot-micro-agent",
        ModuleVersion(3, 5, 4),
        (
            Event(bytes(range(16)), 1700000000, 10, NetworkActivity((_flow(),), (_flow(True),))),
            Event(b"\xff" * 16, 1, 60, SystemInformation("Azure RTOS 6.3")),
            Event(bytes(16), 2, 60, Heartbeat()),
        ),
    )
    data = msg.to_json()
    assert json.loads(json.dumps(data)) == data
    assert data["security_module_version"] == "3.5.4"
    net, sysinfo, heartbeat = data["events"]
    assert net["id"] == "000102030405060708090a0b0c0d0e0f"
    assert net["kind"] == "NetworkActivity"
    assert net["payload"]["ipv4"][0] == {
        "local_address": "192.168.1.10",
        "remote_address": "10.0.0.1",
        "local_port": 49152,
        "remote_port": 8883,
        "protocol": "TCP",
        "bytes_in": 100,
        "bytes_out": 200,
        "process_id": 0,
        "user_id": 0,
        "executable": None,
        "commandline": None,
    }
    assert net["payload"]["ipv6"][0]["local_address"] == "2001:db8::1"
    assert net["payload"]["ipv6"][0]["protocol"] == "ICMP"
    assert sysinfo["id"] == "ff" * 16
    assert sysinfo["payload"] == {"os_info": "Azure RTOS 6.3", "kernel_info": None, "hw_info": None}
    assert heartbeat["payload"] == {}
    assert LogRecord("m", "f.c", LogLevel.WARN).to_json()["level"] == "WARN"
