"""A run session of a lab with a device registry brings the hub stand-in up with its broker (and a
lab without one does not), so a board built for the lab gets its twin and DPS answered."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from harness.broker import DeviceCredentials, sas
from harness.lab import load_lab
from harness.session import RunSession
from harness.telemetry.topic import compose_username

from .conftest import DeviceClient

HUB = "bench.azure-devices.net"
KEY = bytes(range(9, 41))
KINDS = [pytest.param("mosquitto", marks=pytest.mark.needs("mosquitto")), "embedded"]


def _lab(tmp_path: Path, registry: bool) -> Path:
    root = tmp_path / "lab"
    root.mkdir()
    settings: dict[str, object] = {"state_dir": str(tmp_path / "state"), "broker": {"hub": HUB}}
    if registry:
        settings["devices"] = [{"id": "gs-01", "symmetric_key": base64.b64encode(KEY).decode()}]
    (root / "lab.yaml").write_text(yaml.safe_dump(settings))
    return root


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_a_session_with_a_registry_answers_its_devices(kind: str, tmp_path: Path,
                                                       devices: Callable[..., DeviceClient]) -> None:
    with RunSession(load_lab(_lab(tmp_path, registry=True)), broker_kind=kind) as session:
        assert session.broker is not None and session.hub is not None
        session.hub.set_twin("gs-01", desired={"mode": "lab"})
        creds = DeviceCredentials("gs-01", compose_username(HUB, "gs-01"), sas.device_token(KEY, HUB, "gs-01"))
        device = devices(session.broker.url, creds)
        assert device.connected() and device.subscribe_granted([("$iothub/twin/res/#", 1)]) == [True]
        assert device.publish_settled("$iothub/twin/GET/?$rid=1", b"")
        with device._arrived:
            assert device._arrived.wait_for(lambda: device.received, 10), "no twin response"
        assert json.loads(device.received[0].payload)["desired"] == {"mode": "lab", "$version": 1}
        assert (session.broker.run_dir / "hub-service.jsonl").is_file()


@pytest.mark.timeout(60)
def test_a_session_without_a_registry_runs_no_hub_service(tmp_path: Path) -> None:
    with RunSession(load_lab(_lab(tmp_path, registry=False)), broker_kind="embedded") as session:
        assert session.broker is not None and session.hub is None
        assert session.broker.identities.get("hil-hub") is None
