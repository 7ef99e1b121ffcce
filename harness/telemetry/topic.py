"""IoT Hub MQTT names: device-to-cloud topics, their property bags, ``mti``, and user names.

A device publishes telemetry to ``devices/{device}/messages/events/{property bag}`` (a module
identity to ``devices/{device}/modules/{module}/messages/events/{property bag}``); the bag is
URL-encoded ``key=value`` pairs joined by ``&`` and may be empty. The security module's messages
carry ``mti=2.3-1-0-0`` and ``$.ifid=urn:azureiot:Security:SecurityAgent:1``; application
telemetry on the same prefix does not, and is not security telemetry.

The MQTT user name is ``{hub}/{device}/?api-version=...&...`` (or ``{hub}/{device}/{module}/?...``):
parse it, never compare it as a string, since the query parameters vary by SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import quote, unquote

__all__ = [
    "SECURITY_IFID",
    "SECURITY_MTI",
    "D2CTopic",
    "HubUserName",
    "Mti",
    "TopicError",
    "UserNameError",
    "compose_topic",
    "compose_username",
    "is_security_message",
    "parse_mti",
    "parse_topic",
    "parse_username",
    "security_topic",
]

SECURITY_IFID = "urn:azureiot:Security:SecurityAgent:1"
SECURITY_MTI = "2.3-1-0-0"
IFID_PROPERTY = "$.ifid"
MTI_PROPERTY = "mti"
ENCODING_FLATBUFFERS = 1

_DEVICES = "devices/"
_EVENTS = "messages/events"


class TopicError(ValueError):
    """A topic is not an IoT Hub device-to-cloud topic, or an ``mti`` value is malformed."""


class UserNameError(ValueError):
    """An MQTT user name is not an IoT Hub user name."""


def decode_pairs(text: str) -> dict[str, str]:
    """``a=1&%24.b=x%3Ay`` -> ``{"a": "1", "$.b": "x:y"}``; empty parts are skipped, ``k`` alone is ``k=""``."""
    pairs: dict[str, str] = {}
    for part in text.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs[unquote(key)] = unquote(value)
    return pairs


def encode_pairs(pairs: Mapping[str, str]) -> str:
    return "&".join(f"{quote(str(k), safe='')}={quote(str(v), safe='')}" for k, v in pairs.items())


# ---- mti ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mti:
    """``mti`` = ``{schema}-{encoding}-{source}-{type}``, e.g. ``2.3-1-0-0``: schema 2.3,
    encoding 1 (FlatBuffers), source 0 (Azure RTOS), type 0 (raw events)."""

    schema: str
    encoding: int
    source: int
    type: int

    @property
    def is_flatbuffers(self) -> bool:
        return self.encoding == ENCODING_FLATBUFFERS

    def __str__(self) -> str:
        return f"{self.schema}-{self.encoding}-{self.source}-{self.type}"


def parse_mti(s: str) -> Mti:
    parts = s.split("-")
    if len(parts) != 4 or not parts[0] or not all(p.isdigit() for p in parts[1:]):
        raise TopicError(f"mti {s!r} is not SCHEMA-ENCODING-SOURCE-TYPE (e.g. {SECURITY_MTI})")
    major, dot, minor = parts[0].partition(".")
    if not (major.isdigit() and (not dot or minor.isdigit())):
        raise TopicError(f"mti {s!r}: schema {parts[0]!r} is not a version like 2.3")
    return Mti(parts[0], int(parts[1]), int(parts[2]), int(parts[3]))


# ---- device-to-cloud topics ---------------------------------------------------------------------


@dataclass(frozen=True)
class D2CTopic:
    device_id: str
    module_id: str | None
    properties: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def mti(self) -> Mti | None:
        """The parsed ``mti`` property; None when absent or malformed."""
        raw = self.properties.get(MTI_PROPERTY)
        if raw is None:
            return None
        try:
            return parse_mti(raw)
        except TopicError:
            return None

    @property
    def is_security(self) -> bool:
        """True exactly when ``$.ifid`` is the security agent's and ``mti`` says FlatBuffers."""
        if self.properties.get(IFID_PROPERTY) != SECURITY_IFID:
            return False
        mti = self.mti
        return mti is not None and mti.is_flatbuffers

    def __str__(self) -> str:
        return compose_topic(self.device_id, self.properties, self.module_id)


