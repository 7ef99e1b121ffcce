"""The reference firmware on an emulated board on the tap test network, against the run's broker:
boot, DHCP, DNS, SNTP, the hub connection with the provisioned identity, a QoS 1 PUBLISH framed as
NetX frames it (checked on the wire), and the echo services."""

from __future__ import annotations

import os
import queue
import select
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap

from harness.board.board import Board
from harness.broker import Broker, parse_mqtt_url
from harness.emulation.tap_network import TapAttachment, TapNetwork
from harness.firmware_build import build_reference
from harness.netpolicy import TargetPolicy
from harness.provisioning import ProvisioningRecord
from harness.session import RunSession
from harness.traffic import ping, tcp_echo
from tests.boards import emulated_board, private_lab

from .conftest import TEST_BUILD_ID, TEST_VERSION, boot

pytestmark = [pytest.mark.needs("qemu", "arm-gcc", "root", "mosquitto", "dnsmasq", "chrony", "ip")]

DEVICE = "hil-ref-online-1"
ECHO_PORT = 7


@dataclass
class Online:
    board: Board
    session: RunSession
    net: TapNetwork
    attachment: TapAttachment
    broker: Broker
    messages: queue.Queue[mqtt.MQTTMessage]
    boot_lines: dict[str, str]
    build: Path

    @property
    def policy(self) -> TargetPolicy:
        return self.session.policy

    def record(self, name: str, **changes: object) -> ProvisioningRecord:
        """The run's provisioning record for board ``name``, with ``changes``."""
        import dataclasses

        return dataclasses.replace(self.session.provisioning_for(self.session.board(name)), **changes)


def _subscribe(broker: Broker, topic: str) -> tuple[mqtt.Client, queue.Queue[mqtt.MQTTMessage]]:
    creds = broker.add_service("online-test-reader")
    host, port, _ = parse_mqtt_url(broker.url)
    got: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    subscribed: queue.Queue[bool] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=creds.client_id)
    client.username_pw_set(creds.username, creds.password)
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.put(True)
    client.on_message = lambda c, u, msg: got.put(msg)
    client.connect(host, port)
    client.loop_start()
    subscribed.get(timeout=10)
    return client, got


BOARDS = {"online-1": DEVICE, "online-2": "hil-ref-online-2", "static-1": "hil-ref-static",
          "notime-1": "hil-ref-notime", "ka2-1": "hil-ref-ka2"}


@pytest.fixture(scope="module")
def online(ref_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Online]:
    run = tmp_path_factory.mktemp("online")
    lab = private_lab(run / "lab", [emulated_board(name, device) for name, device in BOARDS.items()])
    with RunSession(lab, boards=list(BOARDS), run_dir=run / "run") as session:
        assert session.broker is not None
        net = session.networks["emulated"].handle
        client, messages = _subscribe(session.broker, f"devices/{DEVICE}/messages/events/#")
        try:
            board = session.board("online-1")
            with boot(session, "online-1", ref_build, session.provisioning_for(board).encode_sector()) as board:
                lines = {
                    "banner": board.console.expect(r"^HIL-REF .*$").group(0),
                    "net": board.console.expect(r"^net: address .*$", timeout=20).group(0),
                    "time": board.console.expect(r"^time: unix \d+ .*$", timeout=30).group(0),
                    "mqtt": board.console.expect(r"^mqtt: connected .*$", timeout=30).group(0),
                    "test": board.console.expect(r"^test: publish .*$", timeout=10).group(0),
                }
                yield Online(board, session, net, net.attachments["online-1"], session.broker, messages, lines,
                             ref_build)
        finally:
            client.loop_stop()
            client.disconnect()


@pytest.mark.timeout(180)
def test_boot_address_time_and_hub_connection(online: Online) -> None:
    lines = online.boot_lines
    assert lines["banner"] == f"HIL-REF {TEST_VERSION} build {TEST_BUILD_ID} board mps2-an385"
    assert lines["net"].startswith(f"net: address {online.attachment.address} netmask 255.255.255.0 "
                                   f"gateway {online.net.harness_address} "
                                   f"dns {online.net.services_address} (dhcp)")
    unix = int(lines["time"].split()[2])
    assert abs(unix - time.time()) < 120, f"board time {unix} is far from the host's {time.time():.0f}"
    _, port, _ = parse_mqtt_url(online.broker.url)
    assert lines["mqtt"] == f"mqtt: connected to broker.hil.test:{port} as {DEVICE}"
    assert lines["test"].endswith(": sent")


