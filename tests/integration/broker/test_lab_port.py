"""Port 8883 at a lab network's bind address, on both kinds: stock images connect to 8883 only, so
the broker's TLS listener takes it at the address the lab's boards reach (here a loopback address
of the test's own, standing for one), while loopback keeps a free port of the run's and the plain
listener stays for the harness's own firmware. A taken 8883 is an infrastructure error naming the
address, the port and the process holding it, from the API and from `hil broker` (exit 3)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from harness.broker import Broker, BrokerOptions, open_broker, parse_mqtt_url, x509
from harness.broker.ports import IOT_HUB_TLS_PORT
from harness.broker.tls import lab_pki
from harness.errors import InfrastructureError

from .conftest import loopback_with_free_8883, raw_connect
from .test_x509_sign_in import tls_connect

KINDS = [pytest.param("mosquitto", marks=pytest.mark.needs("mosquitto")), "embedded"]
ACCEPTED = 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_the_tls_listener_takes_8883_at_the_lab_address_and_plain_stays(
        kind: str, brokers: Callable[..., Broker], tmp_path: Path) -> None:
    lab_address = loopback_with_free_8883()
    pki = lab_pki(tmp_path / "lab-ca", ["localhost", "127.0.0.1", lab_address])
    b = brokers(kind, also_bind=(lab_address,), tls=True, tls_files=pki.files,
                tls_ports={lab_address: IOT_HUB_TLS_PORT})
    device = b.add_device("dev-p")
    plain_port = parse_mqtt_url(b.url)[1]
    assert b.tls_url is not None
    loopback_tls = parse_mqtt_url(b.tls_url)
    assert loopback_tls[0] == "127.0.0.1" and loopback_tls[1] != IOT_HUB_TLS_PORT  # a port of the run's there
    for url in (f"mqtts://{lab_address}:{IOT_HUB_TLS_PORT}", b.tls_url):
        assert tls_connect(url, pki.files.ca_cert, None, device.client_id, device.username,
                           device.password) == ACCEPTED, url
    assert raw_connect(f"mqtt://{lab_address}:{plain_port}", device.client_id, device.username,
                       device.password) == ACCEPTED


def _listen(address: str, port: int) -> socket.socket:
    s = socket.socket()
    s.bind((address, port))
    s.listen()
    return s


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_a_taken_8883_is_an_infrastructure_error_naming_port_and_holder(kind: str, tmp_path: Path) -> None:
    lab_address = loopback_with_free_8883()
    pki = lab_pki(tmp_path / "lab-ca", ["localhost", lab_address])
    with _listen(lab_address, IOT_HUB_TLS_PORT):
        b = open_broker(kind, tmp_path / "run", BrokerOptions(
            also_bind=(lab_address,), tls=True, tls_files=pki.files, tls_ports={lab_address: IOT_HUB_TLS_PORT}))
        with pytest.raises(InfrastructureError) as info:
            b.start()
    message = str(info.value)
    assert f"port 8883 on {lab_address} is already taken by " in message, message
    assert f"(pid {os.getpid()})" in message, message  # the holder: this test's own process
    assert "ss -ltnp" in message and not b.running


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", KINDS)
def test_hil_broker_on_a_lab_bind_with_8883_taken_exits_3_naming_the_port(kind: str, tmp_path: Path) -> None:
    lab_address = loopback_with_free_8883()
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "lab.yaml").write_text(yaml.safe_dump({"broker": {"kind": kind, "bind": lab_address, "tls": True}}))
    with _listen(lab_address, IOT_HUB_TLS_PORT):
        done = subprocess.run([sys.executable, "-m", "harness", "--lab", str(lab), "broker"],
                              capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert f"port 8883 on {lab_address} is already taken by " in done.stderr and "Traceback" not in done.stderr, (
        done.stderr)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", KINDS)
def test_hil_broker_serves_the_lab_registry_on_8883_at_the_lab_bind(kind: str, tmp_path: Path) -> None:
    """`hil broker` with a lab whose broker.bind stands for a lab network: an X.509 device of the
    registry signs in on 8883 there with its certificate, trusting the lab CA; Ctrl-C ends it (exit 0)."""
    lab_address = loopback_with_free_8883()
    lab = tmp_path / "lab"
    lab.mkdir()
    cert = x509.make_device_certificate("gs-x")
    (tmp_path / "gs-x.crt").write_bytes(cert.cert_pem)
    (tmp_path / "gs-x.key").write_bytes(cert.key_pem)
    (lab / "lab.yaml").write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"), "broker": {"kind": kind, "bind": lab_address, "tls": True,
                                                     "hub": "lab-x.azure-devices.net"},
        "devices": [{"id": "gs-x", "x509_thumbprint": cert.sha256}]}))
    proc = subprocess.Popen([sys.executable, "-m", "harness", "--lab", str(lab), "broker"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()  # the first line names the URLs once the broker runs
        assert f"mqtts://{lab_address}:{IOT_HUB_TLS_PORT}" in banner, (banner, proc.stderr)
        rc = tls_connect(f"mqtts://{lab_address}:{IOT_HUB_TLS_PORT}", tmp_path / "state" / "lab-ca" / "ca.crt",
                         (str(tmp_path / "gs-x.crt"), str(tmp_path / "gs-x.key")), "gs-x",
                         "lab-x.azure-devices.net/gs-x/?api-version=2021-04-12", None)
        assert rc == ACCEPTED
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
