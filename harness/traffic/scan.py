"""Scans and bursts: many flows at once, past the module's 64-flow cap.

- :func:`syn_scan`: a TCP SYN to each port of a range from one source port (crafted with scapy,
  sent through a raw socket so the kernel routes it; the host's own stack answers the board's
  SYN-ACKs with RSTs, as a scanner's host does). Closed ports answer RST when the board's
  capabilities say so.
- :func:`udp_scan`: a datagram to each port; closed ports answer ICMP port unreachable (one ICMP
  record for them all: the module keys ICMP by addresses alone).
- :func:`flow_burst`: datagrams to the UDP echo service from ``count`` distinct source ports, at a
  limited rate: ``count`` new flows.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable

from harness.telemetry.model import Protocol
from harness.traffic.capture import Key
from harness.traffic.exchange import Exchange, Target, begin, finish, key

DEFAULT_RATE = 200.0  # packets a second


def _source_for(target: Target) -> str:
    """The harness address that traffic to the board leaves from (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((target.check(), 9))
        return str(probe.getsockname()[0])


def _paced(items: Iterable[int], rate: float) -> Iterable[int]:
    start = time.monotonic()
    for n, item in enumerate(items):
        due = start + n / rate
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)  # a send rate, not a wait for an event
        yield item


def drain(socks: Iterable[socket.socket], quiet: float = 0.3, limit: float = 3.0) -> int:
    """Read the replies arriving on ``socks`` until none came for ``quiet`` seconds (at most
    ``limit``), so they are received, not answered with port unreachables after a close."""
    import select

    socks = list(socks)
    got = 0
    deadline = time.monotonic() + limit
    while socks and (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select(socks, [], [], min(quiet, left))
        if not ready:
            break
        for sock in ready:
            try:
                sock.recv(65535)
                got += 1
            except OSError:
                pass
    return got


def syn_scan(target: Target, ports: range, *, rate: float = DEFAULT_RATE, source_port: int = 40000) -> Exchange:
    from scapy.layers.inet import IP, TCP

    exchange = begin("syn-scan", target)
    source = _source_for(target)
    keys: list[Key] = []
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        for port in _paced(ports, rate):
            packet = bytes(IP(src=source, dst=str(target.address)) / TCP(sport=source_port, dport=port, flags="S",
                                                                          seq=port * 1000))
            raw.sendto(packet, (str(target.address), 0))
            keys.append(key(target.address, source, port, source_port, Protocol.TCP))
    exchange.details.update(ports=[ports.start, ports.stop], source_port=source_port, rate=rate)
    return finish(exchange, keys)


def udp_scan(target: Target, ports: range, *, rate: float = DEFAULT_RATE, payload: bytes = b"hil-scan") -> Exchange:
    exchange = begin("udp-scan", target)
    keys: list[Key] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("", 0))
        address = target.check()
        for port in _paced(ports, rate):
            sock.sendto(payload, (address, port))
        drain([sock])
        source, source_port = _source_for(target), sock.getsockname()[1]
    keys = [key(target.address, source, port, source_port, Protocol.UDP) for port in ports]
    keys.append(key(target.address, source, 0, 0, Protocol.ICMP))  # port unreachables
    exchange.details.update(ports=[ports.start, ports.stop], source_port=source_port, rate=rate)
    return finish(exchange, keys)


def flow_burst(target: Target, count: int = 100, *, rate: float = DEFAULT_RATE, port: int | None = None,
               payload: bytes = b"hil-burst") -> Exchange:
    """``count`` new flows: one datagram to the UDP echo service from each of ``count`` sockets."""
    port = port or target.udp_echo
    if not port:
        raise ValueError("the board has no UDP echo service: give port=")
    exchange = begin("flow-burst", target)
    address = target.check()
    source = _source_for(target)
    socks = []
    keys: list[Key] = []
    try:
        for _ in _paced(range(count), rate):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(sock)
            sock.sendto(payload, (address, port))
            keys.append(key(target.address, source, port, sock.getsockname()[1], Protocol.UDP))
        replies = drain(socks)
    finally:
        for sock in socks:
            sock.close()
    exchange.details.update(count=count, rate=rate, replies=replies)
    return finish(exchange, keys)
