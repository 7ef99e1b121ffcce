"""Traffic the harness sends at boards. For now ICMP echo and a TCP echo exchange.

Every generator asks a ``TargetPolicy`` (loopback, the lab's test networks, networks the harness
made) before it sends, when one is given; tests on their own namespaces pass the policy of their
network or none. Raw ICMP sockets need root (or CAP_NET_RAW).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass, field

from harness.netpolicy import TargetPolicy

ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
ICMP_HEADER = 8


def inet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp_echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMP echo request (header and payload, no IP header) with its checksum."""
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, inet_checksum(header + payload), ident, seq) + payload


@dataclass
class PingResult:
    """What a ping sent and got back. Bytes are as the security module counts them: the IP payload
    (ICMP header plus data) of each packet."""

    address: str
    sent: int = 0
    replies: int = 0
    rtts: list[float] = field(default_factory=list)
    request_bytes: int = 0
    reply_bytes: int = 0


def ping(address: str, count: int = 1, *, payload: bytes | None = None, size: int = 32, timeout: float = 2.0,
         interval: float = 0.0, wait: bool = True, policy: TargetPolicy | None = None) -> PingResult:
    """Send ``count`` echo requests to ``address``; with ``wait``, wait up to ``timeout`` for each
    reply before the next request. ``interval`` paces requests (a rate, not a wait for an event)."""
    if policy is not None:
        policy.check(address)
    ident = os.getpid() & 0xFFFF
    result = PingResult(address)
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        for seq in range(count):
            data = payload if payload is not None else os.urandom(size)
            request = icmp_echo_request(ident, seq & 0xFFFF, data)
            sent_at = time.monotonic()
            sock.sendto(request, (address, 0))
            result.sent += 1
            result.request_bytes += len(request)
            if wait and _await_reply(sock, address, ident, seq & 0xFFFF, data, sent_at + timeout):
                result.replies += 1
                result.reply_bytes += len(request)
                result.rtts.append(time.monotonic() - sent_at)
            if interval:
                time.sleep(interval)
    return result


def _await_reply(sock: socket.socket, address: str, ident: int, seq: int, data: bytes, deadline: float) -> bool:
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            packet, (source, _) = sock.recvfrom(65535)
        except TimeoutError:
            return False
        icmp = packet[(packet[0] & 0x0F) * 4:]
        if (source == address and len(icmp) >= ICMP_HEADER and icmp[0] == ICMP_ECHO_REPLY
                and struct.unpack_from("!HH", icmp, 4) == (ident, seq) and icmp[ICMP_HEADER:] == data):
            return True
    return False


@dataclass
class TcpEcho:
    """One TCP echo exchange: the local port it came from (the flow's key) and what came back."""

    local_port: int
    reply: bytes


def tcp_echo(address: str, port: int, payload: bytes, *, timeout: float = 10.0,
             policy: TargetPolicy | None = None) -> TcpEcho:
    """Connect, send ``payload``, read until as many bytes came back or the peer closed, then close."""
    if policy is not None:
        policy.check(address)
    with socket.create_connection((address, port), timeout=timeout) as sock:
        local_port = sock.getsockname()[1]
        sock.sendall(payload)
        got = bytearray()
        while len(got) < len(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    return TcpEcho(local_port, bytes(got))
