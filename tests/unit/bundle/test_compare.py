"""The window-by-window comparison on made-up telemetry: same traffic in other windows is a match,
other bytes are a difference named where it is, gaps are PENDING or SUSPENDED."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path

import pytest

from harness.bundle.compare import Side, compare
from harness.bundle.plan import plan_replay
from harness.bundle.telemetry import Message
from harness.errors import ConfigError
from harness.telemetry.model import Protocol, SecurityMessage
from harness.traffic.capture import read_pcap, write_pcap
from tests.unit.bundle.fake import DEVICE, PEER, SERVICES, T0, flow, frames, udp, windows

IP = ipaddress.IPv4Address
KEYS = frozenset({("UDP", 7), ("ICMP", 0), ("TCP", 7)})
FIELD = Side("bundle", IP(DEVICE), frozenset({IP(PEER)}), KEYS, boot=1)
BENCH = Side("bench", IP(DEVICE), frozenset({IP(PEER)}), KEYS, boot=1)
UDP7 = flow(PEER, 7, 50000, Protocol.UDP, 832, 832)
PING = flow(PEER, 0, 0, Protocol.ICMP, 192, 192)
ECHO = flow(PEER, 7, 51000, Protocol.TCP, 340, 364)


def arrivals(messages: Sequence[SecurityMessage], start: float = T0, skip_after: float | None = None,
             pause: float = 0.0) -> list[Message]:
    out, t = [], start
    for n, m in enumerate(messages):
        out.append(Message(t, m, f"record {n}"))
        t += 2.0 + (pause if skip_after is not None and n == skip_after else 0.0)
    return out


def test_the_same_traffic_is_reproduced() -> None:
    field = arrivals(windows({2: [UDP7, PING, ECHO]}))
    bench = arrivals(windows({2: [UDP7, PING, ECHO]}), start=T0 + 1000)
    result = compare(field, bench, FIELD, BENCH, pending_time_s=20)
    assert result.reproduced, result.differences
    assert [g.how for g in result.groups] == ["same position"]


def test_traffic_falling_across_another_boundary_is_still_a_match() -> None:
    """The bench's replay started a little later: the ping fell in the next window, and the UDP
    echo was split between two windows."""
    field = arrivals(windows({2: [UDP7, PING, ECHO]}))
    first = flow(PEER, 7, 50001, Protocol.UDP, 208, 208)
    rest = flow(PEER, 7, 50001, Protocol.UDP, 624, 624)
    bench = arrivals(windows({3: [first, ECHO], 4: [rest, PING]}), start=T0 + 55)
    result = compare(field, bench, FIELD, BENCH, pending_time_s=20)
    assert result.reproduced, result.differences
    (group,) = result.groups
    assert [w.index for w in group.bundle] == [2] and [w.index for w in group.bench] == [3, 4]
    assert "fell across window boundaries" in group.how


def test_bytes_counted_with_the_ip_header_differ_in_exactly_those_windows() -> None:
    field = arrivals(windows({2: [UDP7, PING], 5: [ECHO]}))
    plus = [flow(PEER, 7, 50000, Protocol.UDP, 832 + 4 * 20, 832 + 4 * 20), PING]  # the ping: 3 each way
    plus[1] = flow(PEER, 0, 0, Protocol.ICMP, 192 + 60, 192 + 60)
    bench = arrivals(windows({2: plus, 5: [ECHO]}))
    result = compare(field, bench, FIELD, BENCH, pending_time_s=20)
    assert not result.reproduced
    verdicts = [(tuple(w.index for w in g.bundle), g.same) for g in result.groups]
    assert verdicts == [((2,), False), ((5,), True)]
    (difference,) = result.differences
    assert "bundle window(s) 2 / bench window(s) 2" in difference
    assert "UDP device:7 peer:*: bundle in 832 out 832, bench in 912 out 912" in difference
    assert "ICMP: bundle in 192 out 192, bench in 252 out 252" in difference


def test_a_flow_the_bench_never_reported_is_a_difference() -> None:
    field = arrivals(windows({2: [UDP7, PING]}))
    bench = arrivals(windows({2: [PING]}))
    result = compare(field, bench, FIELD, BENCH, pending_time_s=20)
    assert len(result.differences) == 1 and "UDP device:7 peer:*: bundle in 832 out 832, bench absent" in \
        result.differences[0]


def test_background_and_boot_windows_are_listed_not_judged() -> None:
    """The MQTT connection's bytes and a bring-up ping before the replay differ between runs."""
    field = arrivals(windows({0: [PING], 2: [UDP7]}))
    bench = arrivals([*windows({0: [flow(PEER, 0, 0, Protocol.ICMP, 128, 128)], 2: [UDP7]})])
    result = compare(field, bench, FIELD, BENCH, pending_time_s=20)
    assert result.reproduced, result.differences
    assert {b["flow"] for b in result.background} >= {"ICMP", "TCP device:* peer:*"}


