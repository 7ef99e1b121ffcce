"""The agent under QEMU (fast preset: first collection 1 s, NetworkActivity every 2 s,
SystemInformation and Heartbeat every 6 s), console lines as a stock image has them (none): what
reaches the broker, and flows checked against the board link's pcap."""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.utils import rdpcap

from harness.telemetry.model import Flow, NetworkActivity, PayloadType, Protocol
from harness.traffic import ping, tcp_echo

from .conftest import NEEDS, STOCK_CONSOLE, AgentBoard

pytestmark = [pytest.mark.needs(*NEEDS)]

DEVICE = "hil-agent-fast-1"
ECHO_PORT = 7
SECURITY_TOPIC = (
    f"devices/{DEVICE}/messages/events/mti=2.3-1-0-0&%24.ifid=urn%3Aazureiot%3ASecurity%3ASecurityAgent%3A1"
)
ORDER = {PayloadType.NETWORK_ACTIVITY: 0, PayloadType.SYSTEM_INFORMATION: 1, PayloadType.HEARTBEAT: 2}
FlowKey = tuple[str, str, int, int, Protocol]


@pytest.fixture(scope="module")
def board(agent_board_factory: Callable[..., AbstractContextManager[AgentBoard]]) -> Iterator[AgentBoard]:
    with agent_board_factory(DEVICE, STOCK_CONSOLE) as b:
        yield b


def _messages(board: AgentBoard, since: int = 0) -> list:  # type: ignore[type-arg]
    return board.collector.stream(DEVICE).messages_since(since)


def _network_flows(board: AgentBoard, since: int = 0) -> list[list[Flow]]:
    out = []
    for m in _messages(board, since):
        assert m.message is not None, f"undecodable message: {m.error}"
        out.append([f for e in m.message.events if isinstance(e.payload, NetworkActivity) for f in e.payload.ipv4])
    return out


@pytest.mark.timeout(180)
def test_messages_topic_order_intervals_and_ids(board: AgentBoard) -> None:
    mark = board.collector.mark()
    board.collector.expect_events(DEVICE, 3, within=30, kind=PayloadType.SYSTEM_INFORMATION, since=mark)
    messages = _messages(board)
    assert messages and all(m.topic == SECURITY_TOPIC for m in messages)
    assert not board.collector.stream(DEVICE).undecodable
    na_times, low_times = [], []
    for m in messages:
        events = m.message.events
        kinds = [e.kind for e in events]
        assert kinds == sorted(kinds, key=ORDER.__getitem__), f"event order {kinds}"
        assert len(set(kinds)) == len(kinds)
        assert len({e.time for e in events}) == 1, "one collection cycle per message"
        assert abs(m.received - events[0].time) < 3, "event time far from arrival time"
        for e in events:
            interval = 2 if e.kind == PayloadType.NETWORK_ACTIVITY else 6
            assert e.collection_interval == interval
        na_times += [e.time for e in events if e.kind == PayloadType.NETWORK_ACTIVITY]
        si = [e.time for e in events if e.kind == PayloadType.SYSTEM_INFORMATION]
        hb = [e.time for e in events if e.kind == PayloadType.HEARTBEAT]
        assert si == hb, "SystemInformation and Heartbeat ride together"
        low_times += si
        assert m.message.security_module_id == "defender-iot-micro-agent"
        assert str(m.message.security_module_version) == "3.5.4"
    assert all(b - a == 6 for a, b in itertools.pairwise(low_times)), low_times
    # the own MQTT connection shows in every window, so NetworkActivity comes every 2 s
    assert all(b - a == 2 for a, b in itertools.pairwise(na_times)), na_times
    assert (na_times[0] - low_times[0]) % 2 == 0
    # event ids: two little-endian counters, +1 per event, across the whole boot
    ids = [e.id for m in messages for e in m.message.events]
    for a, b in itertools.pairwise(ids):
        for half in (slice(0, 8), slice(8, 16)):
            assert (int.from_bytes(b[half], "little") - int.from_bytes(a[half], "little")) % 2**64 == 1


@pytest.mark.timeout(120)
def test_qos1_with_netx_framing_on_the_wire(board: AgentBoard) -> None:
    board.collector.expect_events(DEVICE, 2, within=20, kind=PayloadType.HEARTBEAT)
    payloads = {m.payload for m in _messages(board)}
    publishes = []
    for pkt in rdpcap(str(board.pcap)):
        if IP in pkt and TCP in pkt and pkt[IP].src == board.address and pkt[TCP].dport == board.broker_port:
            data = bytes(pkt[TCP].payload)
            if data[:1] == b"\x32":
                publishes.append(data)
    assert publishes, f"no PUBLISH from the board in {board.pcap}"
    seen = set()
    for data in publishes:
        assert all(b & 0x80 for b in data[1:4]) and not data[4] & 0x80, f"Remaining Length {data[1:5].hex()}"
        remaining = sum((data[1 + i] & 0x7F) << (7 * i) for i in range(4))
        body = data[5 : 5 + remaining]
        (topic_len,) = struct.unpack_from(">H", body, 0)
        assert body[2 : 2 + topic_len].decode() == SECURITY_TOPIC
        seen.add(body[2 + topic_len + 2 :])  # after the packet identifier (QoS 1)
    missing = payloads - seen
    assert len(missing) <= 1, f"{len(missing)} received payloads not among the PUBLISHes in {board.pcap}"


