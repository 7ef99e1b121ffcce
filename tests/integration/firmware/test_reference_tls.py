"""The reference firmware's TLS build on an emulated board on the tap test network, against the run's
broker with the lab CA and the IoT Hub stand-in: it registers through DPS, connects to the hub it was
assigned by its DNS name over TLS with a SAS token made from its key, gets its twin (a document the
test sets, printed on the console) and its security messages arrive and decode. Refused: a server
certificate for another host name (the board says so, and no MQTT session opens), and an expired
token (the broker refuses it; the board says so)."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import yaml

from harness.board.board import Board
from harness.errors import ConfigError
from harness.firmware import FirmwareBuild, load_build
from harness.firmware_build import build_reference
from harness.hub.ca import firmware_values, lab_ca
from harness.lab import Lab, load_lab
from harness.session import RunSession
from harness.telemetry.model import PayloadType
from tests.boards import emulated_board

from .conftest import boot

pytestmark = [pytest.mark.needs("qemu", "arm-gcc", "root", "mosquitto", "dnsmasq", "chrony", "ip"),
              pytest.mark.timeout(300)]

HUB = "tls-lab.azure-devices.net"
DPS = "tls-lab-dps.azure-devices-provisioning.net"
SCOPE = "0ne00TLS001"
DEVICE = "hil-tls-1"
KEY = base64.b64encode(bytes(range(40, 72))).decode()
TLS_PORT_LINE = r"\d+"


def _lab(folder: Path, board: str, *, kind: str = "mosquitto") -> Lab:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lab.yaml").write_text(yaml.safe_dump({
        "name": folder.name,
        "broker": {"kind": kind, "tls": True, "hub": HUB, "dps": DPS, "id_scope": SCOPE},
        "devices": [{"id": DEVICE, "symmetric_key": KEY}],
    }))
    (folder / f"{board}.yaml").write_text(yaml.safe_dump(emulated_board(board, DEVICE)))
    return load_lab(folder)


@dataclass
class TlsLab:
    lab: Lab
    build: FirmwareBuild


@pytest.fixture(scope="module")
def tls_lab(tmp_path_factory: pytest.TempPathFactory) -> TlsLab:
    """One lab (its CA in its state folder) and the TLS build that trusts that CA, for the module."""
    lab = _lab(tmp_path_factory.mktemp("tls-lab"), "tls-board")
    ca = firmware_values(lab, lab_ca(lab)).ca_der
    out = build_reference("mps2-an385", {"BUILD_ID": "tls-itest"}, "fast", tmp_path_factory.mktemp("tls-build"),
                          trusted_ca=ca)
    return TlsLab(lab, load_build(out))


@pytest.fixture()
def session(tls_lab: TlsLab, tmp_path: Path) -> Iterator[RunSession]:
    with RunSession(tls_lab.lab, boards=["tls-board"], run_dir=tmp_path / "run") as s:
        yield s


def _twin_document(board: Board) -> dict[str, object]:
    """The twin the board printed: ``twin| `` lines up to ``twin: end``."""
    board.console.expect(r"^twin: status 200, \d+ bytes", timeout=30)
    parts: list[str] = []
    while True:
        line = board.console.expect(r"^twin(\| .*|: end)$", timeout=10).group(0)
        if line == "twin: end":
            return json.loads("".join(parts))  # type: ignore[no-any-return]
        parts.append(line[len("twin| "):])


def test_the_tls_build_registers_through_dps_gets_its_twin_and_sends_security_messages(
        tls_lab: TlsLab, session: RunSession) -> None:
    _registers_gets_its_twin_and_sends(tls_lab, session)


@pytest.fixture(scope="module")
def embedded_tls_lab(tmp_path_factory: pytest.TempPathFactory) -> TlsLab:
    """The same on the embedded broker kind (its own lab, CA and build)."""
    lab = _lab(tmp_path_factory.mktemp("tls-lab-embedded"), "tls-board", kind="embedded")
    ca = firmware_values(lab, lab_ca(lab)).ca_der
    out = build_reference("mps2-an385", {"BUILD_ID": "tls-itest"}, "fast", tmp_path_factory.mktemp("tls-build-e"),
                          trusted_ca=ca)
    return TlsLab(lab, load_build(out))


def test_the_same_on_the_embedded_broker(embedded_tls_lab: TlsLab, tmp_path: Path) -> None:
    with RunSession(embedded_tls_lab.lab, boards=["tls-board"], run_dir=tmp_path / "run") as session:
        assert session.broker is not None and session.broker.kind == "embedded"
        _registers_gets_its_twin_and_sends(embedded_tls_lab, session)


def _registers_gets_its_twin_and_sends(tls_lab: TlsLab, session: RunSession) -> None:
    m = tls_lab.build.manifest
    assert m.identity.provisioning_features == ("tls", "sas", "dps")
    assert m.identity.trusted_ca_sha256 is not None and m.build.knobs["TLS"] == "1"
    hub = session.hub
    assert hub is not None
    marker = secrets.token_hex(8)
    hub.set_twin(DEVICE, desired={"marker": marker, "interval": 17})
    board = session.bring_up("tls-board", tls_lab.build)
    console = board.console
    console.expect(rf"^provisioning: v2 device {DEVICE} broker {HUB}:", timeout=5)
    console.expect(rf"^sas: token for {SCOPE}/registrations/{DEVICE} valid until \d+", timeout=30)
    console.expect(rf"^tls: connected to {DPS}:\d+ \(TLS 1\.2, certificate for {DPS} verified\)", timeout=30)
    console.expect(rf"^dps: assigned to hub {HUB} as device {DEVICE}$", timeout=30)
    console.expect(rf"^tls: connected to {HUB}:\d+ \(TLS 1\.2, certificate for {HUB} verified\)", timeout=30)
    console.expect(rf"^mqtt: connected to {HUB}:\d+ as {DEVICE}$", timeout=10)
    twin = _twin_document(board)
    assert twin["desired"] == {"marker": marker, "interval": 17, "$version": twin["desired"]["$version"]}  # type: ignore[index]
    assert hub.dps.registrations[DEVICE].device_id == DEVICE
    assert any(r.client_id == DEVICE and r.topic.startswith("$iothub/twin/GET/") for r in hub.requests)
    assert board.telemetry is not None
    event = board.telemetry.expect_event(PayloadType.HEARTBEAT, within=30)
    assert event.id


def test_a_twin_larger_than_the_images_buffer_is_skipped_and_the_connection_kept(
        tls_lab: TlsLab, session: RunSession) -> None:
    """A twin document over the image's 8 KiB receive buffer is skipped, said once, and the session
    goes on; before, the board dropped the connection and got the same document at every reconnect."""
    import time

    hub = session.hub
    assert hub is not None
    hub.set_twin(DEVICE, desired={"big": "x" * 9000})
    board = session.bring_up("tls-board", tls_lab.build)
    console = board.console
    console.expect(rf"^mqtt: connected to {HUB}:\d+ as {DEVICE}$", timeout=90)
    skipped = console.expect(r"^mqtt: a (\d+)-byte packet \(type 3\) from the broker is over this image's "
                             r"8192-byte buffer: skipped$", timeout=30)
    assert int(skipped.group(1)) > 9000
    after = time.time()
    assert board.telemetry is not None  # a message collected after the skip arrives on the same connection
    board.telemetry.wait_for(lambda e: e.time >= int(after) + 1, 60, what="an event collected after the skip")
    since = console.text[console.text.find(skipped.group(0)):]
    assert "mqtt: connect" not in since and "closed" not in since and "retrying" not in since, since[-2000:]


def test_a_certificate_for_another_host_name_is_refused(tls_lab: TlsLab, session: RunSession) -> None:
    """The board asks for the tap network's own broker name, which resolves to the broker but is not
    a name on the lab's server certificate: it refuses the certificate and opens no MQTT session."""
    board = session.board("tls-board")
    record = session.provisioning_for(board, tls_lab.build)
    place = session.networks[board.config.network.test_network]
    wrong = replace(record, dps_host=place.broker_host)
    assert session.broker is not None
    with boot(session, "tls-board", tls_lab.build, wrong.encode_sector()) as board:
        line = board.console.expect(rf"^tls: {place.broker_host}:\d+ refused: server certificate refused: .*",
                                    timeout=60).group(0)
        assert "CN" in line or "name" in line.lower(), line
        board.console.expect(r"^mqtt: connection to .* failed \(TLS handshake failed\), retrying", timeout=5)
        text = board.console.observe(2.0)
        assert "mqtt: connected" not in text and "dps: registering" not in text
    assert session.hub is not None
    assert not any(r.client_id == DEVICE for r in session.hub.requests)