def test_event_types_intervals_and_cadence_are_compared() -> None:
    field = arrivals(windows({}))
    bench = arrivals([m for n, m in enumerate(windows({})) if n % 3])  # no Heartbeat at all
    result = compare(field, bench, FIELD, BENCH, pending_time_s=20)
    assert any("event types and intervals differ" in d and "HEARTBEAT" in d for d in result.differences)


def test_gaps_are_pending_or_suspended_and_must_match() -> None:
    field = arrivals(windows({}, count=10), skip_after=4, pause=12)  # 14 s without a message
    assert [g["state"] for g in compare(field, field, FIELD, BENCH, pending_time_s=20).gaps["bundle"]] == ["PENDING"]
    long = arrivals(windows({}, count=10), skip_after=4, pause=40)
    result = compare(long, arrivals(windows({}, count=10)), FIELD, BENCH, pending_time_s=20)
    assert result.gaps["bundle"][0]["state"] == "SUSPENDED" and result.gaps["bench"] == []
    assert any("gaps in the telemetry differ" in d for d in result.differences)


def test_the_plan_replays_only_what_peers_started(tmp_path: Path) -> None:
    pcap = write_pcap(tmp_path / "in.pcap", frames())
    plan = plan_replay(pcap, IP(DEVICE), None, tmp_path / "replay.pcap", where="bundle.yaml")
    assert plan.keys == {("UDP", 7), ("ICMP", 0), ("TCP", 7)} and plan.peers == {IP(PEER)}
    kept = list(read_pcap(tmp_path / "replay.pcap"))
    assert len(kept) == 4 + 3 + 4  # the peer's datagrams and pings (the device answers anew), the TCP connection
    assert plan.boot_messages == 3  # PUBLISHes at 0, 2 and 4 s closed before the traffic at 4.5 s
    assert round(plan.offset, 3) == 4.5
    assert all(IP(frame[30:34]) != IP(SERVICES) and IP(frame[26:30]) != IP(SERVICES) for _, frame in kept)


def test_a_peer_answering_the_device_is_not_replayed(tmp_path: Path) -> None:
    only_answers = [(T0, udp(DEVICE, PEER, 40001, 5000, b"q")), (T0 + 0.1, udp(PEER, DEVICE, 5000, 40001, b"a")),
                    *[f for f in frames() if f[0] < T0 + 4]]
    pcap = write_pcap(tmp_path / "in.pcap", sorted(only_answers))
    with pytest.raises(ConfigError, match=r"no traffic a peer started"):
        plan_replay(pcap, IP(DEVICE), None, tmp_path / "replay.pcap", where="bundle.yaml")


def test_a_flow_split_over_two_windows_on_one_side_only_is_summed_before_it_is_judged() -> None:
    field = arrivals(windows({2: [UDP7]}))
    bench = arrivals(windows({2: [flow(PEER, 7, 50000, Protocol.UDP, 208, 208)],
                              3: [flow(PEER, 7, 50000, Protocol.UDP, 624, 624)]}))
    result = compare(field, bench, FIELD, BENCH, pending_time_s=20)
    assert result.reproduced, result.differences
    assert [[w.index for w in g.bench] for g in result.groups] == [[2, 3]]


def test_the_hubs_outage_is_found_on_the_capture(tmp_path: Path) -> None:
    """Connected at 0 s, the broker closes at 8 s, refuses an attempt at 12 s, accepts one at 16 s."""
    from tests.unit.bundle.fake import publish, tcp

    up = [(T0 - 0.5, tcp(DEVICE, PEER, 49152, 8883, 0x02)), (T0 - 0.49, tcp(PEER, DEVICE, 8883, 49152, 0x12))]
    down = [(T0 + 8.0, tcp(PEER, DEVICE, 8883, 49152, 0x11)), (T0 + 12.0, tcp(DEVICE, PEER, 49153, 8883, 0x02)),
            (T0 + 12.001, tcp(PEER, DEVICE, 8883, 49153, 0x14)), (T0 + 16.0, tcp(DEVICE, PEER, 49154, 8883, 0x02)),
            (T0 + 16.001, tcp(PEER, DEVICE, 8883, 49154, 0x12))]
    pcap = write_pcap(tmp_path / "in.pcap", sorted([*frames(), *up, *down, (T0 + 17, publish())]))
    plan = plan_replay(pcap, IP(DEVICE), None, tmp_path / "replay.pcap", where="bundle.yaml")
    assert [(round(a, 3), round(b, 3)) for a, b in plan.outages] == [(8.0, 12.501)]  # just after the refusal
    silent = [f for f in down if f[0] != T0 + 12.001]  # no answer at all while it was gone
    pcap = write_pcap(tmp_path / "silent.pcap", sorted([*frames(), *up, *silent]))
    plan = plan_replay(pcap, IP(DEVICE), None, tmp_path / "replay.pcap", where="bundle.yaml")
    assert [(round(a, 3), round(b, 3)) for a, b in plan.outages] == [(8.0, 16.001)]


