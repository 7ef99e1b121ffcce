"""Where the agent counts, on an emulated board (fast preset, stock console): outbound at the IP
output before ARP (broadcasts, datagrams waiting for ARP), inbound after the IP layer (fragments
dropped, no phantom flows, IP options counted), loopback both ways; with IP_FRAGMENT_ENABLE=1,
reassembled datagrams count their first fragment and a datagram sent in fragments counts once."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from ipaddress import IPv4Address

import pytest
from scapy.layers.inet import ICMP, IP, UDP, IPOption_NOP
from scapy.layers.l2 import ARP, Ether
from scapy.utils import rdpcap

from harness.telemetry.model import Flow, PayloadType, Protocol
from harness.traffic import ping

from .conftest import NEEDS, STOCK_CONSOLE, AgentBoard

pytestmark = [pytest.mark.needs(*NEEDS)]

ECHO_PORT = 7
WINDOWS = 20.0  # a few 2 s NetworkActivity windows, collected and delivered
FOREIGN_MAC = "02:00:00:00:00:77"


@pytest.fixture(scope="module")
def board(agent_board_factory: Callable[..., AbstractContextManager[AgentBoard]]) -> Iterator[AgentBoard]:
    with agent_board_factory("hil-agent-capture-1", STOCK_CONSOLE) as b:
        yield b


def _udp(flow: Flow) -> bool:
    return flow.protocol == Protocol.UDP


def _totals(flows: list[Flow]) -> dict[tuple[Protocol, int, int, str], tuple[int, int]]:
    """Bytes in and out per (protocol, local port, remote port, remote address), over windows."""
    totals: dict[tuple[Protocol, int, int, str], tuple[int, int]] = {}
    for f in flows:
        key = (f.protocol, f.local_port, f.remote_port, str(f.remote_address))
        bytes_in, bytes_out = totals.get(key, (0, 0))
        totals[key] = (bytes_in + f.bytes_in, bytes_out + f.bytes_out)
    return totals


@pytest.mark.timeout(120)
def test_the_dhcp_exchange_after_a_link_flap_counts_its_broadcasts(board: AgentBoard) -> None:
    """The cable comes back: DHCP starts over, DISCOVER and REQUEST go out from 0.0.0.0:68 to the
    limited broadcast, and NetworkActivity carries them (the module counts at the IP filter, which
    sees broadcasts), with the server's answers inbound."""
    mark = board.collector.mark()
    board.machine.link_down()
    board.console.expect(r"^net: link down$", timeout=5)
    board.machine.link_up()
    board.console.expect(r"^net: link up$", timeout=5)
    out = board.wait_for_flow(
        lambda f: _udp(f) and str(f.local_address) == "0.0.0.0" and f.local_port == 68
        and str(f.remote_address) == "255.255.255.255" and f.remote_port == 67,
        "DHCP from 0.0.0.0:68 to 255.255.255.255:67", WINDOWS, since=mark)
    assert out.bytes_in == 0 and out.bytes_out >= 2 * (8 + 240), f"DISCOVER + REQUEST: {out}"
    server = str(board.net.services_address)
    answer = board.wait_for_flow(lambda f: _udp(f) and f.local_port == 68 and f.remote_port == 67
                                 and str(f.remote_address) == server, "the server's OFFER and ACK", WINDOWS,
                                 since=mark)
    assert answer.bytes_in >= 8 + 240, f"OFFER and ACK: {answer}"


@pytest.mark.timeout(120)
def test_an_inbound_fragmented_datagram_is_dropped_uncounted(board: AgentBoard) -> None:
    """A 3,000-byte UDP datagram arrives in three fragments: the IP layer drops them (no reassembly
    on a stock image), nothing is counted and no flow is made from a fragment's payload."""
    host = str(board.net.harness_address)
    mark = board.collector.mark()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        sock.sendto(b"B" * 3000, (board.address, ECHO_PORT))  # fragments: ports 0x4242 if misread
        sock.sendto(b"after", (board.address, ECHO_PORT))
        assert sock.recvfrom(4096)[0] == b"after", "the board answered the fragmented datagram"
    flow = board.wait_for_flow(lambda f: _udp(f) and f.local_port == ECHO_PORT and f.remote_port == port,
                               f"the echo flow from port {port}", WINDOWS, since=mark)
    board.collector.expect_events(board.device, 2, within=WINDOWS, kind=PayloadType.NETWORK_ACTIVITY,
                                  since=board.collector.mark())
    flows = board.flows(mark)
    echo = {k: v for k, v in _totals(flows).items() if k[0] == Protocol.UDP and k[2] == port}
    assert echo == {(Protocol.UDP, ECHO_PORT, port, str(board.net.harness_address)): (13, 13)}, (
        f"only the small datagram counts: {echo}")
    phantoms = [f for f in flows if 0x4242 in (f.local_port, f.remote_port) or (_udp(f) and 0 in
                (f.local_port, f.remote_port))]
    assert not phantoms, f"flows made of fragment payload: {phantoms}"
    wire = [p for p in rdpcap(str(board.pcap)) if IP in p and p[IP].dst == board.address and p[IP].frag > 0]
    assert wire, f"no fragment reached the board in {board.pcap}"
    assert flow.local_port == ECHO_PORT


