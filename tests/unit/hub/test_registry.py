"""The lab's device registry (``lab.yaml`` ``devices:``): validated like every other key, and what a
session registers with its broker."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from harness.errors import ConfigError
from harness.lab import load_lab

KEY = base64.b64encode(bytes(range(32))).decode()
BOARD = {
    "name": "qemu-a", "kind": "qemu", "qemu": {"machine": "mps2-an385", "network": "user"},
    "probe": {"id": "emu:qemu-a", "target": "mps2_an385"},
    "network": {"address_from": "lease", "test_network": "emulated"},
    "identity": {"device_id": "gs-01"},
}


def _lab(tmp_path: Path, lab_yaml: object, board: dict[str, object] | None = None) -> Path:
    root = tmp_path / "lab"
    root.mkdir()
    (root / "lab.yaml").write_text(yaml.safe_dump(lab_yaml))
    if board is not None:
        (root / "board.yaml").write_text(yaml.safe_dump(board))
    return root


def _error(root: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_lab(root)
    return str(info.value)


def test_a_registry_loads_with_its_keys(tmp_path: Path) -> None:
    lab = load_lab(_lab(tmp_path, {"devices": [
        {"id": "gs-01", "symmetric_key": KEY},
        {"id": "Sensor_02", "symmetric_key": KEY, "registration_id": "sensor-02"},
    ]}))
    first, second = lab.settings.devices
    assert first.key == bytes(range(32)) and first.dps_registration_id == "gs-01"
    assert second.dps_registration_id == "sensor-02"
    assert lab.registered("Sensor_02") is second and lab.registered("nobody") is None


@pytest.mark.parametrize(("devices", "needles"), [
    ([{"id": "gs-01", "symmetric_key": "not base64!"}],
     ["devices[0].symmetric_key", "'not base64!'", "not base64", "primary key"]),
    ([{"id": "gs-01", "symmetric_key": base64.b64encode(b"short").decode()}], ["decodes to 5 bytes"]),
    ([{"id": "gs-01"}], ["needs exactly one of symmetric_key", "x509_thumbprint"]),
    ([{"id": "gs-01", "symmetric_key": KEY, "x509_thumbprint": "AB" * 20}], ["needs exactly one of symmetric_key"]),
    ([{"id": "gs-01", "x509_thumbprint": "AB" * 19}], ["devices[0].x509_thumbprint", "'" + "AB" * 19 + "'",
                                                      "not a SHA-1 (40 hex digits) or SHA-256", "hil lab device-cert"]),
    ([{"id": "gs-01", "x509_thumbprint": "XY" * 20}], ["devices[0].x509_thumbprint", "not a SHA-1"]),
    ([{"id": "gs-01", "symmetric_key": KEY, "primary_key": KEY}], ["devices[0].primary_key", "unknown key"]),
    ([{"id": "gs/01", "symmetric_key": KEY}], ["devices[0].id", "an IoT Hub device id"]),
    ([{"id": "GS-01", "symmetric_key": KEY}], ["cannot be a DPS registration id", "set registration_id"]),
    ([{"id": "gs-01", "symmetric_key": KEY, "registration_id": "Upper"}], ["devices[0].registration_id",
                                                                            "a DPS registration id"]),
    ([{"id": "gs-01", "symmetric_key": KEY}] * 2, ["device ids must be unique", "gs-01"]),
    ([{"id": "hil-hub", "symmetric_key": KEY}], ["hil-hub is the harness's own service's"]),
    ([{"id": "hil-collector", "symmetric_key": KEY}], ["hil-collector is the harness's own service's"]),
    ([{"id": "a", "symmetric_key": KEY, "registration_id": "r"}, {"id": "b", "symmetric_key": KEY,
                                                                  "registration_id": "r"}],
     ["registration ids must be unique"]),
])
def test_a_bad_registry_is_refused_naming_file_field_value_and_fix(tmp_path: Path, devices: object,
                                                                    needles: list[str]) -> None:
    root = _lab(tmp_path, {"devices": devices})
    msg = _error(root)
    assert str(root / "lab.yaml") in msg
    for needle in needles:
        assert needle in msg, msg


def test_an_x509_device_loads_with_its_thumbprint_in_any_spelling(tmp_path: Path) -> None:
    sha256 = bytes(range(32))
    lab = load_lab(_lab(tmp_path, {"devices": [
        {"id": "gs-01", "x509_thumbprint": ":".join(f"{b:02X}" for b in sha256)},  # as openssl prints it
        {"id": "gs-02", "x509_thumbprint": ("ab" * 20), "registration_id": "reg-02"},
    ]}))
    first, second = lab.settings.devices
    assert (first.thumbprint, first.key) == (sha256, None)
    assert second.thumbprint == bytes([0xAB] * 20) and second.dps_registration_id == "reg-02"


def test_a_registered_board_takes_no_secret_of_its_own(tmp_path: Path) -> None:
    board = {**BOARD, "identity": {"device_id": "gs-01", "credentials": {"source": "env", "variable": "X"}}}
    root = _lab(tmp_path, {"devices": [{"id": "gs-01", "symmetric_key": KEY}]}, board)
    msg = _error(root)
    assert "board.yaml" in msg and "identity.credentials.source" in msg and "SAS tokens" in msg


def test_a_session_registers_the_registry_with_its_broker(tmp_path: Path) -> None:
    """What RunSession does with the registry, through the same Lab calls (no broker started)."""
    from harness.broker import BrokerOptions, open_broker
    from harness.broker.sas import PREFIX

    lab = load_lab(_lab(tmp_path, {"devices": [{"id": "gs-01", "symmetric_key": KEY}]}, BOARD))
    broker = open_broker("embedded", tmp_path / "run", BrokerOptions(hub=lab.settings.broker.hub))
    for device in lab.settings.devices:
        broker.add_device(device.id, key=device.key, thumbprint=device.thumbprint,
                          registration_id=device.dps_registration_id)
    ident = broker.identities.get("gs-01")
    assert ident is not None and ident.key == bytes(range(32))
    assert ident.credentials.password.startswith(PREFIX)


def test_a_session_registers_an_x509_device_with_its_thumbprint(tmp_path: Path) -> None:
    from harness.broker import BrokerOptions, open_broker

    lab = load_lab(_lab(tmp_path, {"devices": [{"id": "gs-01", "x509_thumbprint": "ab" * 32}]}))
    broker = open_broker("embedded", tmp_path / "run", BrokerOptions(hub=lab.settings.broker.hub))
    for device in lab.settings.devices:
        broker.add_device(device.id, key=device.key, thumbprint=device.thumbprint,
                          registration_id=device.dps_registration_id)
    ident, reg = broker.identities.get("gs-01"), broker.identities.registration("gs-01")
    assert ident is not None and reg is not None
    assert ident.thumbprint == reg.thumbprint == bytes([0xAB] * 32) and ident.key is None
    assert ident.credentials.password == ""