def test_the_plan_keeps_the_captured_order_of_tcp_and_datagrams_in_segments(tmp_path: Path) -> None:
    """The replay sends datagrams before it re-enacts TCP: a datagram after a connection is cut
    into the next segment, and each connection stays whole in the segment of its SYN."""
    from tests.unit.bundle.fake import tcp

    conn = [(T0 + 5.0, tcp(PEER, DEVICE, 51000, 7, 0x02)), (T0 + 5.001, tcp(DEVICE, PEER, 7, 51000, 0x12)),
            (T0 + 9.0, tcp(PEER, DEVICE, 51000, 7, 0x18, b"late" * 10))]  # still the first connection
    later = [(T0 + 7.0, udp(PEER, DEVICE, 50000, 7, b"u" * 10)),
             (T0 + 9.5, udp(PEER, DEVICE, 50000, 7, b"v" * 10)),  # after the first connection's late segment
             (T0 + 10.0, tcp(PEER, DEVICE, 51001, 7, 0x02))]
    pcap = write_pcap(tmp_path / "in.pcap", sorted([*[f for f in frames() if f[0] < T0 + 4], *conn, *later]))
    plan = plan_replay(pcap, IP(DEVICE), None, tmp_path / "replay.pcap", where="bundle.yaml")
    assert [(round(s.first - T0, 3), s.frames) for s in plan.segments] == [(5.0, 3), (7.0, 3)]
    first = [t for t, _ in read_pcap(plan.segments[0].pcap)]
    assert [round(t - T0, 3) for t in first] == [5.0, 5.001, 9.0]
    assert len(list(read_pcap(tmp_path / "replay.pcap"))) == 6  # the whole selection, as evidence


def test_a_capture_whose_mqtt_is_tls_is_timed_from_its_first_frame(tmp_path: Path) -> None:
    """No PUBLISH shows inside TLS: the replay is timed from the capture's first frame instead."""
    from tests.unit.bundle.fake import publish

    no_publish = [f for f in frames() if f[1] != publish()]
    pcap = write_pcap(tmp_path / "in.pcap", no_publish)
    plan = plan_replay(pcap, IP(DEVICE), None, tmp_path / "replay.pcap", where="bundle.yaml")
    assert plan.first_publish is None and plan.boot_messages == 0 and plan.outages == []
    assert round(plan.offset, 3) == 5.5  # the DNS exchange at -1 s opened the capture, the traffic at 4.5 s


def test_a_capture_whose_mqtt_is_tls_is_timed_from_its_publishes_found_by_their_record_size(tmp_path: Path) -> None:
    """Each PUBLISH sealed in a TLS record (AES-GCM: 24 bytes more); the archive's messages give their
    size, so the plan finds them as it does in clear: the same anchor, boot messages and offset."""
    import os

    from harness.traffic.tls_publish import TlsPublishMarks
    from tests.unit.bundle.fake import publish, tcp

    clear = publish()
    mqtt = clear[14 + 20 + 20:]  # past the Ethernet, IP and TCP headers: the PUBLISH
    sealed_len = len(mqtt) + 24
    sealed = tcp(DEVICE, PEER, 49152, 8883, 0x18, bytes([0x17, 3, 3]) + sealed_len.to_bytes(2, "big")
                 + os.urandom(sealed_len))
    topic_len = int.from_bytes(mqtt[5:7], "big")
    topic, payload = mqtt[7:7 + topic_len].decode(), mqtt[7 + topic_len + 2:]
    plain = plan_replay(write_pcap(tmp_path / "plain.pcap", frames()), IP(DEVICE), None, tmp_path / "a.pcap",
                        where="bundle.yaml")
    pcap = write_pcap(tmp_path / "tls.pcap", [(t, sealed if f == clear else f) for t, f in frames()])
    blind = plan_replay(pcap, IP(DEVICE), None, tmp_path / "b.pcap", where="bundle.yaml")
    marks = TlsPublishMarks.of([(topic, len(payload))])
    seen = plan_replay(pcap, IP(DEVICE), None, tmp_path / "c.pcap", where="bundle.yaml", tls=marks)
    assert blind.first_publish is None  # without the messages' sizes, as before
    assert (seen.first_publish, seen.boot_messages, round(seen.offset, 3)) == \
        (plain.first_publish, plain.boot_messages, round(plain.offset, 3)) == (T0, 3, 4.5)
