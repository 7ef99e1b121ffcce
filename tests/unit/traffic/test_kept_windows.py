"""A connection's first security PUBLISH may carry a message kept from an earlier collection (spec
3.3, PENDING -> ACTIVE): the window it ends closed at some moment at least a second before it, and
the datagrams between belong to the next window. Seen on TLS boards, which connect after their
first collection: a stale connection's reset a second before the first PUBLISH was reported in the
next window and failed 3.2.cap."""

from __future__ import annotations

import ipaddress

from scapy.layers.inet import IP, TCP, UDP
from scapy.packet import Raw

from harness.telemetry.model import Flow
from harness.traffic.capture import Datagram, module_datagrams
from harness.traffic.windows import KEPT_DELAY, NEAR, candidate_windows, judge_window, reduce_windows, same_records
from tests.unit.traffic.test_capture import BOARD, HOST, inn, out

A = ipaddress.IPv4Address


def publish(t: float, sport: int) -> tuple[float, bytes]:
    topic = b"devices/d/messages/events/mti=2.3-1-0-0&%24.ifid=x"
    body = len(topic).to_bytes(2, "big") + topic + b"\x00\x01" + b"payload"
    mqtt = bytes([0x32, 0x80 | len(body), 0x80, 0x80, 0]) + body
    return out(IP(src=BOARD, dst=HOST) / TCP(sport=sport, dport=1883, flags="PA") / Raw(mqtt), t)


def udp_in(t: float, sport: int, size: int = 10) -> tuple[float, bytes]:
    return inn(IP(src=HOST, dst=BOARD) / UDP(sport=sport, dport=7) / Raw(b"u" * size), t)


def stale_reset(t: float) -> tuple[float, bytes]:  # the broker's answer to a connection of the last boot
    return inn(IP(src=HOST, dst=BOARD) / TCP(sport=1883, dport=57792, flags="R"), t)


def capture(reset_at: float, *extra: tuple[float, bytes]) -> list[Datagram]:
    """Traffic, then (the module collects at 8.5, its hub away) a stale reset, then the new
    connection's first PUBLISH (the kept message) at 10.0, traffic, and a fresh PUBLISH at 20.0."""
    frames = [*extra, udp_in(2.0, 6000), udp_in(8.0, 6001), stale_reset(reset_at), publish(10.0, 50000),
              udp_in(15.0, 6002), publish(20.0, 50000), udp_in(25.0, 6003), publish(30.0, 50000)]
    return module_datagrams(frames, BOARD)


def flows(datagrams: list[Datagram], since: float, until: float) -> list[Flow]:
    """What the module reports for a window it collected over [since, until)."""
    totals: dict[tuple[object, ...], list[int]] = {}
    for d in datagrams:
        if since <= d.time < until:
            totals.setdefault(d.key, [0, 0])[1 if d.outbound else 0] += d.nbytes
    return [Flow(*k, bytes_in=b[0], bytes_out=b[1]) for k, b in totals.items()]  # type: ignore[misc]


def test_the_window_a_kept_message_ends_may_have_closed_a_second_or_more_before_it() -> None:
    datagrams = capture(reset_at=9.0)
    kept, fresh = flows(datagrams, 0, 8.5), flows(datagrams, 8.5, 20.0)
    base = reduce_windows(datagrams)
    assert [w.kept for w in base] == [True, False, False, False], "the connection's first PUBLISH is marked"
    # the publish-ended windows alone put the reset in the kept window: the report is not predicted
    # there, and the reset is too far from either end to be forgiven as borderline
    assert "57792" in (judge_window(fresh, base, datagrams) or "")
    windows = candidate_windows(datagrams)
    for reported, index in ((kept, 0), (fresh, 1)):
        exact = [w for w in windows if not any(same_records(w.flows(), reported))]
        assert exact and {w.index for w in exact} == {index}
        assert judge_window(reported, windows, datagrams) is None


def test_a_kept_window_still_fails_on_bytes_no_cut_explains_and_on_a_collection_too_close() -> None:
    datagrams = capture(reset_at=9.0)
    windows = candidate_windows(datagrams)
    inflated = flows(datagrams, 0, 8.5)
    inflated[0] = Flow(*inflated[0].key, bytes_in=inflated[0].bytes_in + 1, bytes_out=inflated[0].bytes_out)
    assert judge_window(inflated, windows, datagrams) is not None
    # a datagram at 9.35 counted in the kept window and the reset at 9.6 in the next: the module
    # collected between them, less than a second before its kept message, which it never does
    assert 10.0 - KEPT_DELAY + NEAR < 9.35 and 10.0 - NEAR > 9.6  # neither is borderline
    late = capture(9.6, udp_in(9.35, 6009))
    cut = 9.5
    windows = candidate_windows(late)
    assert judge_window(flows(late, cut, 20.0), windows, late) is not None
    assert judge_window(flows(late, 0, cut), windows, late) is not None
    assert judge_window(flows(late, 0, 8.5), windows, late) is None  # the same capture, collected in time


def test_only_a_connections_first_publish_lets_its_window_end_earlier() -> None:
    datagrams = capture(reset_at=9.0)
    windows = candidate_windows(datagrams)
    # the second window was ended by the same connection's second PUBLISH: one way to count it
    assert [w for w in windows if w.index == 2] == [reduce_windows(datagrams)[2]]
    moved = flows(datagrams, 14.0, 30.0)
    assert judge_window(moved, windows, datagrams) is not None
