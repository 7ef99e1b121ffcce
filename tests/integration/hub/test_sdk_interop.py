"""Interoperability with a client no one here wrote: the Azure IoT Python device SDK (azure-iot-device
2.14, in a venv of its own) registers through the DPS stand-in with its symmetric key, connects to
the hub over TLS trusting only the lab CA, with a SAS token it makes itself, gets and patches its
twin, answers a direct method, receives a C2D message and a desired patch, and its security message
(with IoT Hub's property bag) reaches the collector. Both broker kinds.

The SDK always connects to port 8883: the broker's TLS listener takes 8883 on a loopback address of
its own (127.x.y.z, free on this machine), which the SDK is given as its gateway and DPS host."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.broker import Broker
from harness.broker.tls import lab_pki
from harness.hub.service import IotHubStandIn
from harness.telemetry.codec import encode
from harness.telemetry.collector import Collector
from harness.telemetry.model import Event, Heartbeat, ModuleVersion, PayloadType, SecurityMessage
from harness.telemetry.topic import decode_pairs
from tests.integration.broker.conftest import loopback_with_free_8883 as _loopback_with_free_8883

KINDS = [pytest.param("mosquitto", marks=pytest.mark.needs("mosquitto")), "embedded"]
HUB = "sdk-lab.azure-devices.net"
DPS = "sdk-lab-dps.azure-devices-provisioning.net"
SCOPE = "0ne00SDK001"
KEY = bytes(range(7, 39))
SCRIPT = Path(__file__).with_name("sdk_device.py")
TLS_PORT = 8883  # the SDK's, fixed


class SdkDevice:
    """The SDK device script as a subprocess in its own process group; its JSON lines as events."""

    def __init__(self, python: Path, spec: dict[str, Any], folder: Path) -> None:
        # files of its own: several devices of one test start at once, each reads its spec when it runs
        fd, name = tempfile.mkstemp(prefix="sdk-spec-", suffix=".json", dir=folder)
        with os.fdopen(fd, "w") as f:
            json.dump(spec, f)
        spec_path = Path(name)
        self.log = spec_path.with_name(spec_path.name.replace("sdk-spec-", "sdk-device-")).with_suffix(".log")
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen([str(python), str(SCRIPT), str(spec_path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log.open("wb"), text=True,
                                     start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                try:
                    self.events.append(json.loads(line))
                except ValueError:
                    self.events.append({"event": "unparsed", "line": line})
                self._cond.notify_all()
        with self._cond:
            self.events.append({"event": "exited"})
            self._cond.notify_all()

    def wait(self, name: str, timeout: float = 60) -> dict[str, Any]:
        with self._cond:
            ok = self._cond.wait_for(lambda: any(e["event"] in (name, "error", "exited") for e in self.events), timeout)
            found = next((e for e in self.events if e["event"] in (name, "error", "exited")), None)
        assert ok and found is not None and found["event"] == name, (
            f"SDK device: no {name!r} event; events {self.events}; stderr {self.log.read_text()[-3000:]}")
        return found

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


@pytest.fixture
def sdk_devices(sdk_python: Path, tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], SdkDevice]]:
    made: list[SdkDevice] = []

    def make(spec: dict[str, Any]) -> SdkDevice:
        d = SdkDevice(sdk_python, spec, tmp_path)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


def _telemetry() -> bytes:
    return encode(SecurityMessage("sdk-01", ModuleVersion(3, 5, 4),
                                  (Event((42).to_bytes(16, "big"), 1700000042, 60, Heartbeat()),)))


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", KINDS)
def test_the_python_device_sdk_registers_connects_and_talks_to_the_stand_in(
        kind: str, brokers: Callable[..., Broker], sdk_devices: Callable[[dict[str, Any]], SdkDevice],
        tmp_path: Path) -> None:
    gateway = _loopback_with_free_8883()
    pki = lab_pki(tmp_path / "lab-ca", [HUB, DPS, "localhost", "127.0.0.1", gateway])
    b = brokers(kind, bind=gateway, hub=HUB, id_scope=SCOPE, tls=True, tls_port=TLS_PORT, tls_files=pki.files)
    b.add_device("sdk-01", key=KEY, registration_id="sdk-reg-01")
    with IotHubStandIn(b) as hub, Collector.from_endpoint(b.endpoint(), tmp_path / "telemetry.bin") as col:
        hub.set_twin("sdk-01", desired={"interval": 15})
        device = sdk_devices({"gateway": gateway, "ca_pem": pki.files.ca_cert.read_text(), "id_scope": SCOPE,
                              "registration_id": "sdk-reg-01", "key": base64.b64encode(KEY).decode(),
                              "reported": {"firmware": "sdk-1.0", "nested": {"ok": True}},
                              "telemetry_hex": _telemetry().hex()})
        registered = device.wait("registered")
        assert (registered["status"], registered["hub"], registered["device"]) == ("assigned", HUB, "sdk-01")
        assert hub.dps.registrations["sdk-reg-01"].device_id == "sdk-01"

        twin = device.wait("twin")["twin"]
        assert twin["desired"] == {"interval": 15, "$version": 1}
        device.wait("patched")
        assert hub.reported_patches("sdk-01") == [{"firmware": "sdk-1.0", "nested": {"ok": True}}]

        device.wait("ready")
        event = col.expect_event("sdk-01", PayloadType.HEARTBEAT, within=30)
        assert int.from_bytes(event.id, "big") == 42
        received = col.stream("sdk-01").messages[0]
        bag = received.topic.removeprefix("devices/sdk-01/messages/events/")
        assert decode_pairs(bag) == {"$.ifid": "urn:azureiot:Security:SecurityAgent:1", "mti": "2.3-1-0-0"}

        answer = hub.invoke_method("sdk-01", "blink", {"times": 3}, timeout=30)
        assert (answer.status, answer.payload) == (200, {"echo": {"times": 3}})
        assert device.wait("method")["name"] == "blink"

        hub.send_c2d("sdk-01", b"hello from the cloud", {"kind": "greeting"})
        c2d = device.wait("c2d")
        assert c2d["data"] == "hello from the cloud" and c2d["properties"] == {"kind": "greeting"}

        hub.set_desired("sdk-01", {"interval": 30})
        assert device.wait("desired")["patch"] == {"interval": 30, "$version": 2}
        device.stop()
        device.wait("done")
