"""The IoT Hub stand-in's services on the run's broker: twin, direct methods, cloud-to-device
messages and DPS, answered as IoT Hub and DPS answer a device.

A service identity of the broker reads every device's requests and answers each device alone,
through the broker's relay (:mod:`harness.broker.relay`), so devices keep IoT Hub's shared topic
names::

    with IotHubStandIn(broker) as hub:                        # connected and subscribed on return
        hub.set_twin("gs-01", desired={"interval": 10})       # what the device's twin GET returns
        patch = hub.wait_reported("gs-01", lambda p: "fw" in p, within=30)   # a reported PATCH
        hub.set_desired("gs-01", {"interval": 20})            # stored, and pushed to the device
        answer = hub.invoke_method("gs-01", "reboot", {"delay": 1}, timeout=30)  # MethodResponse
        hub.send_c2d("gs-01", b"hello", {"kind": "greeting"})
        hub.dps.registrations["gs-01"]                        # what DPS assigned

Every request and every answer is written as it happens to ``<run dir>/hub-service.jsonl`` (the
broker's run folder; one JSON object a line: time, direction, client id, topic, payload size), the
evidence a failed wait points at. Waits end on the event they wait for; a deadline passing is :class:`MethodTimeout` or
:class:`HubWaitTimeout` (a device's failure: ``CheckFailed``), unless the service's own connection
was down meanwhile, which is an ``InfrastructureError`` (never read as the device's fault).
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from harness.broker import Broker, parse_mqtt_url, relay
from harness.broker.relay import SERVICE_CLIENT_ID
from harness.errors import CheckFailed, InfrastructureError, UsageError
from harness.hub.dps import DpsStandIn
from harness.hub.twin import PatchRefused, Twin
from harness.telemetry.topic import decode_pairs, encode_pairs

log = logging.getLogger(__name__)

LOG_NAME = "hub-service.jsonl"
CONNECT_TIMEOUT = 10.0
PUBLISH_TIMEOUT = 10.0
TWIN_GET = "$iothub/twin/GET/"
TWIN_REPORTED = "$iothub/twin/PATCH/properties/reported/"
METHOD_RESPONSE = "$iothub/methods/res/"


class MethodTimeout(CheckFailed):
    """The device did not answer a direct method within its deadline (IoT Hub's 504)."""


class HubWaitTimeout(CheckFailed):
    """What a wait expected from a device did not arrive in time."""


@dataclass(frozen=True)
class MethodResponse:
    status: int
    payload: Any  # the device's JSON answer (None when it sent none)


@dataclass(frozen=True)
class Request:
    """One request a device sent, as the service received it (evidence)."""

    time: float
    client_id: str
    topic: str
    payload: bytes


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    response: MethodResponse | None = None


class IotHubStandIn:
    """See the module docstring. ``broker`` is the run's (running) broker."""

    def __init__(self, broker: Broker, *, client_id: str = SERVICE_CLIENT_ID) -> None:
        if not broker.running:
            raise UsageError("IotHubStandIn needs a running broker", fix="start the broker first")
        self.broker = broker
        self.hub = broker.options.hub
        self.dps = DpsStandIn(self.hub)
        self.requests: list[Request] = []
        self.outages: list[tuple[float, float | None]] = []  # the service's own connection lost: (from, to)
        self._twins: dict[str, Twin] = {}
        self._reported: dict[str, list[dict[str, Any]]] = {}
        self._refused: dict[str, list[str]] = {}  # why a device's patch was answered 400
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._rids = itertools.count(1)
        self.log_path = broker.run_dir / LOG_NAME
        self._log_lock = threading.Lock()
        self._cond = threading.Condition()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        creds = broker.add_service(client_id, subscribe=relay.SERVICE_SUBSCRIBE, publish=relay.SERVICE_PUBLISH)
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=creds.client_id, clean_session=False,
                        protocol=mqtt.MQTTv311)
        c.username_pw_set(creds.username, creds.password)
        c.reconnect_delay_set(min_delay=1, max_delay=2)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self._client = c

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> IotHubStandIn:
        host, port, _ = parse_mqtt_url(self.broker.url)
        try:
            self._client.connect(host, port, keepalive=30)
        except OSError as exc:
            raise InfrastructureError(f"the hub stand-in cannot reach the broker at {self.broker.url}: {exc}",
                                      evidence=self.broker.log_path) from None
        self._client.loop_start()
        if not self._subscribed.wait(CONNECT_TIMEOUT):
            self.stop()
            raise InfrastructureError(f"the hub stand-in did not connect and subscribe within {CONNECT_TIMEOUT:.0f} s "
                                      "(or the broker refused its login or subscription)",
                                      evidence=self.broker.log_path)
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> IotHubStandIn:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, rc: Any, props: object) -> None:
        if rc.is_failure:
            log.warning("hub stand-in: the broker refused its login: %s", rc)
            return
        self._connected.set()
        with self._cond:
            if self.outages and self.outages[-1][1] is None:
                self.outages[-1] = (self.outages[-1][0], time.time())
        client.subscribe([(relay.FROM_PREFIX + "#", 1)])

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, codes: list[Any], props: object) -> None:
        if any(code.is_failure for code in codes):
            log.error("hub stand-in: the broker refused its subscription to %s", relay.FROM_PREFIX + "#")
            return
        self._subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, rc: Any, props: object) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        with self._cond:
            if was:
                self.outages.append((time.time(), None))
            self._cond.notify_all()

    # -- requests ----------------------------------------------------------------------------------
    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        split = relay.split_inbound(msg.topic)
        if split is None:
            log.info("hub stand-in: ignored %r", msg.topic)
            return
        client_id, topic = split
        with self._cond:
            self.requests.append(Request(time.time(), client_id, topic, bytes(msg.payload)))
        self._record("from", client_id, topic, len(msg.payload))
        try:
            self._dispatch(client_id, topic, bytes(msg.payload))
        except Exception:  # a device's request must never stop the service
            log.exception("hub stand-in: %s's request %r", client_id, topic)

    def _dispatch(self, client_id: str, topic: str, payload: bytes) -> None:
        path, _, query = topic.partition("?")
        rid = decode_pairs(query).get("$rid", "")
        if topic.startswith("$dps/"):
            reg = self.broker.identities.registration(client_id)
            if reg is None or reg.device_id is None:
                return  # no registration signs in under this id: nothing to answer
            with self._cond:
                reply = self.dps.handle(client_id, reg.device_id, topic, payload)
            if reply is not None:
                self._reply(client_id, reply.topic, reply.payload)
        elif path == TWIN_GET:
            with self._cond:
                document = self._twin(client_id).document()
            self._reply(client_id, f"$iothub/twin/res/200/?$rid={rid}", json.dumps(document).encode())
        elif path == TWIN_REPORTED:
            self._reported_patch(client_id, rid, payload)
        elif path.startswith(METHOD_RESPONSE):
            self._method_response(client_id, path, rid, payload)
        else:
            log.info("hub stand-in: %s sent %r, which asks nothing of the hub", client_id, topic)

    def _reported_patch(self, device: str, rid: str, payload: bytes) -> None:
        with self._cond:
            try:
                patch = json.loads(payload)
                version = self._twin(device).patch_reported(patch)
            except (ValueError, RecursionError, PatchRefused) as exc:  # RecursionError: JSON nested past Python
                self._refused.setdefault(device, []).append(str(exc))
                self._cond.notify_all()
                status, query = 400, f"$rid={rid}"
            else:
                self._reported.setdefault(device, []).append(patch)
                self._cond.notify_all()
                status, query = 204, f"$rid={rid}&$version={version}"
        self._reply(device, f"$iothub/twin/res/{status}/?{query}", b"")

    def _method_response(self, device: str, path: str, rid: str, payload: bytes) -> None:
        status_text = path[len(METHOD_RESPONSE):].strip("/")
        with self._cond:
            pending = self._pending.get((device, rid))
        if pending is None or not status_text.isdigit():
            log.info("hub stand-in: %s answered method request %r, which is not pending", device, rid)
            return
        try:
            body = json.loads(payload) if payload else None
        except ValueError:
            body = payload.decode(errors="replace")
        pending.response = MethodResponse(int(status_text), body)
        pending.done.set()

    def _reply(self, client_id: str, topic: str, payload: bytes) -> None:
        self._record("to", client_id, topic, len(payload))
        self._client.publish(relay.to_client(client_id, topic), payload, qos=1)

    def _record(self, direction: str, client_id: str, topic: str, size: int) -> None:
        line = json.dumps({"time": time.time(), "dir": direction, "client": client_id, "topic": topic, "bytes": size})
        with self._log_lock, self.log_path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    def _publish(self, topic: str, payload: bytes) -> None:
        """A QoS 1 publish the broker acknowledged, or an infrastructure error."""
        target = relay.outbound(topic)
        self._record("to", *(target or (topic.split("/")[1], topic)), len(payload))
        info = self._client.publish(topic, payload, qos=1)
        try:
            info.wait_for_publish(PUBLISH_TIMEOUT)
        except (RuntimeError, ValueError) as exc:
            raise InfrastructureError(f"the hub stand-in could not publish {topic!r}: {exc}",
                                      evidence=self.broker.log_path) from None
        if not info.is_published():
            raise InfrastructureError(f"the broker did not acknowledge {topic!r} within {PUBLISH_TIMEOUT:.0f} s",
                                      evidence=self.broker.log_path)

    # -- twin --------------------------------------------------------------------------------------
    def _twin(self, device: str) -> Twin:
        return self._twins.setdefault(device, Twin())

    def set_twin(self, device: str, *, desired: dict[str, Any] | None = None,
                 reported: dict[str, Any] | None = None) -> None:
        """What the device's twin GET returns from now on (versions start at 1)."""
        with self._cond:
            self._twins[device] = Twin(desired=dict(desired or {}), reported=dict(reported or {}))

    def twin(self, device: str) -> dict[str, Any]:
        """The twin document as the device would GET it now."""
        with self._cond:
            return self._twin(device).document()

    def set_desired(self, device: str, patch: dict[str, Any]) -> int:
        """Patch the desired properties, as a back end would, and push the patch to the device
        (``$iothub/twin/PATCH/properties/desired/?$version=N``); the new version."""
        with self._cond:
            version = self._twin(device).patch_desired(patch)
        self._publish(relay.to_client(device, f"$iothub/twin/PATCH/properties/desired/?$version={version}"),
                      json.dumps({**patch, "$version": version}).encode())
        return version

    def reported_patches(self, device: str) -> list[dict[str, Any]]:
        """Every reported-properties patch the device sent and the hub accepted, oldest first."""
        with self._cond:
            return list(self._reported.get(device, []))

    def refused_patches(self, device: str) -> list[str]:
        """Why each patch the hub answered with 400 was refused."""
        with self._cond:
            return list(self._refused.get(device, []))

    def wait_reported(self, device: str, predicate: Callable[[dict[str, Any]], bool] | None = None, *,
                      within: float, since: int = 0) -> dict[str, Any]:
        """The first reported patch from index ``since`` that ``predicate`` accepts (any, without one)."""
        deadline = time.monotonic() + within
        outages_before = len(self.outages)
        with self._cond:
            while True:
                patches = self._reported.get(device, [])
                for patch in patches[since:]:
                    if predicate is None or predicate(patch):
                        return patch
                since = len(patches)
                left = deadline - time.monotonic()
                if left <= 0:
                    self._raise_if_outage(outages_before, f"a reported patch from {device}")
                    raise HubWaitTimeout(
                        f"{device} sent no matching reported-properties patch within {within:g} s",
                        expected="a twin PATCH on $iothub/twin/PATCH/properties/reported/",
                        actual=f"patches: {self._reported.get(device, [])}; refused: {self._refused.get(device, [])}",
                        evidence=self.log_path)
                self._cond.wait(left)

    # -- methods and C2D ---------------------------------------------------------------------------
    def invoke_method(self, device: str, name: str, payload: Any = None, *, timeout: float = 30.0) -> MethodResponse:
        """Call a direct method and wait for the device's answer, at most ``timeout`` seconds."""
        if not name or "/" in name or "?" in name or "#" in name or "+" in name:
            raise UsageError(f"method name {name!r} cannot be a topic level", fix="use letters, digits, - and _")
        rid = format(next(self._rids), "x")
        pending = _Pending()
        with self._cond:
            self._pending[(device, rid)] = pending
        outages_before = len(self.outages)
        try:
            self._publish(relay.to_client(device, f"$iothub/methods/POST/{name}/?$rid={rid}"),
                          json.dumps(payload).encode())
            if pending.done.wait(timeout):
                assert pending.response is not None
                return pending.response
            self._raise_if_outage(outages_before, f"the answer to method {name!r}")
            raise MethodTimeout(f"{device} did not answer direct method {name!r} within {timeout:g} s",
                                expected=f"a PUBLISH to $iothub/methods/res/<status>/?$rid={rid}",
                                actual=f"requests from {device}: "
                                       f"{[r.topic for r in self.requests if r.client_id == device][-5:]}",
                                evidence=self.log_path)
        finally:
            with self._cond:
                self._pending.pop((device, rid), None)

    def send_c2d(self, device: str, payload: bytes, properties: dict[str, str] | None = None) -> None:
        """A cloud-to-device message on ``devices/{id}/messages/devicebound/{properties}``, acknowledged by
        the broker (queued there for a device with a persistent session, as IoT Hub queues it)."""
        props = {"$.to": f"/devices/{device}/messages/deviceBound", **(properties or {})}
        self._publish(f"devices/{device}/messages/devicebound/{encode_pairs(props)}", payload)

    def _raise_if_outage(self, before: int, what: str) -> None:
        if len(self.outages) > before or not self._connected.is_set():
            raise InfrastructureError(f"the hub stand-in lost its broker connection while waiting for {what}",
                                      actual=f"outages: {self.outages[before:]}", evidence=self.broker.log_path)
