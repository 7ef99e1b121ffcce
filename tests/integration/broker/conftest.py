"""Helpers for broker tests: a raw-socket MQTT publisher writing NetX's 4-byte Remaining Length,
a small paho device client, and brokers that are proven gone after each test."""

from __future__ import annotations

import os
import random
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from harness.broker import Broker, BrokerOptions, DeviceCredentials, open_broker, parse_mqtt_url
from harness.telemetry.codec import encode
from harness.telemetry.model import Event, Heartbeat, ModuleVersion, SecurityMessage

REPO = Path(__file__).resolve().parents[3]


def heartbeat_payload(n: int) -> bytes:
    """A security message with one heartbeat whose event id encodes ``n``."""
    return encode(SecurityMessage("hil-test", ModuleVersion(3, 5, 4),
                                  (Event(n.to_bytes(16, "big"), 1700000000 + n, 60, Heartbeat()),)))


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def remaining_length_4(n: int) -> bytes:
    """NetX's non-minimal encoding: always four bytes."""
    return bytes([0x80 | (n & 0x7F), 0x80 | ((n >> 7) & 0x7F), 0x80 | ((n >> 14) & 0x7F), (n >> 21) & 0x7F])


def _read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"broker closed the connection after {len(data)} of {n} bytes")
        data += chunk
    return data


def connect_packet(client_id: str, username: str | None, password: str | None, *, clean: bool = True) -> bytes:
    """An MQTT 3.1.1 CONNECT (4-byte Remaining Length, as NetX writes it)."""
    flags = (0x80 if username is not None else 0) | (0x40 if password is not None else 0) | (0x02 if clean else 0)
    body = _utf8("MQTT") + bytes([4, flags]) + struct.pack(">H", 60) + _utf8(client_id)
    body += (_utf8(username) if username is not None else b"") + (_utf8(password) if password is not None else b"")
    return bytes([0x10]) + remaining_length_4(len(body)) + body


def raw_connect(url: str, client_id: str, username: str | None, password: str | None, *,
                clean: bool = True) -> int:
    """One CONNECT on a socket of its own; the CONNACK's return code (0 accepted, 4/5 refused)."""
    host, port, _ = parse_mqtt_url(url)
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(connect_packet(client_id, username, password, clean=clean))
        connack = _read_exact(sock, 4)
        assert connack[:2] == b"\x20\x02", f"not a CONNACK: {connack.hex()}"
        if connack[3] == 0:
            sock.sendall(b"\xe0\x00")  # DISCONNECT
        return connack[3]


def raw_publish(url: str, creds: DeviceCredentials, topic: str, payload: bytes, packet_id: int = 1) -> None:
    """CONNECT, then one QoS 1 PUBLISH with a 4-byte Remaining Length; wait for the PUBACK."""
    host, port, _ = parse_mqtt_url(url)
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(connect_packet(creds.client_id, creds.username, creds.password))
        connack = _read_exact(sock, 4)
        assert connack[0] == 0x20 and connack[3] == 0, f"CONNACK {connack.hex()}"
        var = _utf8(topic) + struct.pack(">H", packet_id)
        sock.sendall(bytes([0x32]) + remaining_length_4(len(var) + len(payload)) + var + payload)
        puback = _read_exact(sock, 4)
        assert puback == bytes([0x40, 0x02]) + struct.pack(">H", packet_id), f"PUBACK {puback.hex()}"
        sock.sendall(b"\xe0\x00")  # DISCONNECT


