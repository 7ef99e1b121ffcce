"""Identities on real brokers: a client id is bound to its identity, a refused CONNECT touches no
one's session, identity changes are in force when the call returns, and both kinds apply the same
sign-in rules."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.broker import Broker
from harness.telemetry.archive import read_archive
from harness.telemetry.codec import decode
from harness.telemetry.collector import Collector
from harness.telemetry.model import PayloadType
from harness.telemetry.topic import compose_username, security_topic

from .conftest import DeviceClient, heartbeat_payload, raw_connect

KINDS = [pytest.param("mosquitto", marks=pytest.mark.needs("mosquitto")), "embedded"]
ACCEPTED = 0
HUB = "lab-hub.azure-devices.net"


def archived_ids(path: Path) -> set[int]:
    return {int.from_bytes(e.id, "big") for r in read_archive(path) for e in decode(r.payload).events}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("victim", ["device", "collector"])
@pytest.mark.parametrize("login", ["another device's credentials", "a wrong password", "no password"])
@pytest.mark.parametrize("clean", [True, False], ids=["clean", "persistent"])
def test_a_login_under_another_client_id_is_refused_and_disturbs_no_one(
        kind: str, victim: str, login: str, clean: bool, brokers: Callable[..., Broker],
        devices: Callable[..., DeviceClient], tmp_path: Path) -> None:
    b = brokers(kind)
    a, bb = b.add_device("dev-a"), b.add_device("dev-b")
    archive = tmp_path / "telemetry.bin"
    with Collector.from_endpoint(b.endpoint(), archive) as col:
        real_b = devices(b.url, bb)
        assert real_b.connected()
        target = bb if victim == "device" else b.collector_credentials
        user, password = {
            "another device's credentials": (a.username, a.password),
            "a wrong password": (target.username, target.password + "x"),
            "no password": (target.username, None),
        }[login]
        assert raw_connect(b.url, target.client_id, user, password, clean=clean) != ACCEPTED
        # B sends right after the refused login: acknowledged, so it must reach the collector and the archive
        assert real_b.publish_settled(security_topic("dev-b"), heartbeat_payload(7)), "B was disconnected"
        assert col.expect_event("dev-b", PayloadType.HEARTBEAT, within=10).id[-1] == 7
        assert not real_b.disconnected.is_set() and col.gaps == [] and col.problems() == ""
    assert 7 in archived_ids(archive)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", KINDS)
def test_identities_added_are_in_force_when_the_call_returns(kind: str, brokers: Callable[..., Broker]) -> None:
    b = brokers(kind)
    refused = []
    for n in range(40):
        for creds in (b.add_device(f"dev-{n}"), b.add_service(f"svc-{n}")):
            rc = raw_connect(b.url, creds.client_id, creds.username, creds.password)
            if rc != ACCEPTED:
                refused.append((creds.client_id, rc))
    assert refused == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", KINDS)
def test_identities_added_in_a_burst_are_all_in_force(kind: str, brokers: Callable[..., Broker]) -> None:
    """Back-to-back changes (as xdist workers and benchmarks make them) are each complete."""
    b = brokers(kind)
    added = [b.add_service(f"svc-{n}") for n in range(100)]
    refused = [(c.client_id, rc) for c in added
               if (rc := raw_connect(b.url, c.client_id, c.username, c.password)) != ACCEPTED]
    assert refused == []


def _case(b: Broker, case: str) -> tuple[str, str | None, str | None]:
    a = b.identities.get("dev-a")
    c = b.collector_credentials
    assert a is not None
    pw = a.credentials.password
    return {
        "own credentials": ("dev-a", a.credentials.username, pw),
        "another api-version and more parameters": (
            "dev-a", compose_username(HUB, "dev-a", api_version="2020-09-30", DeviceClientType="c/1.0.0"), pw),
        "a '+' and a '#' in a parameter": ("dev-a", f"{HUB}/dev-a/?api-version=2021-04-12&x=a+b#c", pw),
        "an encoded api-version key": ("dev-a", f"{HUB}/dev-a/?api%2Dversion=2021-04-12", pw),
        "the collector": (c.client_id, c.username, c.password),
        "another hub": ("dev-a", compose_username("evil.azure-devices.net", "dev-a"), pw),
        "another device's user name": ("dev-a", compose_username(HUB, "dev-b"), pw),
        "a module's user name": ("dev-a", compose_username(HUB, "dev-a", "mod1"), pw),
        "no api-version": ("dev-a", f"{HUB}/dev-a/?DeviceClientType=x", pw),
        "no query": ("dev-a", f"{HUB}/dev-a/", pw),
        "the bare device id": ("dev-a", "dev-a", pw),
        "a hub prefix of the real one": ("dev-a", compose_username(HUB[:-1], "dev-a"), pw),
        "a device id prefix": ("dev-a", compose_username(HUB, "dev-"), pw),
        "a wrong password": ("dev-a", a.credentials.username, pw + "x"),
        "an empty password": ("dev-a", a.credentials.username, ""),
        "a password prefix": ("dev-a", a.credentials.username, pw[:-1]),
        "no user name": ("dev-a", None, None),
        "an unknown client id": ("dev-z", compose_username(HUB, "dev-z"), pw),
        "an empty client id": ("", a.credentials.username, pw),
        "the collector with a device's user name": (c.client_id, a.credentials.username, c.password),
        "the collector's user name in another case": (c.client_id, c.username.upper(), c.password),
    }[case]


ALLOWED = ["own credentials", "another api-version and more parameters", "a '+' and a '#' in a parameter",
           "an encoded api-version key", "the collector"]
REFUSED = ["another hub", "another device's user name", "a module's user name", "no api-version", "no query",
           "the bare device id", "a hub prefix of the real one", "a device id prefix", "a wrong password",
           "an empty password", "a password prefix", "no user name", "an unknown client id", "an empty client id",
           "the collector with a device's user name", "the collector's user name in another case"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", ALLOWED + REFUSED)
def test_both_kinds_apply_the_same_sign_in_rules(kind: str, case: str, brokers: Callable[..., Broker]) -> None:
    b = brokers(kind, hub=HUB)
    b.add_device("dev-a")
    b.add_device("dev-b")
    cid, user, password = _case(b, case)
    accepted = raw_connect(b.url, cid, user, password) == ACCEPTED
    assert accepted is (case in ALLOWED), case


def test_the_rules_cases_agree_with_the_identity_table(tmp_path: Path) -> None:
    """The table (what the embedded kind asks) decides every case as the integration test expects."""
    from harness.broker import BrokerOptions, open_broker

    b = open_broker("embedded", tmp_path, BrokerOptions(hub=HUB))
    b.add_device("dev-a")
    b.add_device("dev-b")
    decided = {case: b.identities.authenticate(*_case(b, case)) is not None for case in ALLOWED + REFUSED}
    assert decided == {case: case in ALLOWED for case in ALLOWED + REFUSED}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_a_service_reads_devices_and_its_own_canary_only(kind: str, brokers: Callable[..., Broker],
                                                         devices: Callable[..., DeviceClient]) -> None:
    b = brokers(kind)
    svc = b.add_service("svc-a")
    other = b.add_service("svc-b")
    reader = devices(b.url, svc)
    assert reader.connected()
    granted = reader.subscribe_granted([("hil/canary/svc-a", 1), ("hil/canary/svc-b", 1), ("hil/#", 1)])
    assert granted == [True, False, False]
    assert reader.publish_settled("hil/canary/svc-a", b"1")
    assert reader.wait_message(b"1")
    spy = devices(b.url, other)
    assert spy.connected()
    assert spy.subscribe_granted([("hil/canary/svc-a", 1)]) == [False]
    spy.publish_settled("hil/canary/svc-a", b"forged")  # acknowledged and dropped, or the connection closed
    assert reader.publish_settled("hil/canary/svc-a", b"3")
    assert reader.wait_message(b"3")  # the broker handled the forged message first
    assert [m.payload for m in reader.received] == [b"1", b"3"]


@pytest.mark.timeout(60)
@pytest.mark.needs("mosquitto")
def test_a_damaged_identities_file_refuses_connections_and_says_why(brokers: Callable[..., Broker]) -> None:
    b = brokers("mosquitto")
    a = b.add_device("dev-a")
    path = b.identities_path  # type: ignore[attr-defined]
    good = path.read_text()
    damages = {
        "an unknown key": (good.replace("\npassword ", "\npasswort ", 1), "unknown key 'passwort'"),
        "a truncated file": (good[:good.index("\nidentity ") + 1], "incomplete: .* no 'end' line"),
        "a line after the end": (good + "identity x\n", "follows the 'end' line"),
        "another format": (good.replace("hil-identities 3", "hil-identities 4"), "line 1 is not"),
        "a bad escape": (good.replace("\npassword ", "\npassword %G", 1), "bad percent-encoding"),
        "a missing file": (None, "cannot open"),
        "a key on a service": (re.sub(r"(\nusername hil-collector\n)password \S+", rf"\1key {'A' * 43}=", good,
                                      count=1), "a key or thumbprint for a device or registration only"),
        "a registration without a scope": (good.replace("\nscope ", "\n# scope ", 1).replace(
            "\nend\n", f"\nidentity reg-1\nregistration dev-a\nkey {'A' * 43}=\nend\n"),
            "a registration needs one of them and a scope"),
        "a short key": (good.replace("\nend", "\nidentity dev-k\ndevice dev-k\nkey QUFB\nend", 1),
                        "not base64 or not 16-64 bytes"),
    }
    for what, (text, why) in damages.items():
        if text is None:
            path.unlink()
        else:
            path.write_text(text)
        mark = b._pump.mark()  # type: ignore[attr-defined]
        assert raw_connect(b.url, a.client_id, a.username, a.password) != ACCEPTED, what
        assert b.wait_log(f"hil-auth: .*{why}", 5, since=mark), what  # type: ignore[attr-defined]
    path.write_text(good)
    assert raw_connect(b.url, a.client_id, a.username, a.password) == ACCEPTED


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_the_connects_a_broker_admitted_are_reported_with_their_flags_across_a_restart(
        kind: str, brokers: Callable[..., Broker]) -> None:
    """What the certification's 1.identity, 3.1.first-collection and link-cut clauses read: each
    admitted CONNECT's client id, user name, clean-session flag and keep-alive (a refused one is not
    there), the same on both kinds, and kept when the broker restarts (an outage clause restarts it)."""
    import datetime as _dt

    b = brokers(kind)
    dev = b.add_device("dev-c")
    assert raw_connect(b.url, dev.client_id, dev.username, dev.password + "x") != ACCEPTED
    assert raw_connect(b.url, dev.client_id, dev.username, dev.password, clean=False) == ACCEPTED
    b.stop()
    b.start()
    assert raw_connect(b.url, dev.client_id, dev.username, dev.password, clean=True) == ACCEPTED
    wait_log = getattr(b, "wait_log", None)
    if wait_log is not None:  # mosquitto logs the CONNECT once it is admitted: the line may trail the CONNACK
        assert wait_log(r"New client connected .* as dev-c \(p\d+, c1", 10)
    mine = [c for c in b.connections() or [] if c.client_id == "dev-c"]
    assert [(c.username, c.clean_session, c.keepalive) for c in mine] == [
        (dev.username, False, 60), (dev.username, True, 60)], mine
    now = _dt.datetime.now(_dt.UTC).timestamp()
    for c in mine:
        assert abs(_dt.datetime.fromisoformat(c.time).replace(tzinfo=_dt.UTC).timestamp() - now) < 30
        assert re.fullmatch(r"127\.0\.0\.1:\d+", c.address), c.address
