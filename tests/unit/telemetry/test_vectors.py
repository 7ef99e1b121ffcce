"""The device's own buffers (flatcc layout) decode to exactly what the specification gives."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from harness.telemetry.codec import decode, encode
from harness.telemetry.model import (
    Event,
    Flow,
    Heartbeat,
    ModuleVersion,
    NetworkActivity,
    PayloadType,
    Protocol,
    SecurityMessage,
    SystemInformation,
)
from harness.telemetry.schema.accessors import decode_unchecked

VECTORS = Path(__file__).resolve().parents[3] / "fixtures" / "vectors"
T = 1_700_000_000


def _vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def _expected_heartbeat() -> SecurityMessage:
    return SecurityMessage(
        "defender-iot-micro-agent",
        ModuleVersion(3, 5, 4),
        (Event(bytes(range(0x30, 0x40)), T, 60, Heartbeat()),),
    )


def _expected_network() -> SecurityMessage:
    flow = Flow(IPv4Address("192.168.1.10"), IPv4Address("10.0.0.1"), 49152, 8883, Protocol.TCP, 100, 200)
    return SecurityMessage(
        "defender-iot-micro-agent",
        ModuleVersion(3, 5, 4),
        (
            Event(bytes(range(0x10, 0x20)), T, 10, NetworkActivity(ipv4=(flow,))),
            Event(bytes(range(0x20, 0x30)), T, 60, SystemInformation("Azure RTOS 6.3")),
            Event(bytes(range(0x30, 0x40)), T, 60, Heartbeat()),
        ),
    )


def test_vectors_are_flatcc_layout() -> None:
    """Both vectors have their root table's vtable after the table (negative soffset), as flatcc writes."""
    for name, size in (("heartbeat-flatcc.bin", 130), ("network-flatcc.bin", 312)):
        data = _vector(name)
        assert len(data) == size
        root = struct.unpack_from("<I", data, 0)[0]
        assert struct.unpack_from("<i", data, root)[0] < 0, name


def test_heartbeat_vector_every_field() -> None:
    msg = decode(_vector("heartbeat-flatcc.bin"))
    assert msg.security_module_id == "defender-iot-micro-agent"
    assert msg.security_module_version == ModuleVersion(3, 5, 4)
    assert msg.security_module_version.to_int() == 0x03050004
    assert msg.timezone == 0
    assert len(msg.events) == 1
    (event,) = msg.events
    assert event.id == bytes(range(0x30, 0x40))
    assert event.time == T
    assert event.collection_interval == 60
    assert event.kind is PayloadType.HEARTBEAT
    assert event.payload == Heartbeat()
    assert msg == _expected_heartbeat()


def test_network_vector_every_field() -> None:
    msg = decode(_vector("network-flatcc.bin"))
    assert msg.security_module_id == "defender-iot-micro-agent"
    assert str(msg.security_module_version) == "3.5.4"
    assert msg.timezone == 0
    assert [e.kind for e in msg.events] == [
        PayloadType.NETWORK_ACTIVITY,
        PayloadType.SYSTEM_INFORMATION,
        PayloadType.HEARTBEAT,
    ]
    net, sysinfo, heartbeat = msg.events
    assert (net.id, net.time, net.collection_interval) == (bytes(range(0x10, 0x20)), T, 10)
    assert isinstance(net.payload, NetworkActivity)
    assert net.payload.ipv6 == ()
    (flow,) = net.payload.ipv4
    assert flow.local_address == IPv4Address("192.168.1.10")
    assert flow.remote_address == IPv4Address("10.0.0.1")
    assert (flow.local_port, flow.remote_port) == (49152, 8883)
    assert flow.protocol is Protocol.TCP
    assert (flow.bytes_in, flow.bytes_out) == (100, 200)
    assert (flow.process_id, flow.user_id, flow.executable, flow.commandline) == (0, 0, None, None)
    assert (sysinfo.id, sysinfo.time, sysinfo.collection_interval) == (bytes(range(0x20, 0x30)), T, 60)
    assert sysinfo.payload == SystemInformation(os_info="Azure RTOS 6.3", kernel_info=None, hw_info=None)
    assert (heartbeat.id, heartbeat.time, heartbeat.collection_interval) == (bytes(range(0x30, 0x40)), T, 60)
    assert heartbeat.payload == Heartbeat()
    assert msg == _expected_network()


@pytest.mark.parametrize("expected", [_expected_heartbeat(), _expected_network()], ids=["heartbeat", "network"])
def test_spec_content_round_trips_through_our_encoder(expected: SecurityMessage) -> None:
    data = encode(expected)
    assert decode(data) == expected
    assert decode_unchecked(data) == expected  # the generated accessors read our encoding the same way
    root = struct.unpack_from("<I", data, 0)[0]
    assert struct.unpack_from("<i", data, root)[0] > 0  # Google's layout: vtable before the table


@pytest.mark.parametrize("name", ["heartbeat-flatcc.bin", "network-flatcc.bin"])
def test_generated_accessors_agree_on_vectors(name: str) -> None:
    assert decode(_vector(name)) == decode_unchecked(_vector(name))


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = _vector("network-flatcc.bin")
    assert decode(bytearray(data)) == decode(memoryview(data)) == _expected_network()


def test_trailing_bytes_are_ignored() -> None:
    assert decode(_vector("heartbeat-flatcc.bin") + b"\xff" * 7) == _expected_heartbeat()
