"""Reducing a capture to what the security module counts (spec 3.2), on crafted packets."""

from __future__ import annotations

import ipaddress

from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from harness.telemetry.model import Protocol
from harness.traffic.capture import module_datagrams
from harness.traffic.windows import reduce_windows

BOARD, HOST = "10.231.1.101", "10.231.1.1"
BOARD_MAC, HOST_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
A = ipaddress.IPv4Address


def out(pkt, t: float = 0.0):  # from the board
    return t, bytes(Ether(src=BOARD_MAC, dst=HOST_MAC) / pkt)


def inn(pkt, t: float = 0.0, dst_mac: str = BOARD_MAC):  # to the board
    return t, bytes(Ether(src=HOST_MAC, dst=dst_mac) / pkt)


def test_outbound_fragments_are_one_whole_datagram_inbound_fragments_are_dropped() -> None:
    big = IP(src=BOARD, dst=HOST, id=7) / UDP(sport=7, dport=5000) / Raw(b"x" * 3000)
    frames = [out(f, 1.0) for f in fragment(big, 1480)]
    frames += [inn(f, 2.0) for f in fragment(IP(src=HOST, dst=BOARD, id=8) / UDP(sport=5000, dport=7)
                                             / Raw(b"y" * 3000), 1480)]
    seen = module_datagrams(frames, BOARD)
    assert [(d.outbound, d.key[2:], d.nbytes) for d in seen] == [(True, (7, 5000, Protocol.UDP), 3008)]
    reassembled = module_datagrams(frames, BOARD, reassembly=True)
    assert [(d.outbound, d.nbytes) for d in reassembled] == [(True, 3008), (False, 1480)]  # first fragment's


def test_inbound_ip_options_count_and_a_bad_header_checksum_is_dropped() -> None:
    with_options = IP(src=HOST, dst=BOARD, options=b"\x01\x01\x01\x00") / ICMP() / Raw(b"z" * 10)
    bad = IP(bytes(IP(src=HOST, dst=BOARD) / ICMP()))
    bad.chksum ^= 0xFFFF
    seen = module_datagrams([inn(with_options), inn(bad)], BOARD)
    assert [(d.key, d.nbytes) for d in seen] == [((A(BOARD), A(HOST), 0, 0, Protocol.ICMP), 4 + 8 + 10)]


def test_dhcp_broadcasts_count_both_ways_the_board_known_by_its_mac() -> None:
    discover = IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67) / Raw(b"d" * 300)
    offer = IP(src="10.231.1.2", dst="255.255.255.255") / UDP(sport=67, dport=68) / Raw(b"o" * 300)
    seen = module_datagrams([out(discover), inn(offer, dst_mac="ff:ff:ff:ff:ff:ff")], BOARD, mac=BOARD_MAC)
    assert [(d.outbound, str(d.key[0]), d.key[2], d.nbytes) for d in seen] == [
        (True, "0.0.0.0", 68, 308), (False, BOARD, 68, 308)]


def test_others_traffic_is_not_the_boards() -> None:
    other = IP(src=HOST, dst="10.231.1.102") / UDP(sport=1, dport=2)
    assert module_datagrams([inn(other, dst_mac="02:00:00:00:00:09")], BOARD) == []


def test_offload_stacks_report_payload_plus_synthesized_headers() -> None:
    syn = IP(src=HOST, dst=BOARD) / TCP(sport=5000, dport=7, flags="S")
    data = IP(src=HOST, dst=BOARD) / TCP(sport=5000, dport=7, flags="PA") / Raw(b"q" * 100)
    udp = IP(src=BOARD, dst=HOST) / UDP(sport=7, dport=5000) / Raw(b"u" * 50)
    ping = IP(src=HOST, dst=BOARD) / ICMP()
    seen = module_datagrams([inn(syn), inn(data), out(udp), inn(ping)], BOARD, stack="offload")
    assert [(d.protocol, d.nbytes) for d in seen] == [(Protocol.TCP, 120), (Protocol.UDP, 58)]