def test_an_expired_token_is_refused_by_the_broker(tls_lab: TlsLab, session: RunSession,
                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tokens that expire as they are made (SAS_LIFETIME_S=0): the broker refuses the sign-in, the
    board says so, and DPS never hears a request."""
    ca = firmware_values(tls_lab.lab, lab_ca(tls_lab.lab)).ca_der
    expired = load_build(build_reference("mps2-an385", {"BUILD_ID": "tls-expired", "SAS_LIFETIME_S": 0}, "fast",
                                         tmp_path_factory.mktemp("tls-expired"), trusted_ca=ca))
    board = session.board("tls-board")
    record = session.provisioning_for(board, expired)
    with boot(session, "tls-board", expired, record.encode_sector()) as board:
        board.console.expect(rf"^sas: token for {SCOPE}/registrations/{DEVICE} valid until (\d+) \(now \1\)",
                             timeout=60)
        board.console.expect(rf"^tls: connected to {DPS}:\d+", timeout=30)
        board.console.expect(rf"^mqtt: connection refused by {DPS}:\d+, CONNACK return code [45]$", timeout=15)
    assert session.hub is not None
    assert not any(r.client_id == DEVICE for r in session.hub.requests)


def test_a_build_for_another_lab_ca_is_refused_before_it_is_provisioned(tls_lab: TlsLab, session: RunSession) -> None:
    """The manifest says which CA the image trusts: a build made for another lab's CA would refuse
    this broker's certificate on every connection, so the session says so before anything is written."""
    identity = tls_lab.build.manifest.identity.model_copy(update={"trusted_ca_sha256": "0" * 64})
    other = replace(tls_lab.build, manifest=tls_lab.build.manifest.model_copy(update={"identity": identity}))
    board = session.board("tls-board")
    with pytest.raises(ConfigError, match=r"trusts the CA sha256 0{64}, not this lab's") as info:
        session.provisioning_for(board, other)
    assert "--tls --lab" in (info.value.fix or "")
    assert session.provisioning_for(board, tls_lab.build).transport == "tls"
