"""X.509 identities in the identity table: thumbprints parsed as IoT Hub and openssl show them, a
certificate proving only the identity registered with its thumbprint, DPS's common-name rule, and
the identity file carrying the thumbprint for the mosquitto plugin."""

from __future__ import annotations

import hashlib

import pytest

from harness.broker import x509
from harness.broker.credentials import IdentityTable, SignInRefused
from harness.broker.identity_file import render_identities
from harness.errors import UsageError
from harness.telemetry.topic import compose_username

HUB = "x509-unit.azure-devices.net"
SCOPE = "0ne00UNIT01"


@pytest.fixture(scope="module")
def cert_a() -> x509.DeviceCertificate:
    return x509.make_device_certificate("dev-a")


@pytest.fixture(scope="module")
def cert_other() -> x509.DeviceCertificate:
    return x509.make_device_certificate("dev-a")  # the same name, another key: another thumbprint


@pytest.mark.parametrize("text", ["ab" * 20, "AB" * 32, ":".join(["Ab"] * 20), " ".join(["ab"] * 32)])
def test_a_thumbprint_is_read_in_the_spellings_tools_print(text: str) -> None:
    assert x509.parse_thumbprint(text) == bytes.fromhex(text.replace(":", "").replace(" ", ""))


@pytest.mark.parametrize("text", ["", "ab" * 19, "ab" * 21, "ab" * 33, "zz" * 20, "ab-" * 20, "0x" + "ab" * 19])
def test_anything_else_is_not_a_thumbprint(text: str) -> None:
    with pytest.raises(ValueError, match=r"SHA-1 .* or SHA-256"):
        x509.parse_thumbprint(text)


def test_a_made_certificate_carries_its_name_and_thumbprints(cert_a: x509.DeviceCertificate) -> None:
    assert x509.common_name(cert_a.cert_der) == "dev-a"
    assert cert_a.sha1 == hashlib.sha1(cert_a.cert_der).hexdigest().upper()
    assert cert_a.sha256 == hashlib.sha256(cert_a.cert_der).hexdigest().upper()
    assert cert_a.key_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")  # PKCS#1, as NetX Duo's samples take


def _table(cert: x509.DeviceCertificate, *, sha1: bool = False) -> IdentityTable:
    table = IdentityTable(hub=HUB, id_scope=SCOPE)
    thumb = bytes.fromhex(cert.sha1 if sha1 else cert.sha256)
    table.add_device("dev-a", thumbprint=thumb)
    table.add_registration("dev-a", "dev-a", thumbprint=thumb)
    table.add_registration("reg-x", "dev-a", thumbprint=thumb)  # its certificate does not name reg-x
    table.add_device("dev-k", key=bytes(32))
    return table


def _user(device: str) -> str:
    return compose_username(HUB, device, api_version="2021-04-12")


@pytest.mark.parametrize("sha1", [False, True])
def test_the_registered_certificate_signs_in_whatever_the_password(cert_a: x509.DeviceCertificate,
                                                                   sha1: bool) -> None:
    table = _table(cert_a, sha1=sha1)
    for password in (None, "", "SharedAccessSignature sr=x&sig=y&se=1"):
        assert table.sign_in("dev-a", _user("dev-a"), password, certificate=cert_a.cert_der) is table.get("dev-a")


def _why(table: IdentityTable, client_id: str, username: str, password: str | None, certificate: bytes | None) -> str:
    with pytest.raises(SignInRefused) as info:
        table.sign_in(client_id, username, password, certificate=certificate)
    return str(info.value)


def test_refusals_name_the_rule(cert_a: x509.DeviceCertificate, cert_other: x509.DeviceCertificate) -> None:
    table = _table(cert_a)
    assert _why(table, "dev-a", _user("dev-a"), None, None) == x509.NO_CERTIFICATE
    assert _why(table, "dev-a", _user("dev-a"), None, cert_other.cert_der) == x509.WRONG_THUMBPRINT
    assert _why(table, "dev-a", _user("dev-k"), None, cert_a.cert_der) == "the user name is not this identity's"
    # a keyed device: its certificate is not looked at, its token is
    assert _why(table, "dev-k", _user("dev-k"), None, cert_a.cert_der) == "no user name or password"
    dps = f"{SCOPE}/registrations/dev-a/api-version=2019-03-31"
    assert table.sign_in("dev-a", dps, None, certificate=cert_a.cert_der) is table.registration("dev-a")
    assert _why(table, "dev-a", dps, None, cert_other.cert_der) == x509.WRONG_THUMBPRINT
    assert _why(table, "reg-x", f"{SCOPE}/registrations/reg-x/api-version=2019-03-31", None,
                cert_a.cert_der) == x509.WRONG_COMMON_NAME
    assert _why(table, "dev-a", f"{SCOPE}/registrations/dev-a", None, cert_a.cert_der) == (
        "the user name is not this identity's")


def test_a_thumbprint_is_one_secret_of_its_own() -> None:
    table = IdentityTable(hub=HUB)
    with pytest.raises(UsageError, match="one of a password, a key or a thumbprint"):
        table.add_device("dev-a", key=bytes(32), thumbprint=bytes(32))
    with pytest.raises(UsageError, match=r"SHA-1 .* or SHA-256"):
        table.add_device("dev-a", thumbprint=bytes(16))
    table.add_device("dev-a", thumbprint=bytes(32))
    with pytest.raises(UsageError, match="another secret"):
        table.add_device("dev-a", thumbprint=bytes(20))
    with pytest.raises(UsageError, match="key or its thumbprint"):
        table.add_registration("dev-a", "dev-a")


def test_the_identity_file_carries_the_thumbprint_not_a_password(cert_a: x509.DeviceCertificate) -> None:
    text = render_identities(_table(cert_a))
    assert text.startswith("hil-identities 3\n")
    blocks = text.split("\nidentity ")
    device = next(b for b in blocks if b.startswith("dev-a\ndevice dev-a\n"))
    registration = next(b for b in blocks if b.startswith("reg-x\nregistration dev-a\n"))
    for block in (device, registration):
        assert f"\nthumbprint {cert_a.sha256.lower()}\n" in block
        assert "\npassword" not in block and "\nkey" not in block


def test_a_certificate_counts_only_within_its_validity_period(cert_a: x509.DeviceCertificate) -> None:
    import datetime as dt

    thumb = bytes.fromhex(cert_a.sha256)
    now = dt.datetime.now(dt.UTC)
    assert x509.check_certificate(cert_a.cert_der, thumb, now=now) is None
    assert x509.check_certificate(cert_a.cert_der, thumb, now=now - dt.timedelta(days=1)) == x509.OUT_OF_DATE
    assert x509.check_certificate(cert_a.cert_der, thumb,
                                  now=now + dt.timedelta(days=x509.DEVICE_CERT_DAYS + 1)) == x509.OUT_OF_DATE
