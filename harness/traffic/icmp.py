"""ICMP echo at a board, counted as the security module counts it.

Raw ICMP sockets need root (or CAP_NET_RAW). Bytes are the IP payload (ICMP header and data) of
each packet; the module keys ICMP by addresses alone (ports 0/0) and aggregates a ping and its
reply into one record.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass, field

from harness.netpolicy import TargetPolicy
from harness.telemetry.model import Protocol
from harness.traffic.checksum import inet_checksum
from harness.traffic.exchange import Bound, Exchange, Target, begin, finish, key

ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
ICMP_HEADER = 8


def icmp_echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMP echo request (header and payload, no IP header) with its checksum."""
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, inet_checksum(header + payload), ident, seq) + payload


@dataclass
class PingResult:
    """What a ping sent and got back (bytes as the module counts them)."""

    address: str
    sent: int = 0
    replies: int = 0
    rtts: list[float] = field(default_factory=list)
    request_bytes: int = 0
    reply_bytes: int = 0
    source: str | None = None  # the harness address the requests left from


def ping(address: str, count: int = 1, *, policy: TargetPolicy, payload: bytes | None = None, size: int = 32,
         timeout: float = 2.0, interval: float = 0.0, wait: bool = True) -> PingResult:
    """Send ``count`` echo requests to ``address`` (which the policy must allow); with ``wait``,
    wait up to ``timeout`` for each reply before the next request. ``interval`` paces requests (a
    rate, not a wait for an event)."""
    policy.check(address)
    ident = os.getpid() & 0xFFFF
    result = PingResult(address)
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.connect((address, 0))
        result.source = sock.getsockname()[0]
        for seq in range(count):
            data = payload if payload is not None else os.urandom(size)
            request = icmp_echo_request(ident, seq & 0xFFFF, data)
            sent_at = time.monotonic()
            sock.send(request)
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


def icmp_echo(target: Target, count: int = 3, size: int = 56, *, interval: float = 0.0) -> Exchange:
    """Ping the board ``count`` times: one ICMP record, requests in, replies out."""
    exchange = begin("icmp-echo", target)
    result = ping(str(target.address), count, policy=target.policy, size=size, interval=interval)
    assert result.source is not None
    k = key(target.address, result.source, 0, 0, Protocol.ICMP)
    exchange.details.update(sent=result.sent, replies=result.replies)
    return finish(exchange, [k], [Bound(k, (result.request_bytes, result.request_bytes),
                                        (result.reply_bytes, result.reply_bytes))])
