"""The lab CA as a lab uses it: where it lives in the lab's state folder, which names its server
certificate carries, and what a firmware build for the lab sets (``hil lab ca``).

The server certificate names the hub and DPS host names of ``lab.yaml`` (what images are built
for), ``localhost``, the loopback addresses and ``broker.bind`` (where the harness's own clients
reach the broker), so a change of any of them issues it again; the CA stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from harness.broker.tls import LabPki, c_array, lab_pki
from harness.lab import Lab, RegisteredDevice

CA_FOLDER = "lab-ca"
ROOT_CERT_NAME = "_nx_azure_iot_root_cert"


def ca_folder(lab: Lab) -> Path:
    return lab.state.root / CA_FOLDER


def server_names(lab: Lab) -> list[str]:
    broker = lab.settings.broker
    names = [broker.hub, broker.dps, "localhost", "127.0.0.1", "::1"]
    if broker.bind is not None:
        names.append(str(broker.bind))
    return list(dict.fromkeys(names))


def lab_ca(lab: Lab) -> LabPki:
    """The lab's CA and a server certificate for its names (made or issued again as needed)."""
    return lab_pki(ca_folder(lab), server_names(lab))


@dataclass(frozen=True)
class FirmwareValues:
    """What a build of an Azure IoT image for this lab sets: the names of NetX Duo's Azure IoT samples
    (``sample_config.h``) with their values, per device of the registry; ``certificates``: the
    registry's X.509 devices and their thumbprints (they take no key: the image is built with
    ``USE_DEVICE_CERTIFICATE`` and the device's certificate and private key)."""

    ca_pem: str
    ca_der: bytes
    values: dict[str, str]
    devices: dict[str, dict[str, str]]
    certificates: dict[str, str]

    def c_source(self, name: str = ROOT_CERT_NAME) -> str:
        """The CA as a C array called ``name`` (NetX Duo's samples: the default; the getting-started
        repositories: ``azure_iot_root_cert``) and its size."""
        return c_array(self.ca_der, name)


def firmware_values(lab: Lab, pki: LabPki) -> FirmwareValues:
    cert = pki.ca_certificate()
    broker = lab.settings.broker
    return FirmwareValues(
        ca_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        ca_der=pki.ca_der(),
        values={"HOST_NAME": broker.hub, "ENDPOINT": broker.dps, "ID_SCOPE": broker.id_scope},
        devices={d.id: _device_values(d) for d in lab.settings.devices},
        certificates={d.id: d.x509_thumbprint for d in lab.settings.devices if d.x509_thumbprint is not None},
    )


def _device_values(device: RegisteredDevice) -> dict[str, str]:
    values = {"DEVICE_ID": device.id, "REGISTRATION_ID": device.dps_registration_id}
    if device.symmetric_key is not None:
        values["DEVICE_SYMMETRIC_KEY"] = device.symmetric_key
    return values
