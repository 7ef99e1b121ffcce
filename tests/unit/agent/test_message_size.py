"""The message size limits of the host-built agent: the module's page (2,816 bytes for tables,
vectors and strings), what a message over it does (knob ASC_MESSAGE_OVERFLOW), and the vtables
every message within the flow cap needs."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from harness.telemetry.codec import decode
from harness.telemetry.model import NetworkActivity, Protocol

pytestmark = pytest.mark.needs("gcc", "make")

MakeAgent = Callable[..., Any]
Packet = Callable[..., bytes]
T0 = 1_700_000_000
BOARD = "192.168.1.10"
ACTIVE = 2


def _started(make_agent: MakeAgent, knobs: dict[str, str]) -> Any:
    agent = make_agent({"PRESET": "fast", **knobs})
    agent.set_connected(True)
    agent.init()
    agent.tick(T0)
    return agent


def _udp_flows_with_every_field(agent: Any, packet: Packet, count: int) -> None:
    """`count` UDP flows with both ports, bytes in and bytes out set; when `count` is the flow cap,
    the last one gets bytes out only (its inbound datagram finds the pool empty: not counted)."""
    for i in range(count):
        peer = f"10.0.{i // 200}.{i % 200 + 1}"
        agent.packet(True, packet(BOARD, peer, "udp", sport=40000 + i, dport=53, payload=20))
        agent.packet(False, packet(peer, BOARD, "udp", sport=53, dport=40000 + i, payload=60))


def _flows(payload: bytes) -> list[Any]:
    return [f for e in decode(payload).events if isinstance(e.payload, NetworkActivity) for f in e.payload.ipv4]


def test_the_fullest_window_of_a_stock_build_fits_the_page(make_agent: MakeAgent, packet: Packet) -> None:
    """64 flows (63 with every field, the 64th out only) + SystemInformation + Heartbeat: 2,776
    bytes of tables and strings on the page's 2,816, 2,848 bytes with the vtables."""
    agent = _started(make_agent, {})
    _udp_flows_with_every_field(agent, packet, 64)
    agent.tick(T0 + 1)
    (pub,) = agent.publishes
    assert len(pub.payload) == 2848
    assert len(decode(pub.payload).events) == 3 and len(_flows(pub.payload)) == 64


def test_64_flows_with_every_field_are_the_specs_worst_case(make_agent: MakeAgent, packet: Packet) -> None:
    """With room for more objects, 64 flows with every field + SystemInformation + Heartbeat: 2,838
    bytes (2,780 of tables and strings, a 36-byte margin)."""
    agent = _started(make_agent, {"ASC_FLOW_CAP": "66"})
    _udp_flows_with_every_field(agent, packet, 64)
    agent.tick(T0 + 1)
    (pub,) = agent.publishes
    assert len(pub.payload) == 2838


def test_a_window_over_the_page_is_dropped(make_agent: MakeAgent, packet: Packet) -> None:
    """With the cap raised (a stock build keeps 64), 65 flows with every field and one more do not
    fit the page: the collection is dropped (asserts disabled); the next one is sent."""
    agent = _started(make_agent, {"ASC_FLOW_CAP": "66"})
    _udp_flows_with_every_field(agent, packet, 66)
    agent.tick(T0 + 1)
    assert agent.publishes == []
    agent.packet(True, packet(BOARD, "10.9.9.9", "udp", sport=1, dport=2))
    agent.run_until(T0 + 3)
    # the Heartbeat, last into the message, did not fit: every collector was stamped, so the next
    # message is the next NetworkActivity window
    assert [(p.time, len(_flows(p.payload))) for p in agent.publishes] == [(T0 + 3, 1)]


def test_an_overflow_hangs_the_module_for_good_with_asserts_on(make_agent: MakeAgent, packet: Packet) -> None:
    """ASC_MESSAGE_OVERFLOW=hang: flatcc's assert lands in NX_ASSERT, whose loop stops the module's
    thread: nothing is collected, sent or changed any more."""
    agent = _started(make_agent, {"ASC_FLOW_CAP": "66", "ASC_MESSAGE_OVERFLOW": "hang"})
    _udp_flows_with_every_field(agent, packet, 66)

    def traffic(t: int) -> None:
        agent.packet(True, packet(BOARD, "10.9.9.9", "udp", sport=t % 1000 + 1, dport=2))

    agent.run_until(T0 + 30, each=traffic)
    agent.set_connected(False)
    agent.run_until(T0 + 60, each=traffic)
    assert agent.publishes == []
    assert agent.state == ACTIVE


def _zero_field_patterns() -> list[tuple[str, int, int, bool, bool]]:
    """Flows whose NetworkActivityCommon tables leave out different sets of zero fields: protocol
    TCP (0, left out) or UDP, local and remote port 0 or not, bytes in, out or both: 24 patterns,
    each needing its own vtable."""
    return [
        (proto, local, remote, inbound, outbound)
        for proto, local, remote, (inbound, outbound) in itertools.product(
            ("tcp", "udp"), (0, 1), (0, 1), ((True, False), (False, True), (True, True))
        )
    ]


@pytest.mark.parametrize("count", [12, 24])
def test_records_with_different_zero_fields_each_get_a_vtable(
    make_agent: MakeAgent, packet: Packet, count: int
) -> None:
    """The module sends such a message; the agent once dropped it for want of vtables (16)."""
    agent = _started(make_agent, {})
    expected = set()
    for i, (proto, local, remote, inbound, outbound) in enumerate(_zero_field_patterns()[:count]):
        peer = f"10.1.0.{i + 1}"
        lp, rp = (3000 + i) * local, (4000 + i) * remote
        if outbound:
            agent.packet(True, packet(BOARD, peer, proto, sport=lp, dport=rp, payload=i))
        if inbound:
            agent.packet(False, packet(peer, BOARD, proto, sport=rp, dport=lp, payload=2 * i))
        header = 20 if proto == "tcp" else 8
        expected.add((peer, lp, rp, (header + 2 * i) * inbound, (header + i) * outbound,
                      Protocol.TCP if proto == "tcp" else Protocol.UDP))
    agent.tick(T0 + 1)
    (pub,) = agent.publishes
    got = {(str(f.remote_address), f.local_port, f.remote_port, f.bytes_in, f.bytes_out, f.protocol)
           for f in _flows(pub.payload)}
    assert got == expected
