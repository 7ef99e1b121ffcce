"""The IoT Hub stand-in on both broker kinds, with a device written here on paho (the Azure SDK's
own client is in test_sdk_interop.py): twin GET and PATCH, desired pushes, direct methods with a
deadline, C2D, and DPS registration with its polling flow, each device seeing only its own."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from harness.broker import Broker, DeviceCredentials, sas
from harness.hub.service import HubWaitTimeout, IotHubStandIn, MethodTimeout
from harness.telemetry.topic import decode_pairs

from .conftest import DeviceClient

KINDS = [pytest.param("mosquitto", marks=pytest.mark.needs("mosquitto")), "embedded"]
HUB = "bench.azure-devices.net"
SCOPE = "0ne0012ABCD"
KEY = bytes(range(32))
SHARED = [("$iothub/twin/res/#", 1), ("$iothub/methods/POST/#", 1), ("$iothub/twin/PATCH/properties/desired/#", 1),
          ("devices/{d}/messages/devicebound/#", 1)]


@pytest.fixture
def hub_on(brokers: Callable[..., Broker]) -> Iterator[Callable[[str], tuple[Broker, IotHubStandIn]]]:
    made: list[IotHubStandIn] = []

    def make(kind: str) -> tuple[Broker, IotHubStandIn]:
        b = brokers(kind, hub=HUB, id_scope=SCOPE)
        hub = IotHubStandIn(b).start()
        made.append(hub)
        return b, hub

    yield make
    for hub in made:
        hub.stop()


def _device(b: Broker, devices: Callable[..., DeviceClient], device: str) -> DeviceClient:
    d = devices(b.url, b.add_device(device))
    assert d.connected()
    assert d.subscribe_granted([(t.format(d=device), q) for t, q in SHARED]) == [True] * len(SHARED)
    return d


def _next(d: DeviceClient, prefix: str, since: int = 0, timeout: float = 10) -> tuple[str, bytes]:
    with d._arrived:
        assert d._arrived.wait_for(lambda: any(m.topic.startswith(prefix) for m in d.received[since:]), timeout), \
            f"nothing on {prefix}; got {[m.topic for m in d.received]}"
        m = next(m for m in d.received[since:] if m.topic.startswith(prefix))
        return m.topic, m.payload


def _status_rid(topic: str) -> tuple[int, dict[str, str]]:
    path, _, query = topic.partition("/?")
    return int(path.rsplit("/", 1)[1]), decode_pairs(query)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_twin_get_patch_and_desired(kind: str, hub_on: Callable[[str], tuple[Broker, IotHubStandIn]],
                                    devices: Callable[..., DeviceClient]) -> None:
    b, hub = hub_on(kind)
    a, other = _device(b, devices, "dev-a"), _device(b, devices, "dev-b")
    hub.set_twin("dev-a", desired={"interval": 10, "nested": {"x": 1}})
    hub.set_twin("dev-b", desired={"interval": 99})

    assert a.publish_settled("$iothub/twin/GET/?$rid=1", b"")
    topic, body = _next(a, "$iothub/twin/res/")
    assert _status_rid(topic) == (200, {"$rid": "1"})
    assert json.loads(body) == {"desired": {"interval": 10, "nested": {"x": 1}, "$version": 1},
                                "reported": {"$version": 1}}

    assert a.publish_settled("$iothub/twin/PATCH/properties/reported/?$rid=2", b'{"fw": "1.2", "nested": {"y": 2}}')
    assert hub.wait_reported("dev-a", lambda p: "fw" in p, within=10) == {"fw": "1.2", "nested": {"y": 2}}
    topic, _ = _next(a, "$iothub/twin/res/204/")
    assert _status_rid(topic) == (204, {"$rid": "2", "$version": "2"})
    assert hub.twin("dev-a")["reported"] == {"fw": "1.2", "nested": {"y": 2}, "$version": 2}

    assert a.publish_settled("$iothub/twin/PATCH/properties/reported/?$rid=3", b'{"$version": 7}')
    topic, _ = _next(a, "$iothub/twin/res/400/")
    assert _status_rid(topic)[0] == 400 and "IoT Hub's own" in hub.refused_patches("dev-a")[0]

    version = hub.set_desired("dev-a", {"interval": None, "mode": "fast"})
    topic, body = _next(a, "$iothub/twin/PATCH/properties/desired/")
    assert decode_pairs(topic.partition("/?")[2]) == {"$version": str(version)}
    assert json.loads(body) == {"interval": None, "mode": "fast", "$version": 2}
    assert hub.twin("dev-a")["desired"] == {"nested": {"x": 1}, "mode": "fast", "$version": 2}
    assert hub.reported_patches("dev-b") == [] and other.received == []  # dev-b asked nothing, got nothing
    # the evidence: every request and answer, in order
    logged = [(e["dir"], e["client"], e["topic"]) for e in map(json.loads, hub.log_path.read_text().splitlines())]
    assert logged[:2] == [("from", "dev-a", "$iothub/twin/GET/?$rid=1"),
                          ("to", "dev-a", "$iothub/twin/res/200/?$rid=1")]
    assert ("to", "dev-a", f"$iothub/twin/PATCH/properties/desired/?$version={version}") in logged


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_a_direct_method_gets_the_devices_answer_or_times_out(
        kind: str, hub_on: Callable[[str], tuple[Broker, IotHubStandIn]], devices: Callable[..., DeviceClient]) -> None:
    b, hub = hub_on(kind)
    a, other = _device(b, devices, "dev-a"), _device(b, devices, "dev-b")

    def answer() -> None:  # the device: take the call and answer 201 with what it was given
        topic, body = _next(a, "$iothub/methods/POST/")
        rid = decode_pairs(topic.partition("/?")[2])["$rid"]
        assert topic.startswith("$iothub/methods/POST/reboot/")
        a.client.publish(f"$iothub/methods/res/201/?$rid={rid}", json.dumps({"got": json.loads(body)}), qos=1)

    device = threading.Thread(target=answer)
    device.start()
    response = hub.invoke_method("dev-a", "reboot", {"delay": 1}, timeout=10)
    device.join(10)
    assert (response.status, response.payload) == (201, {"got": {"delay": 1}})
    # dev-b never answers: the deadline ends the wait, as a check failure
    started = time.monotonic()
    with pytest.raises(MethodTimeout, match=r"dev-b did not answer direct method .reboot. within 0\.5 s"):
        hub.invoke_method("dev-b", "reboot", timeout=0.5)
    assert time.monotonic() - started < 5
    _next(other, "$iothub/methods/POST/reboot/")  # it was asked, and only it
    assert not any(m.topic.startswith("$iothub/methods/POST/") for m in a.received[1:])
    # dev-b answering a call made to dev-a (request ids are guessable) is not dev-a's answer
    seen = len(a.received)
    forged_topic: list[str] = []

    def forge() -> None:  # once dev-a has the call, dev-b answers it with its request id
        call, _ = _next(a, "$iothub/methods/POST/", since=seen)
        forged_topic.append(f"$iothub/methods/res/200/?$rid={decode_pairs(call.partition('/?')[2])['$rid']}")
        other.client.publish(forged_topic[0], b"{}", qos=1).wait_for_publish(5)

    forger = threading.Thread(target=forge)
    forger.start()
    with pytest.raises(MethodTimeout):
        hub.invoke_method("dev-a", "reboot", timeout=2)
    forger.join(10)
    assert forged_topic and forged_topic[0] in [r.topic for r in hub.requests if r.client_id == "dev-b"]
    with pytest.raises(HubWaitTimeout, match="dev-a sent no matching reported-properties patch"):
        hub.wait_reported("dev-a", within=0.1)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_c2d_messages_reach_their_device(kind: str, hub_on: Callable[[str], tuple[Broker, IotHubStandIn]],
                                         devices: Callable[..., DeviceClient]) -> None:
    b, hub = hub_on(kind)
    a, other = _device(b, devices, "dev-a"), _device(b, devices, "dev-b")
    hub.send_c2d("dev-a", b"hello", {"kind": "greeting"})
    topic, body = _next(a, "devices/dev-a/messages/devicebound/")
    assert body == b"hello"
    assert decode_pairs(topic.rsplit("/", 1)[1]) == {"$.to": "/devices/dev-a/messages/deviceBound", "kind": "greeting"}
    hub.send_c2d("dev-b", b"last")
    _next(other, "devices/dev-b/messages/devicebound/")
    assert other.received[0].payload == b"last" and len(a.received) == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_the_embedded_c_sdks_c2d_filter_is_granted_and_brings_only_the_devices_own(
        kind: str, hub_on: Callable[[str], tuple[Broker, IotHubStandIn]], devices: Callable[..., DeviceClient]) -> None:
    """The Azure IoT middleware (stock Azure RTOS images) subscribes to
    ``devices/+/messages/devicebound/#``, which IoT Hub grants; the stand-in refused it, so such an
    image never got a C2D message (and could not tell: NetX's SUBSCRIBE does not wait for the SUBACK).
    Granted now, and what arrives is still only the device's own."""
    b, hub = hub_on(kind)
    sdk_filter = [("devices/+/messages/devicebound/#", 1)]
    a, other = (devices(b.url, b.add_device(d)) for d in ("dev-a", "dev-b"))
    assert a.connected() and other.connected()
    assert a.subscribe_granted(sdk_filter) == [True] and other.subscribe_granted(sdk_filter) == [True]
    assert a.subscribe_granted([("devices/dev-b/messages/devicebound/#", 1)]) == [False]  # another's, named
    hub.send_c2d("dev-b", b"for b")
    hub.send_c2d("dev-a", b"for a")
    hub.send_c2d("dev-a", b"for a, again")
    _next(other, "devices/dev-b/messages/devicebound/")
    _next(a, "devices/dev-a/messages/devicebound/", since=1)  # the second: b's, if sent to a, came before it
    assert [m.payload for m in a.received] == [b"for a", b"for a, again"]
    assert [m.payload for m in other.received] == [b"for b"]


def _dps_client(b: Broker, devices: Callable[..., DeviceClient], registration: str, key: bytes = KEY,
                key_name: str | None = sas.DPS_KEY_NAME) -> DeviceClient:
    resource = sas.registration_resource(SCOPE, registration)
    token = sas.make_token(key, resource, int(time.time()) + 600, key_name)
    return devices(b.url, DeviceCredentials(registration, f"{resource}/api-version=2019-03-31&ClientVersion=x",
                                            token))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_dps_registers_and_assigns_the_local_hub(kind: str, hub_on: Callable[[str], tuple[Broker, IotHubStandIn]],
                                                 devices: Callable[..., DeviceClient]) -> None:
    b, hub = hub_on(kind)
    b.add_device("gs-01", key=KEY, registration_id="gs-01")
    b.add_device("gs-02", key=bytes(range(1, 33)), registration_id="reg-02")
    reg = _dps_client(b, devices, "gs-01")
    assert reg.connected()
    assert reg.subscribe_granted([("$dps/registrations/res/#", 1), ("$iothub/twin/res/#", 1)]) == [True, False]
    assert reg.publish_settled("$dps/registrations/PUT/iotdps-register/?$rid=1", b'{"registrationId": "gs-01"}')
    topic, body = _next(reg, "$dps/registrations/res/")
    status, params = _status_rid(topic)
    assert (status, params["$rid"], params["retry-after"]) == (202, "1", "1")
    operation = json.loads(body)
    assert operation["status"] == "assigning"
    reg.publish_settled(f"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId="
                        f"{operation['operationId']}", b"")
    topic, body = _next(reg, "$dps/registrations/res/200/")
    state = json.loads(body)
    assert state["status"] == "assigned" and _status_rid(topic)[1] == {"$rid": "2"}
    assert {k: state["registrationState"][k] for k in ("registrationId", "assignedHub", "deviceId", "status")} == {
        "registrationId": "gs-01", "assignedHub": HUB, "deviceId": "gs-01", "status": "assigned"}
    assert hub.dps.registrations["gs-01"].device_id == "gs-01"

    # another registration cannot ask about this one's operation
    spy = _dps_client(b, devices, "reg-02", key=bytes(range(1, 33)))
    assert spy.connected() and spy.subscribe_granted([("$dps/registrations/res/#", 1)]) == [True]
    spy.publish_settled(f"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=9&operationId="
                        f"{operation['operationId']}", b"")
    assert _status_rid(_next(spy, "$dps/registrations/res/")[0])[0] == 404
    assert [m.topic for m in reg.received if m.topic.endswith("$rid=9")] == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", ["another key", "another registration's user name", "a hub token", "a wrong skn",
                                  "no skn"])
def test_dps_sign_in_rules(kind: str, case: str, brokers: Callable[..., Broker],
                           devices: Callable[..., DeviceClient]) -> None:
    b = brokers(kind, hub=HUB, id_scope=SCOPE)
    b.add_device("gs-01", key=KEY, registration_id="gs-01")
    b.add_device("gs-02", key=bytes(range(1, 33)), registration_id="reg-02")
    resource = sas.registration_resource(SCOPE, "gs-01")
    expiry = int(time.time()) + 600
    user = f"{resource}/api-version=2019-03-31"
    token, accepted = {
        "another key": (sas.make_token(bytes(range(1, 33)), resource, expiry, "registration"), False),
        "another registration's user name": (sas.make_token(KEY, resource, expiry, "registration"), False),
        "a hub token": (sas.device_token(KEY, HUB, "gs-01"), False),
        "a wrong skn": (sas.make_token(KEY, resource, expiry, "iothubowner"), False),
        "no skn": (sas.make_token(KEY, resource, expiry), True),
    }[case]
    if case == "another registration's user name":
        user = f"{sas.registration_resource(SCOPE, 'reg-02')}/api-version=2019-03-31"
    d = devices(b.url, DeviceCredentials("gs-01", user, token))
    assert d.connected() is accepted
