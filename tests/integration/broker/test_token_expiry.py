"""Token expiry on both broker kinds: as IoT Hub does, the broker ends a connection signed in with a
SAS token when the token expires (logging why), and the device signs in again with a fresh token.
Connections signed in with a password (the harness's own firmware and services) are not touched."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from harness.broker import Broker, DeviceCredentials, parse_mqtt_url, sas
from harness.telemetry.topic import compose_username

from .conftest import DeviceClient

KINDS = [pytest.param("mosquitto", marks=pytest.mark.needs("mosquitto")), "embedded"]
HUB = "expiry-hub.azure-devices.net"
KEY = bytes(range(50, 82))
LIFETIME = 3  # seconds: the token's


class Watched:
    """A paho client that does not reconnect by itself; ``gone`` is set when its connection ends."""

    def __init__(self, url: str, creds: DeviceCredentials) -> None:
        host, port, _ = parse_mqtt_url(url)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=creds.client_id, reconnect_on_failure=False)
        self.client.username_pw_set(creds.username, creds.password)
        self.accepted = threading.Event()
        self.gone = threading.Event()
        self.gone_at = 0.0
        self.client.on_connect = lambda c, u, f, rc, p: self.accepted.set() if not rc.is_failure else None
        self.client.on_disconnect = self._on_disconnect
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_disconnect(self, *args: object) -> None:
        self.gone_at = time.time()
        self.gone.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _creds(device: str, expiry: int) -> DeviceCredentials:
    return DeviceCredentials(device, compose_username(HUB, device, api_version="2021-04-12"),
                             sas.make_token(KEY, sas.device_resource(HUB, device), expiry))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_a_connection_ends_when_its_token_expires_and_a_fresh_token_signs_in_again(
        kind: str, brokers: Callable[..., Broker], devices: Callable[..., DeviceClient]) -> None:
    b = brokers(kind, hub=HUB)
    b.add_device("dev-e", key=KEY)
    plain = devices(b.url, b.add_device("dev-p"))  # a run password: no token, never expires
    assert plain.connected()
    expiry = int(time.time()) + LIFETIME
    first = Watched(b.url, _creds("dev-e", expiry))
    try:
        assert first.accepted.wait(10), "the token was refused before it expired"
        assert first.gone.wait(LIFETIME + 20), "the connection outlived its token"
        assert first.gone_at >= expiry, f"ended {expiry - first.gone_at:.1f} s before its token expired"
    finally:
        first.close()
    assert _logged(b, r"'dev-e'.? disconnected: its token expired")
    second = Watched(b.url, _creds("dev-e", int(time.time()) + 3600))
    try:
        assert second.accepted.wait(10), "a fresh token was refused"
    finally:
        second.close()
    assert not plain.disconnected.is_set(), "a password's connection was ended too"


def _logged(b: Broker, pattern: str) -> bool:
    if b.kind == "mosquitto":  # its log reaches the file through a reader thread: wait for the line
        return b.wait_log(pattern, 10) is not None  # type: ignore[attr-defined]
    assert b.log_path is not None
    return re.search(pattern, Path(b.log_path).read_text(errors="replace")) is not None
