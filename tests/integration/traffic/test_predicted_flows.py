"""Traffic at an emulated board predicts its NetworkActivity exactly: every record of every window,
byte counts included, as read from the capture of the board's link and reduced to the module's
capture points and windows (background flows included)."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness.board.board import Board
from harness.errors import UsageError
from harness.firmware import load_build
from harness.firmware_build import build_reference
from harness.hub.ca import lab_ca
from harness.lab import load_lab
from harness.netpolicy import TargetPolicy
from harness.session import RunSession
from harness.telemetry.model import NetworkActivity, Protocol
from harness.traffic import Target, flow_burst, icmp_echo, syn_scan, tcp_session, udp_exchange, udp_scan
from harness.traffic.capture import Datagram
from harness.traffic.windows import candidate_windows, describe_difference, judge_window, reduce_windows, same_records

pytestmark = [pytest.mark.needs("qemu", "arm-gcc", "root", "mosquitto", "dnsmasq", "chrony", "ip"),
              pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module", params=["lwip", pytest.param("azrtos", marks=pytest.mark.needs("azrtos-sources"))])
def board(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Board]:
    """The lwIP image (plain MQTT), and the Azure RTOS image (NetX Duo; DPS, TLS and SAS to the
    lab's hub stand-in, whose security PUBLISHes the capture shows only as TLS records of their size):
    two independent stacks, one prediction."""
    folder = tmp_path_factory.mktemp("lab")
    for name in ("qemu-an385.yaml", "lab.yaml"):
        (folder / name).write_text((REPO / "boards" / name).read_text())
    ca = None
    if request.param == "azrtos":
        lab_yaml = yaml.safe_load((folder / "lab.yaml").read_text())
        device = yaml.safe_load((folder / "qemu-an385.yaml").read_text())["identity"]["device_id"]
        lab_yaml["broker"]["tls"] = True
        lab_yaml["devices"] = [{"id": device, "symmetric_key": base64.b64encode(bytes(range(32))).decode()}]
        (folder / "lab.yaml").write_text(yaml.safe_dump(lab_yaml))
        ca = lab_ca(load_lab(folder)).ca_der()
    build = load_build(build_reference("mps2-an385", {}, "fast", tmp_path_factory.mktemp("build"),
                                       request.param, trusted_ca=ca))
    with RunSession(load_lab(folder), boards=["qemu-an385"]) as session:
        yield session.bring_up("qemu-an385", build)


def windows_after(board: Board, exchanges: list) -> None:  # type: ignore[type-arg]
    """Wait until the windows of the exchanges are all reported: the capture holds a security
    publish after their last datagram, and the collector has a window collected after the traffic
    ended (messages arrive in order, so every window before it is in too; over TLS the broker and
    the collector lag the wire: seen, two of four windows in when the check ran)."""
    assert board.telemetry is not None
    ended = time.time()
    target = board.traffic_target()
    assert target.capture is not None
    last = max(d.frame for ex in exchanges for d in ex.datagrams())
    deadline = time.monotonic() + 30
    while not any(d.security_publish and d.frame > last for d in target.capture()):
        assert time.monotonic() < deadline, "no security publish after the traffic within 30 s"
        time.sleep(0.2)  # re-reading the capture file: no event to wait on
    board.telemetry.wait_for(lambda e: isinstance(e.payload, NetworkActivity) and e.time >= int(ended) + 1, 30,
                             what="a window collected after the traffic ended")


def assert_windows_as_predicted(board: Board, target: Target, cap: int, since_frame: int) -> int:
    """Every NetworkActivity event reported since the mark equals a predicted window, in order, and
    no predicted window with records between the first and the last of them went unreported."""
    assert board.telemetry is not None and target.capture is not None
    datagrams = target.capture()
    base = reduce_windows(datagrams, cap)
    windows = [w for w in candidate_windows(datagrams, cap) if w.end is not None]
    reported = [e for e in board.telemetry.events() if isinstance(e.payload, NetworkActivity)]
    assert reported
    paired: list[int] = []
    borderline: list[str] = []
    for event in reported:
        found = sorted({w.index for w in windows if not any(same_records(w.flows(), event.payload.flows))})
        if not found:
            difference = judge_window(event.payload.flows, windows, datagrams)
            if difference is not None:
                pytest.fail(f"the window reported at {event.time} is no predicted window:\n" + difference)
            closest = min(windows, key=lambda w: sum(map(len, same_records(w.flows(), event.payload.flows))))
            borderline.append(f"at {event.time}, against the window ending {closest.end}:\n"
                              + describe_difference(*same_records(closest.flows(), event.payload.flows)))
            continue  # differs only by datagrams at its very ends (see harness.traffic.windows.NEAR)
        paired.append(next((i for i in found if not paired or i > paired[-1]), found[-1]))
    assert paired == sorted(paired), f"windows out of order: {paired}"
    assert paired, "no reported window matched a predicted one exactly; each differed at its ends:\n" + \
        "\n".join(borderline)
    skipped = [i for i in range(paired[0], paired[-1] + 1) if i not in paired and base[i].records]
    assert not skipped, f"predicted windows with records that were not reported: {skipped}"
    return len(reported)


def test_tcp_udp_icmp_each_produce_exactly_the_predicted_records(board: Board) -> None:
    assert board.telemetry is not None and board.build is not None
    target = board.traffic_target()
    board.telemetry.next_window(within=30)
    exchanges = [tcp_session(target, 3000), udp_exchange(target, 4, 200), icmp_echo(target, 3, 56),
                 tcp_session(target, 500, reset=True)]
    expected = [spec for ex in exchanges for spec in ex.flows]
    assert len(expected) == 4 and all(ex.from_capture for ex in exchanges)
    board.telemetry.expect_flows(expected, within=30)
    saved = list((board.run_dir / "traffic" / board.name).glob("exchange-*.json"))
    assert len(saved) >= 4, "each exchange and its expected flows are kept as evidence"
    windows_after(board, exchanges)
    assert assert_windows_as_predicted(board, target, board.build.manifest.behaviour.flow_cap, 0) >= 1


def test_an_exchange_straddling_window_boundaries(board: Board) -> None:
    assert board.telemetry is not None and board.build is not None
    target = board.traffic_target()
    board.telemetry.next_window(within=30)
    interval = board.build.manifest.behaviour.intervals_s.high
    t0 = time.time()
    with socket.create_connection((str(target.address), target.tcp_echo or 7), timeout=10) as sock:
        for _ in range(3 * interval):  # one chunk a second over three windows
            sock.sendall(b"s" * 100)
            sock.recv(100)
            time.sleep(1)  # spacing the chunks over the windows, not waiting for an event
    assert target.capture is not None
    chunks = [d for d in target.capture() if d.key[2] == (target.tcp_echo or 7)]
    windows_after(board, [type("Ex", (), {"datagrams": lambda self: chunks})()])
    reported = [e for e in board.telemetry.events() if isinstance(e.payload, NetworkActivity)
                and any(f.local_port == (target.tcp_echo or 7) for f in e.payload.flows)]
    assert len(reported) >= 3, "the session should appear in at least three windows"
    assert assert_windows_as_predicted(board, target, board.build.manifest.behaviour.flow_cap, 0) >= 3
    assert time.time() - t0 < 60


def test_syn_scan_and_a_burst_past_the_cap(board: Board) -> None:
    assert board.telemetry is not None and board.build is not None
    target = board.traffic_target()
    board.telemetry.next_window(within=30)
    scan = syn_scan(target, range(1000, 1100), rate=500)
    udp = udp_scan(target, range(2000, 2010), rate=200)
    burst = flow_burst(target, 80, rate=500)
    windows_after(board, [scan, udp, burst])
    unreachable = [d for d in udp.datagrams() if d.outbound and d.protocol.name == "ICMP"]
    assert len(unreachable) == 10, "each closed UDP port answers with an ICMP port unreachable"
    cap = board.build.manifest.behaviour.flow_cap
    assert assert_windows_as_predicted(board, target, cap, 0) >= 1
    reported = [e for e in board.telemetry.events() if isinstance(e.payload, NetworkActivity)]
    assert max(len(e.payload.flows) for e in reported) == cap  # the cap was reached, nothing past it
    assert scan.keys and burst.keys


def test_a_destination_outside_the_policy_is_refused_before_any_packet(board: Board) -> None:
    outside = Target(board.address.__class__("192.0.2.7"), TargetPolicy())
    for generator in (lambda: tcp_session(outside, 10), lambda: udp_exchange(outside, 1),
                      lambda: icmp_echo(outside, 1), lambda: syn_scan(outside, range(1, 3))):
        with pytest.raises(UsageError, match=r"(?s)refusing to send traffic to 192\.0\.2\.7.*127\.0\.0\.0/8"):
            generator()


def test_a_capture_replayed_at_the_board_reproduces_its_flows(board: Board, tmp_path: Path) -> None:
    """A capture the test makes itself (a UDP exchange, pings and a TCP session at the board),
    replayed at the board: the same flows, byte for byte, from the harness's new ports."""
    from harness.traffic import replay
    from harness.traffic.capture import read_pcap, write_pcap

    assert board.telemetry is not None
    target = board.traffic_target()
    pcap = board.parts.link_capture()
    assert pcap is not None and target.frames is not None
    first = target.frames()
    original = [udp_exchange(target, 3, 120), icmp_echo(target, 2, 40), tcp_session(target, 1500)]
    for ex in original:
        ex.settle()
    before = shape([d for ex in original for d in ex.datagrams()])
    frames = list(read_pcap(pcap))[first:]
    capture = write_pcap(tmp_path / "made-here.pcap", frames)
    board.telemetry.next_window(within=30)
    replayed = replay(target, capture, str(board.address), speed=0)
    assert replayed.details["tcp_reenacted"] == 1 and replayed.details["udp_icmp"] == 5
    assert shape(replayed.datagrams()) == before
    board.telemetry.expect_flows(replayed.flows, within=30)


def shape(datagrams: list[Datagram]) -> list[tuple[object, ...]]:
    """Per protocol and board port, bytes each way; TCP by its data (a live re-enactment's ACKs
    coalesce as that run's timing makes them, so header bytes may differ)."""
    totals: dict[tuple[object, ...], list[int]] = {}
    for d in datagrams:
        tcp = d.protocol is Protocol.TCP
        totals.setdefault((d.protocol, d.key[2]), [0, 0])[d.outbound] += d.data if tcp else d.nbytes
    return sorted((*k, *v) for k, v in totals.items())
