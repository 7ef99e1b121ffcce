"""The link capture of a TLS image, read: a test build (TLS_KEYLOG=1) prints its TLS session's
secret, with which the harness decrypts the board's hub connection from the capture. On the Azure
RTOS image it finds NetX Duo's MQTT inside NetX Secure's TLS (AES-128-CBC-SHA256), on the lwIP
image's TLS build our MQTT client inside mbedTLS (AES-128-GCM): every security PUBLISH framed as
NetX frames it (0x32, a 4-byte Remaining Length), carrying exactly the bytes the collector received."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness.board.board import Board
from harness.firmware import load_build
from harness.firmware_build import build_reference
from harness.hub.ca import lab_ca
from harness.lab import load_lab
from harness.session import RunSession
from harness.traffic.capture import read_pcap
from harness.traffic.tls_decrypt import TlsReadError, decrypt_sent, keylog_secrets, mqtt_packets, tcp_connections

pytestmark = [pytest.mark.needs("qemu", "arm-gcc", "root", "mosquitto", "dnsmasq", "chrony", "ip"),
              pytest.mark.timeout(300)]
SUITES = {"netxduo": "ECDHE-RSA-AES128-CBC-SHA256", "lwip": "ECDHE-RSA-AES128-GCM-SHA256"}

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module", params=[pytest.param("azrtos", marks=pytest.mark.needs("azrtos-sources")), "lwip"])
def board(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Board]:
    folder = tmp_path_factory.mktemp("lab")
    (folder / "qemu-an385.yaml").write_text((REPO / "boards" / "qemu-an385.yaml").read_text())
    device = yaml.safe_load((folder / "qemu-an385.yaml").read_text())["identity"]["device_id"]
    lab_yaml = yaml.safe_load((REPO / "boards" / "lab.yaml").read_text())
    lab_yaml["broker"]["tls"] = True
    lab_yaml["devices"] = [{"id": device, "symmetric_key": base64.b64encode(bytes(range(32))).decode()}]
    (folder / "lab.yaml").write_text(yaml.safe_dump(lab_yaml))
    ca = lab_ca(load_lab(folder)).ca_der()
    build = load_build(build_reference("mps2-an385", {"TLS_KEYLOG": 1}, "fast", tmp_path_factory.mktemp("build"),
                                       request.param, trusted_ca=ca))
    with RunSession(load_lab(folder), boards=["qemu-an385"]) as session:
        yield session.bring_up("qemu-an385", build)


def test_the_hub_connection_read_from_the_capture_holds_netx_framed_security_publishes(board: Board) -> None:
    assert board.telemetry is not None
    board.telemetry.expect_events(5, within=60)  # three collections or more sent, over TLS
    received = {m.payload for m in board.telemetry.collector.messages(board.device_id)}
    secrets = keylog_secrets(board.console.text)
    assert secrets, "the test build printed no key log line"
    pcap = board.parts.link_capture()
    assert pcap is not None
    hub_port = board.provisioning.broker_port if board.provisioning is not None else 8883
    connections = [c for c in tcp_connections(read_pcap(pcap), board.address) if c.server[1] == hub_port]
    read = []
    for c in connections:
        try:
            read.append(decrypt_sent(c, secrets))
        except TlsReadError as exc:  # the DPS connection's secret is not printed: only the hub's
            assert "no key log line" in exc.message, exc.message
    assert read, f"no connection to port {hub_port} could be read with the printed secret"
    suite, stream = read[-1]
    assert suite == SUITES[board.build.manifest.build.stack if board.build is not None else ""], suite
    publishes = [p for p in mqtt_packets(stream) if p[0] & 0xF0 == 0x30 and b"mti=" in p[:200]]
    assert len(publishes) >= 2, f"{len(publishes)} security PUBLISHes in the decrypted hub connection ({suite})"
    for p in publishes:
        assert p[0] & 0xF6 == 0x32, f"not a QoS 1 PUBLISH: 0x{p[0]:02x}"
        assert all(b & 0x80 for b in p[1:4]) and not p[4] & 0x80, f"Remaining Length {p[1:5].hex()} is not NetX's"
        topic_len = int.from_bytes(p[5:7], "big")
        payload = p[7 + topic_len + 2:]
        assert payload in received, "a PUBLISH whose payload the collector did not receive"
    print(f"\n{suite}: {len(publishes)} security PUBLISHes read from the capture, all NetX-framed, "
          f"each payload one the collector received")


def test_a_wrong_secret_reads_nothing(board: Board) -> None:
    """Decryption checks every record: a secret of another session is refused, not read as garbage."""
    secrets = keylog_secrets(board.console.text)
    wrong = {random: bytes(48) for random in secrets}
    pcap = board.parts.link_capture()
    assert pcap is not None and board.provisioning is not None
    hub = [c for c in tcp_connections(read_pcap(pcap), board.address) if c.server[1] == board.provisioning.broker_port]
    with pytest.raises(TlsReadError, match=r"does not check|bad padding"):
        for c in hub:
            try:
                decrypt_sent(c, wrong)
            except TlsReadError as exc:
                if "no key log line" in exc.message:
                    continue
                raise
