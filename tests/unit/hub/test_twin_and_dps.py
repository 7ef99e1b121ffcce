"""The pure parts of the hub stand-in: twin merge patches, the DPS exchange, the relay's names."""

from __future__ import annotations

import json

import pytest

from harness.broker import relay
from harness.hub.dps import DpsStandIn
from harness.hub.twin import PatchRefused, Twin, merge_patch
from harness.telemetry.topic import decode_pairs


def test_a_merge_patch_adds_changes_and_removes_without_touching_its_inputs() -> None:
    target = {"a": 1, "n": {"x": 1, "y": 2}, "gone": True}
    patch = {"a": 2, "n": {"y": None, "z": 3}, "gone": None, "new": [1]}
    assert merge_patch(target, patch) == {"a": 2, "n": {"x": 1, "z": 3}, "new": [1]}
    assert target == {"a": 1, "n": {"x": 1, "y": 2}, "gone": True}


def test_twin_versions_count_patches_and_dollar_keys_are_refused() -> None:
    twin = Twin(desired={"i": 1})
    assert twin.patch_reported({"fw": "1"}) == 2 and twin.patch_desired({"i": 2}) == 2
    assert twin.document() == {"desired": {"i": 2, "$version": 2}, "reported": {"fw": "1", "$version": 2}}
    deep: dict[str, object] = {}
    node = deep
    for _ in range(10):  # 11 levels of objects: one past IoT Hub's limit
        node["n"] = {}
        node = node["n"]  # type: ignore[assignment]
    ten_levels = {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": 1}}}}}}}}}}
    assert twin.patch_reported(ten_levels) == 3
    for bad in ([1], "x", {"$version": 3}, {"n": {"$metadata": {}}}, deep):
        with pytest.raises(PatchRefused):
            twin.patch_reported(bad)
    assert twin.reported_version == 3


def _reply(dps: DpsStandIn, reg: str, topic: str, body: bytes = b"") -> tuple[int, dict[str, str], dict]:  # type: ignore[type-arg]
    reply = dps.handle(reg, f"dev-of-{reg}", topic, body)
    assert reply is not None
    path, _, query = reply.topic.partition("/?")
    return int(path.rsplit("/", 1)[1]), decode_pairs(query), json.loads(reply.payload)


def test_dps_registers_then_answers_the_operations_status() -> None:
    dps = DpsStandIn("hub.example")
    status, params, body = _reply(dps, "r1", "$dps/registrations/PUT/iotdps-register/?$rid=5",
                                  b'{"registrationId": "r1", "payload": {"model": "m"}}')
    assert (status, params) == (202, {"$rid": "5", "retry-after": "1"}) and body["status"] == "assigning"
    op = body["operationId"]
    status, params, body = _reply(dps, "r1",
                                  f"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=6&operationId={op}")
    assert (status, params["$rid"], body["status"]) == (200, "6", "assigned")
    assert body["registrationState"]["assignedHub"] == "hub.example"
    state = body["registrationState"]
    assert state["deviceId"] == "dev-of-r1" and state["payload"] == {"model": "m"}


@pytest.mark.parametrize(("reg", "topic", "body", "status"), [
    ("r1", "$dps/registrations/PUT/iotdps-register/?$rid=1", b'{"registrationId": "r2"}', 400),
    ("r1", "$dps/registrations/PUT/iotdps-register/?$rid=1", b"not json", 400),
    ("r1", "$dps/registrations/PUT/iotdps-register/?$rid=1", b"[]", 400),
    ("r1", "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=1&operationId=nope", b"", 404),
    ("r1", "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=1", b"", 404),
])
def test_dps_refuses_what_dps_refuses(reg: str, topic: str, body: bytes, status: int) -> None:
    assert _reply(DpsStandIn("hub.example"), reg, topic, body)[0] == status


def test_the_relay_names_carry_the_client_and_nothing_else_is_relayed() -> None:
    assert relay.inbound("dev-a", "$iothub/twin/GET/?$rid=1") == "hil/hub/from/dev-a/$iothub/twin/GET/?$rid=1"
    assert relay.inbound("dev-a", "devices/dev-a/messages/events/x") is None
    assert relay.split_inbound("hil/hub/from/dev-a/$dps/registrations/PUT/iotdps-register/?$rid=1") == (
        "dev-a", "$dps/registrations/PUT/iotdps-register/?$rid=1")
    assert relay.split_inbound("hil/hub/from/dev-a/devices/x") is None
    assert relay.outbound(relay.to_client("dev-a", "$iothub/twin/res/200/?$rid=1")) == (
        "dev-a", "$iothub/twin/res/200/?$rid=1")
    for bad in ("hil/hub/to/dev-a", "hil/hub/to//x", "hil/hub/to/dev-a/", "hil/hub/tox/a/b"):
        assert relay.outbound(bad) is None