@pytest.mark.timeout(180)
def test_test_message_arrives_with_qos1_and_netx_framing(online: Online) -> None:
    msg = online.messages.get(timeout=10)
    assert msg.topic == f"devices/{DEVICE}/messages/events/"
    assert msg.qos == 1
    assert f'"device":"{DEVICE}"'.encode() in msg.payload
    _, port, _ = parse_mqtt_url(online.broker.url)
    publishes = _publishes_on_wire(online, port)
    assert publishes, f"no PUBLISH to port {port} in {online.board.parts.link_capture()}"
    for head, remaining, body in publishes:
        assert head[0] == 0x32, f"fixed header {head[0]:#04x}, expected 0x32 (PUBLISH, QoS 1)"
        assert all(b & 0x80 for b in head[1:4]) and not head[4] & 0x80, (
            f"Remaining Length bytes {head[1:5].hex()} are not the 4-byte form")
        assert remaining == len(body), f"Remaining Length {remaining}, packet body {len(body)} bytes"
        (topic_len,) = struct.unpack_from(">H", body, 0)
        assert body[2:2 + topic_len].decode() == msg.topic
        assert body[2 + topic_len + 2:] == msg.payload


def _publishes_on_wire(online: Online, port: int) -> list[tuple[bytes, int, bytes]]:
    """(first 5 bytes, Remaining Length, packet body) of each PUBLISH the board sent to the broker,
    from the TCP payload in the machine's pcap (the board sends each PUBLISH in one segment here)."""
    board_ip = str(online.attachment.address)
    found = []
    for pkt in rdpcap(str(online.board.parts.link_capture())):
        if IP in pkt and TCP in pkt and pkt[IP].src == board_ip and pkt[TCP].dport == port:
            data = bytes(pkt[TCP].payload)
            if data[:1] == b"\x32" and len(data) >= 5:
                remaining = sum((data[1 + i] & 0x7F) << (7 * i) for i in range(4))
                found.append((data[:5], remaining, data[5:5 + remaining]))
    return found


@pytest.mark.timeout(120)
def test_tcp_echo(online: Online) -> None:
    payload = os.urandom(3000)  # more than one segment
    got = tcp_echo(str(online.attachment.address), ECHO_PORT, payload, policy=online.policy).reply
    assert len(got) == len(payload), f"echo closed after {len(got)} of {len(payload)} bytes"
    assert got == payload


@pytest.mark.timeout(120)
def test_udp_echo(online: Online) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(b"hil-udp-echo", (str(online.attachment.address), ECHO_PORT))
        data, peer = sock.recvfrom(2048)
    assert data == b"hil-udp-echo"
    assert peer == (str(online.attachment.address), ECHO_PORT)


@pytest.mark.timeout(120)
def test_icmp_echo(online: Online) -> None:
    result = ping(str(online.attachment.address), payload=b"hil-ping-payload", timeout=5, policy=online.policy)
    assert result.replies == 1 and result.reply_bytes == 8 + len(b"hil-ping-payload")


@pytest.mark.timeout(120)
def test_mac_filter_takes_only_frames_for_the_board(online: Online) -> None:
    """QEMU resets the LAN9118 promiscuous; the driver must leave only its own MAC and broadcast.
    An echo request in a frame for another MAC (flooded to the board by the bridge) goes unanswered;
    the same request to the board's MAC is answered."""
    board_ip, board_mac = str(online.attachment.address), online.attachment.mac
    # a packet socket on the run's bridge, by name: not scapy's interface list, which is read from
    # the whole machine and raced other runs creating and removing theirs ("Interface not found")
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003)) as sock:
        sock.bind((online.net.bridge, 0))
        own_mac = sock.getsockname()[4]

        def ping(dst_mac: str, seq: int) -> bool:
            """Send an echo request in a frame for ``dst_mac``; whether the board answered within 2 s."""
            frame = Ether(src=own_mac, dst=dst_mac) / IP(dst=board_ip) / ICMP(id=0x4849, seq=seq) / b"mac-filter"
            raw = bytes(frame)
            assert sock.send(raw) == len(raw), "the request was not sent"
            deadline = time.monotonic() + 2
            while (left := deadline - time.monotonic()) > 0:
                if not select.select([sock], [], [], left)[0]:
                    break
                got = Ether(sock.recv(2048))
                if ICMP in got and got[IP].src == board_ip and got[ICMP].type == 0 and got[ICMP].id == 0x4849 \
                        and got[ICMP].seq == seq:
                    return True
            return False

        assert ping(board_mac, 1), "the board did not answer an echo request to its own MAC"  # the path works
        assert not ping("02:00:00:00:00:01", 2), "the board answered a frame for another MAC"
        assert ping(board_mac, 3), "the board stopped answering its own MAC"


