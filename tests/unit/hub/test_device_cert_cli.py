"""`hil lab device-cert DEVICE`: a self-signed device certificate and key whose printed thumbprints
are the files' own, never replacing files; and `hil lab ca` for a registry with X.509 devices."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from cryptography.x509.oid import NameOID

from harness.cli import main


def _initializer_bytes(text: str) -> bytes:
    return bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", text))


def test_device_cert_writes_a_pair_and_prints_its_thumbprints(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "device-cert", "gs-01", "--registration-id", "reg-01", "--out", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    cert = x509.load_pem_x509_certificate((tmp_path / "gs-01.cert.pem").read_bytes())
    der = cert.public_bytes(Encoding.DER)
    assert out["sha1"] == hashlib.sha1(der).hexdigest().upper()
    assert out["sha256"] == hashlib.sha256(der).hexdigest().upper()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "reg-01"  # DPS knows it so
    key = load_pem_private_key((tmp_path / "gs-01.key.pem").read_bytes(), password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    assert oct((tmp_path / "gs-01.key.pem").stat().st_mode & 0o777) == "0o600"
    assert _initializer_bytes(out["device_cert_c"]) == der
    assert _initializer_bytes(out["device_private_key_c"])[:2] == b"\x30\x82"  # DER (PKCS#1)


def test_device_cert_text_gives_the_registry_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "device-cert", "gs-01", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    sha256 = hashlib.sha256(x509.load_pem_x509_certificate(
        (tmp_path / "gs-01.cert.pem").read_bytes()).public_bytes(Encoding.DER)).hexdigest().upper()
    assert f"  - id: gs-01\n    x509_thumbprint: {sha256}\n" in text
    assert "#define DEVICE_CERT {0x30, 0x82," in text and "#define DEVICE_PRIVATE_KEY {0x30, 0x82," in text


@pytest.mark.parametrize(("args", "needle"), [
    (["bad/id"], "not an IoT Hub device id"),
    (["Upper"], "not a DPS registration id"),
    (["gs-01", "--registration-id", "Bad Name"], "not a DPS registration id"),
    (["gs-01", "--days", "0"], "--days 0"),
    (["gs-01", "--out", "/nonexistent/folder"], "not a folder"),
])
def test_device_cert_refuses_bad_input_with_exit_2(args: list[str], needle: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path)]
    assert main(["lab", "device-cert", *args]) == 2
    assert needle in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_device_cert_never_replaces_a_file_or_follows_a_link(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "gs-01.key.pem").write_text("a key someone registered")
    assert main(["lab", "device-cert", "gs-01", "--out", str(tmp_path)]) == 2
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "gs-01.key.pem").read_text() == "a key someone registered"
    assert not (tmp_path / "gs-01.cert.pem").exists()
    target = tmp_path / "elsewhere"
    os.symlink(target, tmp_path / "gs-02.cert.pem")  # dangling: exists() is False, the link is still there
    assert main(["lab", "device-cert", "gs-02", "--out", str(tmp_path)]) == 2
    assert not target.exists()


def test_hil_lab_ca_names_the_x509_devices_and_takes_the_array_name(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    lab = tmp_path / "lab"
    lab.mkdir()
    thumb = "AB" * 32
    (lab / "lab.yaml").write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"),
                                                  "devices": [{"id": "gs-x", "x509_thumbprint": thumb}]}))
    assert main(["lab", "ca", "--lab", str(lab), "--json", "--c-name", "azure_iot_root_cert"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["devices"]["gs-x"] == {"DEVICE_ID": "gs-x", "REGISTRATION_ID": "gs-x"}  # no key to give
    assert out["x509_thumbprints"] == {"gs-x": thumb}
    assert out["c_source"].startswith("const unsigned char azure_iot_root_cert[] = {")
    assert main(["lab", "ca", "--lab", str(lab), "--only", "config"]) == 0
    assert f"X.509 (thumbprint {thumb}): #define USE_DEVICE_CERTIFICATE 1" in capsys.readouterr().out
    assert main(["lab", "ca", "--lab", str(lab), "--c-name", "not-c"]) == 2
