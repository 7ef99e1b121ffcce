"""IoT Hub's shared reply topics on both broker kinds: a device sees only the replies meant for it,
although every device subscribes to the same names, and no device can read another's requests,
forge a reply, or reach the relay's own topics (harness.broker.relay)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from harness.broker import Broker, DeviceCredentials, relay

from .conftest import DeviceClient

KINDS = [pytest.param("mosquitto", marks=pytest.mark.needs("mosquitto")), "embedded"]
SHARED = [("$iothub/twin/res/#", 1), ("$iothub/methods/POST/#", 1), ("$iothub/twin/PATCH/properties/desired/#", 1)]


def _service(b: Broker, devices: Callable[..., DeviceClient]) -> DeviceClient:
    creds = b.add_service("hil-hub-test", subscribe=relay.SERVICE_SUBSCRIBE, publish=relay.SERVICE_PUBLISH)
    svc = devices(b.url, creds)
    assert svc.connected()
    assert svc.subscribe_granted([(relay.FROM_PREFIX + "#", 1)]) == [True]
    return svc


def _service_and_two_devices(b: Broker, devices: Callable[..., DeviceClient]
                             ) -> tuple[DeviceClient, DeviceClient, DeviceClient, DeviceCredentials]:
    """The service, and dev-a and dev-b connected and subscribed to IoT Hub's shared reply names (and
    dev-b's credentials, for more connections)."""
    a_creds, b_creds = b.add_device("dev-a"), b.add_device("dev-b")
    svc = _service(b, devices)
    a, other = devices(b.url, a_creds), devices(b.url, b_creds)
    assert a.connected() and other.connected()
    assert a.subscribe_granted(SHARED) == [True] * 3 and other.subscribe_granted(SHARED) == [True] * 3
    return svc, a, other, b_creds


def _wait_topic(client: DeviceClient, topic: str, timeout: float = 10) -> bytes:
    with client._arrived:
        assert client._arrived.wait_for(lambda: any(m.topic == topic for m in client.received), timeout), \
            f"{topic} did not arrive; got {[m.topic for m in client.received]}"
        return next(m.payload for m in client.received if m.topic == topic)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_a_reply_reaches_only_the_device_it_is_meant_for(kind: str, brokers: Callable[..., Broker],
                                                          devices: Callable[..., DeviceClient]) -> None:
    b = brokers(kind)
    svc, a, other, _ = _service_and_two_devices(b, devices)

    # the request reaches the service under the sender's id, and no other device
    assert a.publish_settled("$iothub/twin/GET/?$rid=1", b"")
    assert _wait_topic(svc, f"{relay.FROM_PREFIX}dev-a/$iothub/twin/GET/?$rid=1") == b""
    # the reply, on the shared name, reaches dev-a only (dev-b asked nothing but subscribes the same)
    assert svc.publish_settled(relay.to_client("dev-a", "$iothub/twin/res/200/?$rid=1"), b'{"desired":{}}')
    assert _wait_topic(a, "$iothub/twin/res/200/?$rid=1") == b'{"desired":{}}'
    # and so does a method call, and a twin PATCH
    assert svc.publish_settled(relay.to_client("dev-b", "$iothub/methods/POST/reboot/?$rid=7"), b"{}")
    assert _wait_topic(other, "$iothub/methods/POST/reboot/?$rid=7") == b"{}"
    # a last message to each: the broker keeps one publisher's order, so a stray copy of either reply
    # would have reached the other device before this one does
    for device in ("dev-a", "dev-b"):
        assert svc.publish_settled(relay.to_client(device, "$iothub/twin/res/200/?$rid=99"), b"last")
    _wait_topic(a, "$iothub/twin/res/200/?$rid=99")
    _wait_topic(other, "$iothub/twin/res/200/?$rid=99")
    assert [m.topic for m in a.received] == ["$iothub/twin/res/200/?$rid=1", "$iothub/twin/res/200/?$rid=99"]
    assert [m.topic for m in other.received] == ["$iothub/methods/POST/reboot/?$rid=7", "$iothub/twin/res/200/?$rid=99"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_a_device_can_neither_read_requests_nor_forge_replies(kind: str, brokers: Callable[..., Broker],
                                                               devices: Callable[..., DeviceClient]) -> None:
    b = brokers(kind)
    svc, victim, spy, b_creds = _service_and_two_devices(b, devices)
    # the relay's own names, and IoT Hub's request names, are not a device's to read
    assert spy.subscribe_granted([(relay.FROM_PREFIX + "#", 1), (relay.FROM_PREFIX + "dev-a/#", 1),
                                  (relay.TO_PREFIX + "#", 1), ("$iothub/twin/GET/#", 1), ("hil/#", 1)]) == [False] * 5
    # nor its to write: a forged reply to dev-a, directly or through the relay, goes nowhere
    for forged in ("$iothub/twin/res/200/?$rid=1", "$iothub/methods/POST/reboot/?$rid=1",
                   relay.to_client("dev-a", "$iothub/twin/res/200/?$rid=1"), "$dps/registrations/res/200/?$rid=1"):
        forger = devices(b.url, b_creds)  # one connection each: a refused PUBLISH may close it (mosquitto)
        assert forger.connected()
        forger.publish_settled(forged, b"forged")  # acknowledged and dropped, or the connection closed
    # the victim's own request and its answer still flow, and the answer is the first thing it got
    assert victim.publish_settled("$iothub/twin/GET/?$rid=2", b"")
    _wait_topic(svc, f"{relay.FROM_PREFIX}dev-a/$iothub/twin/GET/?$rid=2")
    assert svc.publish_settled(relay.to_client("dev-a", "$iothub/twin/res/200/?$rid=2"), b"real")
    assert _wait_topic(victim, "$iothub/twin/res/200/?$rid=2") == b"real"
    assert [m.payload for m in victim.received] == [b"real"]  # the broker handled the forgeries first
    assert [m.topic for m in svc.received] == [f"{relay.FROM_PREFIX}dev-a/$iothub/twin/GET/?$rid=2"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_the_relay_delivers_only_what_the_device_may_read(kind: str, brokers: Callable[..., Broker],
                                                          devices: Callable[..., DeviceClient]) -> None:
    """Even the service cannot push a device a topic outside its read filters (another device's)."""
    b = brokers(kind)
    a_creds = b.add_device("dev-a")
    b.add_device("dev-b")
    svc = _service(b, devices)
    a = devices(b.url, a_creds)
    assert a.connected()
    assert svc.publish_settled(relay.to_client("dev-a", "devices/dev-b/messages/devicebound/x"), b"not yours")
    assert svc.publish_settled(relay.to_client("dev-a", "$iothub/twin/res/200/?$rid=1"), b"yours")
    assert _wait_topic(a, "$iothub/twin/res/200/?$rid=1") == b"yours"
    assert [m.payload for m in a.received] == [b"yours"]
