"""UDP datagrams at a board's echo service, with the replies awaited."""

from __future__ import annotations

import os
import socket
import time

from harness.telemetry.model import Protocol
from harness.traffic.exchange import Bound, Exchange, Target, begin, finish, key

UDP_HEADER = 8


def udp_exchange(target: Target, count: int = 3, size: int = 100, *, port: int | None = None,
                 timeout: float = 2.0) -> Exchange:
    """Send ``count`` datagrams of ``size`` bytes from one local port; wait for each echo."""
    port = port or target.udp_echo
    if not port:
        raise ValueError("the board has no UDP echo service: give port=")
    exchange = begin("udp-exchange", target)
    replies = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((target.check(), port))
        source, local_port = sock.getsockname()[:2]
        for _ in range(count):
            payload = os.urandom(size)
            sock.send(payload)
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    if sock.recv(65535) == payload:
                        replies += 1
                        break
                except (TimeoutError, ConnectionRefusedError):
                    break
    k = key(target.address, source, port, local_port, Protocol.UDP)
    each = size + UDP_HEADER
    exchange.details.update(count=count, size=size, replies=replies, local_port=local_port)
    return finish(exchange, [k], [Bound(k, (count * each, count * each), (replies * each, replies * each))])
