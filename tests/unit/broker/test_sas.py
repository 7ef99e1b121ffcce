"""SAS tokens as IoT Hub defines them: made and checked by harness.broker.sas, and by the identity
table that the embedded broker asks (the mosquitto plugin's twin rules are tested on a real broker
in tests/integration/broker/test_sas_sign_in.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote

import pytest

from harness.broker import sas
from harness.broker.credentials import IdentityTable, SignInRefused
from harness.telemetry.topic import compose_username

HUB = "lab-hub.azure-devices.net"
KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))
NOW = 1_800_000_000.0


def test_a_token_is_what_iot_hub_expects() -> None:
    """Written out by hand from IoT Hub's definition, not with the module's own helpers."""
    token = sas.make_token(KEY_A, f"{HUB}/devices/dev-a", 1_800_003_600)
    sr = quote(f"{HUB}/devices/dev-a", safe="")
    assert sr == "lab-hub.azure-devices.net%2Fdevices%2Fdev-a"
    sig = base64.b64encode(hmac.new(KEY_A, f"{sr}\n1800003600".encode(), hashlib.sha256).digest()).decode()
    assert token == f"SharedAccessSignature sr={sr}&sig={quote(sig, safe='')}&se=1800003600"


def test_the_fields_may_come_in_any_order() -> None:
    token = sas.device_token(KEY_A, HUB, "dev-a", now=NOW)
    sr, sig, se = token.removeprefix(sas.PREFIX).split("&")
    assert sas.verify_token(f"{sas.PREFIX}{se}&{sig}&{sr}", KEY_A, f"{HUB}/devices/dev-a", now=NOW).se == se[3:]


def _refusal(token: str, key: bytes = KEY_A, device: str = "dev-a", now: float = NOW) -> str | None:
    try:
        sas.verify_token(token, key, sas.device_resource(HUB, device), now=now)
    except sas.SasRefused as exc:
        return exc.reason
    return None


def test_each_rule_refuses_with_its_reason() -> None:
    good = sas.device_token(KEY_A, HUB, "dev-a", ttl=60, now=NOW)
    assert _refusal(good) is None
    assert _refusal(good, now=NOW + 60) == sas.EXPIRED
    assert _refusal(good, key=KEY_B) == sas.BAD_SIGNATURE
    assert _refusal(sas.device_token(KEY_A, HUB, "dev-b", now=NOW)) == sas.WRONG_RESOURCE
    assert _refusal(sas.device_token(KEY_A, "evil.azure-devices.net", "dev-a", now=NOW)) == sas.WRONG_RESOURCE


@pytest.mark.parametrize("mangle", [
    lambda t: t.removeprefix("SharedAccessSignature "),
    lambda t: t.replace("SharedAccessSignature", "sharedaccesssignature"),
    lambda t: t + "&skn=device",
    lambda t: t + "&se=9999999999",
    lambda t: t.replace("&se=", "&se=-"),
    lambda t: t.replace("&se=", "&se=0x"),
    lambda t: t.replace("&se=", "&se=1234567890123"),
    lambda t: t.replace("&sig=", "&sig=A"),
    lambda t: t.replace("&sig=", "&sig=%00"),
    lambda t: t.replace("%3D&se", "&se"),
    lambda t: t.replace("&se=", "&&se="),
    lambda t: t + "&",
    lambda t: t.split("&se=")[0],
    lambda t: t.replace("sr=", "sr=&x="),
    lambda t: t + "é",
    lambda t: t + "x" * 2048,
    lambda t: "",
    lambda t: "a plain password",
], ids=["no prefix", "prefix case", "skn", "se twice", "negative se", "hex se", "13-digit se", "long sig",
        "NUL in sig", "unpadded sig", "empty field", "trailing &", "no se", "empty sr", "non-ASCII", "too long",
        "empty", "password"])
def test_malformed_tokens_are_refused(mangle: object) -> None:
    good = sas.device_token(KEY_A, HUB, "dev-a", now=NOW)
    assert good.count("%3D") == 1  # a 32-byte signature ends with one '=' (URL-encoded)
    assert _refusal(mangle(good)) == sas.MALFORMED  # type: ignore[operator]


@pytest.mark.parametrize(("key", "why"), [
    ("not base64!", "not base64"),
    (base64.b64encode(bytes(15)).decode(), "15 bytes"),
    (base64.b64encode(bytes(65)).decode(), "65 bytes"),
    (base64.b64encode(bytes(32)).decode().rstrip("="), "not base64"),
])
def test_a_bad_key_is_refused_saying_why(key: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        sas.decode_key(key)


def test_a_keyed_device_signs_in_with_tokens_only() -> None:
    table = IdentityTable(hub=HUB)
    a = table.add_device("dev-a", key=KEY_A)
    table.add_device("dev-b", key=KEY_B)
    user = compose_username(HUB, "dev-a")
    token = sas.device_token(KEY_A, HUB, "dev-a", now=NOW)
    assert table.sign_in("dev-a", user, token, now=NOW) is a
    assert table.authenticate("dev-a", user, a.credentials.password) is a  # the harness's own, valid for days
    cases = {
        "expired": ("dev-a", user, token, NOW + 3600, sas.EXPIRED),
        "another device's key": ("dev-a", user, sas.device_token(KEY_B, HUB, "dev-a", now=NOW), NOW,
                                 sas.BAD_SIGNATURE),
        "another device's token": ("dev-a", user, sas.device_token(KEY_B, HUB, "dev-b", now=NOW), NOW,
                                   sas.WRONG_RESOURCE),
        "under another client id": ("dev-b", compose_username(HUB, "dev-b"), token, NOW, sas.WRONG_RESOURCE),
        "another device's user name": ("dev-a", compose_username(HUB, "dev-b"), token, NOW,
                                       "the user name is not this identity's"),
        "a password": ("dev-a", user, "s3cret", NOW, sas.MALFORMED),
    }
    refusals = {}
    for what, (cid, username, password, now, _) in cases.items():
        try:
            table.sign_in(cid, username, password, now=now)
        except SignInRefused as exc:
            refusals[what] = str(exc)
    assert refusals == {what: case[-1] for what, case in cases.items()}


def test_a_session_keeps_its_identity_after_its_token_expires() -> None:
    """The embedded broker's topic checks ask again with expiry=False (IoT Hub ends such a
    connection; the broker only refuses the next CONNECT)."""
    table = IdentityTable(hub=HUB)
    a = table.add_device("dev-a", key=KEY_A)
    token = sas.device_token(KEY_A, HUB, "dev-a", ttl=1, now=NOW)
    assert table.sign_in("dev-a", compose_username(HUB, "dev-a"), token, now=NOW + 10, expiry=False) is a


def test_a_device_takes_a_password_or_a_key_and_keeps_it() -> None:
    from harness.errors import UsageError

    table = IdentityTable(hub=HUB)
    with pytest.raises(UsageError, match="give one of a password, a key or a thumbprint"):
        table.add_device("dev-a", key=KEY_A, password="x")
    table.add_device("dev-a", key=KEY_A)
    with pytest.raises(UsageError, match="another secret"):
        table.add_device("dev-a", key=KEY_B)
    assert table.add_device("dev-a", key=KEY_A).key == KEY_A


def test_a_device_id_and_a_service_client_id_never_share_an_identity() -> None:
    from harness.errors import UsageError

    table = IdentityTable(hub=HUB)
    table.add_device("hil-hub", key=KEY_A)
    with pytest.raises(UsageError, match="taken by a device"):
        table.add_service("hil-hub")
    table.add_service("svc")
    with pytest.raises(UsageError, match="taken by a service"):
        table.add_device("svc")
