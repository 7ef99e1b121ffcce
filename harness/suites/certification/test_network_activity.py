"""Spec 3.2: NetworkActivity records for the traffic the harness sends, byte for byte as the
capture of the board's link predicts, one record per (addresses, ports, protocol) whatever the
direction, and never more than the flow cap in a window."""

from __future__ import annotations

import pytest

from harness.board.board import Board
from harness.firmware import Behaviour
from harness.report.plugin import ClauseRecord
from harness.suites.certification.observe import FRESH
from harness.telemetry.model import NetworkActivity
from harness.traffic import flow_burst, icmp_echo, tcp_session, udp_exchange
from harness.traffic.exchange import Exchange
from harness.traffic.windows import candidate_windows, judge_window

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
    hil_board.telemetry.next_window(within=_within(behaviour), fresh=FRESH)
    _expect(hil_board, behaviour, clause, [tcp_session(target, 2000), tcp_session(target, 300, reset=True)])


@pytest.mark.clause("3.2.udp", "UDP datagrams and their replies: one record")
def test_udp_exchange(hil_board: Board, behaviour: Behaviour, clause: ClauseRecord) -> None:
    target = hil_board.traffic_target()
    if not target.udp_echo:
        clause.not_applicable("the board offers no UDP echo service (capabilities.services.udp_echo)")
    assert hil_board.telemetry is not None
    hil_board.telemetry.next_window(within=_within(behaviour), fresh=FRESH)
    _expect(hil_board, behaviour, clause, [udp_exchange(target, 4, 200)])


@pytest.mark.clause("3.2.icmp", "ICMP echo: requests and replies one record, ports 0")
def test_icmp_echo(hil_board: Board, behaviour: Behaviour, clause: ClauseRecord) -> None:
    target = hil_board.traffic_target()
    if not target.icmp:
        clause.not_applicable("the board does not answer ICMP (capabilities.icmp; an offload stack reports none)")
    assert hil_board.telemetry is not None
    hil_board.telemetry.next_window(within=_within(behaviour), fresh=FRESH)
    _expect(hil_board, behaviour, clause, [icmp_echo(target, 4, 56)])


@pytest.mark.clause("3.2.cap", "past the flow cap nothing more is counted in a window; every window as predicted")
def test_flow_cap(hil_board: Board, behaviour: Behaviour, clause: ClauseRecord) -> None:
    target = hil_board.traffic_target()
    if not target.udp_echo:
        clause.not_applicable("the board offers no UDP echo service for a burst of new flows")
    assert hil_board.telemetry is not None
    cap = behaviour.flow_cap
    hil_board.telemetry.next_window(within=_within(behaviour), fresh=FRESH)
    burst = flow_burst(target, cap + 20, rate=500)
    hil_board.telemetry.expect_events(WINDOWS, within=_within(behaviour))
    reported = [e for e in hil_board.telemetry.events() if isinstance(e.payload, NetworkActivity)]
    largest = max((len(e.payload.flows) for e in reported), default=0)
    clause.write("records-per-window.json", [len(e.payload.flows) for e in reported])
    assert largest <= cap, f"a window reported {largest} records, more than the cap of {cap}"
    datagrams = target.capture() if target.capture is not None else []
    ends = sum(d.security_publish for d in datagrams)
    if not ends:  # no capture, or no window end seen on it (TLS whose records fit no message received)
        clause.write("window-prediction.txt", "no window predicted: " + (
            "the board's link is not captured" if target.capture is None else
            "the capture shows no security PUBLISH (in clear, or as a TLS record of a received message's size)"))
        assert largest == cap, f"{cap + 20} new flows in one window, but at most {largest} records reported"
        return
    windows = candidate_windows(datagrams, cap)
    kept = sum(w.kept for w in windows)  # alternatives are never marked
    clause.write("window-prediction.txt", f"{len({w.index for w in windows})} windows predicted from {ends} security "
                 f"PUBLISHes on the capture ({kept} a connection's first, which may carry a message kept from an "
                 f"earlier collection: {len(windows)} ways to count), {len(reported)} reported windows judged")
    for event in reported:
        difference = judge_window(event.payload.flows, windows, datagrams)
        assert difference is None, f"the window reported at {event.time} is not what the capture predicts:\n" + \
            difference
    assert reported, (f"no NetworkActivity reported for the windows of a burst of {cap + 20} new flows (a message "
                      "that does not fit the module's page is dropped: is the cap larger than the manifest says?)")
    assert largest == cap and burst.keys, f"the burst of {cap + 20} flows filled no window to the cap ({largest})"
