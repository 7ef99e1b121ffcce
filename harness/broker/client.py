"""A paho-mqtt client that reads its socket in blocks.

paho reads every packet with three ``recv`` calls (the command byte, the remaining length, then the
rest), so a subscriber draining a burst spends most of its time in system calls, not in its own
code. :class:`BlockReadingClient` gives paho a socket whose ``recv`` is served from a buffer filled
by one ``recv`` of up to :data:`BLOCK` bytes. paho's loop already knows such sockets: it asks
``pending()`` (as it does of a TLS socket) and reads again without waiting in ``select`` while
buffered bytes remain. Nothing else changes: sends, PUBACK timing (after ``on_message`` returns),
reconnection and TLS are paho's own.

The socket is created in paho's ``_create_socket``, which is not public API; where a paho version
lacks it, the client logs that it reads packet by packet and otherwise works unchanged
(``tests/unit/broker/test_client.py`` fails on such a version, so an upgrade is noticed).
"""

from __future__ import annotations

import logging
from typing import Any

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

BLOCK = 256 * 1024
HOOK = "_create_socket"
HOOKED = callable(getattr(mqtt.Client, HOOK, None))


class BufferedSocket:
    """A non-blocking stream socket whose ``recv`` is served from blocks read ahead."""

    def __init__(self, sock: Any, block: int = BLOCK) -> None:
        self._sock = sock
        self._block = block
        self._buf = b""
        self._pos = 0
        self._size = 0  # len(self._buf)

    def recv(self, n: int) -> bytes:
        pos = self._pos
        end = pos + n
        if end <= self._size:  # the usual case: all of it buffered
            self._pos = end
            return self._buf[pos:end]
        if pos < self._size:  # the rest of the buffer; paho asks again for what is missing
            self._pos = self._size
            return self._buf[pos:]
        data = self._sock.recv(n if n > self._block else self._block)  # BlockingIOError passes
        if len(data) <= n:
            self._buf, self._pos, self._size = b"", 0, 0
            return data
        self._buf, self._pos, self._size = data, n, len(data)
        return data[:n]

    def pending(self) -> int:
        """Bytes that can be read without the kernel (paho's loop then skips ``select``)."""
        inner = getattr(self._sock, "pending", None)
        return self._size - self._pos + (inner() if inner is not None else 0)

    def send(self, data: bytes | bytearray) -> int:
        return int(self._sock.send(data))

    def fileno(self) -> int:
        return int(self._sock.fileno())

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def close(self) -> None:
        self._buf, self._pos, self._size = b"", 0, 0
        self._sock.close()

    def __getattr__(self, name: str) -> Any:  # everything else is the socket's (shutdown, getpeername, ...)
        return getattr(self._sock, name)


class BlockReadingClient(mqtt.Client):
    """``paho.mqtt.client.Client`` reading in blocks; same constructor, same behaviour."""

    def _create_socket(self) -> Any:
        sock = super()._create_socket()  # type: ignore[misc]
        if self._transport == "websockets":  # paho's websocket wrapper already frames its reads
            return sock
        return BufferedSocket(sock)


def block_reading_client(*args: Any, **kwargs: Any) -> mqtt.Client:
    """A :class:`BlockReadingClient`, or a plain paho client (with a log line) where paho lacks the hook."""
    if HOOKED:
        return BlockReadingClient(*args, **kwargs)
    log.info("paho-mqtt %s has no %s: reading packet by packet", getattr(mqtt, "__version__", "?"), HOOK)
    return mqtt.Client(*args, **kwargs)
