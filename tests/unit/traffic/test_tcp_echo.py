"""tcp_echo: the reply and the local port of the exchange, a short reply when the peer closes early,
and the target policy asked first."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from harness.errors import HarnessError
from harness.netpolicy import TargetPolicy
from harness.traffic import tcp_echo

SENT = 60


@pytest.fixture
def server() -> Iterator[tuple[int, list[int], list[int]]]:
    """A loopback server that reads SENT bytes per connection and sends back as many of them as
    ``keep[0]`` says; records each peer's port."""
    listener = socket.create_server(("127.0.0.1", 0))
    peers: list[int] = []
    keep = [SENT]

    def serve() -> None:
        while True:
            try:
                conn, peer = listener.accept()
            except OSError:
                return
            with conn:
                peers.append(peer[1])
                got = b""
                while len(got) < SENT and (chunk := conn.recv(SENT - len(got))):
                    got += chunk
                conn.sendall(got[:keep[0]])

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield listener.getsockname()[1], peers, keep
    listener.close()
    t.join(5)


def test_the_reply_and_the_local_port(server: tuple[int, list[int], list[int]]) -> None:
    port, peers, _ = server
    echo = tcp_echo("127.0.0.1", port, b"x" * SENT, policy=TargetPolicy())
    assert echo.reply == b"x" * SENT and peers == [echo.local_port]


def test_a_peer_closing_early_gives_a_short_reply(server: tuple[int, list[int], list[int]]) -> None:
    port, _, keep = server
    keep[0] = 25
    assert tcp_echo("127.0.0.1", port, bytes(range(SENT)), policy=TargetPolicy()).reply == bytes(range(25))


def test_the_policy_is_asked_before_connecting() -> None:
    with pytest.raises(HarnessError, match=r"192\.0\.2\.1"):
        tcp_echo("192.0.2.1", 7, b"x", policy=TargetPolicy())
