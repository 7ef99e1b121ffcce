"""The broker's TLS listener with the lab CA, on both kinds: a device that trusts only the lab CA
and checks the host name it was built for connects; the wrong host name, or a client trusting only
another CA, is refused by the client, as a board would refuse it."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.broker import Broker, parse_mqtt_url, sas
from harness.broker.tls import lab_pki, make_run_pki
from harness.telemetry.topic import compose_username

from .conftest import _read_exact, connect_packet

KINDS = [pytest.param("mosquitto", marks=pytest.mark.needs("mosquitto")), "embedded"]
HUB = "bench.azure-devices.net"
DPS = "bench-dps.azure-devices-provisioning.net"
KEY = bytes(range(32))


def _tls_connack(url: str, ca: Path, server_hostname: str, password: str) -> int:
    """CONNECT over TLS as a device built for ``server_hostname`` would (the name is sent as SNI and
    checked against the certificate; only ``ca`` is trusted); the CONNACK's return code."""
    host, port, is_tls = parse_mqtt_url(url)
    assert is_tls
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((host, port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=server_hostname) as sock:
        sock.sendall(connect_packet("dev-a", compose_username(HUB, "dev-a"), password))
        connack = _read_exact(sock, 4)  # type: ignore[arg-type]
        assert connack[:2] == b"\x20\x02", connack.hex()
        return connack[3]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", KINDS)
def test_a_device_trusting_the_lab_ca_connects_by_the_hub_name(kind: str, brokers: Callable[..., Broker],
                                                                tmp_path: Path) -> None:
    pki = lab_pki(tmp_path / "lab-ca", [HUB, DPS, "localhost", "127.0.0.1"])
    b = brokers(kind, hub=HUB, tls=True, tls_files=pki.files)
    b.add_device("dev-a", key=KEY)
    assert b.tls_url is not None and b.ca_path == pki.files.ca_cert
    token = sas.device_token(KEY, HUB, "dev-a")
    for name in (HUB, DPS):
        assert _tls_connack(b.tls_url, pki.files.ca_cert, name, token) == 0
    # the certificate names the hub, not this: the device refuses it before it sends a byte
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _tls_connack(b.tls_url, pki.files.ca_cert, "evil.azure-devices.net", token)
    # a CA of another lab (or of a run) is not the one the image trusts
    other = make_run_pki(tmp_path / "other", [HUB])
    with pytest.raises(ssl.SSLCertVerificationError, match=r"unable to get local issuer|self.signed"):
        _tls_connack(b.tls_url, other.ca_cert, HUB, token)
    # and through TLS the sign-in rules are the same: an expired token is refused
    expired = sas.make_token(KEY, sas.device_resource(HUB, "dev-a"), int(time.time()) - 1)
    assert _tls_connack(b.tls_url, pki.files.ca_cert, HUB, expired) != 0
