"""SAS-token sign-in on both broker kinds: a device of the registry is accepted only with a token
signed with its own key, for its own device id, not expired by the broker's clock, under its own
client id and IoT Hub user name; each refusal is logged with its reason. Devices with a run
password and the service identities sign in as before."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest

from harness.broker import Broker, sas
from harness.telemetry.topic import compose_username

from .conftest import raw_connect

KINDS = [pytest.param("mosquitto", marks=pytest.mark.needs("mosquitto")), "embedded"]
HUB = "lab-hub.azure-devices.net"
KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 164))  # 64 bytes, as IoT Hub's longer keys
ACCEPTED = 0


def _token(key: bytes, device: str, ttl: float = 3600, hub: str = HUB) -> str:
    return sas.make_token(key, sas.device_resource(hub, device), int(time.time() + ttl))


def _user(device: str) -> str:
    return compose_username(HUB, device, api_version="2021-04-12", DeviceClientType="azsdk-c%2F1.3.2")


# (client id, user name, password) and the reason both kinds log
CASES: dict[str, Callable[[], tuple[tuple[str, str, str], str | None]]] = {
    "a valid token": lambda: (("dev-a", _user("dev-a"), _token(KEY_A, "dev-a")), None),
    "a 64-byte key's token": lambda: (("dev-b", _user("dev-b"), _token(KEY_B, "dev-b")), None),
    "an expired token": lambda: (("dev-a", _user("dev-a"), _token(KEY_A, "dev-a", ttl=-1)), sas.EXPIRED),
    "a token signed with another device's key": lambda: (
        ("dev-a", _user("dev-a"), _token(KEY_B, "dev-a")), sas.BAD_SIGNATURE),
    "a token for another device id": lambda: (
        ("dev-a", _user("dev-a"), _token(KEY_A, "dev-b")), sas.WRONG_RESOURCE),
    "another device's valid token": lambda: (
        ("dev-a", _user("dev-a"), _token(KEY_B, "dev-b")), sas.WRONG_RESOURCE),
    "a token for another hub": lambda: (
        ("dev-a", _user("dev-a"), _token(KEY_A, "dev-a", hub="evil.azure-devices.net")), sas.WRONG_RESOURCE),
    "a valid token under another client id": lambda: (
        ("dev-b", _user("dev-b"), _token(KEY_A, "dev-a")), sas.WRONG_RESOURCE),
    "a valid token with another device's user name": lambda: (
        ("dev-a", _user("dev-b"), _token(KEY_A, "dev-a")), "the user name is not this identity's"),
    "a malformed token (no prefix)": lambda: (
        ("dev-a", _user("dev-a"), _token(KEY_A, "dev-a").removeprefix(sas.PREFIX)), sas.MALFORMED),
    "a malformed token (a policy's skn)": lambda: (
        ("dev-a", _user("dev-a"), _token(KEY_A, "dev-a") + "&skn=iothubowner"), sas.MALFORMED),
    "a malformed token (se twice)": lambda: (
        ("dev-a", _user("dev-a"), _token(KEY_A, "dev-a", ttl=-10) + f"&se={int(time.time()) + 3600}"),
        sas.MALFORMED),
    "a malformed token (se not a number)": lambda: (
        ("dev-a", _user("dev-a"), _token(KEY_A, "dev-a").replace("&se=", "&se=+")), sas.MALFORMED),
    "a malformed token (signature truncated)": lambda: (
        ("dev-a", _user("dev-a"), _token(KEY_A, "dev-a").replace("%3D&se", "&se")), sas.MALFORMED),
    "a malformed token (an empty field)": lambda: (
        ("dev-a", _user("dev-a"), _token(KEY_A, "dev-a").replace("&se", "&&se")), sas.MALFORMED),
    "a plain password": lambda: (("dev-a", _user("dev-a"), "hunter2"), sas.MALFORMED),
}


def _log_text(b: Broker) -> str:
    assert b.log_path is not None
    return b.log_path.read_text(errors="replace")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", list(CASES))
def test_sas_sign_in(kind: str, case: str, brokers: Callable[..., Broker]) -> None:
    b = brokers(kind, hub=HUB)
    b.add_device("dev-a", key=KEY_A)
    b.add_device("dev-b", key=KEY_B)
    (cid, user, password), why = CASES[case]()
    rc = raw_connect(b.url, cid, user, password)
    if why is None:
        assert rc == ACCEPTED, _log_text(b)[-2000:]
        return
    assert rc != ACCEPTED
    assert _refusals(b) == [why], _log_text(b)[-2000:]  # the one rule this case breaks, and no other


def _refusals(b: Broker) -> list[str]:
    """The reasons of the refusals the broker logged. mosquitto's log reaches the file through a
    reader thread: wait for the line (the plugin logs it before the CONNACK goes out)."""
    if b.kind == "mosquitto":
        assert b.wait_log(r"hil-auth: refused", 10), "no refusal logged"  # type: ignore[attr-defined]
    return [m.group(1) for m in _REFUSED.finditer(_log_text(b))]


_REFUSED = re.compile(r"refused client id .*: ([^:\n]+)$", re.M)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_passwords_and_tokens_live_side_by_side(kind: str, brokers: Callable[..., Broker]) -> None:
    """The harness's own firmware and services keep their run passwords; a keyed device's credentials
    (what the endpoint file gives the harness's own clients) carry a token."""
    b = brokers(kind, hub=HUB)
    keyed = b.add_device("dev-a", key=KEY_A)
    plain = b.add_device("dev-p")
    assert keyed.password.startswith(sas.PREFIX)
    collector = b.collector_credentials
    for creds in (keyed, plain, collector):
        assert raw_connect(b.url, creds.client_id, creds.username, creds.password) == ACCEPTED, creds.client_id
    # a keyed device's token is no password for the plain one, nor the plain one's password a token
    assert raw_connect(b.url, plain.client_id, plain.username, keyed.password) != ACCEPTED
    assert raw_connect(b.url, keyed.client_id, keyed.username, plain.password) != ACCEPTED


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_a_keyed_device_added_while_running_is_in_force(kind: str, brokers: Callable[..., Broker]) -> None:
    b = brokers(kind, hub=HUB)
    assert raw_connect(b.url, "dev-a", _user("dev-a"), _token(KEY_A, "dev-a")) != ACCEPTED
    b.add_device("dev-a", key=KEY_A)
    assert raw_connect(b.url, "dev-a", _user("dev-a"), _token(KEY_A, "dev-a")) == ACCEPTED


@pytest.mark.timeout(60)
@pytest.mark.needs("mosquitto")
def test_the_plugin_still_reads_version_1_files_which_carry_no_keys(brokers: Callable[..., Broker]) -> None:
    b = brokers("mosquitto", hub=HUB)
    plain = b.add_device("dev-p")
    path = b.identities_path  # type: ignore[attr-defined]
    v3 = path.read_text()
    assert v3.startswith("hil-identities 3\n")
    path.write_text(_as_v1(v3))  # as an older harness wrote it
    assert raw_connect(b.url, plain.client_id, plain.username, plain.password) == ACCEPTED
    b.add_device("dev-a", key=KEY_A)
    with_key = path.read_text()
    assert "\nkey " in with_key
    path.write_text(_as_v1(with_key))
    mark = b._pump.mark()  # type: ignore[attr-defined]
    assert raw_connect(b.url, plain.client_id, plain.username, plain.password) != ACCEPTED
    assert b.wait_log(r"hil-auth: .*unknown key 'key'", 5, since=mark)  # type: ignore[attr-defined]


def _as_v1(text: str) -> str:
    """A version 3 file in version 1's words (no DPS scope line), keys left in."""
    return re.sub(r"\nscope [^\n]*", "", text.replace("hil-identities 3\n", "hil-identities 1\n", 1), count=1)
