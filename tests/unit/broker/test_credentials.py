"""Identity table: authentication with parsed user names, topic policy, password hashes, endpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.broker import BROKER_KINDS, BrokerEndpoint, open_broker, parse_mqtt_url
from harness.broker.credentials import Access, IdentityTable, canary_topic
from harness.errors import ConfigError, UsageError
from harness.telemetry.topic import compose_username, security_topic


@pytest.fixture
def table() -> IdentityTable:
    t = IdentityTable(hub="lab-hub.azure-devices.net")
    t.add_device("dev-a")
    t.add_device("dev-b")
    t.add_service("hil-collector")
    return t


def creds(table: IdentityTable, cid: str) -> tuple[str, str, str]:
    ident = table.get(cid)
    assert ident is not None
    c = ident.credentials
    return c.client_id, c.username, c.password


def test_device_credentials_are_iot_hub_shaped(table: IdentityTable) -> None:
    cid, user, pw = creds(table, "dev-a")
    assert cid == "dev-a"
    assert user.startswith("lab-hub.azure-devices.net/dev-a/?api-version=")
    assert len(pw) >= 24 and pw != creds(table, "dev-b")[2]


def test_add_device_is_idempotent(table: IdentityTable) -> None:
    assert table.add_device("dev-a").credentials == table.get("dev-a").credentials  # type: ignore[union-attr]


def test_authenticate_accepts_own_credentials(table: IdentityTable) -> None:
    assert table.authenticate(*creds(table, "dev-a")) is table.get("dev-a")
    assert table.authenticate(*creds(table, "hil-collector")) is table.get("hil-collector")


def test_user_name_is_parsed_not_compared(table: IdentityTable) -> None:
    _, _, pw = creds(table, "dev-a")
    other = compose_username("lab-hub.azure-devices.net", "dev-a", api_version="2020-09-30",
                             DeviceClientType="c/1.0.0")
    assert table.authenticate("dev-a", other, pw) is not None


@pytest.mark.parametrize("case", ["wrong secret", "unknown client", "other device's user", "other hub",
                                  "client id of another device", "not a hub user name", "no password"])
def test_authenticate_refuses(table: IdentityTable, case: str) -> None:
    cid, user, pw = creds(table, "dev-a")
    args = {
        "wrong secret": (cid, user, pw + "x"),
        "unknown client": ("dev-z", compose_username("lab-hub.azure-devices.net", "dev-z"), pw),
        "other device's user": (cid, creds(table, "dev-b")[1], pw),
        "other hub": (cid, compose_username("evil.azure-devices.net", "dev-a"), pw),
        "client id of another device": ("dev-b", user, pw),
        "not a hub user name": (cid, "dev-a", pw),
        "no password": (cid, user, None),
    }[case]
    assert table.authenticate(*args) is None


@pytest.mark.parametrize(("cid", "topic", "access", "ok"), [
    ("dev-a", security_topic("dev-a"), Access.PUBLISH, True),
    ("dev-a", security_topic("dev-a", "mod1"), Access.PUBLISH, True),
    ("dev-a", security_topic("dev-b"), Access.PUBLISH, False),
    ("dev-a", "devices/dev-a/messages/devicebound/#", Access.SUBSCRIBE, True),
    ("dev-a", "devices/dev-b/messages/devicebound/#", Access.SUBSCRIBE, False),
    ("dev-a", "devices/+/messages/devicebound/#", Access.SUBSCRIBE, True),  # read as its own, as IoT Hub does
    ("dev-a", "devices/+/messages/#", Access.SUBSCRIBE, False),
    ("dev-a", "devices/+/messages/events/#", Access.SUBSCRIBE, False),
    ("dev-a", "devices/+/+/devicebound/#", Access.SUBSCRIBE, False),
    ("dev-a", "devices/dev-b/messages/devicebound/x", Access.SUBSCRIBE, False),  # delivery of another's
    ("dev-a", "devices/dev-b/messages/events/#", Access.SUBSCRIBE, False),
    ("dev-a", "#", Access.SUBSCRIBE, False),
    ("dev-a", "devices/dev-a/messages/events/x", Access.SUBSCRIBE, False),
    ("hil-collector", "devices/+/messages/events/#", Access.SUBSCRIBE, True),
    ("hil-collector", "devices/+/modules/+/messages/events/#", Access.SUBSCRIBE, True),
    ("hil-collector", security_topic("dev-b"), Access.SUBSCRIBE, True),
    ("hil-collector", "#", Access.SUBSCRIBE, False),
    ("hil-collector", security_topic("dev-b"), Access.PUBLISH, False),
])
def test_topic_policy(table: IdentityTable, cid: str, topic: str, access: Access, ok: bool) -> None:
    ident = table.get(cid)
    assert ident is not None
    assert table.allowed(ident, topic, access) is ok


@pytest.mark.parametrize("bad", ["", "a/b", "a+", "a#", "a b", "x" * 129, "dév", "a\tb"])
def test_bad_device_ids_are_refused(table: IdentityTable, bad: str) -> None:
    with pytest.raises(UsageError, match="device id"):
        table.add_device(bad)


def test_a_service_owns_its_canary_topic_and_no_other(table: IdentityTable) -> None:
    col, dev = table.get("hil-collector"), table.get("dev-a")
    assert col is not None and dev is not None
    mine, other = canary_topic("hil-collector"), canary_topic("hil-other")
    assert table.allowed(col, mine, Access.PUBLISH) and table.allowed(col, mine, Access.SUBSCRIBE)
    assert not table.allowed(col, other, Access.SUBSCRIBE) and not table.allowed(col, "hil/canary/+", Access.SUBSCRIBE)
    assert not table.allowed(dev, mine, Access.PUBLISH) and not table.allowed(dev, mine, Access.SUBSCRIBE)


@pytest.mark.parametrize("bad", ["", "a/b", "a+", "a#", "a b", "x" * 129, "dév", "a\nb"])
def test_bad_service_client_ids_are_refused(table: IdentityTable, bad: str) -> None:
    with pytest.raises(UsageError, match="service client id"):
        table.add_service(bad)


@pytest.mark.parametrize("bad", ["", "a/b", "hub?x", "a b", "hüb.example"])
def test_a_hub_must_be_a_host_name(bad: str) -> None:
    with pytest.raises(UsageError, match="is not a host name"):
        IdentityTable(hub=bad)


def test_a_non_ascii_password_is_refused_not_an_error(table: IdentityTable) -> None:
    cid, user, _ = creds(table, "dev-a")
    assert table.authenticate(cid, user, "pässwörd") is None


def test_endpoint_round_trips_through_json(tmp_path: Path, table: IdentityTable) -> None:
    broker = open_broker("embedded", tmp_path)
    broker.add_device("dev-a")
    ep = broker.endpoint()
    path = ep.write(tmp_path / "ep.json")
    assert BrokerEndpoint.read(path) == ep
    assert (path.stat().st_mode & 0o777) == 0o600
    data = json.loads(path.read_text())
    assert set(data["devices"]) == {"dev-a"} and data["collector"]["client_id"] == "hil-collector"


def test_endpoint_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no broker endpoint file"):
        BrokerEndpoint.read(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"url": "mqtt://127.0.0.1:1"}')
    with pytest.raises(ConfigError, match=r"bad\.json.*collector"):
        BrokerEndpoint.read(bad)


def test_kinds_are_registered_and_unknown_kind_is_a_config_error(tmp_path: Path) -> None:
    assert {"mosquitto", "embedded", "external"} <= set(BROKER_KINDS.names())
    with pytest.raises(ConfigError, match="unknown broker kind 'rabbit'"):
        open_broker("rabbit", tmp_path)
    with pytest.raises(ConfigError, match="needs a URL"):
        open_broker("external", tmp_path)


@pytest.mark.parametrize(("url", "want"), [
    ("mqtt://127.0.0.1:1883", ("127.0.0.1", 1883, False)),
    ("mqtts://10.0.0.1", ("10.0.0.1", 8883, True)),
    ("mqtt://[::1]:1884", ("::1", 1884, False)),
])
def test_parse_mqtt_url(url: str, want: tuple[str, int, bool]) -> None:
    assert parse_mqtt_url(url) == want


def test_parse_mqtt_url_rejects_other_schemes() -> None:
    with pytest.raises(ConfigError, match="http://x"):
        parse_mqtt_url("http://x")
