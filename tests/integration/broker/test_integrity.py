"""A collector that loses its session or stops receiving says so: its waits end with an
infrastructure error (exit 3), never a device's failure, and problems() lists it first.

"Stops receiving" is tested against the embedded broker with its old fault put back (amqtt's own
CONNECT handling, which deletes the session of a refused login's client id): without the canary
nothing would notice, and the wait would time out blaming the device."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from harness.broker import Broker
from harness.errors import InfrastructureError, WaitTimeout
from harness.telemetry.collector import Collector, CollectorIntegrityError
from harness.telemetry.model import PayloadType
from harness.telemetry.topic import security_topic

from .conftest import heartbeat_payload, raw_connect, raw_publish

QUICK = {"canary_interval": 0.2, "canary_timeout": 3.0}


@pytest.fixture
def old_embedded_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded broker as it was: amqtt reads the CONNECT and touches the session before it
    authenticates."""
    from amqtt.broker import Broker as AmqttBroker

    from harness.broker.amqtt_front import HubBroker

    monkeypatch.setattr(HubBroker, "stream_connected", AmqttBroker.stream_connected)


@pytest.fixture
def background() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("old_embedded_fault")
def test_a_collector_that_stops_receiving_ends_its_waits_with_an_infrastructure_error(
        brokers: Callable[..., Broker], tmp_path: Path, background: ThreadPoolExecutor) -> None:
    b = brokers("embedded")
    a = b.add_device("dev-a")
    with Collector.from_endpoint(b.endpoint(), tmp_path / "telemetry.bin", **QUICK) as col:
        raw_publish(b.url, a, security_topic("dev-a"), heartbeat_payload(1))
        col.expect_event("dev-a", PayloadType.HEARTBEAT, within=10)
        mark = col.mark()
        waiting: Future[object] = background.submit(col.expect_event, "dev-a", PayloadType.HEARTBEAT, 50,
                                                    since=mark)
        c = b.collector_credentials
        assert raw_connect(b.url, c.client_id, c.username, "wrong") == 5  # refused, yet the session is gone
        raw_publish(b.url, a, security_topic("dev-a"), heartbeat_payload(2))  # acknowledged, never delivered
        with pytest.raises(CollectorIntegrityError) as info:
            waiting.result(timeout=30)
        assert "while waiting for a HEARTBEAT event from device 'dev-a'" in str(info.value)  # ended, not timed out
        assert "stopped receiving" in str(info.value) and info.value.exit_code == 3
        assert isinstance(info.value, InfrastructureError) and not isinstance(info.value, WaitTimeout)
        assert col.problems().startswith("INTEGRITY LOST: collector stopped receiving")
        with pytest.raises(CollectorIntegrityError, match=r"waiting 0\.2 s for a HEARTBEAT"):
            col.expect_event("dev-a", PayloadType.HEARTBEAT, within=0.2, since=mark)  # a later timeout too
        with pytest.raises(CollectorIntegrityError):
            col.assert_none("dev-a", lambda e: True, during=0.2)  # "nothing came" cannot pass either
        with pytest.raises(CollectorIntegrityError):
            col.require_intact()


@pytest.mark.timeout(60)
def test_the_fixed_embedded_broker_keeps_the_collector_receiving(brokers: Callable[..., Broker],
                                                                 tmp_path: Path) -> None:
    """The same sequence without the old fault: the canary keeps coming back, nothing is reported."""
    b = brokers("embedded")
    a = b.add_device("dev-a")
    with Collector.from_endpoint(b.endpoint(), tmp_path / "telemetry.bin", **QUICK) as col:
        c = b.collector_credentials
        assert raw_connect(b.url, c.client_id, c.username, "wrong") == 5
        raw_publish(b.url, a, security_topic("dev-a"), heartbeat_payload(2))
        col.expect_event("dev-a", PayloadType.HEARTBEAT, within=10)
        canary = col.canary
        assert canary is not None
        assert canary.wait_returned(canary.returned + 3, 20)  # more round trips, each proving it receives
        assert col.intact and col.problems() == ""


@pytest.mark.timeout(60)
def test_a_collector_whose_session_is_lost_ends_its_waits_with_an_infrastructure_error(
        brokers: Callable[..., Broker], tmp_path: Path, background: ThreadPoolExecutor) -> None:
    b = brokers("embedded")  # its sessions live in memory: a restart loses them
    a = b.add_device("dev-a")
    with Collector.from_endpoint(b.endpoint(), tmp_path / "telemetry.bin", **QUICK) as col:
        waiting: Future[object] = background.submit(col.expect_event, "dev-a", PayloadType.HEARTBEAT, 50)
        b.restart(graceful=True)
        col.wait_connected(30)
        with pytest.raises(CollectorIntegrityError, match="lost its session") as info:
            waiting.result(timeout=30)
        assert info.value.exit_code == 3
        assert col.gaps[0].session_kept is False
        assert col.problems().startswith("INTEGRITY LOST: collector lost its session")
        raw_publish(b.url, a, security_topic("dev-a"), heartbeat_payload(3))  # it receives again ...
        col.expect_event("dev-a", PayloadType.HEARTBEAT, within=10)  # ... and what arrives is real
        with pytest.raises(CollectorIntegrityError):  # but a timeout cannot blame the device
            col.expect_event("dev-a", PayloadType.NETWORK_ACTIVITY, within=0.2)


@pytest.mark.timeout(180)
@pytest.mark.needs("mosquitto")
def test_a_collector_behind_a_backlog_is_not_a_stall(brokers: Callable[..., Broker], tmp_path: Path) -> None:
    """A flood reaches a collector slower than the publisher: its canaries wait in the queue behind the
    flood for far longer than the canary's timeout, but messages keep arriving: that is receiving.
    (The timeout is short for the test, though not so short that a loaded machine's pause in
    receiving would pass for a stall.)"""
    TIMEOUT = 1.5
    import hashlib

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from harness.broker import parse_mqtt_url

    b = brokers("mosquitto")
    a = b.add_device("dev-a")
    host, port, _ = parse_mqtt_url(b.url)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=a.client_id)
    pub.username_pw_set(a.username, a.password)
    pub.max_inflight_messages_set(0)
    pub.max_queued_messages_set(0)
    pub.connect(host, port)
    pub.loop_start()
    total = 15_000
    with Collector.from_endpoint(b.endpoint(), tmp_path / "telemetry.bin", canary_interval=0.05,
                                 canary_timeout=TIMEOUT) as col:
        canary = col.canary
        assert canary is not None and canary.wait_returned(1, 10)
        col.on_received(lambda item: hashlib.sha256(item.payload * 4000).digest())  # a slow consumer
        started = time.monotonic()
        try:
            infos = [pub.publish(security_topic("dev-a"), heartbeat_payload(n), qos=1) for n in range(total)]
            for info in infos:
                info.wait_for_publish(60)
            published = time.monotonic() - started
            col.expect_events("dev-a", total, within=150)
        finally:
            pub.disconnect()
            pub.loop_stop()
        drained = time.monotonic() - started
        longest = canary.longest_round_trip
        assert col.intact, col.problems()
    print(f"\n{total} messages published in {published:.2f} s, received in {drained:.2f} s; the longest canary "
          f"round trip {longest:.2f} s with a {TIMEOUT} s timeout; no stall reported")
    assert longest > TIMEOUT  # the canary really was late: the test tried the rule
