"""The Azure RTOS flavour of the reference firmware (ThreadX, NetX Duo) on an emulated board on the
tap test network, brought up through the harness's one path (RunSession, Board, pyOCD through the
emu: probe): boot, the console served by a ThreadX thread, DHCP, SNTP, ping, TCP and UDP echo, RST
from a closed port."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.board.board import Board
from harness.emulation.tap_network import TapAttachment, TapNetwork
from harness.firmware import load_build
from harness.firmware_build import build_reference
from harness.session import RunSession
from harness.traffic import ping, tcp_echo
from tests.boards import emulated_board, private_lab

from .conftest import TEST_BUILD_ID, TEST_VERSION, boot

pytestmark = [pytest.mark.needs("qemu", "arm-gcc", "root", "mosquitto", "dnsmasq", "chrony", "ip", "azrtos-sources")]

DEVICE = "hil-azrtos-online-1"


@dataclass
class Online:
    board: Board
    session: RunSession
    net: TapNetwork
    attachment: TapAttachment
    lines: dict[str, str]


@pytest.fixture(scope="module")
def azrtos_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_reference("mps2-an385", {"VERSION": TEST_VERSION, "BUILD_ID": TEST_BUILD_ID}, None,
                           tmp_path_factory.mktemp("azrtos-build"), flavour="azrtos")


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunSession]:
    run = tmp_path_factory.mktemp("azrtos-online")
    lab = private_lab(run / "lab", [emulated_board("az-1", DEVICE),
                                    emulated_board("az-386", "hil-azrtos-an386", machine="mps2-an386")])
    with RunSession(lab, boards=["az-1", "az-386"], run_dir=run / "run") as session:
        yield session


@pytest.fixture(scope="module")
def online(azrtos_build: Path, session: RunSession) -> Iterator[Online]:
    net = session.networks["emulated"].handle
    board = session.board("az-1")
    with boot(session, "az-1", azrtos_build, session.provisioning_for(board).encode_sector()) as board:
        lines = {
            "banner": board.wait_booted().group(0),
            "net": board.console.expect(r"^net: address .*$", timeout=30).group(0),
            "services": board.console.expect(r"^services: .*$", timeout=30).group(0),
            "time": board.console.expect(r"^time: unix \d+ .*$", timeout=30).group(0),
            "hub": board.console.expect(r"^hub: .*$", timeout=10).group(0),
        }
        yield Online(board, session, net, net.attachments["az-1"], lines)


def test_manifest_names_the_stack(azrtos_build: Path) -> None:
    m = load_build(azrtos_build).manifest
    assert m.build.stack == "netxduo"
    assert m.behaviour.os_info == "Azure RTOS 6.4"
    assert m.behaviour.services.tcp_echo == m.behaviour.services.udp_echo == 7 and m.behaviour.services.icmp


@pytest.mark.timeout(180)
def test_boot_dhcp_address_and_sntp_time(online: Online) -> None:
    assert online.lines["banner"] == f"HIL-REF {TEST_VERSION} build {TEST_BUILD_ID} board mps2-an385"
    assert online.lines["net"] == (f"net: address {online.attachment.address} netmask 255.255.255.0 "
                                   f"gateway {online.net.harness_address} "
                                   f"dns {online.net.services_address} (dhcp)")
    assert online.lines["services"] == "services: tcp echo 7, udp echo 7, icmp echo"
    unix = int(online.lines["time"].split()[2])
    assert abs(unix - time.time()) < 120, f"board time {unix} is far from the host's {time.time():.0f}"


def test_a_plain_mqtt_block_is_refused_with_the_reason(online: Online) -> None:
    """The run's record is MQTT over TCP with a password (a version 1 block): the middleware has no
    such connection, so the board says what it needs and opens none."""
    assert online.lines["hub"] == ("hub: this image connects over TLS with a SAS token from the device key "
                                   "(provisioning version 2, transport tls, auth sas); the block has transport "
                                   "tcp, auth password")
    assert "mqtt: connect" not in online.board.console.text


@pytest.mark.timeout(120)
def test_console_is_served_by_a_threadx_thread(online: Online) -> None:
    online.board.console.send_line("echo azrtos-console-check")
    online.board.console.expect(r"^azrtos-console-check$", timeout=10)


@pytest.mark.timeout(120)
def test_answers_ping(online: Online) -> None:
    result = ping(str(online.attachment.address), count=3, payload=b"hil-azrtos-ping", timeout=5,
                  policy=online.session.policy)
    assert result.replies == 3 and result.reply_bytes == 3 * (8 + len(b"hil-azrtos-ping"))


@pytest.mark.timeout(120)
def test_tcp_echo(online: Online) -> None:
    payload = os.urandom(5000)  # several segments, more than one receive window's worth at a time
    got = tcp_echo(str(online.attachment.address), 7, payload, policy=online.session.policy).reply
    assert got == payload, f"echo returned {len(got)} of {len(payload)} bytes"


@pytest.mark.timeout(120)
def test_udp_echo(online: Online) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(b"hil-azrtos-udp-echo", (str(online.attachment.address), 7))
        data, peer = sock.recvfrom(2048)
    assert (data, peer) == (b"hil-azrtos-udp-echo", (str(online.attachment.address), 7))


@pytest.mark.timeout(120)
def test_closed_tcp_port_answers_rst(online: Online) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((str(online.attachment.address), 23), timeout=5)


@pytest.mark.timeout(120)
def test_dhcp_starts_over_after_a_link_flap(online: Online) -> None:
    """The cable comes back: the board says so, runs DHCP from INIT again and gets its address back
    (the lease's), then answers pings again."""
    machine = online.board.parts.power.machine  # type: ignore[attr-defined]
    machine.link_down()
    online.board.console.expect(r"^net: link down$", timeout=5)
    machine.link_up()
    online.board.console.expect(r"^net: link up$", timeout=5)
    online.board.console.expect(r"^net: DHCP$", timeout=5)
    online.board.console.expect(rf"^net: address {online.attachment.address} \(dhcp\)$", timeout=30)
    result = ping(str(online.attachment.address), count=1, timeout=5, policy=online.session.policy)
    assert result.replies == 1


@pytest.mark.timeout(240)
def test_the_cortex_m4_board_boots_and_answers(session: RunSession, tmp_path: Path) -> None:
    """mps2-an386: ThreadX's Cortex-M4 port (soft float), the same network bring-up."""
    build = build_reference("mps2-an386", {"VERSION": TEST_VERSION, "BUILD_ID": TEST_BUILD_ID}, None,
                            tmp_path / "an386", flavour="azrtos")
    board = session.board("az-386")
    with boot(session, "az-386", build, session.provisioning_for(board).encode_sector()) as board:
        assert board.wait_booted().group(0) == f"HIL-REF {TEST_VERSION} build {TEST_BUILD_ID} board mps2-an386"
        address = session.networks["emulated"].handle.attachments["az-386"].address
        board.console.expect(rf"^net: address {address} .*\(dhcp\)$", timeout=30)
        board.console.expect(r"^time: unix \d+ ", timeout=30)
        assert ping(str(address), count=2, timeout=5, policy=session.policy).replies == 2
