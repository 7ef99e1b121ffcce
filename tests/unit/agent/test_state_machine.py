"""The host-built agent's state machine: PENDING, ACTIVE, SUSPENDED, retries and the upstream leak.

Knobs: first collection 1 s after enabling, NetworkActivity every 10 s, SystemInformation and
Heartbeat every 30 s, 20 s pending time; the state machine's checks and retries every 3 s. The
module's console lines are on (ASC_LOG_LEVEL=4, NX_AZURE_IOT_LOG_LEVEL=2) to see the states.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness.telemetry.codec import decode
from harness.telemetry.model import Heartbeat, NetworkActivity, SystemInformation

pytestmark = pytest.mark.needs("gcc", "make")

MakeAgent = Callable[..., Any]
Packet = Callable[..., bytes]
T0 = 1_700_000_000
BOARD, PEER = "192.168.1.10", "10.0.0.1"
KNOBS = {
    "ASC_FIRST_COLLECTION_S": "1",
    "ASC_HIGH_INTERVAL_S": "10",
    "ASC_LOW_INTERVAL_S": "30",
    "ASC_PENDING_TIME_S": "20",
    "ASC_LOG_LEVEL": "4",
    "NX_AZURE_IOT_LOG_LEVEL": "2",
}
LEAKY = {**KNOBS, "UPSTREAM_SUSPEND_LEAK": "1"}
PENDING, ACTIVE, SUSPENDED = 1, 2, 3
STATE_LINE = "INFO [core.c/_security_module_state_cb:{}] Security Module inserted to '{}' state"
PENDING_LINE = STATE_LINE.format(286, "Pending")
CONNECTED_LINE = STATE_LINE.format(276, "Connected")
SUSPENDED_LINE = STATE_LINE.format(290, "Suspended")
KIND = {NetworkActivity: "NA", SystemInformation: "SI", Heartbeat: "HB"}


def _enable(make_agent: MakeAgent, knobs: dict[str, str], connected: bool) -> Any:
    agent = make_agent(knobs)
    agent.set_connected(connected)
    agent.init()
    agent.tick(T0)
    return agent


def _traffic(agent: Any, packet: Packet) -> Callable[[int], None]:
    def each(t: int) -> None:
        agent.packet(True, packet(BOARD, PEER, "udp", sport=40000, dport=7, payload=4))
        agent.packet(False, packet(PEER, BOARD, "udp", sport=7, dport=40000, payload=4))

    return each


def _state_lines(agent: Any) -> list[str]:
    return [line for line in agent.logs if "inserted to" in line]


def _kinds(payload: bytes) -> list[str]:
    return [KIND[type(e.payload)] for e in decode(payload).events]


def test_enable_starts_pending_and_a_connected_hub_makes_it_active(make_agent: MakeAgent) -> None:
    agent = _enable(make_agent, KNOBS, connected=True)
    assert agent.logs[:3] == [
        "[INFO] Azure IoT Security Module has been enabled, status=0",
        PENDING_LINE,
        CONNECTED_LINE,
    ]
    assert agent.state == ACTIVE
    assert agent.logs[3] == "[INFO] Azure IoT Security Module message is empty"  # nothing collected yet


def test_pending_to_active_sends_the_message_collected_while_pending(make_agent: MakeAgent, packet: Packet) -> None:
    agent = _enable(make_agent, KNOBS, connected=False)
    agent.run_until(T0 + 1, each=_traffic(agent, packet))  # collected at T0+1, not sent
    assert agent.state == PENDING and agent.publishes == []
    agent.set_connected(True)
    # the collection at T0+1 re-armed the 3 s check: T0+4 finds the hub, T0+5 sends
    agent.run_until(T0 + 3)
    assert agent.state == PENDING
    agent.tick(T0 + 4)
    assert agent.state == ACTIVE
    assert agent.publishes == []
    agent.tick(T0 + 5)
    (pub,) = agent.publishes
    assert pub.time == T0 + 5
    msg = decode(pub.payload)
    assert _kinds(pub.payload) == ["NA", "SI", "HB"]
    assert {e.time for e in msg.events} == {T0 + 1}  # stale: collected while pending


def test_a_failed_send_is_retried_every_3_s_with_the_same_message(make_agent: MakeAgent, packet: Packet) -> None:
    agent = _enable(make_agent, KNOBS, connected=True)
    agent.set_publish_rc(7)
    agent.run_until(T0 + 9, each=_traffic(agent, packet))
    agent.set_publish_rc(0)
    agent.run_until(T0 + 10)
    attempts = agent.publishes
    assert [(p.time, p.rc) for p in attempts] == [(T0 + 1, 7), (T0 + 4, 7), (T0 + 7, 7), (T0 + 10, 0)]
    assert len({p.payload for p in attempts}) == 1
    assert agent.logs.count("[ERROR] Failed to send Security Message, error=7") == 3
    assert agent.logs.count("[ERROR] Failed to send security message, error=7") == 3
    assert agent.state == ACTIVE
    agent.run_until(T0 + 14)
    # no more retries; T0+11 is the next window's own message (traffic until T0+9)
    assert [p.time for p in agent.publishes] == [T0 + 1, T0 + 4, T0 + 7, T0 + 10, T0 + 11]
    assert _kinds(agent.publishes[-1].payload) == ["NA"]


def test_active_to_pending_when_no_hub_at_a_send(make_agent: MakeAgent, packet: Packet) -> None:
    agent = _enable(make_agent, KNOBS, connected=True)
    traffic = _traffic(agent, packet)
    agent.run_until(T0 + 5, each=traffic)
    assert [p.time for p in agent.publishes] == [T0 + 1]
    agent.set_connected(False)  # the broker closed the connection
    agent.run_until(T0 + 10, each=traffic)
    assert agent.state == ACTIVE  # nothing noticed until the next send
    agent.run_until(T0 + 11, each=traffic)
    assert agent.state == PENDING
    assert _state_lines(agent)[-1] == PENDING_LINE
    assert [p.time for p in agent.publishes] == [T0 + 1]
    agent.set_connected(True)
    agent.run_until(T0 + 15)
    # checked at T0+14, ACTIVE, the kept message (collected at T0+11) sent at T0+15
    assert [p.time for p in agent.publishes] == [T0 + 1, T0 + 15]
    assert {e.time for e in decode(agent.publishes[-1].payload).events} == {T0 + 11}


def _suspend(agent: Any, packet: Packet) -> int:
    """Run disconnected until SUSPENDED; returns the second it happened."""
    for t in range(agent.now + 1, agent.now + 40):
        _traffic(agent, packet)(t)
        agent.tick(t)
        if agent.state == SUSPENDED:
            return t
    raise AssertionError(f"not SUSPENDED 40 s after T0; state lines: {_state_lines(agent)}")


def test_pending_becomes_suspended_after_the_pending_time(make_agent: MakeAgent, packet: Packet) -> None:
    agent = _enable(make_agent, KNOBS, connected=False)
    suspended_at = _suspend(agent, packet)
    assert T0 + 20 < suspended_at <= T0 + 20 + 3  # more than 20 s in PENDING, seen by a 3 s check
    assert _state_lines(agent)[-1] == SUSPENDED_LINE
    # collectors stopped: nothing is captured, no collection runs, the pool stays full
    logs_before = len(agent.logs)
    agent.run_until(suspended_at + 60, each=_traffic(agent, packet))
    assert agent.pool_free == 64
    assert agent.logs[logs_before:] == []
    assert agent.publishes == []


def test_suspended_to_active_restarts_the_collectors(make_agent: MakeAgent, packet: Packet) -> None:
    agent = _enable(make_agent, KNOBS, connected=False)
    suspended_at = _suspend(agent, packet)
    agent.run_until(suspended_at + 30)
    agent.set_connected(True)
    connected_at = agent.now
    traffic = _traffic(agent, packet)
    for t in range(connected_at + 1, connected_at + 4):
        traffic(t)
        agent.tick(t)
        if agent.state == ACTIVE:
            break
    assert agent.state == ACTIVE
    active_at = agent.now
    assert _state_lines(agent)[-1] == CONNECTED_LINE
    agent.run_until(active_at + 21, each=traffic)
    pubs = [(p.time, _kinds(p.payload)) for p in agent.publishes]
    # all collectors were overdue: collected at the next second; then every 10 s again
    assert pubs == [
        (active_at + 1, ["NA", "SI", "HB"]),
        (active_at + 11, ["NA"]),
        (active_at + 21, ["NA"]),
    ]
    first = decode(agent.publishes[0].payload)
    assert {e.time for e in first.events} == {active_at + 1}


@pytest.mark.parametrize("knobs", [KNOBS, LEAKY], ids=["fixed", "upstream-leak"])
def test_outbound_packets_while_suspended(make_agent: MakeAgent, packet: Packet, knobs: dict[str, str]) -> None:
    leaky = knobs is LEAKY
    agent = _enable(make_agent, knobs, connected=False)
    _suspend(agent, packet)
    for i in range(30):  # inbound packets never leak: the receive hooks are restored
        agent.packet(False, packet(PEER, BOARD, "tcp", sport=8883, dport=50000 + i))
    assert agent.pool_free == 64
    for i in range(40):
        agent.packet(True, packet(BOARD, PEER, "tcp", sport=50000 + i, dport=8883))
    agent.packet(True, packet(BOARD, "255.255.255.255", "udp", sport=68, dport=67))  # broadcasts too
    assert agent.pool_free == (23 if leaky else 64)
    for i in range(40):
        agent.packet(True, packet(BOARD, PEER, "tcp", sport=51000 + i, dport=8883))
    assert agent.pool_free == (0 if leaky else 64)
    agent.set_connected(True)
    reconnected = agent.now
    agent.run_until(reconnected + 40, each=_traffic(agent, packet))
    # a message collected before the suspension may be sent first (it is kept while suspended and,
    # when no collector is overdue yet at the restart, sent before the next collection drops it)
    fresh = [p for p in agent.publishes if all(e.time > reconnected for e in decode(p.payload).events)]
    kinds = [_kinds(p.payload) for p in fresh]
    assert kinds, "nothing collected after reconnecting"
    assert sum(k.count("SI") for k in kinds) == 2  # the low-priority collectors run either way
    if leaky:
        assert all("NA" not in k for k in kinds)  # NetworkActivity never comes back
    else:
        assert len(kinds) == 4 and all(k[0] == "NA" for k in kinds)


def test_a_short_suspension_sends_the_kept_message(make_agent: MakeAgent, packet: Packet) -> None:
    """Suspended by the check that follows a collection, reconnected before any collector is due
    again: the message collected then is sent at once, then collection resumes on its old beat."""
    agent = _enable(make_agent, KNOBS, connected=False)
    suspended_at = _suspend(agent, packet)
    assert suspended_at == T0 + 21  # the check after the T0+21 collection
    agent.set_connected(True)
    agent.run_until(T0 + 31, each=_traffic(agent, packet))
    assert [(p.time, {e.time for e in decode(p.payload).events}) for p in agent.publishes] == [
        (T0 + 25, {T0 + 21}),  # ACTIVE at the T0+24 check, the kept message at T0+25
        (T0 + 31, {T0 + 31}),
    ]


def _flows_after_reconnecting(agent: Any, packet: Packet) -> int:
    """Reconnect, send 60 flows' worth of datagrams in one window: how many the window records."""
    agent.set_connected(True)
    agent.run_until(agent.now + 5)
    for i in range(60):
        agent.packet(True, packet(BOARD, PEER, "udp", sport=3000 + i, dport=2))
    agent.run_until(agent.now + 10)
    na = [e.payload for p in agent.publishes for e in decode(p.payload).events
          if isinstance(e.payload, NetworkActivity)]
    assert na, "no NetworkActivity after reconnecting"
    return len(na[-1].ipv4)