class DeviceClient:
    """A paho client connected as a device; records CONNACK and received messages."""

    def __init__(self, url: str, creds: DeviceCredentials, ca: str | Path | None = None) -> None:
        host, port, tls = parse_mqtt_url(url)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=creds.client_id)
        self.client.username_pw_set(creds.username, creds.password)
        if tls:
            self.client.tls_set(ca_certs=str(ca) if ca else None)
        self.connack = threading.Event()
        self.reason: object = None
        self.received: list[mqtt.MQTTMessage] = []
        self.got_message = threading.Event()
        self._arrived = threading.Condition()
        self.disconnected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *args: self.disconnected.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, rc: object, props: object) -> None:
        self.reason = rc
        self.connack.set()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._arrived:
            self.received.append(msg)
            self._arrived.notify_all()
        self.got_message.set()

    def wait_message(self, payload: bytes, timeout: float = 10) -> bool:
        """Block until a message with ``payload`` arrived (True) or the deadline passed (False)."""
        with self._arrived:
            return self._arrived.wait_for(lambda: any(m.payload == payload for m in self.received), timeout)

    def publish_settled(self, topic: str, payload: bytes, timeout: float = 5) -> bool:
        """Publish at QoS 1; True when PUBACKed, False when the broker dropped the connection instead."""
        settled = threading.Event()
        self.client.on_publish = lambda *args: settled.set()
        self.client.on_disconnect = lambda *args: (self.disconnected.set(), settled.set())
        info = self.client.publish(topic, payload, qos=1)
        assert settled.wait(timeout), f"publish to {topic} neither acknowledged nor refused in {timeout} s"
        return info.is_published()

    def subscribe_granted(self, filters: list[tuple[str, int]], timeout: float = 5) -> list[bool]:
        """Subscribe; for each filter, whether the broker granted it."""
        done = threading.Event()
        codes: list[object] = []
        self.client.on_subscribe = lambda c, u, mid, rcs, props: (codes.extend(rcs), done.set())
        self.client.subscribe(filters)
        assert done.wait(timeout), "no SUBACK"
        return [not rc.is_failure for rc in codes]  # type: ignore[attr-defined]

    def connected(self, timeout: float = 5) -> bool:
        assert self.connack.wait(timeout), "no CONNACK"
        return not self.reason.is_failure  # type: ignore[attr-defined]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def devices() -> Iterator[Callable[..., DeviceClient]]:
    made: list[DeviceClient] = []

    def make(url: str, creds: DeviceCredentials, ca: str | Path | None = None) -> DeviceClient:
        d = DeviceClient(url, creds, ca)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Start brokers; after the test stop them and prove every mosquitto process is gone."""
    made: list[Broker] = []

    def make(kind: str, **options: object) -> Broker:
        b = open_broker(kind, tmp_path / f"{kind}-{len(made)}", BrokerOptions(**options))  # type: ignore[arg-type]
        made.append(b)
        return b.start()

    yield make
    pids = []
    for b in made:
        pid = getattr(b, "pid", None)
        if pid:
            pids.append(pid)
        b.stop()
    for pid in pids:
        assert process_gone(pid), f"broker process {pid} still running after stop()"


TLS_ERRORS = (ssl.SSLError, ConnectionError)


def loopback_with_free_8883() -> str:
    """A loopback address no one here listens on 8883 at (other developers run tests on this machine):
    where a test's broker takes IoT Hub's fixed TLS port."""
    for _ in range(50):
        address = f"127.{random.randint(64, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"
        with socket.socket() as s:
            try:
                s.bind((address, 8883))
            except OSError:
                continue
            return address
    raise AssertionError("no loopback address with port 8883 free")


def publish_outcome(url: str, creds: DeviceCredentials, topic: str, payload: bytes, *, packet_id: int = 1) -> str:
    """CONNECT and one QoS 1 PUBLISH (NetX framing); ``"acknowledged"`` on a PUBACK, ``"closed"`` when the
    broker closed the connection instead."""
    host, port, _ = parse_mqtt_url(url)
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.sendall(connect_packet(creds.client_id, creds.username, creds.password))
        assert _read_exact(sock, 4) == b"\x20\x02\x00\x00", "CONNACK refused"
        var = _utf8(topic) + struct.pack(">H", packet_id)
        try:
            sock.sendall(bytes([0x32]) + remaining_length_4(len(var) + len(payload)) + var)
            sock.sendall(payload)
            answer = _read_exact(sock, 4)
        except (ConnectionError, BrokenPipeError):
            return "closed"
        assert answer == bytes([0x40, 0x02]) + struct.pack(">H", packet_id), f"not a PUBACK: {answer.hex()}"
        sock.sendall(b"\xe0\x00")
        return "acknowledged"


def publish_size(topic: str, size: int) -> int:
    """The payload size that makes a QoS 1 PUBLISH to ``topic`` ``size`` bytes long as mosquitto's
    max_packet_size counts (type byte + Remaining Length: topic, packet id, payload)."""
    return size - 1 - (2 + len(topic.encode())) - 2
