"""Capture and aggregation of the host-built agent: what goes into NetworkActivity, and the cap."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

import pytest

from harness.telemetry.codec import decode
from harness.telemetry.model import Flow, NetworkActivity, Protocol

pytestmark = pytest.mark.needs("gcc", "make")

MakeAgent = Callable[..., Any]
Packet = Callable[..., bytes]
T0 = 1_700_000_000
BOARD, PEER = "192.168.1.10", "10.0.0.1"


def _started(make_agent: MakeAgent, knobs: dict[str, str] | None = None) -> Any:
    """An agent enabled at T0 with a connected hub; the first collection (fast preset) is at T0+1."""
    agent = make_agent(knobs)
    agent.set_connected(True)
    agent.init()
    agent.tick(T0)
    return agent


def _flows(agent: Any) -> list[list[Flow]]:
    """The NetworkActivity flows of every message published so far, message by message."""
    out = []
    for p in agent.publishes:
        out.append(
            [f for e in decode(p.payload).events if isinstance(e.payload, NetworkActivity) for f in e.payload.ipv4]
        )
    return out


def test_in_and_out_aggregate_into_one_record_per_five_tuple(make_agent: MakeAgent, packet: Packet) -> None:
    agent = _started(make_agent)
    agent.packet(True, packet(BOARD, PEER, "tcp", sport=49152, dport=8883, payload=100))  # 20+100
    agent.packet(False, packet(PEER, BOARD, "tcp", sport=8883, dport=49152, payload=10))  # 20+10
    agent.packet(False, packet(PEER, BOARD, "tcp", sport=8883, dport=49152))  # 20
    agent.packet(True, packet(BOARD, PEER, "icmp", payload=56))  # 8+56
    agent.packet(False, packet(PEER, BOARD, "icmp", payload=56))
    agent.packet(True, packet(BOARD, PEER, "udp", sport=5000, dport=7, payload=12))  # 8+12
    agent.tick(T0 + 1)
    (flows,) = _flows(agent)
    by_key = {(f.protocol, f.local_port, f.remote_port): f for f in flows}
    assert set(by_key) == {(Protocol.TCP, 49152, 8883), (Protocol.ICMP, 0, 0), (Protocol.UDP, 5000, 7)}
    tcp = by_key[(Protocol.TCP, 49152, 8883)]
    assert (tcp.local_address, tcp.remote_address) == (IPv4Address(BOARD), IPv4Address(PEER))
    assert (tcp.bytes_in, tcp.bytes_out) == (30 + 20, 120)
    icmp = by_key[(Protocol.ICMP, 0, 0)]
    assert (icmp.bytes_in, icmp.bytes_out) == (64, 64)
    udp = by_key[(Protocol.UDP, 5000, 7)]
    assert (udp.bytes_in, udp.bytes_out) == (0, 20)


def test_windows_do_not_mix(make_agent: MakeAgent, packet: Packet) -> None:
    agent = _started(make_agent)
    agent.packet(True, packet(BOARD, PEER, "udp", sport=1, dport=2, payload=2))
    agent.tick(T0 + 1)
    agent.packet(True, packet(BOARD, PEER, "udp", sport=1, dport=2, payload=4))
    agent.run_until(T0 + 3)
    assert [[f.bytes_out for f in flows] for flows in _flows(agent)] == [[10], [12]]


def test_outbound_broadcast_and_multicast_count_like_unicast(make_agent: MakeAgent, packet: Packet) -> None:
    """The module counts at NetX Duo's IP packet filter, which sees every outbound datagram: DHCP
    from 0.0.0.0:68 to the limited broadcast, subnet broadcasts and multicast are flows like any
    other (the agent once dropped them, as if the filter saw unicast only)."""
    agent = _started(make_agent)
    agent.packet(True, packet("0.0.0.0", "255.255.255.255", "udp", sport=68, dport=67, payload=300))
    agent.packet(True, packet("0.0.0.0", "255.255.255.255", "udp", sport=68, dport=67, payload=310))
    agent.packet(True, packet(BOARD, "192.168.1.255", "udp", sport=137, dport=137, payload=50))
    agent.packet(True, packet(BOARD, "224.0.0.251", "udp", sport=5353, dport=5353, payload=40))
    agent.packet(False, packet("192.168.1.1", "255.255.255.255", "udp", sport=67, dport=68, payload=300))
    agent.tick(T0 + 1)
    (flows,) = _flows(agent)
    records = sorted(
        (str(f.local_address), f.local_port, str(f.remote_address), f.bytes_in, f.bytes_out) for f in flows
    )
    assert records == [
        ("0.0.0.0", 68, "255.255.255.255", 0, 308 + 318),
        ("192.168.1.10", 137, "192.168.1.255", 0, 58),
        ("192.168.1.10", 5353, "224.0.0.251", 0, 48),
        ("255.255.255.255", 68, "192.168.1.1", 308, 0),
    ]


def test_inbound_ip_options_count_outbound_header_does_not(make_agent: MakeAgent, packet: Packet) -> None:
    """NetX Duo strips inbound IP options before the receive hooks and keeps the total length, so
    an inbound datagram counts total length - 20; outbound counts total length - IHL * 4."""
    agent = _started(make_agent)
    agent.packet(False, packet(PEER, BOARD, "udp", sport=7, dport=4000, payload=10, options=3))  # 12+8+10
    agent.packet(True, packet(BOARD, PEER, "udp", sport=4000, dport=7, payload=10, options=3))  # 8+10
    agent.packet(False, packet(PEER, BOARD, "icmp", payload=4, options=1))  # 4+8+4
    agent.tick(T0 + 1)
    (flows,) = _flows(agent)
    assert {(f.protocol, f.local_port): (f.bytes_in, f.bytes_out) for f in flows} == {
        (Protocol.UDP, 4000): (30, 18),
        (Protocol.ICMP, 0): (16, 0),
    }


def test_icmp_of_every_type_is_one_record_per_address_pair(make_agent: MakeAgent, packet: Packet) -> None:
    agent = _started(make_agent)
    for icmp_type in (8, 0, 3, 11, 5, 13, 14, 17):  # echo, reply, unreachable, time exceeded, ...
        agent.packet(True, packet(BOARD, PEER, "icmp", icmp_type=icmp_type, payload=icmp_type))
        agent.packet(False, packet(PEER, BOARD, "icmp", icmp_type=icmp_type, payload=1))
    agent.tick(T0 + 1)
    (flows,) = _flows(agent)
    assert [(f.protocol, f.local_port, f.remote_port, f.bytes_in, f.bytes_out) for f in flows] == [
        (Protocol.ICMP, 0, 0, 8 * 9, 8 * 8 + (8 + 0 + 3 + 11 + 5 + 13 + 14 + 17))
    ]


def test_loopback_counts_out_and_in(make_agent: MakeAgent, packet: Packet) -> None:
    agent = _started(make_agent)
    agent.packet(True, packet("127.0.0.1", "127.0.0.1", "udp", sport=5000, dport=7, payload=3))
    agent.packet(False, packet("127.0.0.1", "127.0.0.1", "udp", sport=5000, dport=7, payload=3))
    agent.packet(True, packet(BOARD, BOARD, "tcp", sport=6000, dport=7))
    agent.packet(False, packet(BOARD, BOARD, "tcp", sport=6000, dport=7))
    agent.tick(T0 + 1)
    (flows,) = _flows(agent)
    records = {(str(f.local_address), f.local_port, f.remote_port): (f.bytes_in, f.bytes_out) for f in flows}
    assert records == {
        ("127.0.0.1", 5000, 7): (0, 11),  # out: local = source
        ("127.0.0.1", 7, 5000): (11, 0),  # in: local = destination
        (BOARD, 6000, 7): (0, 20),
        (BOARD, 7, 6000): (20, 0),
    }


def test_a_reassembled_datagram_counts_its_first_fragments_length(make_agent: MakeAgent, packet: Packet) -> None:
    """Where the stack reassembles, NetX Duo hands the hooks the datagram with its first fragment's
    header: a 3,000-byte ping counts 1,480 in (and 3,008 out for the reply, sent whole)."""
    agent = _started(make_agent)
    agent.packet(False, packet(PEER, BOARD, "icmp", payload=3000, total=1500))
    agent.packet(True, packet(BOARD, PEER, "icmp", icmp_type=0, payload=3000))
    agent.tick(T0 + 1)
    (flows,) = _flows(agent)
    assert [(f.bytes_in, f.bytes_out) for f in flows] == [(1480, 3008)]


def test_other_protocols_and_malformed_packets_are_ignored(make_agent: MakeAgent, packet: Packet) -> None:
    agent = _started(make_agent)
    igmp = bytearray(packet(BOARD, PEER, "udp", sport=1, dport=2))
    igmp[9] = 2
    agent.packet(True, bytes(igmp))
    agent.packet(True, packet(BOARD, PEER, "tcp", sport=1, dport=2)[:19])  # shorter than a header
    ipv6 = bytearray(packet(BOARD, PEER, "tcp", sport=1, dport=2))
    ipv6[0] = 0x65
    agent.packet(False, bytes(ipv6))
    agent.tick(T0 + 1)
    # nothing captured: the first message carries only SystemInformation and Heartbeat
    assert _flows(agent) == [[]]
    assert agent.pool_free == 64


def test_flow_cap_first_64_recorded_then_nothing_counts(make_agent: MakeAgent, packet: Packet) -> None:
    agent = _started(make_agent)
    first = [packet(BOARD, PEER, "udp", sport=10000 + i, dport=53, payload=i) for i in range(70)]
    for p in first:
        agent.packet(True, p)
    assert agent.pool_free == 0
    for p in first[:5]:  # existing flows: not counted either once the pool is empty
        agent.packet(True, p)
    agent.packet(False, packet(PEER, BOARD, "udp", sport=53, dport=10000, payload=1))
    agent.tick(T0 + 1)
    (flows,) = _flows(agent)
    assert len(flows) == 64
    assert sorted(f.local_port for f in flows) == [10000 + i for i in range(64)]
    assert all(f.bytes_out == 8 + f.local_port - 10000 and f.bytes_in == 0 for f in flows)
    assert agent.pool_free == 64  # returned after serialization
    # the next window counts again
    agent.packet(True, first[69])
    agent.run_until(T0 + 3)
    assert [(f.local_port, f.bytes_out) for f in _flows(agent)[1]] == [(10069, 8 + 69)]


def test_existing_flows_still_count_while_one_object_is_free(make_agent: MakeAgent, packet: Packet) -> None:
    agent = _started(make_agent)
    for i in range(63):
        agent.packet(True, packet(BOARD, PEER, "udp", sport=20000 + i, dport=53))
    assert agent.pool_free == 1
    agent.packet(True, packet(BOARD, PEER, "udp", sport=20000, dport=53))  # takes and returns one
    assert agent.pool_free == 1
    agent.tick(T0 + 1)
    (flows,) = _flows(agent)
    assert {f.local_port: f.bytes_out for f in flows}[20000] == 16


def test_cap_knob(make_agent: MakeAgent, packet: Packet) -> None:
    agent = _started(make_agent, {"PRESET": "fast", "ASC_FLOW_CAP": "8"})
    for i in range(12):
        agent.packet(True, packet(BOARD, PEER, "tcp", sport=30000 + i, dport=80))
    agent.tick(T0 + 1)
    (flows,) = _flows(agent)
    assert sorted(f.local_port for f in flows) == [30000 + i for i in range(8)]


def _module_order(keys: list[tuple[bytes, bytes, int, int, int]], buckets: int) -> list[int]:
    """The record order of the module: buckets walked upward, each chain newest first, every
    element prepended to the list (so the list ends up reversed)."""
    chains: dict[int, list[int]] = {}
    for index, (la, ra, lp, rp, proto) in enumerate(keys):
        h = int.from_bytes(la, "little") ^ int.from_bytes(ra, "little") ^ ((lp << 16) | rp) ^ proto
        chains.setdefault(h % buckets, []).insert(0, index)
    walk = [i for b in sorted(chains) for i in chains[b]]
    return list(reversed(walk))


def test_records_come_in_the_modules_order(make_agent: MakeAgent, packet: Packet) -> None:
    agent = _started(make_agent)
    keys = []
    for i in range(40):
        remote = f"10.0.{i % 3}.{i}"
        agent.packet(True, packet(BOARD, remote, "tcp", sport=40000 + 7 * i, dport=443))
        keys.append((IPv4Address(BOARD).packed, IPv4Address(remote).packed, 40000 + 7 * i, 443, 0))
    agent.tick(T0 + 1)
    (flows,) = _flows(agent)
    expected = [40000 + 7 * i for i in _module_order(keys, 64 * 10 // 7)]
    assert [f.local_port for f in flows] == expected


def test_capture_starts_at_enable(make_agent: MakeAgent, packet: Packet) -> None:
    """Nothing is captured before agent_init(); from then on packets count, also before the
    first tick (which only sets the collection times)."""
    agent = make_agent()
    agent.set_connected(True)
    agent.packet(True, packet(BOARD, PEER, "udp", sport=1, dport=1))
    agent.tick(T0 - 1)  # ticks before enabling are ignored
    agent.init()
    agent.packet(True, packet(BOARD, PEER, "udp", sport=2, dport=2))
    agent.tick(T0)
    agent.packet(True, packet(BOARD, PEER, "udp", sport=3, dport=3))
    agent.tick(T0 + 1)
    (flows,) = _flows(agent)
    assert sorted(f.local_port for f in flows) == [2, 3]


def test_a_message_over_the_page_is_dropped_and_the_next_one_sent(make_agent: MakeAgent, packet: Packet) -> None:
    agent = make_agent({"PRESET": "fast", "ASC_FLOW_CAP": "100"}, ("-DASC_PAGE_TABLES_BYTES=2000",))
    agent.set_connected(True)
    agent.init()
    agent.tick(T0)
    for i in range(100):  # ~40 bytes a flow: too big for a 2000-byte page
        agent.packet(True, packet(BOARD, PEER, "udp", sport=1000 + i, dport=53))
    agent.tick(T0 + 1)
    assert agent.publishes == []
    assert agent.pool_free == 100  # the flows went back to the pool all the same
    agent.packet(True, packet(BOARD, PEER, "udp", sport=7, dport=53))
    agent.run_until(T0 + 3)
    # the failed collection stopped before SystemInformation and Heartbeat: still due, they are
    # collected at the next second; NetworkActivity (stamped when it failed) comes on its beat
    published = [
        (p.time, [f.local_port for f in flows]) for p, flows in zip(agent.publishes, _flows(agent), strict=True)
    ]
    assert published == [(T0 + 2, []), (T0 + 3, [7])]
