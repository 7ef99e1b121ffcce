"""The agent's FlatBuffers encoder (C, flatcc layout) against the device vectors and the codec."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.telemetry.codec import decode
from harness.telemetry.model import Heartbeat, NetworkActivity, Protocol, SystemInformation

pytestmark = pytest.mark.needs("gcc", "make")

VECTORS = __import__("pathlib").Path(__file__).resolve().parents[3] / "fixtures" / "vectors"
MODULE_ID = b"defender-iot-micro-agent"
VERSION_354 = 0x03050004
T = 1_700_000_000

MakeAgent = Callable[..., Any]


def _uuid(first: int) -> bytes:
    return bytes(range(first, first + 16))


def _first_difference(a: bytes, b: bytes) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _build_network_vector(agent: Any) -> bytes:
    lib = agent.lib
    assert lib.asc_ser_begin(MODULE_ID, VERSION_354) == 0
    assert lib.asc_ser_network_activity_begin(_uuid(0x10), T, 10) == 0
    assert (
        lib.asc_ser_flow_v4(
            IPv4Address("192.168.1.10").packed, IPv4Address("10.0.0.1").packed, 49152, 8883, 100, 200, 0
        )
        == 0
    )
    assert lib.asc_ser_network_activity_end() == 0
    assert lib.asc_ser_system_information(_uuid(0x20), T, 60, b"Azure RTOS 6.3") == 0
    assert lib.asc_ser_heartbeat(_uuid(0x30), T, 60) == 0
    assert lib.asc_ser_end() == 0
    out = agent.ser_buffer()
    assert out is not None
    return bytes(out)


def test_network_vector_byte_for_byte(make_agent: MakeAgent) -> None:
    ours = _build_network_vector(make_agent())
    device = (VECTORS / "network-flatcc.bin").read_bytes()
    assert len(ours) == 312
    assert ours == device, f"first difference at byte {_first_difference(ours, device)}"


def test_heartbeat_vector_byte_for_byte(make_agent: MakeAgent) -> None:
    agent = make_agent()
    assert agent.lib.asc_ser_begin(MODULE_ID, VERSION_354) == 0
    assert agent.lib.asc_ser_heartbeat(_uuid(0x30), T, 60) == 0
    assert agent.lib.asc_ser_end() == 0
    ours = agent.ser_buffer()
    device = (VECTORS / "heartbeat-flatcc.bin").read_bytes()
    assert ours is not None and len(ours) == 130
    assert ours == device, f"first difference at byte {_first_difference(ours, device)}"


def test_our_network_message_decodes_as_specified(make_agent: MakeAgent) -> None:
    msg = decode(_build_network_vector(make_agent()))
    assert msg.security_module_id == MODULE_ID.decode()
    assert msg.security_module_version.to_int() == VERSION_354
    assert [type(e.payload) for e in msg.events] == [NetworkActivity, SystemInformation, Heartbeat]
    flow = msg.events[0].payload.ipv4[0]  # type: ignore[union-attr]
    assert (flow.local_address, flow.remote_address) == (IPv4Address("192.168.1.10"), IPv4Address("10.0.0.1"))
    assert (flow.local_port, flow.remote_port, flow.bytes_in, flow.bytes_out) == (49152, 8883, 100, 200)
    assert flow.protocol is Protocol.TCP
    assert msg.events[1].payload.os_info == "Azure RTOS 6.3"  # type: ignore[union-attr]
    assert [e.collection_interval for e in msg.events] == [10, 60, 60]


_flows = st.lists(
    st.tuples(
        st.binary(min_size=4, max_size=4),
        st.binary(min_size=4, max_size=4),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFFFFFF),
        st.integers(0, 0xFFFFFFFF),
        st.sampled_from([0, 1, 2]),
    ),
    min_size=1,
    max_size=64,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    flows=_flows,
    with_si=st.booleans(),
    with_hb=st.booleans(),
    os_info=st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40),
    time=st.integers(0, 0xFFFFFFFF),
    interval=st.integers(0, 0xFFFFFFFF),
)
def test_any_message_round_trips_through_the_codec(
    make_agent: MakeAgent,
    flows: list[tuple[bytes, bytes, int, int, int, int, int]],
    with_si: bool,
    with_hb: bool,
    os_info: str,
    time: int,
    interval: int,
) -> None:
    agent = make_agent()
    lib = agent.lib
    assert lib.asc_ser_begin(MODULE_ID, VERSION_354) == 0
    assert lib.asc_ser_network_activity_begin(_uuid(1), time, interval) == 0
    for flow in flows:
        assert lib.asc_ser_flow_v4(*flow) == 0
    assert lib.asc_ser_network_activity_end() == 0
    ids = [_uuid(1)]
    if with_si:
        assert lib.asc_ser_system_information(_uuid(2), time, interval, os_info.encode()) == 0
        ids.append(_uuid(2))
    if with_hb:
        assert lib.asc_ser_heartbeat(_uuid(3), time, interval) == 0
        ids.append(_uuid(3))
    assert lib.asc_ser_end() == 0
    data = agent.ser_buffer()
    assert data is not None
    msg = decode(data)
    assert msg.security_module_version.to_int() == VERSION_354
    got = [
        (
            f.local_address.packed,
            f.remote_address.packed,
            f.local_port,
            f.remote_port,
            f.bytes_in,
            f.bytes_out,
            int(f.protocol),
        )
        for f in msg.events[0].payload.ipv4
    ]  # type: ignore[union-attr]
    assert got == flows
    assert [type(e.payload) for e in msg.events] == (
        [NetworkActivity] + [SystemInformation] * with_si + [Heartbeat] * with_hb
    )
    assert [e.id for e in msg.events] == ids
    assert all((e.time, e.collection_interval) == (time, interval) for e in msg.events)
    if with_si:
        assert msg.events[1].payload.os_info == os_info  # type: ignore[union-attr]


def test_defaults_are_left_out_like_flatcc(make_agent: MakeAgent) -> None:
    """Zero counts, zero ports and TCP (0) are not written: the common table shrinks accordingly."""
    agent = make_agent()
    lib = agent.lib
    sizes = []
    for args in [(0, 0, 0, 0, 0), (0, 0, 0, 0, 2), (1, 2, 3, 4, 1)]:
        assert lib.asc_ser_begin(MODULE_ID, VERSION_354) == 0
        assert lib.asc_ser_network_activity_begin(_uuid(1), T, 10) == 0
        assert lib.asc_ser_flow_v4(bytes(4), bytes(4), *args) == 0
        assert lib.asc_ser_network_activity_end() == 0
        assert lib.asc_ser_end() == 0
        data = agent.ser_buffer()
        assert data is not None
        sizes.append(len(data))
        flow = decode(data).events[0].payload.ipv4[0]  # type: ignore[union-attr]
        assert (flow.local_port, flow.remote_port, flow.bytes_in, flow.bytes_out, int(flow.protocol)) == args
    # no field: table 4 + vtable 4; protocol only: table 4+1+3 pad, vtable 14; all: table 4+13+3, vtable 14
    assert sizes[1] - sizes[0] == 14 and sizes[2] - sizes[1] == 12


def test_a_message_larger_than_the_page_is_refused(make_agent: MakeAgent) -> None:
    agent = make_agent(extra_cflags=("-DASC_PAGE_TABLES_BYTES=600",))
    lib = agent.lib
    assert lib.asc_ser_begin(MODULE_ID, VERSION_354) == 0
    assert lib.asc_ser_network_activity_begin(_uuid(1), T, 10) == 0
    results = [lib.asc_ser_flow_v4(bytes([10, 0, 0, i]), bytes(4), 1000 + i, 80, 1, 1, 0) for i in range(40)]
    assert results[0] == 0 and results[-1] == -1
    assert lib.asc_ser_network_activity_end() == -1
    assert lib.asc_ser_end() == -1
    assert agent.ser_buffer() is None
