"""X.509 with a client no one here wrote: the Azure IoT Python device SDK (its own venv) registers
through the DPS stand-in with a self-signed certificate (DPS identifies it by the certificate's
common name, the registration id), connects to the hub with it on the same TLS port SAS devices use,
gets and patches its twin; the same SDK is refused with another device's certificate, with an
unregistered certificate, and with a SAS token for a device registered for X.509. Both kinds."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.broker import Broker, x509
from harness.broker.tls import lab_pki
from harness.hub.service import IotHubStandIn
from tests.integration.broker.test_sas_sign_in import _refusals

from .test_sdk_interop import TLS_PORT, SdkDevice, _loopback_with_free_8883, sdk_devices  # noqa: F401  (fixture)

KINDS = [pytest.param("mosquitto", marks=pytest.mark.needs("mosquitto")), "embedded"]
HUB = "sdk-x509.azure-devices.net"
DPS = "sdk-x509-dps.azure-devices-provisioning.net"
SCOPE = "0ne00SDKX09"


def _write(folder: Path, name: str, cert: x509.DeviceCertificate) -> dict[str, str]:
    (folder / f"{name}.crt").write_bytes(cert.cert_pem)
    (folder / f"{name}.key").write_bytes(cert.key_pem)
    return {"cert_file": str(folder / f"{name}.crt"), "key_file": str(folder / f"{name}.key")}


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", KINDS)
def test_the_python_device_sdk_signs_in_with_x509_through_dps_and_the_hub(
        kind: str, brokers: Callable[..., Broker], sdk_devices: Callable[[dict[str, Any]], SdkDevice],  # noqa: F811
        tmp_path: Path) -> None:
    gateway = _loopback_with_free_8883()
    pki = lab_pki(tmp_path / "lab-ca", [HUB, DPS, "localhost", "127.0.0.1", gateway])
    b = brokers(kind, bind=gateway, hub=HUB, id_scope=SCOPE, tls=True, tls_port=TLS_PORT, tls_files=pki.files)
    mine = x509.make_device_certificate("x-reg-01")  # DPS knows it by this common name
    other = x509.make_device_certificate("x-dev-02")
    stranger = x509.make_device_certificate("x-reg-01")  # the same name, never registered
    b.add_device("x-dev-01", thumbprint=bytes.fromhex(mine.sha256), registration_id="x-reg-01")
    b.add_device("x-dev-02", thumbprint=bytes.fromhex(other.sha1), registration_id="x-dev-02")
    common = {"gateway": gateway, "ca_pem": pki.files.ca_cert.read_text(), "id_scope": SCOPE,
              "reported": {"auth": "x509"}}
    with IotHubStandIn(b) as hub:
        hub.set_twin("x-dev-01", desired={"interval": 20})
        device = sdk_devices({**common, "registration_id": "x-reg-01", "x509": _write(tmp_path, "mine", mine)})
        registered = device.wait("registered")
        assert (registered["status"], registered["hub"], registered["device"]) == ("assigned", HUB, "x-dev-01")
        assert device.wait("twin")["twin"]["desired"] == {"interval": 20, "$version": 1}
        device.wait("patched")
        assert hub.reported_patches("x-dev-01") == [{"auth": "x509"}]
        device.wait("ready")
        device.stop()
        device.wait("done")

        refused = {
            "another device's certificate": sdk_devices({
                **common, "hostname": HUB, "device_id": "x-dev-02", "x509": _write(tmp_path, "mine2", mine)}),
            "an unregistered certificate": sdk_devices({
                **common, "registration_id": "x-reg-01", "x509": _write(tmp_path, "stranger", stranger)}),
            "a SAS token for an X.509 device": sdk_devices({
                **common, "hostname": HUB, "device_id": "x-dev-01", "key": base64.b64encode(bytes(32)).decode()}),
        }
        errors = {case: sdk.wait("error") for case, sdk in refused.items()}
        for case, error in errors.items():  # the broker's CONNACK "not authorized", as the SDK words it
            assert "not authorised" in error["trace"], (case, error)
    expected = {x509.WRONG_THUMBPRINT, x509.NO_CERTIFICATE}
    if b.kind == "mosquitto":  # its log reaches the file through a reader thread: wait for each line
        for why in expected:
            assert b.wait_log(f"hil-auth: refused .*: {re.escape(why)}$", 10), why  # type: ignore[attr-defined]
    assert set(_refusals(b)) == expected, _refusals(b)
