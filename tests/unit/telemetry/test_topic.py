"""IoT Hub D2C topics, property bags, mti and user names."""

from __future__ import annotations

import pytest

from harness.telemetry.topic import (
    SECURITY_IFID,
    SECURITY_MTI,
    Mti,
    TopicError,
    UserNameError,
    compose_topic,
    compose_username,
    is_security_message,
    parse_mti,
    parse_topic,
    parse_username,
    security_topic,
)

SPEC_TOPIC = "devices/{id}/messages/events/mti=2.3-1-0-0&%24.ifid=urn%3Aazureiot%3ASecurity%3ASecurityAgent%3A1"


def test_security_topic_is_the_spec_string() -> None:
    assert security_topic("board-1") == SPEC_TOPIC.format(id="board-1")
    assert security_topic("d", module_id="m") == SPEC_TOPIC.replace("devices/{id}/", "devices/d/modules/m/")


def test_parse_security_topic() -> None:
    topic = parse_topic(SPEC_TOPIC.format(id="board-1"))
    assert topic.device_id == "board-1"
    assert topic.module_id is None
    assert dict(topic.properties) == {"mti": SECURITY_MTI, "$.ifid": SECURITY_IFID}
    assert topic.is_security
    assert topic.mti == Mti("2.3", 1, 0, 0)


def test_parse_module_topic() -> None:
    topic = parse_topic(security_topic("dev", module_id="agent"))
    assert (topic.device_id, topic.module_id, topic.is_security) == ("dev", "agent", True)


@pytest.mark.parametrize(
    ("topic", "properties"),
    [
        ("devices/d/messages/events/", {}),
        ("devices/d/messages/events", {}),
        ("devices/d/messages/events/a=1&b=x%20y&&c", {"a": "1", "b": "x y", "c": ""}),
        (
            "devices/d/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8",
            {"$.ct": "application/json", "$.ce": "utf-8"},
        ),
        ("devices/d/messages/events/k=a+b", {"k": "a+b"}),
    ],
)
def test_property_bag(topic: str, properties: dict[str, str]) -> None:
    parsed = parse_topic(topic)
    assert dict(parsed.properties) == properties
    assert not parsed.is_security
    assert parse_topic(compose_topic("d", properties)).properties == properties


@pytest.mark.parametrize(
    "topic",
    [
        "devices/d/messages/events/",  # application telemetry, no properties
        "devices/d/messages/events/mti=2.3-1-0-0",  # mti alone
        "devices/d/messages/events/%24.ifid=urn%3Aazureiot%3ASecurity%3ASecurityAgent%3A1",  # ifid alone
        "devices/d/messages/events/mti=2.3-2-0-0&%24.ifid=urn%3Aazureiot%3ASecurity%3ASecurityAgent%3A1",  # JSON
        "devices/d/messages/events/mti=garbage&%24.ifid=urn%3Aazureiot%3ASecurity%3ASecurityAgent%3A1",
        "devices/d/messages/events/mti=2.3-1-0-0&%24.ifid=urn%3Aazureiot%3ASecurity%3ASecurityAgent%3A2",
        "devices/d/messages/events/mti=2.3-1-0-0&$.ifid=urn:azureiot:Other:1",
        "$iothub/twin/GET/?$rid=1",
        "devices/d/messages/devicebound/#",
        "",
    ],
)
def test_not_security(topic: str) -> None:
    assert not is_security_message(topic)


@pytest.mark.parametrize(
    "topic",
    [
        SPEC_TOPIC.format(id="d"),
        security_topic("d", mti="2.0-1-0-0"),  # module 2.0.3 .. 3.2.1
        "devices/d/messages/events/%24.ifid=urn%3Aazureiot%3ASecurity%3ASecurityAgent%3A1&mti=2.3-1-0-0",
        "devices/d/messages/events/$.ifid=urn:azureiot:Security:SecurityAgent:1&mti=2.3-1-0-0&x=1",
    ],
)
def test_security(topic: str) -> None:
    assert is_security_message(topic)


@pytest.mark.parametrize(
    "topic",
    ["$iothub/twin/res/200/", "devices//messages/events/", "devices/d/modules//messages/events/", "devices/d/x", "dev"],
)
def test_not_a_d2c_topic(topic: str) -> None:
    with pytest.raises(TopicError) as info:
        parse_topic(topic)
    assert isinstance(info.value, ValueError)
    assert repr(topic) in str(info.value)


def test_compose_rejects_bad_identities() -> None:
    with pytest.raises(TopicError):
        compose_topic("a/b")
    with pytest.raises(TopicError):
        compose_topic("a", module_id="")


@pytest.mark.parametrize(
    ("text", "mti"),
    [("2.3-1-0-0", Mti("2.3", 1, 0, 0)), ("2.0-1-0-0", Mti("2.0", 1, 0, 0)), ("3-2-1-7", Mti("3", 2, 1, 7))],
)
def test_parse_mti(text: str, mti: Mti) -> None:
    assert parse_mti(text) == mti
    assert str(mti) == text
    assert mti.is_flatbuffers == (mti.encoding == 1)


@pytest.mark.parametrize("text", ["", "2.3-1-0", "2.3-1-0-0-0", "x.y-1-0-0", "2.3-a-0-0", "-1-0-0", "2.3--0-0"])
def test_bad_mti(text: str) -> None:
    with pytest.raises(TopicError, match="mti"):
        parse_mti(text)


def test_parse_device_username() -> None:
    u = parse_username(
        "myhub.azure-devices.net/board-1/?api-version=2020-09-30&DeviceClientType=azsdk-c%2F1.3.0"
        "&model-id=dtmi%3Aazurertos%3Adevkit%3Agsg%3B1"
    )
    assert (u.hub, u.device_id, u.module_id) == ("myhub.azure-devices.net", "board-1", None)
    assert u.api_version == "2020-09-30"
    assert u.params["DeviceClientType"] == "azsdk-c/1.3.0"
    assert u.params["model-id"] == "dtmi:azurertos:devkit:gsg;1"


def test_parse_module_username_and_round_trip() -> None:
    text = compose_username("h.example", "dev", "mod", api_version="2021-04-12", **{"model-id": "dtmi:x;1"})
    assert text == "h.example/dev/mod/?api-version=2021-04-12&model-id=dtmi%3Ax%3B1"
    u = parse_username(text)
    assert (u.hub, u.device_id, u.module_id, u.api_version) == ("h.example", "dev", "mod", "2021-04-12")
    assert dict(u.params) == {"api-version": "2021-04-12", "model-id": "dtmi:x;1"}


@pytest.mark.parametrize(
    "text",
    [
        "hub/dev",
        "hub/dev/api-version=1",
        "hub/?api-version=1",
        "/dev/?api-version=1",
        "a/b/c/d/?api-version=1",
        "hub/dev/?DeviceClientType=x",
    ],
)
def test_bad_username(text: str) -> None:
    with pytest.raises(UserNameError, match="user name"):
        parse_username(text)
