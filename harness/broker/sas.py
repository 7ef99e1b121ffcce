"""Shared access signatures as IoT Hub defines them for a device's symmetric key.

A device signs in with the user name ``{hub}/{device id}/?api-version=…`` and, as its password, a
token::

    SharedAccessSignature sr={url-encoded resource}&sig={url-encoded base64 signature}&se={expiry}

where the resource is ``{hub}/devices/{device id}`` and the signature is HMAC-SHA256, keyed with
the base64-decoded device key, over ``{sr as sent} + "\\n" + {se as sent}``. A token is good when it
is signed with that device's key, names that device's resource and has not expired by the broker's
clock. The mosquitto plugin (``mosquitto_auth.c``) applies the same rules, and the same refusal
reasons, in C; :data:`REFUSALS` names them for both.

DPS takes the same tokens for ``{id scope}/registrations/{registration id}``, where the device
SDKs add ``skn=registration`` (:data:`DPS_KEY_NAME`). Fields may come in any order, each at most
once; ``skn`` is taken only where the caller names the key name it may carry (a hub device's
token has none); any other field is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote

PREFIX = "SharedAccessSignature "
#: The key name DPS clients put in their tokens (``skn``) for an enrollment's own key.
DPS_KEY_NAME = "registration"
#: The longest token looked at (IoT Hub's are about 150 characters for a 128-character device id).
MAX_TOKEN = 2048
#: Keys IoT Hub gives are 32 or 64 random bytes; anything from 16 to 64 bytes is taken.
KEY_BYTES = (16, 64)
#: An expiry has at most this many digits (seconds since 1970: 10 digits until the year 2286).
MAX_EXPIRY_DIGITS = 12

# Why a token was refused: the same words in the plugin's log and in the embedded broker's.
MALFORMED = "malformed token"
WRONG_RESOURCE = "token for another resource"
BAD_SIGNATURE = "token not signed with this device's key"
EXPIRED = "token expired"
REFUSALS = (MALFORMED, WRONG_RESOURCE, BAD_SIGNATURE, EXPIRED)


class SasRefused(ValueError):
    """A token that does not prove the identity; ``reason`` is one of :data:`REFUSALS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}{': ' + detail if detail else ''}")
        self.reason = reason


def decode_key(key: str) -> bytes:
    """A device's symmetric key, base64 (standard alphabet, padded) into its bytes; ValueError
    saying what is wrong."""
    try:
        raw = base64.b64decode(key.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64 (the standard alphabet A-Z a-z 0-9 + /, padded with =)") from None
    if not KEY_BYTES[0] <= len(raw) <= KEY_BYTES[1]:
        raise ValueError(f"decodes to {len(raw)} bytes; a device key is {KEY_BYTES[0]}-{KEY_BYTES[1]} bytes "
                         "(IoT Hub makes 32 or 64)")
    return raw


def device_resource(hub: str, device_id: str) -> str:
    return f"{hub}/devices/{device_id}"


def registration_resource(id_scope: str, registration_id: str) -> str:
    return f"{id_scope}/registrations/{registration_id}"


def signature(key: bytes, sr: str, se: str) -> bytes:
    return hmac.new(key, f"{sr}\n{se}".encode(), hashlib.sha256).digest()


def make_token(key: bytes, resource: str, expiry: int, key_name: str | None = None) -> str:
    """A token for ``resource`` valid until ``expiry`` (seconds since 1970), as the device SDKs write it."""
    sr = quote(resource, safe="")
    sig = base64.b64encode(signature(key, sr, str(expiry))).decode()
    return f"{PREFIX}sr={sr}&sig={quote(sig, safe='')}&se={expiry}" + (f"&skn={key_name}" if key_name else "")


def device_token(key: bytes, hub: str, device_id: str, *, ttl: float = 3600.0, now: float | None = None) -> str:
    return make_token(key, device_resource(hub, device_id), int((time.time() if now is None else now) + ttl))


@dataclass(frozen=True)
class SasToken:
    sr: str  # as sent (URL-encoded): the signature covers it so
    sig: bytes
    se: str
    skn: str | None = None

    @property
    def resource(self) -> str:
        return unquote(self.sr)

    @property
    def expiry(self) -> int:
        return int(self.se)


def parse_token(token: str, key_name: str | None = None) -> SasToken:
    """The fields of a token (``skn`` only where it may be ``key_name``); :class:`SasRefused`
    (malformed) when it is not one."""
    if len(token) > MAX_TOKEN or not token.startswith(PREFIX) or not token.isascii():
        raise SasRefused(MALFORMED, f"not '{PREFIX.strip()} sr=…&sig=…&se=…'")
    fields: dict[str, str] = {}
    for part in token[len(PREFIX):].split("&"):
        name, eq, value = part.partition("=")
        if not eq or name not in ("sr", "sig", "se", "skn") or name in fields or not value:
            raise SasRefused(MALFORMED, f"field {name!r} unknown, repeated or empty")
        fields[name] = value
    skn = fields.pop("skn", None)
    if skn is not None and skn != key_name:
        raise SasRefused(MALFORMED, f"skn={skn!r}: a key name this token cannot carry")
    if len(fields) != 3:
        raise SasRefused(MALFORMED, "needs sr, sig and se")
    se = fields["se"]
    if not se.isdigit() or len(se) > MAX_EXPIRY_DIGITS:
        raise SasRefused(MALFORMED, "se is not a number of seconds")
    try:
        sig = base64.b64decode(unquote(fields["sig"]), validate=True)
    except (binascii.Error, ValueError):
        sig = b""
    if len(sig) != hashlib.sha256().digest_size:
        raise SasRefused(MALFORMED, "sig is not a base64 HMAC-SHA256")
    return SasToken(fields["sr"], sig, se, skn)


def verify_token(token: str, key: bytes, resource: str, *, now: float | None = None,
                 key_name: str | None = None) -> SasToken:
    """The token, when it grants ``resource`` under ``key`` at ``now`` (default: this host's clock);
    else :class:`SasRefused` naming the first rule it breaks (form, resource, signature, expiry).
    ``key_name``: the ``skn`` it may carry (none by default)."""
    parsed = parse_token(token, key_name)
    if parsed.resource != resource:
        raise SasRefused(WRONG_RESOURCE)
    if not hmac.compare_digest(signature(key, parsed.sr, parsed.se), parsed.sig):
        raise SasRefused(BAD_SIGNATURE)
    if parsed.expiry <= (time.time() if now is None else now):
        raise SasRefused(EXPIRED)
    return parsed