def parse_topic(topic: str) -> D2CTopic:
    """Split a device-to-cloud topic into device, module and decoded property bag."""
    if not topic.startswith(_DEVICES):
        raise TopicError(f"topic {topic!r} is not a device-to-cloud topic (devices/{{id}}/messages/events/...)")
    device_id, _, rest = topic[len(_DEVICES) :].partition("/")
    module_id: str | None = None
    if rest.startswith("modules/"):
        module_id, _, rest = rest[len("modules/") :].partition("/")
        if not module_id:
            raise TopicError(f"topic {topic!r} has an empty module id")
    if not device_id:
        raise TopicError(f"topic {topic!r} has an empty device id")
    if rest == _EVENTS:
        bag = ""
    elif rest.startswith(_EVENTS + "/"):
        bag = rest[len(_EVENTS) + 1 :]
    else:
        raise TopicError(
            f"topic {topic!r} is not a device-to-cloud topic: expected "
            f"devices/{{id}}/[modules/{{mid}}/]messages/events/..., found {rest!r} after the identity"
        )
    return D2CTopic(device_id, module_id, MappingProxyType(decode_pairs(bag)))


def compose_topic(device_id: str, properties: Mapping[str, str] | None = None, module_id: str | None = None) -> str:
    """The D2C topic for an identity and a property bag (kept in the given order)."""
    if not device_id or "/" in device_id:
        raise TopicError(f"device id {device_id!r} must be non-empty and contain no '/'")
    if module_id is not None and (not module_id or "/" in module_id):
        raise TopicError(f"module id {module_id!r} must be non-empty and contain no '/'")
    identity = f"{_DEVICES}{device_id}" + (f"/modules/{module_id}" if module_id is not None else "")
    return f"{identity}/{_EVENTS}/{encode_pairs(properties or {})}"


def security_topic(device_id: str, module_id: str | None = None, mti: str = SECURITY_MTI) -> str:
    """The topic the security module publishes to, exactly as the device writes it."""
    return compose_topic(device_id, {MTI_PROPERTY: mti, IFID_PROPERTY: SECURITY_IFID}, module_id)


def is_security_message(topic: str) -> bool:
    """True for a D2C topic carrying the security module's properties; False for anything else."""
    try:
        return parse_topic(topic).is_security
    except TopicError:
        return False


# ---- user names ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubUserName:
    hub: str
    device_id: str
    module_id: str | None
    params: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def api_version(self) -> str | None:
        return self.params.get("api-version")


def parse_username(u: str) -> HubUserName:
    """``{hub}/{device}/?api-version=...&...`` or ``{hub}/{device}/{module}/?...`` into its parts."""
    path, sep, query = u.partition("/?")
    if not sep:
        raise UserNameError(
            f"user name {u!r} has no '/?' before its query (expected {{hub}}/{{device}}/?api-version=...)"
        )
    parts = path.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise UserNameError(f"user name {u!r}: expected {{hub}}/{{device}}[/{{module}}]/?..., found path {path!r}")
    params = decode_pairs(query)
    if "api-version" not in params:
        raise UserNameError(f"user name {u!r} has no api-version parameter")
    return HubUserName(parts[0], parts[1], parts[2] if len(parts) == 3 else None, MappingProxyType(params))


def compose_username(
    hub: str, device_id: str, module_id: str | None = None, api_version: str = "2021-04-12", **params: str
) -> str:
    """The user name a device sends; extra parameters (e.g. ``**{"model-id": ...}``) follow api-version."""
    identity = "/".join(p for p in (hub, device_id, module_id) if p is not None)
    return f"{identity}/?{encode_pairs({'api-version': api_version, **params})}"