@pytest.mark.timeout(120)
def test_a_reply_to_an_address_that_never_answers_arp_is_counted(board: AgentBoard) -> None:
    """The reply waits for ARP that never comes and is dropped; the module counted it at the IP
    filter all the same."""
    assert board.net.subnet is not None
    ghost = str(board.net.subnet.network_address + 77)  # nothing on the test network has it
    mark = board.collector.mark()
    board.send_frames([Ether(src=FOREIGN_MAC, dst=board.mac) / IP(src=ghost, dst=board.address)
                       / UDP(sport=5555, dport=ECHO_PORT) / (b"g" * 20)])
    flow = board.wait_for_flow(lambda f: _udp(f) and str(f.remote_address) == ghost,
                               f"the flow with {ghost}", WINDOWS, since=mark)
    assert (flow.local_port, flow.remote_port, flow.bytes_in, flow.bytes_out) == (ECHO_PORT, 5555, 28, 28)
    frames = rdpcap(str(board.pcap))
    asked = [p for p in frames if ARP in p and p[ARP].op == 1 and p[ARP].pdst == ghost]
    sent = [p for p in frames if IP in p and p[IP].dst == ghost]
    assert asked and not sent, f"expected ARP requests for {ghost} and no datagram to it ({board.pcap})"


@pytest.mark.timeout(120)
def test_loopback_is_counted_out_and_in(board: AgentBoard) -> None:
    """A datagram from the board's own address to its echo port: the echo reply goes to ourselves
    through the loopback, finds a closed port, and the ICMP error comes back the same way; the
    module counts each of them out and in."""
    me = board.address
    mark = board.collector.mark()
    board.send_frames([Ether(src=FOREIGN_MAC, dst=board.mac) / IP(src=me, dst=me)
                       / UDP(sport=6000, dport=ECHO_PORT) / (b"l" * 10)])
    board.wait_for_flow(lambda f: f.protocol == Protocol.ICMP and str(f.remote_address) == me,
                        "the looped-back ICMP error", WINDOWS, since=mark)
    records = {(f.protocol, f.local_port, f.remote_port): (f.bytes_in, f.bytes_out)
               for f in board.flows(mark) if str(f.local_address) == me and str(f.remote_address) == me}
    assert records == {
        (Protocol.UDP, ECHO_PORT, 6000): (18, 18),  # the request (from the wire) and the echo reply
        (Protocol.UDP, 6000, ECHO_PORT): (18, 0),  # the reply arriving through the loopback
        (Protocol.ICMP, 0, 0): (36, 36),  # port unreachable: header, 20 + 8 bytes of the reply
    }, records


@pytest.mark.timeout(120)
def test_inbound_ip_options_are_counted(board: AgentBoard) -> None:
    """NetX Duo strips inbound options but keeps the total length: an echo request with 4 option
    bytes counts 4 more in than its reply (sent with the same options) counts out."""
    source = str(board.net.harness_address)
    mark = board.collector.mark()
    board.send_frames([Ether(src=FOREIGN_MAC, dst=board.mac)
                       / IP(src=source, dst=board.address, options=[IPOption_NOP()] * 4)
                       / ICMP(id=0x4849, seq=n) / (b"o" * 24) for n in range(3)])
    flow = board.wait_for_flow(lambda f: f.protocol == Protocol.ICMP and str(f.remote_address) == source,
                               "the ICMP flow", WINDOWS, since=mark)
    board.collector.expect_events(board.device, 2, within=WINDOWS, kind=PayloadType.NETWORK_ACTIVITY,
                                  since=board.collector.mark())
    totals = _totals(board.flows(mark))
    assert totals[(Protocol.ICMP, 0, 0, source)] == (3 * (4 + 8 + 24), 3 * (8 + 24)), flow


@pytest.mark.timeout(240)
def test_with_reassembly_a_datagram_counts_its_first_fragment_and_a_fragmented_reply_once(
    agent_board_factory: Callable[..., AbstractContextManager[AgentBoard]],
) -> None:
    """IP_FRAGMENT_ENABLE=1 (nx_ip_fragment_enable): a 3,000-byte ping counts 1,480 in (the first
    fragment's total length, which NetX keeps) and 3,008 out (the reply, counted whole before it is
    cut); a 3,000-byte UDP echo likewise, with no flow made of a fragment."""
    with agent_board_factory("hil-agent-reass-1", {**STOCK_CONSOLE, "IP_FRAGMENT_ENABLE": 1}) as b:
        host = str(b.net.harness_address)
        mark = b.collector.mark()
        assert ping(b.address, 1, size=3000, timeout=5, policy=b.policy).replies == 1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((host, 0))
            sock.settimeout(5)
            port = sock.getsockname()[1]
            data = os.urandom(3000)
            sock.sendto(data, (b.address, ECHO_PORT))
            assert sock.recvfrom(4096)[0] == data
        icmp = b.wait_for_flow(lambda f: f.protocol == Protocol.ICMP and str(f.remote_address) == host,
                               "the ping", WINDOWS, since=mark)
        udp = b.wait_for_flow(lambda f: _udp(f) and f.remote_port == port, "the UDP echo", WINDOWS, since=mark)
        b.collector.expect_events(b.device, 2, within=WINDOWS, kind=PayloadType.NETWORK_ACTIVITY,
                                  since=b.collector.mark())
        assert IPv4Address(b.address) == icmp.local_address == udp.local_address
        # TCP aside (the hub connection; stray segments a host may send): fragments are UDP and ICMP
        totals = {k: v for k, v in _totals(b.flows(mark)).items() if k[3] == host and k[0] != Protocol.TCP}
        assert totals == {
            (Protocol.ICMP, 0, 0, host): (1480, 3008),
            (Protocol.UDP, ECHO_PORT, port, host): (1480, 3008),
        }, f"the ping, the echo and nothing else (no flow from a fragment): {totals}"