def test_the_leak_counts_packets_not_time(make_agent: MakeAgent, packet: Packet) -> None:
    agent = _enable(make_agent, LEAKY, connected=False)
    _suspend(agent, packet)
    agent.run_until(agent.now + 300)  # a long but quiet suspension leaks nothing
    for _ in range(10):
        agent.packet(True, packet(BOARD, PEER, "udp", sport=1, dport=2))  # same flow: 10 objects
    assert agent.pool_free == 54
    assert _flows_after_reconnecting(agent, packet) == 54  # the pool is 10 objects short for good


def test_leaks_add_up_over_suspensions(make_agent: MakeAgent, packet: Packet) -> None:
    """Partial leaks lower the cap for good, and a second suspension leaks on top of the first."""
    agent = _enable(make_agent, LEAKY, connected=False)
    _suspend(agent, packet)
    for i in range(10):
        agent.packet(True, packet(BOARD, f"10.2.0.{i + 1}", "icmp", icmp_type=0))
    agent.set_connected(True)
    agent.run_until(agent.now + 12)
    assert agent.state == ACTIVE and agent.pool_free == 54
    agent.set_connected(False)
    _suspend(agent, packet)
    for _ in range(15):
        agent.packet(True, packet("0.0.0.0", "255.255.255.255", "udp", sport=68, dport=67))
    assert agent.pool_free == 39
    assert _flows_after_reconnecting(agent, packet) == 39


