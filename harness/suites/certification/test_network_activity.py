"""Spec 3.2: NetworkActivity records for the traffic the harness sends, byte for byte as the
capture of the board's link predicts, one record per (addresses, ports, protocol) whatever the
direction, and never more than the flow cap in a window."""

from __future__ import annotations

import pytest

from harness.board.board import Board
from harness.firmware import Behaviour
from harness.report.plugin import ClauseRecord
from harness.telemetry.model import NetworkActivity
from harness.traffic import flow_burst, icmp_echo, tcp_session, udp_exchange
from harness.traffic.exchange import Exchange
from harness.traffic.windows import describe_difference, reduce_windows, same_records

WINDOWS = 2  # collection windows a check may take after the traffic (at the high interval)


def _within(behaviour: Behaviour) -> float:
    return behaviour.intervals_s.high * (WINDOWS + 1) + 5


def _expect(board: Board, behaviour: Behaviour, clause: ClauseRecord, exchanges: list[Exchange]) -> None:
    assert board.telemetry is not None
    flows = [spec for ex in exchanges for spec in ex.flows]
    clause.write("expected-flows.json", [f.describe() for f in flows])
    match = board.telemetry.expect_flows(flows, within=_within(behaviour))
    clause.write("flows-seen.txt", match.describe())


@pytest.mark.clause("3.2.tcp", "a TCP session: one record, bytes in and out as the capture predicts")
def test_tcp_session(hil_board: Board, behaviour: Behaviour, clause: ClauseRecord) -> None:
    target = hil_board.traffic_target()
    if not target.tcp_echo:
        clause.not_applicable("the board offers no TCP echo service (capabilities.services.tcp_echo)")
    assert hil_board.telemetry is not None
    hil_board.telemetry.next_window(within=_within(behaviour))
    _expect(hil_board, behaviour, clause, [tcp_session(target, 2000), tcp_session(target, 300, reset=True)])


@pytest.mark.clause("3.2.udp", "UDP datagrams and their replies: one record")
def test_udp_exchange(hil_board: Board, behaviour: Behaviour, clause: ClauseRecord) -> None:
    target = hil_board.traffic_target()
    if not target.udp_echo:
        clause.not_applicable("the board offers no UDP echo service (capabilities.services.udp_echo)")
    if hil_board.config.network.stack == "offload" and not target.udp_echo:
        clause.not_applicable("an offload stack")
    assert hil_board.telemetry is not None
    hil_board.telemetry.next_window(within=_within(behaviour))
    _expect(hil_board, behaviour, clause, [udp_exchange(target, 4, 200)])


@pytest.mark.clause("3.2.icmp", "ICMP echo: requests and replies one record, ports 0")
def test_icmp_echo(hil_board: Board, behaviour: Behaviour, clause: ClauseRecord) -> None:
    target = hil_board.traffic_target()
    if not target.icmp:
        clause.not_applicable("the board does not answer ICMP (capabilities.icmp; an offload stack reports none)")
    assert hil_board.telemetry is not None
    hil_board.telemetry.next_window(within=_within(behaviour))
    _expect(hil_board, behaviour, clause, [icmp_echo(target, 4, 56)])


@pytest.mark.clause("3.2.cap", "past the flow cap nothing more is counted in a window; every window as predicted")
def test_flow_cap(hil_board: Board, behaviour: Behaviour, clause: ClauseRecord) -> None:
    target = hil_board.traffic_target()
    if not target.udp_echo:
        clause.not_applicable("the board offers no UDP echo service for a burst of new flows")
    assert hil_board.telemetry is not None
    cap = behaviour.flow_cap
    hil_board.telemetry.next_window(within=_within(behaviour))
    burst = flow_burst(target, cap + 20, rate=500)
    hil_board.telemetry.expect_events(WINDOWS, within=_within(behaviour))
    reported = [e for e in hil_board.telemetry.events() if isinstance(e.payload, NetworkActivity)]
    largest = max((len(e.payload.flows) for e in reported), default=0)
    clause.write("records-per-window.json", [len(e.payload.flows) for e in reported])
    assert largest <= cap, f"a window reported {largest} records, more than the cap of {cap}"
    if target.capture is None:
        assert largest == cap, f"{cap + 20} new flows in one window, but at most {largest} records reported"
        return
    datagrams = target.capture()
    _judge_windows(reported, datagrams, cap, clause)
    assert reported, (f"no NetworkActivity reported for the windows of a burst of {cap + 20} new flows (a message "
                      "that does not fit the module's page is dropped: is the cap larger than the manifest says?)")
    assert largest == cap and burst.keys, f"the burst of {cap + 20} flows filled no window to the cap ({largest})"


NEAR = 0.25  # seconds around a window's end where the wire's order and the module's may differ


def _judge_windows(reported: list, datagrams: list, cap: int, clause: ClauseRecord) -> None:  # type: ignore[type-arg]
    """Every reported window against the capture: an exact match, or, where datagrams crossed the
    wire within NEAR of the window's end (a busy board counts a reply before its collection that
    leaves after its PUBLISH), no record the capture does not hold, no bytes beyond it, and every
    record of the predicted window whose datagrams were all far from its ends, byte for byte."""
    windows = [w for w in reduce_windows(datagrams, cap) if w.end is not None]
    notes = []
    for event in reported:
        flows = event.payload.flows
        exact = [w for w in windows if not any(same_records(w.flows(), flows))]
        if exact:
            continue
        window = min(windows, key=lambda w: sum(map(len, same_records(w.flows(), flows))))
        start, end = window.start or 0.0, window.end or 0.0
        near = {d.key for d in datagrams if abs(d.time - start) < NEAR or abs(d.time - end) < NEAR}
        totals: dict[tuple[object, ...], list[int]] = {}
        for d in datagrams:
            totals.setdefault(d.key, [0, 0])[1 if d.outbound else 0] += d.nbytes
        missing, unexpected = same_records(window.flows(), flows)
        wrong = [f for f in unexpected if f.key not in totals or f.bytes_in > totals[f.key][0]
                 or f.bytes_out > totals[f.key][1] or f.key not in near]
        wrong += [f for f in missing if f.key not in near]
        if wrong:
            raise AssertionError(f"the window reported at {event.time} is not what the capture predicts:\n"
                                 + describe_difference([f for f in missing if f in wrong],
                                                       [f for f in unexpected if f in wrong]))
        notes.append(f"window at {event.time}: {len(missing) + len(unexpected)} record(s) differ only by "
                     f"datagrams within {NEAR} s of its ends")
    if notes:
        clause.write("boundary-notes.txt", "\n".join(notes))
