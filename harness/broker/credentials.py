"""Who may talk to the broker, and on which topics: the run's identities and their access policy.

Each device is an IoT Hub identity: client id = device id, user name
``{hub}/{device id}/?api-version=…`` and a secret generated for the run. The collector is a service
identity that reads every device's telemetry. Every broker kind enforces the same policy from the
:class:`IdentityTable`: the embedded broker asks :meth:`IdentityTable.authenticate` and
:meth:`IdentityTable.allowed` directly; the mosquitto kind renders the table into its password and
ACL files.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
from dataclasses import dataclass, field
from enum import Enum

from paho.mqtt.client import topic_matches_sub

from harness.errors import UsageError
from harness.telemetry.topic import UserNameError, compose_username, parse_username

DEFAULT_HUB = "hil-hub.azure-devices.net"
COLLECTOR_CLIENT_ID = "hil-collector"

# Topic filters, ``{d}`` = the device id.
DEVICE_PUBLISH = ("devices/{d}/messages/events/#", "devices/{d}/modules/+/messages/events/#")
DEVICE_SUBSCRIBE = ("devices/{d}/messages/devicebound/#", "devices/{d}/modules/+/messages/devicebound/#")
COLLECTOR_SUBSCRIBE = ("devices/+/messages/events/#", "devices/+/modules/+/messages/events/#")


class Access(Enum):
    PUBLISH = "write"
    SUBSCRIBE = "read"


@dataclass(frozen=True)
class DeviceCredentials:
    """What a device (or the collector) presents when it connects."""

    client_id: str
    username: str
    password: str

    def to_json(self) -> dict[str, str]:
        return {"client_id": self.client_id, "username": self.username, "password": self.password}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> DeviceCredentials:
        return cls(client_id=data["client_id"], username=data["username"], password=data["password"])


@dataclass(frozen=True)
class Identity:
    """One identity the broker knows: its credentials and the topic filters it may use."""

    credentials: DeviceCredentials
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    device_id: str | None = None  # set for device identities: the user name is parsed, not compared

    @property
    def client_id(self) -> str:
        return self.credentials.client_id


def new_secret() -> str:
    """A per-run device secret (URL-safe, 32 characters)."""
    return secrets.token_urlsafe(24)


def validate_device_id(device_id: str) -> str:
    """IoT Hub device ids: up to 128 chars of ASCII letters, digits and ``-.+%_#*?!(),:=@$'``; no MQTT
    wildcards or separators here since they become topic levels."""
    bad = set("/+#\0 ") & set(device_id)
    if not device_id or len(device_id) > 128 or bad or not device_id.isascii():
        raise UsageError(
            f"device id {device_id!r} cannot be a broker identity",
            fix="use 1-128 ASCII characters without '/', '+', '#', spaces",
        )
    return device_id


@dataclass
class IdentityTable:
    """The run's identities; thread-safe, devices may be added while a broker runs."""

    hub: str = DEFAULT_HUB
    _by_client: dict[str, Identity] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_device(self, device_id: str, *, password: str | None = None, **params: str) -> Identity:
        """Register a device (idempotent: the same id returns its existing identity)."""
        validate_device_id(device_id)
        with self._lock:
            existing = self._by_client.get(device_id)
            if existing is not None:
                if existing.device_id is None:
                    raise UsageError(f"device id {device_id!r} is taken by a service identity")
                return existing
            creds = DeviceCredentials(
                client_id=device_id,
                username=compose_username(self.hub, device_id, **params),
                password=password or new_secret(),
            )
            ident = Identity(
                credentials=creds,
                publish=tuple(p.format(d=device_id) for p in DEVICE_PUBLISH),
                subscribe=tuple(p.format(d=device_id) for p in DEVICE_SUBSCRIBE),
                device_id=device_id,
            )
            self._by_client[device_id] = ident
            return ident

    def add_service(self, client_id: str, *, subscribe: tuple[str, ...] = COLLECTOR_SUBSCRIBE,
                    publish: tuple[str, ...] = (), password: str | None = None) -> Identity:
        """Register a non-device identity (the collector) whose user name equals its client id."""
        with self._lock:
            existing = self._by_client.get(client_id)
            if existing is not None:
                return existing
            creds = DeviceCredentials(client_id, client_id, password or new_secret())
            ident = Identity(credentials=creds, publish=publish, subscribe=subscribe)
            self._by_client[client_id] = ident
            return ident

    def identities(self) -> list[Identity]:
        with self._lock:
            return list(self._by_client.values())

    def get(self, client_id: str) -> Identity | None:
        with self._lock:
            return self._by_client.get(client_id)

    def authenticate(self, client_id: str | None, username: str | None, password: str | None) -> Identity | None:
        """The identity these CONNECT fields prove, or None. Device user names are parsed: the hub
        and device id must match, the api-version and other query parameters may be anything."""
        if not client_id or username is None or password is None:
            return None
        ident = self.get(client_id)
        if ident is None or not secrets.compare_digest(ident.credentials.password, password):
            return None
        if ident.device_id is None:
            return ident if username == ident.credentials.username else None
        try:
            parsed = parse_username(username)
        except UserNameError:
            return None
        if parsed.device_id != ident.device_id or parsed.hub != self.hub or parsed.module_id:
            return None
        return ident

    @staticmethod
    def allowed(ident: Identity, topic: str, access: Access) -> bool:
        """May ``ident`` publish to ``topic`` / subscribe to (or receive on) filter ``topic``?

        For a subscription the filter's own ``+``/``#`` are taken literally, so a device cannot widen
        its reach with wildcards (``devices/+/…`` is refused, its own ``devices/me/…/#`` is not)."""
        patterns = ident.publish if access is Access.PUBLISH else ident.subscribe
        return any(_filter_within(topic, pattern) for pattern in patterns)


def _filter_within(topic: str, pattern: str) -> bool:
    if "+" not in topic and "#" not in topic:
        return topic_matches_sub(pattern, topic)
    t_levels, p_levels = topic.split("/"), pattern.split("/")
    for i, p in enumerate(p_levels):
        if p == "#":
            return True
        if i >= len(t_levels):
            return False
        if p != "+" and p != t_levels[i]:
            return False
    return len(t_levels) == len(p_levels)


def mosquitto_password_hash(password: str, *, salt: bytes | None = None, iterations: int = 101) -> str:
    """A password-file entry in mosquitto 2.0's ``$7$`` format (PBKDF2-HMAC-SHA512)."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, dklen=64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
