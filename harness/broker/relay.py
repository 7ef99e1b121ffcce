"""How IoT Hub's shared reply topics reach only the device they are meant for.

IoT Hub's twin, method and DPS topics name no device: every device subscribes to the same
``$iothub/twin/res/#``, ``$iothub/methods/POST/#`` and ``$dps/registrations/res/#``, and the hub
knows from the connection whom a request came from and whom a reply is for. A broker routes by
topic, so both broker kinds relay these topics through names that carry the client id, a rule
with no state, applied after the access check of the publisher:

- a client's PUBLISH to ``$iothub/…`` or ``$dps/…`` (allowed only to devices and DPS registrations,
  for the request topics IoT Hub defines) is routed as ``hil/hub/from/{client id}/{topic}``, which
  only the hub's service identity may read: no device sees another's requests;
- the service's PUBLISH to ``hil/hub/to/{client id}/{topic}`` (only it may publish there) is
  delivered to that one connected client as ``{topic}``, whatever the others subscribe to; a device
  is still checked for reading ``{topic}``. Nobody may subscribe to ``hil/hub/to/…``, so the
  original goes nowhere else. No identity may publish to ``$iothub/…res…`` or ``$dps/…/res/…``
  itself.

The mosquitto plugin (``mosquitto_auth.c``, its MOSQ_EVT_MESSAGE callback and
``mosquitto_broker_publish_copy`` with a client id) and the embedded broker
(:class:`harness.broker.amqtt_front.HubBroker`) both apply these functions' rules.
"""

from __future__ import annotations

SERVICE_CLIENT_ID = "hil-hub"  # the hub stand-in's service identity (harness.hub.service)
FROM_PREFIX = "hil/hub/from/"
TO_PREFIX = "hil/hub/to/"
RELAYED = ("$iothub/", "$dps/")

# what devices and DPS registrations may publish and read (``{d}``: the device id)
HUB_PUBLISH = ("$iothub/twin/GET/#", "$iothub/twin/PATCH/properties/reported/#", "$iothub/methods/res/#")
HUB_SUBSCRIBE = ("$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#", "$iothub/methods/POST/#")
DPS_PUBLISH = ("$dps/registrations/PUT/iotdps-register/#", "$dps/registrations/GET/iotdps-get-operationstatus/#")
DPS_SUBSCRIBE = ("$dps/registrations/res/#",)
# what the hub's service identity may: read every relayed request, answer any client, send C2D messages
SERVICE_SUBSCRIBE = (FROM_PREFIX + "#",)
SERVICE_PUBLISH = (TO_PREFIX + "#", "devices/+/messages/devicebound/#", "devices/+/modules/+/messages/devicebound/#")


def inbound(client_id: str, topic: str) -> str | None:
    """The topic a client's PUBLISH is routed as, when it is relayed (else None)."""
    return f"{FROM_PREFIX}{client_id}/{topic}" if topic.startswith(RELAYED) else None


def outbound(topic: str) -> tuple[str, str] | None:
    """(client id, topic it receives) for a service's PUBLISH to be delivered to one client, else None."""
    if not topic.startswith(TO_PREFIX):
        return None
    client_id, sep, rest = topic[len(TO_PREFIX):].partition("/")
    return (client_id, rest) if sep and client_id and rest else None


def split_inbound(topic: str) -> tuple[str, str] | None:
    """(client id, its original topic) of a relayed request the service reads, else None."""
    if not topic.startswith(FROM_PREFIX):
        return None
    client_id, sep, rest = topic[len(FROM_PREFIX):].partition("/")
    return (client_id, rest) if sep and client_id and rest.startswith(RELAYED) else None


def to_client(client_id: str, topic: str) -> str:
    """The topic the service publishes to for ``client_id`` to receive ``topic``."""
    return f"{TO_PREFIX}{client_id}/{topic}"
