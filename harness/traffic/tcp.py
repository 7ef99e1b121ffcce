"""TCP at a board's echo service: a session of N bytes each way, closed gracefully or reset."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from harness.netpolicy import TargetPolicy
from harness.telemetry.model import Protocol
from harness.traffic.exchange import Bound, Exchange, Target, begin, finish, key

MSS_GUESS = 536  # the smallest MSS a segment count is bounded with
HEADERS_MAX = 60  # TCP header with options


@dataclass
class TcpEcho:
    """One TCP echo exchange: the local port it came from (the flow's key) and what came back."""

    local_port: int
    reply: bytes
    local_address: str = ""


def tcp_echo(address: str, port: int, payload: bytes, *, policy: TargetPolicy, timeout: float = 10.0,
             reset: bool = False) -> TcpEcho:
    """Connect, send ``payload``, read until as many bytes came back or the peer closed, then close
    (with an RST instead of a FIN when ``reset``)."""
    policy.check(address)
    with socket.create_connection((address, port), timeout=timeout) as sock:
        local_address, local_port = sock.getsockname()[:2]
        sock.sendall(payload)
        got = bytearray()
        while len(got) < len(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        if reset:  # SO_LINGER 0: close() sends RST
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return TcpEcho(local_port, bytes(got), local_address)


def tcp_session(target: Target, nbytes: int = 1000, *, port: int | None = None, reset: bool = False,
                timeout: float = 10.0) -> Exchange:
    """Connect to the board's TCP echo service, send and receive ``nbytes``, close (FIN, or RST)."""
    port = port or target.tcp_echo
    if not port:
        raise ValueError("the board has no TCP echo service: give port=")
    exchange = begin("tcp-session" + ("-rst" if reset else ""), target)
    result = tcp_echo(str(target.address), port, bytes(range(256)) * (nbytes // 256) + bytes(nbytes % 256),
                      policy=target.policy, timeout=timeout, reset=reset)
    k = key(target.address, result.local_address, port, result.local_port, Protocol.TCP)
    segments = 4 + 2 * (nbytes // MSS_GUESS + 1)
    exchange.details.update(nbytes=nbytes, echoed=len(result.reply), local_port=result.local_port)
    return finish(exchange, [k], [Bound(k, (nbytes + 20 * 3, nbytes + HEADERS_MAX * segments),
                                        (len(result.reply) + 20 * 2, len(result.reply) + HEADERS_MAX * segments))])
