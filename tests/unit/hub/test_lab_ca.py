"""The lab CA: made once in the lab's state folder and kept, a server certificate for the lab's
names issued again when they change, never a damaged CA replaced in silence; ``hil lab ca``."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from harness.broker import tls
from harness.broker.tls import c_array, lab_pki, san_names
from harness.cli import main
from harness.errors import ConfigError

NAMES = ["hub.example.azure-devices.net", "dps.example.azure-devices-provisioning.net", "localhost", "127.0.0.1"]


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    key = ca.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA256())
    return cert.issuer == ca.subject


def test_the_ca_is_made_once_and_the_server_certificate_follows_the_names(tmp_path: Path) -> None:
    pki = lab_pki(tmp_path / "ca", NAMES)
    ca, server = pki.ca_certificate(), pki.server_certificate()
    assert isinstance(ca.public_key(), rsa.RSAPublicKey) and ca.public_key().key_size == 2048  # type: ignore[union-attr]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert san_names(server) == set(NAMES) and _signed_by(server, ca)
    assert oct(pki.ca_key_path.stat().st_mode & 0o777) == "0o600"
    assert oct(pki.files.server_key.stat().st_mode & 0o777) == "0o600"
    ca_bytes, server_bytes = pki.files.ca_cert.read_bytes(), pki.files.server_cert.read_bytes()

    again = lab_pki(tmp_path / "ca", list(reversed(NAMES)))  # the same names: nothing new
    assert again.files.ca_cert.read_bytes() == ca_bytes and again.files.server_cert.read_bytes() == server_bytes

    renamed = lab_pki(tmp_path / "ca", [*NAMES[:1], "other-dps.example.net", *NAMES[2:]])
    assert renamed.files.ca_cert.read_bytes() == ca_bytes  # what the images trust stays
    assert renamed.files.server_cert.read_bytes() != server_bytes
    assert san_names(renamed.server_certificate()) == {*NAMES[:1], "other-dps.example.net", *NAMES[2:]}
    assert _signed_by(renamed.server_certificate(), ca)


def test_a_server_certificate_near_its_end_is_issued_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = lab_pki(tmp_path / "ca", NAMES).files.server_cert.read_bytes()
    monkeypatch.setattr(tls, "RENEW_BEFORE", tls.RENEW_BEFORE * 1000)
    assert lab_pki(tmp_path / "ca", NAMES).files.server_cert.read_bytes() != first


def test_a_damaged_server_certificate_is_issued_again(tmp_path: Path) -> None:
    pki = lab_pki(tmp_path / "ca", NAMES)
    pki.files.server_key.write_bytes(b"garbage")
    lab_pki(tmp_path / "ca", NAMES)
    assert _signed_by(pki.server_certificate(), pki.ca_certificate())


@pytest.mark.parametrize("damage", ["truncated certificate", "another key", "missing key"])
def test_a_damaged_ca_is_an_error_naming_the_folder_never_replaced(tmp_path: Path, damage: str) -> None:
    pki = lab_pki(tmp_path / "ca", NAMES)
    if damage == "truncated certificate":
        pki.files.ca_cert.write_bytes(pki.files.ca_cert.read_bytes()[:200])
    elif damage == "another key":
        other = lab_pki(tmp_path / "other", NAMES)
        pki.ca_key_path.write_bytes(other.ca_key_path.read_bytes())
    else:
        pki.ca_key_path.unlink()
    before = pki.files.ca_cert.read_bytes()
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "ca"))) as info:
        lab_pki(tmp_path / "ca", NAMES)
    assert "rebuilt with the new CA" in str(info.value)
    assert pki.files.ca_cert.read_bytes() == before


def test_processes_starting_together_share_one_ca(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from harness.broker.tls import lab_pki; "
            "print(lab_pki(Path(sys.argv[1]), sys.argv[2:]).files.ca_cert.read_text())")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "ca"), *NAMES], stdout=subprocess.PIPE,
                              text=True) for _ in range(4)]
    outs = {p.communicate(timeout=120)[0] for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert outs == {(tmp_path / "ca" / "ca.crt").read_text() + "\n"}


def _array_bytes(source: str) -> bytes:
    return bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", source.split("=", 1)[1].split("}")[0]))


def test_the_c_array_holds_the_der_bytes() -> None:
    der = bytes(range(256)) + b"\x00\xff"
    source = c_array(der, "_root")
    assert source.startswith("const unsigned char _root[] = {\n")
    assert "const unsigned int _root_size = sizeof(_root);" in source
    assert _array_bytes(source) == der


KEY = base64.b64encode(bytes(range(32))).decode()


def test_hil_lab_ca_prints_the_ca_and_the_build_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "lab.yaml").write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"),
        "broker": {"hub": "bench.azure-devices.net", "dps": "bench-dps.azure-devices-provisioning.net",
                   "id_scope": "0ne0012ABCD"},
        "devices": [{"id": "gs-01", "symmetric_key": KEY}, {"id": "gs-02", "symmetric_key": KEY,
                                                             "registration_id": "reg-02"}]}))
    assert main(["lab", "ca", "--lab", str(lab), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ca_file = tmp_path / "state" / "lab-ca" / "ca.crt"
    assert out["ca_pem"] == ca_file.read_text()
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    from cryptography.hazmat.primitives.serialization import Encoding
    assert _array_bytes(out["c_source"]) == ca.public_bytes(Encoding.DER)
    assert out["values"] == {"HOST_NAME": "bench.azure-devices.net",
                             "ENDPOINT": "bench-dps.azure-devices-provisioning.net", "ID_SCOPE": "0ne0012ABCD"}
    assert out["devices"]["gs-02"] == {"DEVICE_ID": "gs-02", "REGISTRATION_ID": "reg-02", "DEVICE_SYMMETRIC_KEY": KEY}
    server = x509.load_pem_x509_certificate((tmp_path / "state" / "lab-ca" / "server.crt").read_bytes())
    assert {"bench.azure-devices.net", "bench-dps.azure-devices-provisioning.net"} <= san_names(server)

    assert main(["lab", "ca", "--lab", str(lab), "--only", "pem"]) == 0
    assert capsys.readouterr().out == ca_file.read_text()  # the same CA: made once, kept
    assert main(["lab", "ca", "--lab", str(lab), "--only", "config", "--device", "gs-01"]) == 0
    config = capsys.readouterr().out
    assert '#define HOST_NAME "bench.azure-devices.net"' in config and f'#define DEVICE_SYMMETRIC_KEY "{KEY}"' in config
    assert "gs-02" not in config
    assert main(["lab", "ca", "--lab", str(lab), "--device", "nobody"]) == 2
    assert "not a device of the registry" in capsys.readouterr().err
