"""The embedded broker's front door: amqtt behind a check of every CONNECT and every packet's size.

amqtt (0.12) looks a CONNECT's client id up in its sessions *before* it authenticates: a clean
session CONNECT deletes the session of that client id (its subscriptions go, its connection stays
open and receives nothing), a persistent one takes the session over and overwrites its password.
So one refused login under the collector's client id left the collector receiving nothing while
devices still got PUBACKs. :class:`HubBroker` therefore reads the CONNECT itself, parses it with
amqtt's own parser (so both see the same client id), asks the identity table, and refuses (CONNACK
return code 5, session present 0) before amqtt sees anything; only an accepted CONNECT is handed to
amqtt, replayed from the bytes read.

:class:`GuardedReader` follows the MQTT framing of everything a client sends: a packet over
``max_packet`` bytes (a message the archive could not hold) ends the connection when its length is
read, before its body is, and so before any PUBACK: the device sees a refusal, as mosquitto's
``max_packet_size`` gives it.

Its TLS listeners ask every client for a certificate and take any
(:func:`harness.broker.client_certs.take_any_client_certificate`), as IoT Hub does; the certificate a
client showed is handed to the identity table with the CONNECT, which matches X.509 devices by
thumbprint.

Imported only when an embedded broker starts (amqtt is slow to import).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import ssl
import time
from typing import Any

from amqtt.adapters import BufferReader, ReaderAdapter, StreamReaderAdapter, StreamWriterAdapter, WriterAdapter
from amqtt.broker import Broker as AmqttBroker
from amqtt.contexts import Action
from amqtt.mqtt.connect import ConnectPacket
from amqtt.session import Session

from harness.broker import relay
from harness.broker.base import Connect
from harness.broker.client_certs import take_any_client_certificate
from harness.broker.credentials import IdentityTable, SignInRefused

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0  # a client that does not finish its CONNECT in this time is dropped
MAX_CONNECT = 256 * 1024  # a CONNECT is user name, password and a will: never this large
CONNACK_NOT_AUTHORIZED = b"\x20\x02\x00\x05"
_CONNECT = 0x10


class TooLarge(Exception):
    """A client sent a packet over the limit."""


class GuardedReader(ReaderAdapter):
    """Reads a client's bytes through, tracking packet boundaries; see the module docstring.

    ``replay`` bytes (the CONNECT the front door read) are handed out first."""

    def __init__(self, inner: ReaderAdapter, max_packet: int, peer: str = "") -> None:
        self._inner = inner
        self._peer = peer
        self.max_packet = max_packet
        self.replay = b""
        self.peer = peer  # "address:port", as mosquitto logs a client
        self.refused: int | None = None  # the size of the packet that ended the connection
        self._left = 0  # body bytes left in the current packet
        self._in_length = False  # reading a Remaining Length
        self._length = 0
        self._length_bytes = 0

    async def read(self, n: int = -1) -> bytes:
        if self.refused is not None:
            return b""
        if self.replay:
            take = len(self.replay) if n < 0 else n
            data, self.replay = self.replay[:take], self.replay[take:]
            return data
        data = await self._inner.read(n)
        try:
            self._track(data)
        except TooLarge:
            log.warning("embedded broker: %s sent a %d-byte packet, over the limit of %d bytes: connection "
                        "closed, nothing acknowledged", self._peer or "a client", self.refused, self.max_packet)
            return b""
        return data

    def feed_eof(self) -> None:
        self._inner.feed_eof()

    def _track(self, data: bytes) -> None:
        i, size = 0, len(data)
        while i < size:
            if self._left:
                step = min(self._left, size - i)
                self._left -= step
                i += step
                continue
            byte = data[i]
            i += 1
            if not self._in_length:  # a packet's first byte
                self._in_length, self._length, self._length_bytes = True, 0, 0
                continue
            self._length |= (byte & 0x7F) << (7 * self._length_bytes)
            self._length_bytes += 1
            if byte & 0x80 and self._length_bytes < 4:
                continue
            self._in_length = False
            total = 1 + self._length  # as mosquitto's max_packet_size counts: the length bytes are not
            if byte & 0x80 or total > self.max_packet:  # a fifth length byte is malformed: as good as too large
                self.refused = total
                raise TooLarge
            self._left = self._length

    async def read_connect(self) -> bytes:
        """The client's first packet, raw, if it is a CONNECT within :data:`MAX_CONNECT` (else b'')."""
        limit, self.max_packet = self.max_packet, MAX_CONNECT
        try:
            first = await self.read(1)
            if first != bytes([_CONNECT]):
                return b""
            raw = bytearray(first)
            while self._in_length:
                byte = await self.read(1)
                if not byte:
                    return b""
                raw += byte
            return bytes(raw + await self.read(self._left)) if self._left else bytes(raw)
        finally:
            self.max_packet = limit


