"""The collector's paho client reads its socket in blocks, hands paho exactly the bytes it asks for, and
delivers messages directly."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import harness.broker.client as client_module
from harness.broker.client import HOOKS, BufferedSocket, LeanClient, lean_client


def test_this_paho_has_the_hooks_so_the_collector_gets_the_lean_client() -> None:
    # If this fails after a paho-mqtt upgrade, the collector still works with a plain client (slower).
    missing = [h for h in HOOKS if not callable(getattr(mqtt.Client, h, None))]
    assert not missing, f"paho-mqtt {mqtt.__version__} lacks {missing}"
    assert isinstance(lean_client(CallbackAPIVersion.VERSION2, client_id="x"), LeanClient)


def message(topic: bytes = b"devices/a/messages/events/") -> mqtt.MQTTMessage:
    m = mqtt.MQTTMessage(mid=1, topic=topic)
    m.payload = b"p"
    return m


def test_deliver_gets_each_message_and_on_message_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    got: list[mqtt.MQTTMessage] = []
    c = lean_client(CallbackAPIVersion.VERSION2, client_id="x", deliver=got.append)
    c.on_message = lambda *a: pytest.fail("on_message called although deliver is set")
    m = message()
    c._handle_on_message(m)
    assert got == [m]
    c.deliver = None  # type: ignore[attr-defined]
    c.on_message = lambda client, userdata, msg: got.append(msg)
    c._handle_on_message(m)
    assert got == [m, m]
    monkeypatch.setattr(client_module, "HOOKED", False)  # a paho without the hooks: a plain client
    plain = lean_client(CallbackAPIVersion.VERSION2, client_id="y", deliver=got.append)
    assert type(plain) is mqtt.Client
    plain._handle_on_message(m)
    assert got == [m, m, m]


def test_an_exception_in_deliver_is_logged_and_raised(caplog: pytest.LogCaptureFixture) -> None:
    def boom(msg: mqtt.MQTTMessage) -> None:
        raise RuntimeError("bug")

    c = lean_client(CallbackAPIVersion.VERSION2, client_id="x", deliver=boom)
    with pytest.raises(RuntimeError, match="bug"):
        c._handle_on_message(message())
    assert "MQTT client x: delivering a message on 'devices/a/messages/events/' failed" in caplog.text


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, BufferedSocket]]:
    a, b = socket.socketpair()
    b.setblocking(False)
    yield a, BufferedSocket(b, block=64)
    a.close()
    b.close()


def test_reads_are_served_from_blocks_in_order(pair: tuple[socket.socket, BufferedSocket]) -> None:
    peer, buffered = pair
    data = bytes(range(256)) * 2
    peer.sendall(data)
    got, sizes = [], [1, 1, 3, 50, 20, 7, 1000]
    while sum(map(len, got)) < len(data):
        n = sizes[len(got) % len(sizes)]
        chunk = buffered.recv(n)
        assert 0 < len(chunk) <= n
        got.append(chunk)
    assert b"".join(got) == data
    assert buffered.pending() == 0
    with pytest.raises(BlockingIOError):  # nothing buffered, nothing on the socket
        buffered.recv(1)


def test_pending_counts_what_is_buffered(pair: tuple[socket.socket, BufferedSocket]) -> None:
    peer, buffered = pair
    peer.sendall(b"0123456789")
    assert buffered.recv(1) == b"0"
    assert buffered.pending() == 9  # paho's loop reads again without select while this is > 0
    assert buffered.recv(100) == b"123456789"  # the rest of the block, not more
    assert buffered.pending() == 0


def test_a_read_larger_than_the_block_and_end_of_stream(pair: tuple[socket.socket, BufferedSocket]) -> None:
    peer, buffered = pair
    peer.sendall(b"x" * 100)
    assert buffered.recv(100) == b"x" * 100
    peer.shutdown(socket.SHUT_WR)
    assert buffered.recv(1) == b""  # paho takes b"" as the connection lost


def test_sends_and_the_rest_go_to_the_socket(pair: tuple[socket.socket, BufferedSocket]) -> None:
    peer, buffered = pair
    assert buffered.send(b"puback") == 6
    assert peer.recv(10) == b"puback"
    assert buffered.fileno() >= 0 and buffered.getsockname() == ""  # forwarded (AF_UNIX: no name)
