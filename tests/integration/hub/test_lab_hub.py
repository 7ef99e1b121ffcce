"""The lab's registry through the commands a lab engineer runs: `hil broker` signs the registry's
devices in with SAS tokens (and nobody else under their ids) and answers them as IoT Hub does, over
TLS with the lab CA."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from harness.broker import DeviceCredentials, sas
from harness.telemetry.topic import compose_username

from .conftest import DeviceClient

REPO = Path(__file__).resolve().parents[3]
HUB = "bench.azure-devices.net"
KEY = bytes(range(3, 35))
KINDS = [pytest.param("mosquitto", marks=pytest.mark.needs("mosquitto")), "embedded"]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", KINDS)
def test_hil_broker_serves_the_registry_over_tls_and_answers_twin_gets(
        kind: str, tmp_path: Path, devices: Callable[..., DeviceClient]) -> None:
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "lab.yaml").write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"),
        "broker": {"kind": kind, "hub": HUB, "tls": True},
        "devices": [{"id": "gs-01", "symmetric_key": base64.b64encode(KEY).decode()}]}))
    proc = subprocess.Popen([sys.executable, "-m", "harness", "broker", "--lab", str(lab), "--json"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        banner = json.loads(proc.stdout.readline() or "{}")
        assert banner.get("tls_url"), proc.stderr.read() if proc.poll() is not None else banner  # type: ignore[union-attr]
        assert banner["ca_path"] == str(tmp_path / "state" / "lab-ca" / "ca.crt")
        # the device signs in over TLS with a token it makes itself from its key
        token = sas.device_token(KEY, HUB, "gs-01", ttl=300)
        device = devices(banner["tls_url"], DeviceCredentials("gs-01", compose_username(HUB, "gs-01"), token),
                         banner["ca_path"])
        assert device.connected()
        assert device.subscribe_granted([("$iothub/twin/res/#", 1)]) == [True]
        assert device.publish_settled("$iothub/twin/GET/?$rid=1", b"")
        with device._arrived:
            assert device._arrived.wait_for(lambda: device.received, 10), "no twin response"
        assert device.received[0].topic == "$iothub/twin/res/200/?$rid=1"
        assert json.loads(device.received[0].payload) == {"desired": {"$version": 1}, "reported": {"$version": 1}}
        # nobody signs in under the registry device's id with a password
        impostor = devices(banner["url"], DeviceCredentials("gs-01", compose_username(HUB, "gs-01"), "guess"))
        assert not impostor.connected()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
