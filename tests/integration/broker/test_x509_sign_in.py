"""X.509 sign-in on both broker kinds, on the same TLS port as SAS tokens: a device registered with a
thumbprint is accepted only with a client certificate of that thumbprint (SHA-1 or SHA-256), under
its own client id and user name; a DPS registration's certificate must also name the registration
id; a keyed device still needs its token whatever certificate it shows. Each refusal is logged
with its reason, the same words on both kinds."""

from __future__ import annotations

import datetime as _dt
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.broker import Broker, parse_mqtt_url, sas, x509
from harness.broker.tls import LabPki, lab_pki
from harness.telemetry.topic import compose_username

from .conftest import _read_exact, connect_packet, raw_connect
from .test_sas_sign_in import _refusals

KINDS = [pytest.param("mosquitto", marks=pytest.mark.needs("mosquitto")), "embedded"]
HUB = "x509-hub.azure-devices.net"
SCOPE = "0ne00X50901"
KEY_K = bytes(range(40, 72))
ACCEPTED = 0
NO_USER_OR_PASSWORD = "no user name or password"


class Certs:
    """Device certificates written to files: A (CN x-a), B (CN x-b), D (CN other-name), U (never registered),
    E (CN x-e, expired yesterday)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.made = {name: x509.make_device_certificate(cn) for name, cn in
                     (("a", "x-a"), ("b", "x-b"), ("d", "other-name"), ("u", "x-a"))}
        self.made["e"] = x509.make_device_certificate("x-e", days=1, now=_dt.datetime.now(_dt.UTC)
                                                      - _dt.timedelta(days=2))
        for name, cert in self.made.items():
            (folder / f"{name}.crt").write_bytes(cert.cert_pem)
            (folder / f"{name}.key").write_bytes(cert.key_pem)

    def files(self, name: str) -> tuple[str, str]:
        return str(self.folder / f"{name}.crt"), str(self.folder / f"{name}.key")


def tls_connect(url: str, ca: Path, cert: tuple[str, str] | None, client_id: str, username: str | None,
                password: str | None) -> int:
    """One CONNECT over TLS (trusting ``ca``, showing ``cert`` if given); the CONNACK's return code."""
    host, port, _ = parse_mqtt_url(url)
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False
    if cert is not None:
        context.load_cert_chain(*cert)
    with socket.create_connection((host, port), timeout=10) as raw, context.wrap_socket(raw) as sock:
        sock.sendall(connect_packet(client_id, username, password))
        connack = _read_exact(sock, 4)
        assert connack[:2] == b"\x20\x02", f"not a CONNACK: {connack.hex()}"
        if connack[3] == ACCEPTED:
            sock.sendall(b"\xe0\x00")
        return connack[3]


def _user(device: str) -> str:
    return compose_username(HUB, device, api_version="2021-04-12")


def _dps_user(registration: str) -> str:
    return f"{SCOPE}/registrations/{registration}/api-version=2019-03-31"


def _token(device: str) -> str:
    return sas.make_token(KEY_K, sas.device_resource(HUB, device), int(time.time() + 3600))


# certificate, client id, user name, password -> the reason both kinds log (None: accepted)
CASES: dict[str, tuple[str | None, str, Callable[[], str], Callable[[], str | None], str | None]] = {
    "its own certificate (SHA-1 thumbprint)": ("a", "x-a", lambda: _user("x-a"), lambda: None, None),
    "its own certificate (SHA-256 thumbprint)": ("b", "x-b", lambda: _user("x-b"), lambda: None, None),
    "its own certificate, and a password (not used)": ("a", "x-a", lambda: _user("x-a"), lambda: "anything", None),
    "another registered device's certificate": ("a", "x-b", lambda: _user("x-b"), lambda: None,
                                                x509.WRONG_THUMBPRINT),
    "an unregistered certificate with the same name": ("u", "x-a", lambda: _user("x-a"), lambda: None,
                                                       x509.WRONG_THUMBPRINT),
    "no certificate, a SAS token": (None, "x-a", lambda: _user("x-a"), lambda: _token("x-a"),
                                    x509.NO_CERTIFICATE),
    "its own certificate under another device's user name": ("a", "x-a", lambda: _user("x-b"), lambda: None,
                                                             "the user name is not this identity's"),
    "a keyed device showing a certificate, no token": ("a", "k-c", lambda: _user("k-c"), lambda: None,
                                                       NO_USER_OR_PASSWORD),
    "a keyed device showing a certificate, a bad token": ("a", "k-c", lambda: _user("k-c"), lambda: "x",
                                                          sas.MALFORMED),
    "a keyed device showing a certificate, its token": ("a", "k-c", lambda: _user("k-c"), lambda: _token("k-c"),
                                                        None),
    "DPS: its own certificate": ("a", "x-a", lambda: _dps_user("x-a"), lambda: None, None),
    "DPS: another registration's certificate": ("b", "x-a", lambda: _dps_user("x-a"), lambda: None,
                                                x509.WRONG_THUMBPRINT),
    "DPS: a registered certificate naming another registration": ("d", "x-d", lambda: _dps_user("x-d"),
                                                                  lambda: None, x509.WRONG_COMMON_NAME),
    "hub: the same certificate, which needs no name there": ("d", "x-d", lambda: _user("x-d"), lambda: None,
                                                             None),
    "its own certificate, expired": ("e", "x-e", lambda: _user("x-e"), lambda: None, x509.OUT_OF_DATE),
}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("device-certs"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LabPki:
    return lab_pki(tmp_path_factory.mktemp("lab-ca"), ["localhost", "127.0.0.1"])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", list(CASES))
def test_x509_sign_in(kind: str, case: str, brokers: Callable[..., Broker], certs: Certs, pki: LabPki) -> None:
    b = brokers(kind, hub=HUB, id_scope=SCOPE, tls=True, tls_files=pki.files)
    b.add_device("x-a", thumbprint=bytes.fromhex(certs.made["a"].sha1), registration_id="x-a")
    b.add_device("x-b", thumbprint=bytes.fromhex(certs.made["b"].sha256), registration_id="x-b")
    b.add_device("x-d", thumbprint=bytes.fromhex(certs.made["d"].sha256), registration_id="x-d")
    b.add_device("x-e", thumbprint=bytes.fromhex(certs.made["e"].sha256))
    b.add_device("k-c", key=KEY_K)
    cert, cid, user, password, why = CASES[case]
    assert b.tls_url is not None
    rc = tls_connect(b.tls_url, pki.files.ca_cert, certs.files(cert) if cert else None, cid, user(), password())
    if why is None:
        assert rc == ACCEPTED, b.log_path.read_text(errors="replace")[-2000:] if b.log_path else ""
        return
    assert rc != ACCEPTED
    assert _refusals(b) == [why]  # the one rule this case breaks, and no other


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_an_x509_device_cannot_sign_in_on_the_plain_port(kind: str, brokers: Callable[..., Broker]) -> None:
    b = brokers(kind, hub=HUB)
    creds = b.add_device("x-a", thumbprint=bytes(20))
    assert creds.password == ""
    assert raw_connect(b.url, "x-a", _user("x-a"), None) != ACCEPTED
    assert _refusals(b) == [x509.NO_CERTIFICATE]