@pytest.mark.timeout(120)
def test_closed_tcp_port_answers_rst(online: Online) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((str(online.attachment.address), 23), timeout=5)


@pytest.mark.timeout(120)
def test_wrong_secret_is_refused_and_retried_with_back_off(online: Online) -> None:
    _, port, _ = parse_mqtt_url(online.broker.url)
    record = online.record("online-2")
    record = online.record("online-2", secret=record.secret + "-wrong")
    with boot(online.session, "online-2", online.build, record.encode_sector()) as board:
        refused = rf"^mqtt: connection refused by broker\.hil\.test:{port}, CONNACK return code 5$"
        board.console.expect(refused, timeout=30)
        board.console.expect(rf"^mqtt: connection to broker\.hil\.test:{port} failed \(refused\), "
                             r"retrying in 1 s$")
        board.console.expect(refused, timeout=10)
        board.console.expect(r"failed \(refused\), retrying in 2 s$")
        assert "mqtt: connected" not in board.console.text


@pytest.mark.timeout(120)
def test_static_address_from_provisioning(online: Online) -> None:
    subnet = online.net.subnet
    assert subnet is not None
    address = subnet.network_address + 150  # outside the fixed leases (101…) and the pool (200…)
    record = online.record("static-1", time_server=str(online.net.services_address), address_mode="static",
                           address=str(address), netmask=str(subnet.netmask), gateway=str(online.net.harness_address),
                           dns=str(online.net.services_address))
    with boot(online.session, "static-1", online.build, record.encode_sector()) as board:
        board.console.expect(rf"^net: address {address} netmask {subnet.netmask} "
                             rf"gateway {online.net.harness_address} dns {online.net.services_address} "
                             r"\(static\)$", timeout=15)
        board.console.expect(r"^mqtt: connected to broker\.hil\.test:\d+ as hil-ref-static$", timeout=30)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(b"static", (str(address), ECHO_PORT))
            assert sock.recvfrom(64)[0] == b"static"
        assert "net: DHCP" not in board.console.text


@pytest.mark.timeout(120)
def test_no_time_no_hub_connection(online: Online) -> None:
    """A time server that never answers: the board keeps asking and neither connects nor starts
    the agent (the middleware cannot start without the time)."""
    record = online.record("notime-1", time_server=str(online.net.harness_address))  # no NTP server there
    with boot(online.session, "notime-1", online.build, record.encode_sector()) as board:
        board.console.expect(rf"^time: asking {online.net.harness_address} \(SNTP\)$", timeout=15)
        text = board.console.observe(4.0)  # longer than the 3 s the first request waits for an answer
        assert "time: unix" not in text
        assert "mqtt:" not in text


@pytest.mark.timeout(180)
def test_keep_alive_pings_hold_the_connection(online: Online, tmp_path: Path) -> None:
    build = build_reference("mps2-an385", {"MQTT_KEEPALIVE_S": 2, "BUILD_ID": "ka2"}, None,
                            tmp_path / "ka2")
    _, port, _ = parse_mqtt_url(online.broker.url)
    with boot(online.session, "ka2-1", build, online.record("ka2-1").encode_sector()) as board:
        board.console.expect(r"^mqtt: connected to .* as hil-ref-ka2$", timeout=30)
        text = board.console.observe(7.0)  # 3 keep-alive periods past the connection
        pcap = board.parts.link_capture()
    assert "mqtt: disconnected" not in text
    pings = pongs = 0
    for pkt in rdpcap(str(pcap)):
        if TCP in pkt and bytes(pkt[TCP].payload)[:2] == b"\xc0\x00" and pkt[TCP].dport == port:
            pings += 1
        if TCP in pkt and bytes(pkt[TCP].payload)[:2] == b"\xd0\x00" and pkt[TCP].sport == port:
            pongs += 1
    assert pings >= 2 and pongs >= 2, f"{pings} PINGREQ and {pongs} PINGRESP in {pcap}"


@pytest.mark.timeout(120)
def test_reconnects_after_the_broker_restarts(online: Online) -> None:
    """Last in this module: it restarts the broker under the first board."""
    while not online.messages.empty():
        online.messages.get_nowait()
    online.broker.restart(graceful=False)
    console = online.board.console
    _, port, _ = parse_mqtt_url(online.broker.url)
    console.expect(rf"^mqtt: disconnected from broker\.hil\.test:{port} \((closed by broker|reset)\), "
                   r"reconnecting in 1 s$", timeout=30)
    console.expect(rf"^mqtt: connected to broker\.hil\.test:{port} as {DEVICE}$", timeout=30)
    console.expect(r"^test: publish \d+ bytes on .*: sent$", timeout=10)
