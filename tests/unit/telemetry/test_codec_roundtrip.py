"""encode -> decode gives back the same objects, for generated messages of every payload type."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.telemetry.codec import decode, encode
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
    Process,
    ProcessEventType,
    Protocol,
    SecurityMessage,
    SystemInformation,
)
from harness.telemetry.schema.accessors import decode_unchecked

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
text = st.text(max_size=40)
opt_text = st.none() | text
ipv4 = st.ip_addresses(v=4)
ipv6 = st.ip_addresses(v=6)
protocols = st.sampled_from(Protocol)


def flows(addresses: st.SearchStrategy[IPv4Address | IPv6Address]) -> st.SearchStrategy[Flow]:
    return st.builds(
        Flow,
        addresses,
        addresses,
        u16,
        u16,
        protocols,
        u32,
        u32,
        u16,
        u16,
        opt_text,
        opt_text,
    )


network = st.builds(
    NetworkActivity,
    st.lists(flows(ipv4), max_size=6).map(tuple),
    st.lists(flows(ipv6), max_size=6).map(tuple),
)
system_information = st.builds(SystemInformation, opt_text, opt_text, opt_text)
listening = st.builds(
    ListeningPorts,
    st.lists(st.builds(ListeningPort, ipv4, u16, protocols), max_size=5).map(tuple),
    st.lists(st.builds(ListeningPort, ipv6, u16, protocols), max_size=5).map(tuple),
)
baseline = st.builds(
    Baseline,
    st.lists(
        st.builds(
            BaselineCheck,
            text,
            st.sampled_from(BaselineCheckResult),
            opt_text,
            opt_text,
            st.sampled_from(BaselineCheckSeverity),
            opt_text,
        ),
        max_size=4,
    ).map(tuple),
)
process = st.builds(Process, opt_text, u32, u32, u32, opt_text, opt_text, st.sampled_from(ProcessEventType), u32)
log = st.builds(
    Log,
    st.lists(
        st.builds(LogRecord, text, text, st.sampled_from(LogLevel), st.integers(0, 2**64 - 1), u32),
        max_size=4,
    ).map(tuple),
)
payloads = st.one_of(network, system_information, listening, st.just(Heartbeat()), baseline, process, log)
events = st.builds(Event, st.binary(min_size=16, max_size=16), u32, u32, payloads)
messages = st.builds(
    SecurityMessage,
    text,
    st.builds(ModuleVersion, st.integers(0, 255), st.integers(0, 255), u16),
    st.lists(events, max_size=5).map(tuple),
    st.integers(-128, 127),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_round_trip(msg: SecurityMessage) -> None:
    data = encode(msg)
    assert decode(data) == msg
    assert decode_unchecked(data) == msg  # our reader and flatc's generated one agree


capped_network = st.builds(
    NetworkActivity,
    st.lists(flows(ipv4), min_size=64, max_size=64).map(tuple),
    st.lists(flows(ipv6), min_size=64, max_size=64).map(tuple),
)
schema_only = st.lists(st.one_of(listening, baseline, process, log), min_size=4, max_size=4)


@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@given(capped_network, schema_only, st.binary(min_size=16, max_size=16))
def test_round_trip_at_the_flow_cap_with_schema_only_payloads(
    network: NetworkActivity, others: list[ListeningPorts | Baseline | Process | Log], uid: bytes
) -> None:
    """64 IPv4 + 64 IPv6 flows (the module's cap) beside the payloads NetX never sends."""
    msg = SecurityMessage(
        "defender-iot-micro-agent",
        ModuleVersion(3, 5, 4),
        (Event(uid, 1, 10, network), *(Event(uid, 2, 60, p) for p in others)),
    )
    data = encode(msg)
    assert decode(data) == msg
    assert decode_unchecked(data) == msg


def test_full_message_round_trip(full_message: SecurityMessage) -> None:
    msg = full_message
    data = encode(msg)
    back = decode(data)
    assert back == msg
    assert decode_unchecked(data) == msg
    net = back.events[0].payload
    assert isinstance(net, NetworkActivity)
    assert (len(net.ipv4), len(net.ipv6), len(net.flows)) == (64, 64, 128)
    assert [e.kind.value for e in back.events] == [1, 2, 3, 4, 5, 6, 7]


def test_default_scalars_are_not_written() -> None:
    """As on the device: protocol TCP, zero byte counts and timezone 0 are absent from the buffer."""
    base = Flow(IPv4Address("1.2.3.4"), IPv4Address("5.6.7.8"), 1, 2, Protocol.TCP)
    sizes = {}
    for name, flow in (("defaults", base), ("udp", Flow(*base.key[:4], Protocol.UDP, 5, 6))):
        msg = SecurityMessage("m", ModuleVersion(3, 5, 4), (Event(bytes(16), 0, 0, NetworkActivity((flow,))),))
        sizes[name] = len(encode(msg))
        assert decode(encode(msg)) == msg
    assert sizes["udp"] > sizes["defaults"]
