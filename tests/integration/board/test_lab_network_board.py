"""A real-board kind on a lab test network, end to end on this host: the lab's network is a bridge
the test makes (its "board" a network namespace answering ICMP, TCP and UDP echo, its probe a chip
model). The run serves time and the broker at lab.yaml's broker.bind, captures the board's link
with tcpdump, and traffic predictions come from that capture."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness.board.state import BoardState
from harness.broker import parse_mqtt_url
from harness.broker.base import port_accepts
from harness.emulation import netns
from harness.emulation.process import OwnedProcess
from harness.lab import load_lab
from harness.session import RunSession
from harness.traffic import icmp_echo, tcp_session, udp_exchange

pytestmark = [pytest.mark.needs("root", "ip", "mosquitto", "chrony"), pytest.mark.timeout(120)]

ECHO = """
import socket, threading
def tcp():
    s = socket.create_server(("0.0.0.0", 7))
    while True:
        c, _ = s.accept()
        threading.Thread(target=lambda c=c: [c.sendall(d) for d in iter(lambda: c.recv(4096), b"")],
                         daemon=True).start()
threading.Thread(target=tcp, daemon=True).start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 7))
while True:
    d, a = u.recvfrom(65535); u.sendto(d, a)
"""


@pytest.fixture
def lab_network(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    token = secrets.token_hex(2)
    bridge, ns = f"hil-lt{token}", f"hil-lt{token}-b"
    subnet = f"10.230.{int(token, 16) % 200 + 20}"
    echo: OwnedProcess | None = None
    try:
        netns.create_bridge(bridge)
        netns.add_address(bridge, f"{subnet}.1/24")
        netns.create_namespace(ns)
        netns.create_veth(f"{bridge}-v", ns, "eth0", bridge)
        netns.add_address("eth0", f"{subnet}.20/24", ns=ns)
        echo = OwnedProcess("board echo", [*netns.netns_exec(ns), sys.executable, "-c", ECHO], tmp_path / "echo.log")
        lab = tmp_path / "lab"
        lab.mkdir()
        (lab / "lab.yaml").write_text(yaml.safe_dump({
            "networks": [{"name": "bench", "subnet": f"{subnet}.0/24", "bridge": bridge}],
            "broker": {"kind": "mosquitto", "bind": f"{subnet}.1"}, "time_server": {"kind": "chrony"}}))
        (lab / "bench-board.yaml").write_text(yaml.safe_dump({
            "name": "bench-board", "kind": "pyocd",
            "probe": {"id": "emu:chip-stm32l475xg-0", "target": "stm32l475xg"},
            "console": {"url": "socket://127.0.0.1:9"},
            "network": {"address_from": "static", "address": f"{subnet}.20", "test_network": "bench"},
            "capabilities": {"icmp": True, "services": {"tcp_echo": 7, "udp_echo": 7}},
            "identity": {"device_id": "bench-board-01"}}))
        yield lab, f"{subnet}.20"
    finally:
        if echo is not None:
            echo.stop()
        netns.delete_namespace(ns)
        netns.delete_link(bridge)


def test_traffic_at_a_lab_network_board_is_predicted_from_tcpdump(lab_network: tuple[Path, str],
                                                                   tmp_path: Path) -> None:
    folder, address = lab_network
    with RunSession(load_lab(folder), boards=["bench-board"], run_dir=tmp_path / "run") as session:
        assert session.broker is not None
        port = parse_mqtt_url(session.broker.url)[1]
        bind = address.rsplit(".", 1)[0] + ".1"
        assert port_accepts(bind, port) and port_accepts("127.0.0.1", port)  # the lab's boards, and loopback
        board = session.board("bench-board")
        board.find_address()  # static, and it must answer there
        assert board.state is BoardState.ONLINE
        target = board.traffic_target()
        assert target.capture is not None
        exchanges = [tcp_session(target, 2000), udp_exchange(target, 2, 64), icmp_echo(target, 2)]
        flows = [spec for ex in exchanges for spec in ex.flows]
        assert all(ex.from_capture for ex in exchanges)
        by_kind = {f.label: f for f in flows}
        assert by_kind["udp-exchange"].bytes_in == by_kind["udp-exchange"].bytes_out == 2 * (64 + 8)
        assert by_kind["icmp-echo"].bytes_in == 2 * (8 + 56)
        assert by_kind["tcp-session"].bytes_in >= 2000 + 3 * 20
        tcpdump = board.parts.link_capture()
    assert tcpdump is not None and tcpdump.stat().st_size > 24
    assert "tcpdump" not in subprocess.run(["pgrep", "-af", str(tcpdump)], capture_output=True, text=True).stdout