def _expire_at(expiry: int, client_id: str, writer: asyncio.StreamWriter, timer: list[asyncio.TimerHandle]) -> None:
    """Close the client's connection once this host's clock reaches ``expiry`` (the loop's timers run
    on another clock: checked, and set again if early); ``timer`` holds the pending handle."""
    left = expiry - time.time()
    timer.clear()
    if left > 0:
        timer.append(asyncio.get_running_loop().call_later(left, _expire_at, expiry, client_id, writer, timer))
        return
    log.info("embedded broker: client %r disconnected: its token expired", client_id)
    writer.transport.close()


def _peer_certificate(writer: asyncio.StreamWriter) -> bytes | None:
    """The certificate (DER) the client showed in its TLS handshake; None without TLS or certificate."""
    tls = writer.get_extra_info("ssl_object")
    return tls.getpeercert(binary_form=True) if isinstance(tls, ssl.SSLObject) else None


def _text(value: str | bytes | bytearray | None) -> str | None:
    return value.decode(errors="replace") if isinstance(value, bytes | bytearray) else value


class HubBroker(AmqttBroker):
    """amqtt's broker, with the identity table checked at the door (see the module docstring)."""

    def __init__(self, config: dict[str, Any], *, table: IdentityTable, max_packet: int,
                 loop: asyncio.AbstractEventLoop, certificates: dict[str, bytes] | None = None,
                 connects: list[Connect] | None = None) -> None:
        super().__init__(config, loop=loop)
        self._table = table
        # client id -> the TLS client certificate it was last admitted with (amqtt's plugins check it again)
        self.certificates = {} if certificates is None else certificates
        self.connects = [] if connects is None else connects  # every CONNECT admitted, oldest first
        self._max_packet = max_packet
        self._closing = False
        self._connections: set[asyncio.Task[Any]] = set()
        self._relayed: set[asyncio.Task[Any]] = set()

    async def stream_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                               listener_name: str) -> None:
        if self._closing:
            writer.transport.abort()
            return
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        w = StreamWriterAdapter(writer)
        peer = w.get_peer_info()
        where = f"{peer[0]}:{peer[1]}" if peer else "a client"
        guarded = GuardedReader(StreamReaderAdapter(reader), self._max_packet, where)
        try:
            admitted = await asyncio.wait_for(self._admit(guarded, w, _peer_certificate(writer)), CONNECT_TIMEOUT)
            if admitted is not None:
                await self._serve(guarded, w, listener_name, admitted, writer)
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            log.info("embedded broker: %s dropped before or during its CONNECT: %r", where, exc)
        except Exception as exc:  # a client's packet must never take the listener down with a traceback
            log.warning("embedded broker: connection from %s ended by %r", where, exc)
        finally:
            self._connections.discard(task)  # type: ignore[arg-type]
            try:
                await asyncio.wait_for(w.close(), 2.0)
            except BaseException:  # a peer that reads nothing, or the loop stopping: drop it
                writer.transport.abort()

    async def _serve(self, reader: GuardedReader, w: StreamWriterAdapter, listener_name: str,
                     admitted: tuple[str, int | None], writer: asyncio.StreamWriter) -> None:
        """amqtt serves the admitted client; one signed in with a SAS token is disconnected when the
        token expires, as IoT Hub does (it may sign in again with a fresh one)."""
        client_id, expiry = admitted
        timer: list[asyncio.TimerHandle] = []
        if expiry is not None:
            _expire_at(expiry, client_id, writer, timer)
        try:
            await self.external_connected(reader, w, listener_name)
        finally:
            for handle in timer:
                handle.cancel()

    async def shutdown(self) -> None:
        """End every client's connection first (amqtt would wait for each before it lets its listeners
        go, and a client reconnecting meanwhile would keep it waiting), then amqtt's own shutdown."""
        self._closing = True
        open_now = list(self._connections)
        for task in open_now:
            task.cancel()
        await asyncio.gather(*open_now, return_exceptions=True)
        await super().shutdown()

    async def stop_all(self, timeout: float) -> None:
        """:meth:`shutdown` within ``timeout``; then, whatever happened, the listeners closed and every
        task of the loop ended, so the port is free and nothing is left to complain at the loop's close."""
        try:
            await asyncio.wait_for(self.shutdown(), timeout)
        except Exception as exc:
            log.warning("embedded broker: shutdown did not finish (%r); closing what is left", exc)
        finally:
            for server in self._servers.values():
                if isinstance(server.instance, asyncio.Server):
                    server.instance.close()
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

    async def _handle_message_delivery(self, client_session: Session, handler: Any,
                                       wait_deliver: asyncio.Future[Any]) -> bool:
        """IoT Hub's shared topics, relayed as :mod:`harness.broker.relay` says (amqtt itself would close
        the connection of a client publishing to a topic that starts with '$')."""
        message = wait_deliver.result()
        topic = getattr(message, "topic", None)
        client_id = client_session.client_id
        if topic and client_id:
            routed = relay.inbound(client_id, topic)
            if routed is not None:
                if await self._topic_filtering(client_session, topic=topic, action=Action.PUBLISH):
                    await self._broadcast_message(client_session, routed, message.data)
                else:
                    log.info("embedded broker: %s may not publish to %r: dropped", client_id, topic)
                return True
            target = relay.outbound(topic)
            if target is not None and await self._topic_filtering(client_session, topic=topic, action=Action.PUBLISH):
                await self._deliver_to(*target, message.data, message.qos)
                return True
        return bool(await super()._handle_message_delivery(client_session, handler, wait_deliver))

    async def _deliver_to(self, client_id: str, topic: str, data: bytes, qos: int) -> None:
        """To one connected client, if it may read ``topic`` (else, as mosquitto does, dropped)."""
        session, handler = self._sessions.get(client_id, (None, None))
        if session is None or handler is None or session.transitions.state != "connected":
            log.info("embedded broker: relay to %r dropped: not connected", client_id)
            return
        if not await self._topic_filtering(session, topic=topic, action=Action.RECEIVE):
            log.info("embedded broker: relay to %r dropped: it may not read %r", client_id, topic)
            return
        task = asyncio.ensure_future(handler.mqtt_publish(topic, data, qos, retain=False))
        self._relayed.add(task)
        task.add_done_callback(self._relayed.discard)

    @staticmethod
    def _create_ssl_context(listener: Any) -> ssl.SSLContext:
        """amqtt's context for a TLS listener, asking every client for a certificate and taking any."""
        return take_any_client_certificate(AmqttBroker._create_ssl_context(listener))

    async def _admit(self, guarded: GuardedReader, writer: WriterAdapter,
                     certificate: bytes | None) -> tuple[str, int | None] | None:
        """Read and check the CONNECT (with the client's TLS certificate, DER, if it showed one); refuse
        it here (None), or leave it for amqtt to read again: (its client id, when its SAS token expires
        or None)."""
        raw = await guarded.read_connect()
        if not raw:
            return None
        try:
            connect = await ConnectPacket.from_stream(BufferReader(raw))
            payload = connect.payload
            client_id = payload.client_id if payload is not None else None
            username = _text(payload.username) if payload is not None else None
            password = _text(payload.password) if payload is not None else None
        except Exception as exc:  # malformed: amqtt would refuse it too, without a CONNACK
            log.info("embedded broker: unreadable CONNECT (%r): connection closed", exc)
            return None
        try:
            ident = self._table.sign_in(client_id, username, password, certificate=certificate)
        except SignInRefused as why:
            log.info("embedded broker: refused client id %r user %r: %s", client_id, username, why)
            writer.write(CONNACK_NOT_AUTHORIZED)
            await writer.drain()
            return None
        assert client_id is not None  # sign_in accepted it
        header = connect.variable_header
        self.connects.append(Connect(
            time=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"), address=guarded.peer, client_id=client_id,
            username=username or "", clean_session=bool(header.clean_session_flag) if header else True,
            keepalive=int(header.keep_alive) if header else 0))
        if certificate is not None:
            self.certificates[client_id] = certificate
        else:
            self.certificates.pop(client_id, None)
        guarded.replay = raw
        return client_id, self._table.token_expiry(ident, password)