def _pcap_flows(board: AgentBoard) -> dict[FlowKey, list[int]]:
    """Per flow seen from the board (local, remote, local port, remote port, protocol): bytes in
    and out as the module counts them (IP total length minus the IP header)."""
    totals: dict[FlowKey, list[int]] = defaultdict(lambda: [0, 0])
    for pkt in rdpcap(str(board.pcap)):
        if IP not in pkt:
            continue
        ip = pkt[IP]
        outbound = ip.src == board.address
        if not outbound and ip.dst != board.address:
            continue
        if TCP in pkt or UDP in pkt:
            l4 = pkt[TCP] if TCP in pkt else pkt[UDP]
            proto = Protocol.TCP if TCP in pkt else Protocol.UDP
            ports = (l4.sport, l4.dport) if outbound else (l4.dport, l4.sport)
        elif ICMP in pkt:
            proto, ports = Protocol.ICMP, (0, 0)
        else:
            continue
        local, remote = (ip.src, ip.dst) if outbound else (ip.dst, ip.src)
        totals[(local, remote, ports[0], ports[1], proto)][1 if outbound else 0] += ip.len - ip.ihl * 4
    return totals


def _reported_flows(board: AgentBoard) -> dict[FlowKey, list[int]]:
    totals: dict[FlowKey, list[int]] = defaultdict(lambda: [0, 0])
    for flows in _network_flows(board):
        for f in flows:
            key = (str(f.local_address), str(f.remote_address), f.local_port, f.remote_port, f.protocol)
            totals[key][0] += f.bytes_in
            totals[key][1] += f.bytes_out
    return totals


@pytest.mark.timeout(180)
def test_echo_exchanges_are_flows_with_the_pcaps_byte_counts(board: AgentBoard) -> None:
    host = str(board.net.harness_address)
    payload = os.urandom(3000)
    echo = tcp_echo(board.address, ECHO_PORT, payload, policy=board.policy)
    assert len(echo.reply) == len(payload), f"TCP echo closed after {len(echo.reply)} bytes"
    tcp_port = echo.local_port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((host, 0))
        udp.settimeout(5)
        udp_port = udp.getsockname()[1]
        for n in (10, 100, 1000):
            udp.sendto(os.urandom(n), (board.address, ECHO_PORT))
            assert len(udp.recvfrom(2048)[0]) == n
    assert ping(board.address, 5, size=48, policy=board.policy).replies == 5
    # let the TCP close finish and two more windows be collected and delivered
    mark = board.collector.mark()
    board.collector.expect_events(DEVICE, 3, within=20, kind=PayloadType.NETWORK_ACTIVITY, since=mark)
    wire, reported = _pcap_flows(board), _reported_flows(board)
    keys = [
        (board.address, host, ECHO_PORT, tcp_port, Protocol.TCP),
        (board.address, host, ECHO_PORT, udp_port, Protocol.UDP),
        (board.address, host, 0, 0, Protocol.ICMP),
    ]
    for key in keys:
        assert key in wire, f"{key} not in the pcap {board.pcap}"
        assert reported.get(key) == wire[key], (
            f"{key[4].name} flow {key}: reported in/out {reported.get(key)}, pcap {wire[key]} ({board.pcap})"
        )
    # the five pings, and before them the bring-up's own check that the board answers at its address
    assert wire[keys[0]][0] >= 3000 and wire[keys[2]][0] >= 5 * 56 and wire[keys[2]][0] == wire[keys[2]][1]


@pytest.mark.timeout(180)
def test_a_burst_of_more_than_64_flows(board: AgentBoard) -> None:
    """The first 64 flows of the window are recorded; after that nothing counts, not even more
    packets of a recorded flow."""
    host = str(board.net.harness_address)
    socks = []
    try:
        for _ in range(150):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((host, 0))
            socks.append(s)
        ports = [s.getsockname()[1] for s in socks]
        # start right after a window closed: the burst takes ~0.5 s of the 2 s window
        mark = board.collector.mark()
        board.collector.expect_events(DEVICE, 1, within=10, kind=PayloadType.NETWORK_ACTIVITY, since=mark)
        burst_mark = board.collector.mark()
        for s in socks:
            s.sendto(b"burst-0123456789", (board.address, ECHO_PORT))  # 8 + 16 bytes of UDP
            time.sleep(0.002)  # pacing: the emulated controller's receive FIFO is small
        socks[0].sendto(b"again-0123456789", (board.address, ECHO_PORT))
        board.collector.expect_events(DEVICE, 3, within=20, kind=PayloadType.NETWORK_ACTIVITY, since=burst_mark)
    finally:
        for s in socks:
            s.close()
    windows = _network_flows(board, burst_mark)
    full = [w for w in windows if len(w) == 64]
    assert len(full) == 1, f"expected one window with 64 records, got sizes {[len(w) for w in windows]}"
    recorded = {f.remote_port: f for f in full[0] if f.protocol == Protocol.UDP and f.local_port == ECHO_PORT}
    order = [i for i, p in enumerate(ports) if p in recorded]
    assert order and order == list(range(order[0], order[0] + len(order))), "recorded burst flows are not a run"
    first_missing = ports[order[-1] + 1]
    later = {f.remote_port for w in windows for f in w if f.protocol == Protocol.UDP}
    assert first_missing not in later, "the flow after the run was counted later: the run ended at the window"
    first = recorded[ports[order[0]]]
    assert first.bytes_in == 24, f"first burst flow: bytes in {first.bytes_in} (a second datagram counted?)"
    assert first.bytes_out in (0, 24)


@pytest.mark.timeout(120)
def test_a_stock_image_prints_none_of_the_modules_lines(board: AgentBoard) -> None:
    mark = board.collector.mark()
    board.collector.expect_events(DEVICE, 1, within=20, kind=PayloadType.HEARTBEAT, since=mark)
    text = board.console.text
    assert "mqtt: connected" in text, "the console was not read"
    for word in ("Security Module", "security message", "Security Message"):
        assert word not in text, f"{word!r} on the console of a stock image:\n{text}"
