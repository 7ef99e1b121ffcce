"""Collection timing, message content and the topic of the host-built agent (hub connected)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness.telemetry.codec import decode
from harness.telemetry.model import Heartbeat, NetworkActivity, SystemInformation
from harness.telemetry.topic import parse_topic

pytestmark = pytest.mark.needs("gcc", "make")

MakeAgent = Callable[..., Any]
Packet = Callable[..., bytes]
T0 = 1_700_000_000
BOARD, PEER = "192.168.1.10", "10.0.0.1"
KIND = {NetworkActivity: "NA", SystemInformation: "SI", Heartbeat: "HB"}
SECURITY_TOPIC = "devices/{}/messages/events/mti={}&%24.ifid=urn%3Aazureiot%3ASecurity%3ASecurityAgent%3A1"


def _enable(make_agent: MakeAgent, knobs: dict[str, str] | None = None, *randoms: int) -> Any:
    agent = make_agent(knobs)
    agent.push_random(*randoms)
    agent.set_connected(True)
    agent.init()
    agent.tick(T0)
    return agent


def _traffic(agent: Any, packet: Packet) -> Callable[[int], None]:
    def each(t: int) -> None:
        agent.packet(True, packet(BOARD, PEER, "tcp", sport=50000, dport=8883, payload=t % 7))

    return each


def _summary(agent: Any) -> list[tuple[int, list[str], set[int]]]:
    """(publish time, event kinds, distinct event times) per published message."""
    out = []
    for p in agent.publishes:
        msg = decode(p.payload)
        out.append((p.time, [KIND[type(e.payload)] for e in msg.events], {e.time for e in msg.events}))
    return out


def test_fast_preset_intervals_and_event_order(make_agent: MakeAgent, packet: Packet) -> None:
    agent = _enable(make_agent)
    agent.run_until(T0 + 13, each=_traffic(agent, packet))
    assert _summary(agent) == [
        (T0 + 1, ["NA", "SI", "HB"], {T0 + 1}),
        (T0 + 3, ["NA"], {T0 + 3}),
        (T0 + 5, ["NA"], {T0 + 5}),
        (T0 + 7, ["NA", "SI", "HB"], {T0 + 7}),
        (T0 + 9, ["NA"], {T0 + 9}),
        (T0 + 11, ["NA"], {T0 + 11}),
        (T0 + 13, ["NA", "SI", "HB"], {T0 + 13}),
    ]
    intervals = {
        KIND[type(e.payload)]: e.collection_interval for p in agent.publishes for e in decode(p.payload).events
    }
    assert intervals == {"NA": 2, "SI": 6, "HB": 6}


def test_a_window_without_flows_sends_nothing(make_agent: MakeAgent, packet: Packet) -> None:
    agent = _enable(make_agent, {"PRESET": "fast", "NX_AZURE_IOT_LOG_LEVEL": "1"})
    agent.run_until(T0 + 8)
    assert [(t, kinds) for t, kinds, _ in _summary(agent)] == [(T0 + 1, ["SI", "HB"]), (T0 + 7, ["SI", "HB"])]
    # the module's serializer reports an empty NetworkActivity as a success; the message it then
    # cannot build is dropped with this line (windows at T0+3 and T0+5)
    assert agent.logs.count("[ERROR] Fail to get security message result=1") == 2


def test_event_ids_are_seeded_at_the_first_event_from_four_nx_rand_calls(make_agent: MakeAgent, packet: Packet) -> None:
    """uuid_generate(): at the first event, _uuid[0] = r1 << 32 | r2 and _uuid[1] = r3 << 32 | r4
    (NX_RAND() is rand(): 31 bits); both are incremented before every event."""
    agent = make_agent()
    agent.push_random(0x81234567, 0x0BCDEF01, 0xFFFFFFFF, 0x7FFFFFFE)  # rand() keeps 31 bits
    agent.set_connected(True)
    agent.init()
    agent.tick(T0)
    assert agent.random_calls == 0  # not at enable (the first collection is forced here)
    agent.run_until(T0 + 7, each=_traffic(agent, packet))
    assert agent.random_calls == 4
    seed0, seed1 = 0x01234567_0BCDEF01, 0x7FFFFFFF_7FFFFFFE
    ids = [e.id for p in agent.publishes for e in decode(p.payload).events]
    assert len(ids) == 3 + 1 + 1 + 3
    for n, event_id in enumerate(ids, start=1):
        assert int.from_bytes(event_id[:8], "little") == seed0 + n
        assert int.from_bytes(event_id[8:], "little") == seed1 + n


def test_event_ids_from_a_16_bit_nx_rand(make_agent: MakeAgent, packet: Packet) -> None:
    """ASC_NX_RAND_BITS=16 (nx_rand16, as AZ3166): seed bytes 2-3 and 6-7 of each half are zero."""
    agent = make_agent({"PRESET": "fast", "ASC_NX_RAND_BITS": "16"})
    agent.push_random(0xAAAA1111, 0xBBBB2222, 0xCCCC3333, 0xDDDD0044)
    agent.set_connected(True)
    agent.init()
    agent.tick(T0)
    agent.run_until(T0 + 1, each=_traffic(agent, packet))
    first = decode(agent.publishes[0].payload).events[0].id
    assert first == bytes.fromhex("23220000" "11110000" "45000000" "33330000")


def test_ids_count_events_of_discarded_messages(make_agent: MakeAgent, packet: Packet) -> None:
    """Collected while PENDING and discarded by the next collection: the ids still moved on."""
    agent = make_agent()
    agent.push_random(0, 100, 0, 200)
    agent.init()
    agent.tick(T0)
    agent.run_until(T0 + 3, each=_traffic(agent, packet))  # PENDING: T0+1 and T0+3 collected
    agent.set_connected(True)
    agent.run_until(T0 + 9, each=_traffic(agent, packet))
    ids = [int.from_bytes(e.id[:8], "little") for p in agent.publishes for e in decode(p.payload).events]
    assert ids and ids[0] > 100 + 4  # 3 events at T0+1, 1 at T0+3: discarded, counted
    assert ids == list(range(ids[0], ids[0] + len(ids)))


def test_random_first_collection_like_the_module(make_agent: MakeAgent, packet: Packet) -> None:
    """Without ASC_FIRST_COLLECTION_S the first collection is rand % 60 + 30 s after enabling, from
    the first NX_RAND() call (the id seeds come later, at the first event)."""
    agent = _enable(make_agent, {}, 1_234_567, 11, 22, 33, 44)  # 1234567 % 60 + 30 = 37
    assert agent.random_calls == 1
    agent.run_until(T0 + 37 + 60, each=_traffic(agent, packet))
    times = [t for t, _, _ in _summary(agent)]
    assert times == [T0 + 37 + 10 * k for k in range(7)]
    assert [kinds for _, kinds, _ in _summary(agent)][::6] == [["NA", "SI", "HB"], ["NA", "SI", "HB"]]
    assert int.from_bytes(decode(agent.publishes[0].payload).events[0].id[:8], "little") == (11 << 32 | 22) + 1


def test_a_late_tick_runs_every_due_timer_once_with_its_time(make_agent: MakeAgent, packet: Packet) -> None:
    """The module's loop runs once a second with the current time: after a stall (or a forward
    step of the clock) every due timer fires once, stamped with the late time, and the
    NetworkActivity beat shifts to it; no burst of past windows."""
    agent = _enable(make_agent)
    agent.run_until(T0 + 3, each=_traffic(agent, packet))
    agent.packet(True, packet(BOARD, PEER, "tcp", sport=50000, dport=8883, payload=1))
    agent.tick(T0 + 40)  # 37 s late
    agent.run_until(T0 + 44, each=_traffic(agent, packet))
    assert _summary(agent) == [
        (T0 + 1, ["NA", "SI", "HB"], {T0 + 1}),
        (T0 + 3, ["NA"], {T0 + 3}),
        (T0 + 40, ["NA", "SI", "HB"], {T0 + 40}),
        (T0 + 42, ["NA"], {T0 + 42}),
        (T0 + 44, ["NA"], {T0 + 44}),
    ]


def _first_publish(make_agent: MakeAgent, knobs: dict[str, str] | None = None) -> Any:
    """The one message an agent with a hub sends at its first collection (no traffic)."""
    agent = make_agent(knobs)
    agent.set_connected(True)
    agent.init()
    agent.tick(T0)
    agent.tick(T0 + 1)
    (pub,) = agent.publishes
    return pub


def test_system_information_names_the_threadx_version_knob(make_agent: MakeAgent) -> None:
    msg = decode(_first_publish(make_agent, {"PRESET": "fast", "THREADX_VERSION": "6.1"}).payload)
    assert msg.events_of(SystemInformation.KIND)[0].payload.os_info == "Azure RTOS 6.1"  # type: ignore[union-attr]


def test_topic_and_header(make_agent: MakeAgent, packet: Packet) -> None:
    agent = make_agent()
    agent.set_device_id("board-7")
    agent.set_connected(True)
    agent.init()
    agent.tick(T0)
    agent.tick(T0 + 1)
    (pub,) = agent.publishes
    assert pub.topic == SECURITY_TOPIC.format("board-7", "2.3-1-0-0")
    parsed = parse_topic(pub.topic)
    assert parsed.is_security
    msg = decode(pub.payload)
    assert (msg.security_module_id, str(msg.security_module_version)) == ("defender-iot-micro-agent", "3.5.4")
    assert msg.events_of(SystemInformation.KIND)[0].payload.os_info == "Azure RTOS 6.3"  # type: ignore[union-attr]


def test_version_and_id_knobs(make_agent: MakeAgent) -> None:
    pub = _first_publish(make_agent, {"PRESET": "fast", "ASC_MODULE_VERSION": "3.2.1",
                                      "ASC_MODULE_ID": "iot_security_module"})
    msg = decode(pub.payload)
    assert (msg.security_module_id, str(msg.security_module_version)) == ("iot_security_module", "3.2.1")
    assert pub.topic.endswith("/messages/events/mti=2.0-1-0-0&%24.ifid=urn%3Aazureiot%3ASecurity%3ASecurityAgent%3A1")


@pytest.mark.parametrize(
    ("knobs", "complaint"),
    [
        ({"PRESET": "slow"}, "PRESET=slow is not a preset"),
        ({"ASC_MODULE_VERSION": "3.5"}, "must be major.minor.patch"),
        ({"THREADX_VERSION": "6"}, "THREADX_VERSION=6 must be major.minor"),
        ({"THREADX_VERSION": "6.3.1"}, "THREADX_VERSION=6.3.1 must be major.minor"),
        ({"ASC_NX_RAND_BITS": "32"}, "ASC_NX_RAND_BITS=32 must be 31"),
        ({"ASC_MESSAGE_OVERFLOW": "crash"}, "ASC_MESSAGE_OVERFLOW=crash must be drop or hang"),
        ({"ASC_LOG_LEVEL": "info"}, "ASC_LOG_LEVEL=info must be 0"),
        ({"NX_AZURE_IOT_LOG_LEVEL": "9"}, "NX_AZURE_IOT_LOG_LEVEL=9 must be 0"),
        ({"ASC_FLOW_CAP": "0"}, "ASC_FLOW_CAP=0 must be a whole number above 0"),
        ({"ASC_HIGH_INTERVAL_S": "2.5"}, "ASC_HIGH_INTERVAL_S=2.5 must be a whole number"),
        ({"UPSTREAM_SUSPEND_LEAK": "yes"}, "UPSTREAM_SUSPEND_LEAK=yes must be 0 or 1"),
    ],
)
def test_bad_knobs_are_refused_by_make(agent_mk: Callable[..., Any], knobs: dict[str, str], complaint: str) -> None:
    with pytest.raises(RuntimeError, match=complaint):
        agent_mk(knobs)


def test_fast_preset_knob_values(agent_mk: Callable[..., Any]) -> None:
    _, cflags = agent_mk({"PRESET": "fast"})
    for flag in [
        "-DASC_FIRST_COLLECTION_S=1",
        "-DASC_HIGH_INTERVAL_S=2",
        "-DASC_LOW_INTERVAL_S=6",
        "-DASC_PENDING_TIME_S=20",
        "-DASC_FLOW_CAP=64",
        "-DUPSTREAM_SUSPEND_LEAK=0",
        "-DTHREADX_MAJOR_VERSION=6",
        "-DTHREADX_MINOR_VERSION=3",
        "-DASC_NX_RAND_BITS=31",
        "-DASC_MESSAGE_OVERFLOW_HANG=0",
        "-DASC_LOG_LEVEL=0",
        "-DNX_AZURE_IOT_LOG_LEVEL=0",
    ]:
        assert flag in cflags
    _, cflags = agent_mk({"PRESET": "fast", "ASC_HIGH_INTERVAL_S": "5"})
    assert "-DASC_HIGH_INTERVAL_S=5" in cflags  # an explicit knob beats the preset
    _, cflags = agent_mk({})
    assert not any(f.startswith("-DASC_FIRST_COLLECTION_S") for f in cflags)
