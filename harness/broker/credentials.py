"""Who may talk to the broker, and on which topics: the run's identities and their access policy.

Each device is an IoT Hub identity: client id = device id, user name
``{hub}/{device id}/?api-version=…`` and a secret generated for the run. The collector is a service
identity that reads every device's telemetry. Every identity may connect only with its own client
id. A device given a symmetric key (a device of the lab's registry) signs in as on IoT Hub, with
a SAS token signed with that key (:mod:`harness.broker.sas`), never with a password; a device
given an X.509 thumbprint signs in with a TLS client certificate of that thumbprint
(:mod:`harness.broker.x509`), whatever its password. Every broker
kind enforces the same policy from the :class:`IdentityTable`: the embedded broker asks
:meth:`IdentityTable.sign_in` and :meth:`IdentityTable.allowed` directly; the mosquitto
kind writes the table to a file (:mod:`harness.broker.identity_file`) that the harness's own
mosquitto plugin (``mosquitto_auth.c``) enforces with the same rules.

A service identity may also publish to and read its own canary topic (:func:`canary_topic`): the
collector sends itself a message there now and then, to prove that it still receives.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from enum import Enum

from harness.broker import relay, sas, x509
from harness.errors import UsageError
from harness.telemetry.topic import UserNameError, compose_username, parse_username

DEFAULT_HUB = "hil-hub.azure-devices.net"
DEFAULT_ID_SCOPE = "0ne00000000"
COLLECTOR_CLIENT_ID = "hil-collector"

# Topic filters, ``{d}`` = the device id; with IoT Hub's request and reply topics (see harness.broker.relay)
DEVICE_PUBLISH = ("devices/{d}/messages/events/#", "devices/{d}/modules/+/messages/events/#", *relay.HUB_PUBLISH)
DEVICE_SUBSCRIBE = ("devices/{d}/messages/devicebound/#", "devices/{d}/modules/+/messages/devicebound/#",
                    *relay.HUB_SUBSCRIBE)
COLLECTOR_SUBSCRIBE = ("devices/+/messages/events/#", "devices/+/modules/+/messages/events/#")
CANARY_TOPIC = "hil/canary/{c}"  # {c}: the service identity's client id


def canary_topic(client_id: str) -> str:
    """The topic only the service identity ``client_id`` may publish to and read."""
    return CANARY_TOPIC.format(c=client_id)


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
    key: bytes | None = field(default=None, repr=False)  # a device's symmetric key: SAS tokens only
    registration_id: str | None = None  # a DPS registration (client id = it) of device ``device_id``
    thumbprint: bytes | None = None  # a device signing in with an X.509 certificate of this SHA-1/SHA-256 digest

    @property
    def client_id(self) -> str:
        return self.credentials.client_id


class SignInRefused(Exception):
    """A CONNECT that proves no identity; the message says which rule it broke."""


#: How long the SAS token a keyed device's credentials carry is valid (the harness's own clients).
CREDENTIALS_TOKEN_TTL = 7 * 24 * 3600.0


def new_secret() -> str:
    """A per-run device secret (URL-safe, 32 characters)."""
    return secrets.token_urlsafe(24)


def validate_client_id(client_id: str, what: str = "device id") -> str:
    """IoT Hub device ids: up to 128 chars of ASCII letters, digits and ``-.+%_#*?!(),:=@$'``; no MQTT
    wildcards or separators here since they become topic levels. Service client ids follow the same rule."""
    bad = set("/+#\0 ") & set(client_id)
    if not client_id or len(client_id) > 128 or bad or not client_id.isascii() or not client_id.isprintable():
        raise UsageError(
            f"{what} {client_id!r} cannot be a broker identity",
            fix="use 1-128 printable ASCII characters without '/', '+', '#', spaces",
        )
    return client_id


def validate_device_id(device_id: str) -> str:
    return validate_client_id(device_id, "device id")


def validate_hub(hub: str) -> str:
    """A hub is a host name: it becomes the first part of device user names."""
    if not hub or len(hub) > 253 or not hub.isascii() or any(c in hub for c in "/?&%# \t\r\n\0"):
        raise UsageError(f"hub {hub!r} is not a host name",
                         fix="give the IoT Hub host name, e.g. lab-hub.azure-devices.net")
    return hub


@dataclass
class IdentityTable:
    """The run's identities; thread-safe, devices may be added while a broker runs."""

    hub: str = DEFAULT_HUB
    id_scope: str = DEFAULT_ID_SCOPE
    _by_client: dict[str, Identity] = field(default_factory=dict)
    _registrations: dict[str, Identity] = field(default_factory=dict)  # DPS sign-ins, by registration id
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        validate_hub(self.hub)
        if not self.id_scope.isascii() or not self.id_scope.isalnum():
            raise UsageError(f"ID scope {self.id_scope!r} is not letters and digits", fix="write it like 0ne00123ABC")

    @property
    def registration_prefix(self) -> str:
        """How a DPS user name starts: ``{id scope}/registrations/``."""
        return f"{self.id_scope}/registrations/"

    def add_device(self, device_id: str, *, password: str | None = None, key: bytes | None = None,
                   thumbprint: bytes | None = None, **params: str) -> Identity:
        """Register a device (idempotent: the same id returns its existing identity). With ``key`` (its
        symmetric key, decoded) it signs in only with SAS tokens signed with that key, and its
        credentials carry one valid for :data:`CREDENTIALS_TOKEN_TTL`; with ``thumbprint`` (20 or 32
        bytes) only with a client certificate of that thumbprint, and its credentials carry no
        password; else with ``password`` (default: one made for the run)."""
        validate_device_id(device_id)
        if (key is not None) + (password is not None) + (thumbprint is not None) > 1:
            raise UsageError(f"device {device_id!r}: give one of a password, a key or a thumbprint")
        _check_thumbprint(device_id, thumbprint)
        with self._lock:
            existing = self._by_client.get(device_id)
            if existing is not None:
                if existing.device_id is None:
                    raise UsageError(f"device id {device_id!r} is taken by a service identity")
                if (existing.key != key and key is not None) or (
                        existing.thumbprint != thumbprint and thumbprint is not None):
                    raise UsageError(f"device {device_id!r} is already registered with another secret")
                return existing
            creds = DeviceCredentials(
                client_id=device_id,
                username=compose_username(self.hub, device_id, **params),
                password=(sas.device_token(key, self.hub, device_id, ttl=CREDENTIALS_TOKEN_TTL) if key is not None
                          else "" if thumbprint is not None else password or new_secret()),
            )
            ident = Identity(
                credentials=creds,
                publish=tuple(p.format(d=device_id) for p in DEVICE_PUBLISH),
                subscribe=tuple(p.format(d=device_id) for p in DEVICE_SUBSCRIBE),
                device_id=device_id,
                key=key,
                thumbprint=thumbprint,
            )
            self._by_client[device_id] = ident
            return ident

    def add_service(self, client_id: str, *, subscribe: tuple[str, ...] = COLLECTOR_SUBSCRIBE,
                    publish: tuple[str, ...] = (), password: str | None = None) -> Identity:
        """Register a non-device identity (the collector) whose user name equals its client id. It may
        also publish to and read its own canary topic."""
        validate_client_id(client_id, "service client id")
        with self._lock:
            existing = self._by_client.get(client_id)
            if existing is not None:
                if existing.device_id is not None:
                    raise UsageError(f"service client id {client_id!r} is taken by a device")
                return existing
            creds = DeviceCredentials(client_id, client_id, password or new_secret())
            canary = (canary_topic(client_id),)
            ident = Identity(credentials=creds, publish=publish + canary, subscribe=subscribe + canary)
            self._by_client[client_id] = ident
            return ident

    def add_registration(self, registration_id: str, device_id: str, key: bytes | None = None, *,
                         thumbprint: bytes | None = None) -> Identity:
        """Let a device register with DPS as ``registration_id`` (its client id there), signing its
        tokens with ``key``, or with a client certificate of ``thumbprint`` whose common name is the
        registration id; DPS then assigns it ``device_id`` (idempotent like :meth:`add_device`)."""
        validate_client_id(registration_id, "registration id")
        if (key is None) == (thumbprint is None):
            raise UsageError(f"registration {registration_id!r}: give the device's key or its thumbprint")
        _check_thumbprint(registration_id, thumbprint)
        with self._lock:
            existing = self._registrations.get(registration_id)
            if existing is not None:
                if (existing.key, existing.thumbprint, existing.device_id) != (key, thumbprint, device_id):
                    raise UsageError(f"registration {registration_id!r} is already registered for another device "
                                     "or secret")
                return existing
            resource = sas.registration_resource(self.id_scope, registration_id)
            token = ("" if key is None else
                     sas.make_token(key, resource, int(time.time() + CREDENTIALS_TOKEN_TTL), sas.DPS_KEY_NAME))
            ident = Identity(
                credentials=DeviceCredentials(registration_id, f"{resource}/api-version=2019-03-31", token),
                publish=relay.DPS_PUBLISH, subscribe=relay.DPS_SUBSCRIBE,
                device_id=device_id, key=key, registration_id=registration_id, thumbprint=thumbprint,
            )
            self._registrations[registration_id] = ident
            return ident

    def identities(self) -> list[Identity]:
        """The hub's identities (devices and services), not the DPS registrations."""
        with self._lock:
            return list(self._by_client.values())

    def registrations(self) -> list[Identity]:
        with self._lock:
            return list(self._registrations.values())

    def registration(self, registration_id: str) -> Identity | None:
        with self._lock:
            return self._registrations.get(registration_id)

    def get(self, client_id: str) -> Identity | None:
        with self._lock:
            return self._by_client.get(client_id)

    def authenticate(self, client_id: str | None, username: str | None, password: str | None, *,
                     now: float | None = None, certificate: bytes | None = None) -> Identity | None:
        """The identity these CONNECT fields prove, or None (:meth:`sign_in` says why)."""
        try:
            return self.sign_in(client_id, username, password, now=now, certificate=certificate)
        except SignInRefused:
            return None

    def sign_in(self, client_id: str | None, username: str | None, password: str | None, *,
                now: float | None = None, expiry: bool = True, certificate: bytes | None = None) -> Identity:
        """The identity these CONNECT fields (and the TLS client ``certificate``, DER, if one was shown)
        prove; else :class:`SignInRefused` saying why, in the words of ``mosquitto_auth.c``'s log.
        Device user names are parsed: the hub and device id must match, the api-version and other
        query parameters may be anything. A keyed device's password is a SAS token
        (:func:`harness.broker.sas.verify_token`; ``expiry=False`` skips only its expiry, ``now`` is
        the broker's clock); an X.509 device's certificate has its thumbprint
        (:func:`harness.broker.x509.check_certificate`) and its password is not used."""
        dps = username is not None and username.startswith(self.registration_prefix)
        ident = (self.registration(client_id) if dps else self.get(client_id)) if client_id else None
        if ident is None:
            raise SignInRefused("no identity has this client id")
        if username is None or (password is None and ident.thumbprint is None):
            raise SignInRefused("no user name or password")
        if ident.thumbprint is not None:
            why = x509.check_certificate(certificate, ident.thumbprint, ident.registration_id)
            if why is not None:
                raise SignInRefused(why)
        if ident.registration_id is not None:
            return self._dps_sign_in(ident, username, password, now=now if expiry else 0.0)
        if ident.key is not None:
            assert ident.device_id is not None
            try:
                sas.verify_token(password or "", ident.key, sas.device_resource(self.hub, ident.device_id),
                                 now=now if expiry else 0.0)
            except sas.SasRefused as exc:
                raise SignInRefused(exc.reason) from None
        elif ident.thumbprint is None and not secrets.compare_digest(ident.credentials.password.encode(),
                                                                      (password or "").encode()):
            raise SignInRefused("wrong password")
        if ident.device_id is None:
            if username != ident.credentials.username:
                raise SignInRefused("the user name is not this identity's")
            return ident
        try:
            parsed = parse_username(username)
        except UserNameError:
            raise SignInRefused("the user name is not this identity's") from None
        if parsed.device_id != ident.device_id or parsed.hub != self.hub or parsed.module_id:
            raise SignInRefused("the user name is not this identity's")
        return ident

    def _dps_sign_in(self, ident: Identity, username: str, password: str | None, now: float | None) -> Identity:
        """``{id scope}/registrations/{registration id}/api-version=…[&…]`` and a token for that resource,
        with no ``skn`` or ``skn=registration`` (an X.509 registration: its certificate was checked)."""
        assert ident.registration_id is not None
        resource = sas.registration_resource(self.id_scope, ident.registration_id)
        if ident.key is not None:
            try:
                sas.verify_token(password or "", ident.key, resource, now=now, key_name=sas.DPS_KEY_NAME)
            except sas.SasRefused as exc:
                raise SignInRefused(exc.reason) from None
        if not username.startswith(f"{resource}/api-version="):
            raise SignInRefused("the user name is not this identity's")
        return ident

    @staticmethod
    def token_expiry(ident: Identity, password: str | None) -> int | None:
        """When the SAS token ``ident`` signed in with (``password``, accepted by :meth:`sign_in`)
        expires, in seconds since 1970: IoT Hub ends the connection then. None: it signed in with
        no token (a password, a certificate)."""
        if ident.key is None or password is None:
            return None
        return sas.parse_token(password, sas.DPS_KEY_NAME if ident.registration_id else None).expiry

    @staticmethod
    def allowed(ident: Identity, topic: str, access: Access) -> bool:
        """May ``ident`` publish to ``topic`` / subscribe to (or receive on) filter ``topic``?

        For a subscription the filter's own ``+``/``#`` are taken literally, so a device cannot widen
        its reach with wildcards (``devices/other/…`` is refused, its own ``devices/me/…/#`` is not),
        but ``devices/+/…`` is read as the device's own ``devices/me/…``, as IoT Hub reads it: the
        Embedded C SDK (stock Azure RTOS images) subscribes to ``devices/+/messages/devicebound/#``.
        What is delivered is still checked topic by topic, so only the device's own comes."""
        patterns = ident.publish if access is Access.PUBLISH else ident.subscribe
        if any(_filter_within(topic, pattern) for pattern in patterns):
            return True
        own = _as_own(topic, ident.credentials.client_id) if access is Access.SUBSCRIBE else None
        return own is not None and any(_filter_within(own, pattern) for pattern in patterns)


def _check_thumbprint(who: str, thumbprint: bytes | None) -> None:
    if thumbprint is not None and len(thumbprint) not in (x509.SHA1_BYTES, x509.SHA256_BYTES):
        raise UsageError(f"{who!r}: a thumbprint is a SHA-1 (20 bytes) or SHA-256 (32 bytes) digest, "
                         f"not {len(thumbprint)} bytes")


def _as_own(topic: str, client_id: str) -> str | None:
    """``devices/+/rest`` as ``devices/{client_id}/rest`` (mosquitto_auth_policy.c's ``allowed_as_own``)."""
    wild = "devices/+/"
    return f"devices/{client_id}/{topic[len(wild):]}" if topic.startswith(wild) else None


def _filter_within(topic: str, pattern: str) -> bool:
    """Is ``topic`` (a topic, or a filter whose own wildcards count literally) within ``pattern``? The
    rule mosquitto_auth_policy.c's ``within`` applies too."""
    t_levels, p_levels = topic.split("/"), pattern.split("/")
    for i, p in enumerate(p_levels):
        if p == "#":
            return True
        if i >= len(t_levels):
            return False
        if p != "+" and p != t_levels[i]:
            return False
    return len(t_levels) == len(p_levels)
