"""Against real brokers: identities are enforced, TLS trusts only the run's CA, devices join live."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.broker import Broker, BrokerOptions, DeviceCredentials, open_broker
from harness.errors import InfrastructureError
from harness.telemetry.collector import Collector
from harness.telemetry.model import PayloadType
from harness.telemetry.topic import compose_username, security_topic

from .conftest import TLS_ERRORS, DeviceClient, heartbeat_payload

KINDS = [pytest.param("mosquitto", marks=pytest.mark.needs("mosquitto")), "embedded"]
QUIET = 0.5  # how long a device that must receive nothing is watched, after the collector got it


def collector_for(broker: Broker, tmp_path: Path) -> Collector:
    return Collector.from_endpoint(broker.endpoint(), tmp_path / "telemetry.bin")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_unknown_client_and_wrong_secret_are_refused(kind: str, brokers: Callable[..., Broker],
                                                     devices: Callable[..., DeviceClient]) -> None:
    b = brokers(kind)
    a = b.add_device("dev-a")
    assert devices(b.url, a).connected()
    stranger = DeviceCredentials("dev-z", compose_username(b.options.hub, "dev-z"), a.password)
    assert not devices(b.url, stranger).connected()
    assert not devices(b.url, DeviceCredentials(a.client_id, a.username, a.password + "x")).connected()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_device_cannot_publish_as_another(kind: str, brokers: Callable[..., Broker],
                                          devices: Callable[..., DeviceClient], tmp_path: Path) -> None:
    b = brokers(kind)
    a, _ = b.add_device("dev-a"), b.add_device("dev-b")
    with collector_for(b, tmp_path) as col:
        forger = devices(b.url, a)
        assert forger.connected()
        # acknowledged and dropped, or the connection closed (mosquitto 2.0.11): either way settled
        forger.publish_settled(security_topic("dev-b"), heartbeat_payload(1))
        honest = devices(b.url, a)
        assert honest.connected()
        assert honest.publish_settled(security_topic("dev-a"), heartbeat_payload(2))
        # the broker handled the forged message first: had it passed, the collector would have it by now
        col.expect_event("dev-a", PayloadType.HEARTBEAT, within=10)
        assert col.stream("dev-b").messages == []
        assert col.devices() == ["dev-a"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_device_cannot_read_another_devices_topics(kind: str, brokers: Callable[..., Broker],
                                                   devices: Callable[..., DeviceClient], tmp_path: Path) -> None:
    b = brokers(kind)
    a, bb = b.add_device("dev-a"), b.add_device("dev-b")
    with collector_for(b, tmp_path) as col:
        spy = devices(b.url, a)
        assert spy.connected()
        subscribed = threading.Event()
        spy.client.on_subscribe = lambda *args: subscribed.set()
        spy.client.subscribe([("devices/dev-b/messages/events/#", 1), ("devices/+/messages/#", 1), ("#", 1),
                              ("devices/dev-b/messages/devicebound/#", 1)])
        assert subscribed.wait(5)
        victim = devices(b.url, bb)
        assert victim.connected()
        victim.client.publish(security_topic("dev-b"), heartbeat_payload(3), qos=1).wait_for_publish(5)
        col.expect_event("dev-b", PayloadType.HEARTBEAT, within=10)
        assert not spy.got_message.wait(QUIET), [m.topic for m in spy.received]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_device_added_while_running_can_connect(kind: str, brokers: Callable[..., Broker],
                                                devices: Callable[..., DeviceClient], tmp_path: Path) -> None:
    b = brokers(kind)
    with collector_for(b, tmp_path) as col:
        late = b.add_device("dev-late")
        assert "dev-late" in b.endpoint().devices
        dev = devices(b.url, late)
        assert dev.connected()
        dev.client.publish(security_topic("dev-late"), heartbeat_payload(4), qos=1).wait_for_publish(5)
        assert col.expect_event("dev-late", PayloadType.HEARTBEAT, within=10).id[-1] == 4


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_tls_needs_the_run_ca(kind: str, brokers: Callable[..., Broker],
                              devices: Callable[..., DeviceClient], tmp_path: Path) -> None:
    b = brokers(kind, tls=True)
    a = b.add_device("dev-a")
    assert b.tls_url and b.tls_url.startswith("mqtts://") and b.ca_path and b.ca_path.exists()
    dev = devices(b.tls_url, a, b.ca_path)
    assert dev.connected()
    with pytest.raises(TLS_ERRORS):
        devices(b.tls_url, a)  # system trust store only: the run's CA is unknown there
    with Collector.from_endpoint(b.endpoint(), tmp_path / "t.bin", tls=True) as col:
        assert col.url == b.tls_url and col.connected
        for n in range(50):  # through TLS and the collector's block-reading socket
            dev.client.publish(security_topic("dev-a"), heartbeat_payload(n), qos=1)
        assert len(col.expect_events("dev-a", 50, within=20)) == 50


@pytest.mark.timeout(60)
@pytest.mark.needs("mosquitto")
def test_mosquitto_files_live_in_the_run_folder_and_health_reports_death(brokers: Callable[..., Broker]) -> None:
    b = brokers("mosquitto")
    folder = b.run_dir / "mosquitto"
    for name in ("mosquitto.conf", "identities", "mosquitto.log"):
        assert (folder / name).exists(), name
    assert (folder / "identities").stat().st_mode & 0o777 == 0o600
    conf = (folder / "mosquitto.conf").read_text()
    assert "max_queued_messages 0" in conf and "max_inflight_messages 0" in conf
    assert f"plugin_opt_identities {folder / 'identities'}" in conf and "password_file" not in conf
    assert (b.run_dir / "broker-endpoint.json").exists()
    assert b.health().ok
    b._proc.kill()  # type: ignore[attr-defined]
    b._proc.wait(5)  # type: ignore[attr-defined]
    h = b.health()
    assert not h.ok and "exited" in h.detail


@pytest.mark.timeout(60)
@pytest.mark.needs("mosquitto")
def test_a_taken_port_is_a_clear_infrastructure_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = open_broker("mosquitto", tmp_path, BrokerOptions(port=port))
        with pytest.raises(InfrastructureError) as info:
            broker.start()
    text = str(info.value)
    assert f"127.0.0.1:{port}" in text and "Address already in use" in text
    assert str(tmp_path / "mosquitto" / "mosquitto.log") in text
    assert not broker.running and broker.pid is None  # type: ignore[attr-defined]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_collector_with_wrong_credentials_fails_fast_and_clearly(kind: str, brokers: Callable[..., Broker],
                                                                 tmp_path: Path) -> None:
    b = brokers(kind)
    c = b.collector_credentials
    col = Collector(b.url, DeviceCredentials(c.client_id, c.username, "wrong"), tmp_path / "t.bin")
    with pytest.raises(InfrastructureError, match="refused the connection") as info:
        col.start(timeout=10)
    assert "collector could not subscribe" in str(info.value) and not col.connected