def security_publish(t: float):
    topic = b"devices/d/messages/events/mti=2.3-1-0-0&%24.ifid=x"
    body = len(topic).to_bytes(2, "big") + topic + b"\x00\x01" + b"payload"
    mqtt = bytes([0x32, 0x80 | len(body), 0x80, 0x80, 0]) + body
    return out(IP(src=BOARD, dst=HOST) / TCP(sport=49152, dport=1883, flags="PA") / Raw(mqtt), t)


def test_windows_end_at_each_security_publish_and_the_pool_cap_stops_all_counting() -> None:
    frames = [inn(IP(src=HOST, dst=BOARD) / UDP(sport=6000, dport=7) / Raw(b"a"), 1.0), security_publish(2.0)]
    frames += [inn(IP(src=HOST, dst=BOARD) / UDP(sport=7000 + i, dport=7) / Raw(b"b"), 3.0 + i / 100)
               for i in range(3)]
    frames += [inn(IP(src=HOST, dst=BOARD) / UDP(sport=7000, dport=7) / Raw(b"b"), 4.0)]  # a known flow, later
    windows = reduce_windows(module_datagrams(frames, BOARD), cap=3)
    assert len(windows) == 2 and windows[0].end == 2.0
    assert [f.remote_port for f in windows[0].flows()] == [6000]
    second = {f.remote_port: (f.bytes_in, f.bytes_out) for f in windows[1].flows()}
    # the publish opens the second window and is its first flow; two more fill the pool of 3; the
    # third new flow and a later datagram of a flow already recorded are both left uncounted
    assert set(second) == {1883, 7000, 7001} and windows[1].dropped == 2
    assert second[7000] == (9, 0)


def test_a_window_differing_only_at_its_ends_is_judged_by_the_capture_not_failed() -> None:
    from harness.telemetry.model import Flow
    from harness.traffic.windows import judge_window

    request = inn(IP(src=HOST, dst=BOARD) / UDP(sport=7000, dport=7) / Raw(b"q"), 2.99)
    reply = out(IP(src=BOARD, dst=HOST) / UDP(sport=7, dport=7000) / Raw(b"q"), 3.01)  # after the PUBLISH
    frames = [security_publish(1.0), request, security_publish(3.0), reply, security_publish(5.0)]
    datagrams = module_datagrams(frames, BOARD)
    windows = reduce_windows(datagrams)
    mqtt = next(f for f in windows[1].flows() if f.remote_port == 1883)
    both = Flow(A(BOARD), A(HOST), 7, 7000, Protocol.UDP, bytes_in=9, bytes_out=9)
    # the board counted the reply before its collection: one record with both directions
    assert judge_window([mqtt, both], windows, datagrams) is None
    inflated = Flow(A(BOARD), A(HOST), 7, 7000, Protocol.UDP, bytes_in=9, bytes_out=99)
    assert "reported, not predicted" in (judge_window([mqtt, inflated], windows, datagrams) or "")
    phantom = Flow(A(BOARD), A(HOST), 9, 9000, Protocol.UDP, bytes_in=9)
    assert judge_window([mqtt, both, phantom], windows, datagrams) is not None


def test_publishes_a_second_apart_end_two_windows_and_publishes_in_the_same_tick_one() -> None:
    """PENDING -> ACTIVE: the kept message goes out one second after the hub returns, and the next
    collection's a second later (a little less on the capture's clock): two windows. Two publishes
    in one tick (the kept message and a fresh collection due in that second) are one end."""
    flow = [inn(IP(src=HOST, dst=BOARD) / UDP(sport=6000, dport=7) / Raw(b"a"), 2.5)]
    windows = reduce_windows(module_datagrams([security_publish(2.0), *flow, security_publish(2.98)], BOARD))
    assert [(w.start, w.end) for w in windows] == [(None, 2.0), (2.0, 2.98), (2.98, None)]
    assert [f.remote_port for f in windows[1].flows()] == [1883, 6000]
    same_tick = reduce_windows(module_datagrams([security_publish(2.0), security_publish(2.004), *flow], BOARD))
    assert [(w.start, w.end) for w in same_tick] == [(None, 2.0), (2.0, None)]
