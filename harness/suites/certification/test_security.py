"""Identity: another device can neither pass for the board nor read what is meant for it, on the
broker that stands in for the hub (what IoT Hub guarantees, so what a certification relies on)."""

from __future__ import annotations

import os
import threading
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from harness.board.board import Board
from harness.broker import DeviceCredentials, parse_mqtt_url
from harness.report.plugin import ClauseRecord
from harness.telemetry.codec import encode
from harness.telemetry.model import Event, Heartbeat, ModuleVersion, SecurityMessage
from harness.telemetry.topic import security_topic

WAIT = 5.0


class _Client:
    def __init__(self, url: str, creds: DeviceCredentials, client_id: str | None = None) -> None:
        host, self.port, _ = parse_mqtt_url(url)
        self.host = host
        self.mqtt = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or creds.client_id)
        self.mqtt.username_pw_set(creds.username, creds.password)
        self.connected = threading.Event()
        self.reason: Any = None
        self.mqtt.on_connect = self._on_connect

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.reason = reason
        self.connected.set()

    def __enter__(self) -> _Client:
        self.mqtt.connect(self.host, self.port)
        self.mqtt.loop_start()
        assert self.connected.wait(WAIT), "no CONNACK from the broker"
        return self

    def __exit__(self, *exc: object) -> None:
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


@pytest.mark.clause("security.impersonation", "a device cannot sign in as, or publish as, another device")
def test_a_device_cannot_pass_for_the_board(hil_board: Board, clause: ClauseRecord) -> None:
    broker = hil_board.broker
    if broker is None or broker.kind == "external":
        clause.not_applicable("the run's broker is not one the harness runs")
    assert hil_board.telemetry is not None
    intruder = broker.add_device(f"{hil_board.device_id}-intruder")
    with _Client(broker.url, intruder, client_id=hil_board.device_id) as posing:
        assert posing.reason.is_failure, "a login with another device's client id was accepted"
    collector = hil_board.telemetry.collector
    forged, witness = os.urandom(16), os.urandom(16)
    since = collector.mark()
    with _Client(broker.url, intruder) as client:
        assert not client.reason.is_failure, f"the intruder's own login was refused: {client.reason}"
        client.mqtt.publish(security_topic(hil_board.device_id), _heartbeat(forged), qos=1)
        # then a message on its own topic: the broker handles one connection's PUBLISHes in order, so
        # once this one reached the collector, the forged one had too, had the broker let it through
        client.mqtt.publish(security_topic(intruder.client_id), _heartbeat(witness), qos=1)
        collector.wait_for(intruder.client_id, lambda e: e.id == witness, WAIT, since=since,
                           what="the intruder's message on its own topic, sent after the forged one")
    passed = [e for e in collector.events(hil_board.device_id, since=since) if e.id == forged]
    assert not passed, "a message another device published on the board's topic reached the hub as the board's"


def _heartbeat(event_id: bytes) -> bytes:
    return encode(SecurityMessage("intruder", ModuleVersion(3, 5, 4), (Event(event_id, 1, 60, Heartbeat()),)))


@pytest.mark.clause("security.reading", "a device cannot read another device's messages")
def test_a_device_cannot_read_the_board(hil_board: Board, clause: ClauseRecord) -> None:
    broker = hil_board.broker
    if broker is None or broker.kind == "external":
        clause.not_applicable("the run's broker is not one the harness runs")
    intruder = broker.add_device(f"{hil_board.device_id}-reader")
    granted: list[Any] = []
    done = threading.Event()
    with _Client(broker.url, intruder) as client:
        client.mqtt.on_subscribe = lambda c, u, mid, codes, props: (granted.extend(codes), done.set())
        client.mqtt.subscribe([(f"devices/{hil_board.device_id}/messages/devicebound/#", 1),
                               (f"devices/{hil_board.device_id}/messages/events/#", 1)])
        assert done.wait(WAIT), "no SUBACK"
    assert all(code.is_failure for code in granted), f"subscriptions to the board's topics granted: {granted}"
