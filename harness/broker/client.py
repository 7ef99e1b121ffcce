"""A lean paho-mqtt client for a subscriber that must keep up with a flood: the collector.

Two costs of paho's receive path that a subscriber does not need are cut; everything else (sends,
PUBACK after the message is handled, keepalive, reconnection, TLS) is paho's own:

- paho reads every packet with three ``recv`` calls (the command byte, the remaining length, then
  the rest). :class:`LeanClient` gives paho a :class:`BufferedSocket` whose ``recv`` is served
  from blocks of up to :data:`BLOCK` bytes. paho's loop already knows such sockets: it asks
  ``pending()`` (as of a TLS socket) and reads again without waiting in ``select`` while buffered
  bytes remain.
- paho looks up every message's topic in its per-topic callbacks (``message_callback_add``) before
  calling ``on_message``. A ``deliver`` function given to :func:`lean_client` receives each
  message directly instead (those callbacks are then not used).

Both go through paho methods that are not public API (:data:`HOOKS`). Where a paho version lacks
them, :func:`lean_client` returns a plain paho client, with ``deliver`` as its ``on_message``, and
logs that it does; ``tests/unit/broker/test_client.py`` fails on such a version, so an upgrade is
noticed. ``benchmarks/collector_ingest.py`` measures what the two save.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

BLOCK = 256 * 1024
HOOKS = ("_create_socket", "_handle_on_message")
HOOKED = all(callable(getattr(mqtt.Client, hook, None)) for hook in HOOKS)
Deliver = Callable[[mqtt.MQTTMessage], None]


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


class LeanClient(mqtt.Client):
    """``paho.mqtt.client.Client`` reading in blocks and, with ``deliver`` set, delivering directly."""

    deliver: Deliver | None = None

    def _create_socket(self) -> Any:
        sock = super()._create_socket()  # type: ignore[misc]
        if self._transport == "websockets":  # paho's websocket wrapper frames its own reads
            return sock
        return BufferedSocket(sock)

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        deliver = self.deliver
        if deliver is None:
            super()._handle_on_message(message)
            return
        with self._in_callback_mutex:  # as paho holds it around on_message
            try:
                deliver(message)
            except Exception:
                log.exception("MQTT client %s: delivering a message on %r failed",
                              self._client_id.decode(errors="replace"), message.topic)
                if not self.suppress_exceptions:
                    raise


def lean_client(*args: Any, deliver: Deliver | None = None, **kwargs: Any) -> mqtt.Client:
    """A :class:`LeanClient` (paho's constructor arguments), or a plain paho client where paho lacks
    :data:`HOOKS`. ``deliver`` gets every received message (in the network thread)."""
    if HOOKED:
        client: mqtt.Client = LeanClient(*args, **kwargs)
        client.deliver = deliver  # type: ignore[attr-defined]
        return client
    log.info("paho-mqtt %s lacks %s: reading packet by packet", getattr(mqtt, "__version__", "?"), HOOKS)
    client = mqtt.Client(*args, **kwargs)
    if deliver is not None:
        client.on_message = lambda c, userdata, message: deliver(message)
    return client
