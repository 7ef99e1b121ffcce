"""The Device Provisioning Service stand-in: its MQTT exchange, as pure functions of the request.

A device connects as its registration (client id = registration id, see
:meth:`harness.broker.credentials.IdentityTable.add_registration`), subscribes to
``$dps/registrations/res/#`` and::

    PUT  $dps/registrations/PUT/iotdps-register/?$rid={rid}        {"registrationId": "...", ...}
    <-   $dps/registrations/res/202/?$rid={rid}&retry-after=1      {"operationId": op, "status": "assigning"}
    GET  $dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={op}
    <-   $dps/registrations/res/200/?$rid={rid}                    {"operationId": op, "status": "assigned",
                                                                   "registrationState": {... "assignedHub",
                                                                   "deviceId" ...}}

Every registration is assigned to the local hub, as the device of the lab's registry it belongs
to. A registration may ask only about its own operations; anything else is answered as DPS does
(400 for a malformed request, 404 for an unknown operation).
"""

from __future__ import annotations

import datetime as _dt
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from harness.telemetry.topic import decode_pairs

REGISTER = "$dps/registrations/PUT/iotdps-register/"
STATUS = "$dps/registrations/GET/iotdps-get-operationstatus/"
RESPONSE = "$dps/registrations/res/{status}/?{query}"
RETRY_AFTER_S = 1


@dataclass(frozen=True)
class Reply:
    topic: str
    body: dict[str, Any]

    @property
    def payload(self) -> bytes:
        return json.dumps(self.body).encode()


@dataclass
class Registration:
    registration_id: str
    device_id: str
    operation_id: str
    created: str
    payload: Any = None  # the custom payload the device sent with its request, if any


@dataclass
class DpsStandIn:
    """Registrations in progress and done, answered for ``hub``."""

    hub: str
    registrations: dict[str, Registration] = field(default_factory=dict)  # by registration id

    def handle(self, registration_id: str, device_id: str, topic: str, payload: bytes) -> Reply | None:
        """The reply to one request from the registration ``registration_id`` (which DPS assigns
        ``device_id``), or None for a topic that asks nothing."""
        path, _, query = topic.partition("?")
        params = decode_pairs(query)
        rid = params.get("$rid", "")
        if path == REGISTER:
            return self._register(registration_id, device_id, rid, payload)
        if path == STATUS:
            return self._status(registration_id, rid, params.get("operationId", ""))
        return None

    def _register(self, registration_id: str, device_id: str, rid: str, payload: bytes) -> Reply:
        try:
            body = json.loads(payload or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("registrationId", registration_id) != registration_id:
            return _error(400, rid, "the body is not {\"registrationId\": <this connection's registration id>}")
        now = _now()
        reg = Registration(registration_id, device_id, f"4.{secrets.token_hex(8)}.{secrets.token_hex(16)}", now,
                           body.get("payload"))
        self.registrations[registration_id] = reg
        return Reply(RESPONSE.format(status=202, query=f"$rid={rid}&retry-after={RETRY_AFTER_S}"),
                     {"operationId": reg.operation_id, "status": "assigning"})

    def _status(self, registration_id: str, rid: str, operation_id: str) -> Reply:
        reg = self.registrations.get(registration_id)
        if reg is None or not operation_id or reg.operation_id != operation_id:
            return _error(404, rid, f"no operation {operation_id!r} for registration {registration_id!r}")
        state = {"registrationId": reg.registration_id, "createdDateTimeUtc": reg.created,
                 "assignedHub": self.hub, "deviceId": reg.device_id, "status": "assigned",
                 "substatus": "initialAssignment", "lastUpdatedDateTimeUtc": _now(),
                 "etag": f"\"{secrets.token_hex(8)}\""}
        if reg.payload is not None:
            state["payload"] = reg.payload
        return Reply(RESPONSE.format(status=200, query=f"$rid={rid}"),
                     {"operationId": reg.operation_id, "status": "assigned", "registrationState": state})


def _error(status: int, rid: str, message: str) -> Reply:
    return Reply(RESPONSE.format(status=status, query=f"$rid={rid}"),
                 {"errorCode": status * 1000, "trackingId": secrets.token_hex(8), "message": message,
                  "timestampUtc": _now()})


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