def test_the_leak_after_boot_when_the_hub_never_connects(make_agent: MakeAgent, packet: Packet) -> None:
    """Module defaults (pending time 300 s): never connected, SUSPENDED 301-303 s after enabling;
    from then on outbound datagrams leak."""
    agent = make_agent({"ASC_FIRST_COLLECTION_S": "1", "UPSTREAM_SUSPEND_LEAK": "1"})
    agent.init()
    agent.tick(T0)
    agent.run_until(T0 + 300)
    assert agent.state == PENDING
    agent.packet(True, packet(BOARD, PEER, "udp", sport=1, dport=2))
    agent.run_until(T0 + 303)
    assert agent.state == SUSPENDED
    assert agent.pool_free == 64
    for _ in range(5):
        agent.packet(True, packet(BOARD, PEER, "udp", sport=1, dport=2))
        agent.packet(False, packet(PEER, BOARD, "udp", sport=2, dport=1))
    assert agent.pool_free == 59


def test_a_stock_build_prints_nothing(make_agent: MakeAgent, packet: Packet) -> None:
    """Without the log knobs: no line through enable, PENDING, ACTIVE, failed sends, an empty
    window and SUSPENDED (the module's lines are compiled out of stock images)."""
    agent = make_agent({k: v for k, v in KNOBS.items() if "LOG" not in k})
    agent.init()
    agent.tick(T0)
    agent.run_until(T0 + 5, each=_traffic(agent, packet))
    agent.set_connected(True)
    agent.set_publish_rc(3)
    agent.run_until(T0 + 15, each=_traffic(agent, packet))
    agent.set_publish_rc(0)
    agent.run_until(T0 + 25)
    agent.set_connected(False)
    _suspend(agent, packet)
    assert [p.rc for p in agent.publishes][:2] == [3, 3]
    assert agent.logs == []
