"""The Azure RTOS image's hub connection, through the real Azure IoT middleware (NetX Duo 6.4.2 and
the Azure SDK for Embedded C 1.3.2) against the harness's IoT Hub stand-in: DPS registration over
TLS trusting the lab CA compiled in, the hub connection with a SAS token the device makes from its
key, and the twin GET; direct methods, C2D messages and desired properties through the middleware's
own APIs. A device with a key the registry does not know is refused. The shared security
agent on NetX Duo: its messages go through the hub client's telemetry API with the module's property
bag, decode, and count the board's own traffic; on the link only TLS records carry them."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from scapy.layers.inet import IP, TCP
from scapy.utils import rdpcap

from harness.board.board import Board
from harness.broker import parse_mqtt_url
from harness.firmware_build import build_reference
from harness.hub.ca import lab_ca
from harness.lab import Lab, load_lab
from harness.provisioning import ProvisioningRecord
from harness.session import RunSession
from harness.telemetry.model import Event, NetworkActivity, PayloadType, Protocol, SystemInformation
from harness.traffic import ping
from tests.boards import emulated_board

from .conftest import TEST_BUILD_ID, TEST_VERSION, boot

pytestmark = [pytest.mark.needs("qemu", "arm-gcc", "root", "mosquitto", "dnsmasq", "chrony", "ip", "azrtos-sources")]

DEVICE = "hil-azrtos-hub-1"
KEY = base64.b64encode(bytes(range(11, 43))).decode()


@dataclass
class Lab_:
    lab: Lab
    build: Path


@pytest.fixture(scope="module")
def hub_lab(tmp_path_factory: pytest.TempPathFactory) -> Lab_:
    root = tmp_path_factory.mktemp("azrtos-hub") / "lab"
    root.mkdir()
    (root / "lab.yaml").write_text(yaml.safe_dump({
        "broker": {"kind": "mosquitto", "tls": True},
        "devices": [{"id": DEVICE, "symmetric_key": KEY}],
    }))
    for name in ("az-hub-1", "az-hub-2"):
        (root / f"{name}.yaml").write_text(yaml.safe_dump(emulated_board(name, DEVICE if name == "az-hub-1"
                                                                         else "hil-azrtos-stranger")))
    lab = load_lab(root)
    der = lab_ca(lab).ca_der()
    build = build_reference("mps2-an385", {"VERSION": TEST_VERSION, "BUILD_ID": TEST_BUILD_ID}, "fast",
                            tmp_path_factory.mktemp("azrtos-hub-build"), flavour="azrtos", trusted_ca=der)
    return Lab_(lab, build)


def _record(session: RunSession, board: Board, key: str) -> ProvisioningRecord:
    """The run's record for ``board``, as a stock DPS image is provisioned: TLS, SAS from the key."""
    assert session.broker is not None and session.broker.tls_url is not None
    settings = session.lab.settings.broker
    return dataclasses.replace(session.provisioning_for(board), transport="tls", auth="sas", device_key=key,
                               user_name="", secret="", broker_host=settings.hub,
                               broker_port=parse_mqtt_url(session.broker.tls_url)[1], dps_host=settings.dps,
                               id_scope=settings.id_scope, registration_id=board.device_id)


@pytest.fixture(scope="module")
def session(hub_lab: Lab_, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunSession]:
    with RunSession(hub_lab.lab, boards=["az-hub-1", "az-hub-2"],
                    run_dir=tmp_path_factory.mktemp("azrtos-hub-run")) as session:
        yield session


@dataclass
class Connected:
    session: RunSession
    board: Board
    record: ProvisioningRecord
    address: str
    lines: dict[str, str]


@pytest.fixture(scope="module")
def connected(hub_lab: Lab_, session: RunSession) -> Iterator[Connected]:
    """az-hub-1 booted with a DPS + SAS record, once its twin GET was answered."""
    assert session.hub is not None
    session.hub.set_twin(DEVICE, desired={"mode": "azrtos-twin-check"})
    hub = session.lab.settings.broker.hub
    board = session.board("az-hub-1")
    record = _record(session, board, KEY)
    with boot(session, "az-hub-1", hub_lab.build, record.encode_sector((1, 2))) as board:
        board.console.expect(r"^time: unix \d+ ", timeout=60)
        lines = {"dps": board.console.expect(rf"^dps: assigned hub {hub} device .*$", timeout=60).group(0),
                 "mqtt": board.console.expect(r"^mqtt: connected to .*$", timeout=60).group(0),
                 "twin": board.console.expect(r"^twin: .*$", timeout=30).group(0)}
        address = str(session.networks["emulated"].handle.attachments[board.name].address)
        yield Connected(session, board, record, address, lines)


@pytest.mark.timeout(240)
def test_dps_registration_sas_connection_and_twin(connected: Connected) -> None:
    session, record = connected.session, connected.record
    assert session.hub is not None
    hub = session.lab.settings.broker.hub
    assert connected.lines["dps"] == f"dps: assigned hub {hub} device {DEVICE}"
    assert DEVICE in session.hub.dps.registrations, "the DPS stand-in saw no registration"
    assert connected.lines["mqtt"] == f"mqtt: connected to {hub}:{record.broker_port} as {DEVICE}"
    twin = re.fullmatch(r"twin: (\d+) bytes (.*)", connected.lines["twin"])
    assert twin is not None, connected.lines["twin"]
    assert int(twin.group(1)) == len(twin.group(2)), "the twin document was cut on the console"
    assert json.loads(twin.group(2))["desired"] == {"mode": "azrtos-twin-check", "$version": 1}


@pytest.mark.timeout(240)
def test_security_messages_through_the_hub_client(connected: Connected) -> None:
    """SystemInformation, Heartbeat and NetworkActivity arrive through the hub client with the
    module's topic and property bag, decode, and the flows hold the board's TLS connection to the hub."""
    collector, record, address = connected.session.collector, connected.record, connected.address
    assert collector is not None
    info = collector.expect_event(DEVICE, PayloadType.SYSTEM_INFORMATION, within=60)
    assert isinstance(info.payload, SystemInformation) and info.payload.os_info == "Azure RTOS 6.4"
    collector.expect_event(DEVICE, PayloadType.HEARTBEAT, within=30)

    def hub_flow(e: Event) -> bool:
        return isinstance(e.payload, NetworkActivity) and any(
            f.remote_port == record.broker_port and f.protocol == Protocol.TCP and f.bytes_out > 0
            and f.bytes_in > 0 and str(f.local_address) == address for f in e.payload.ipv4)

    collector.wait_for(DEVICE, hub_flow, 30, what="the hub connection's flow")
    security = [m for m in collector.messages(DEVICE) if m.security]
    assert security and all(m.error is None and m.qos == 1 for m in security), collector.problems()
    assert {m.topic for m in security} == {
        f"devices/{DEVICE}/messages/events/mti=2.3-1-0-0&%24.ifid=urn%3Aazureiot%3ASecurity%3ASecurityAgent%3A1"}
    _tls_only_on_the_link(connected.board, address, record.broker_port)


@pytest.mark.timeout(240)
def test_pings_are_counted_exactly_at_both_capture_points(connected: Connected) -> None:
    """N echo requests of P payload bytes from the harness: one ICMP record (ports 0/0) with
    N * (8 + P) bytes in (the receive hook) and as many out (the packet filter), summed over the
    windows they fell in - what the lwIP image reports for the same pings."""
    collector = connected.session.collector
    assert collector is not None
    harness = str(connected.session.networks["emulated"].handle.harness_address)
    count, payload = 5, b"hil-azrtos-count" * 3
    since = collector.mark()
    result = ping(connected.address, count=count, payload=payload, timeout=5, policy=connected.session.policy)
    assert result.replies == count
    want = count * (8 + len(payload))

    def totals() -> tuple[int, int]:
        flows = [f for e in collector.events(DEVICE, since=since, kind=PayloadType.NETWORK_ACTIVITY)
                 if isinstance(e.payload, NetworkActivity) for f in e.payload.ipv4
                 if f.protocol == Protocol.ICMP and str(f.remote_address) == harness]
        assert all(str(f.local_address) == connected.address and f.local_port == f.remote_port == 0 for f in flows)
        return sum(f.bytes_in for f in flows), sum(f.bytes_out for f in flows)

    collector.wait_for(DEVICE, lambda e: min(totals()) >= want, 30, since=since, what="the pings' ICMP record")
    assert totals() == (want, want)


def _tls_only_on_the_link(board: Board, address: str, port: int) -> None:
    """The board's segments to the hub carry TLS records (handshake, then application data), and
    never a cleartext MQTT PUBLISH."""
    pcap = board.parts.link_capture()
    assert pcap is not None
    types = set()
    for pkt in rdpcap(str(pcap)):
        if IP in pkt and TCP in pkt and pkt[IP].src == address and pkt[TCP].dport == port:
            data = bytes(pkt[TCP].payload)
            if data:
                assert data[0] != 0x32, "a cleartext MQTT PUBLISH on the hub port"
                if data[1:3] == b"\x03\x03" or data[1:3] == b"\x03\x01":
                    types.add(data[0])
    assert {0x16, 0x17} <= types, f"TLS record types seen from the board: {sorted(types)}"


@pytest.mark.timeout(240)
def test_a_direct_method_is_answered_through_the_middleware(connected: Connected) -> None:
    """The stand-in's direct method against the middleware's C client (methods_enable, message_receive,
    message_response): answered 200 with what it received, null for an empty request."""
    hub, console = connected.session.hub, connected.board.console
    assert hub is not None
    answer = hub.invoke_method(DEVICE, "hil-blink", {"times": 3, "colour": "green"}, timeout=30)
    assert (answer.status, answer.payload) == (200, {"method": "hil-blink",
                                                     "received": {"times": 3, "colour": "green"}})
    line = console.expect(r"^method: hil-blink .*$", timeout=10).group(0)
    assert json.loads(line.removeprefix("method: hil-blink ")) == {"times": 3, "colour": "green"}
    empty = hub.invoke_method(DEVICE, "hil-empty", timeout=30)
    assert (empty.status, empty.payload) == (200, {"method": "hil-empty", "received": None})


@pytest.mark.timeout(240)
def test_a_desired_patch_is_acknowledged_through_the_middleware(connected: Connected) -> None:
    """A desired-properties patch (desired_properties_receive) is shown on the console and answered
    with the reported patch {"ack_version": <its $version>} (reported_properties_send), which the hub takes."""
    hub, console = connected.session.hub, connected.board.console
    assert hub is not None
    since = len(hub.reported_patches(DEVICE))
    version = hub.set_desired(DEVICE, {"interval": 17})
    patch = hub.wait_reported(DEVICE, lambda p: "ack_version" in p, within=30, since=since)
    assert patch == {"ack_version": version}
    desired = console.expect(r"^twin-desired: .*$", timeout=10).group(0)
    assert json.loads(desired.removeprefix("twin-desired: ")) == {"interval": 17, "$version": version}
    assert hub.twin(DEVICE)["reported"]["ack_version"] == version
    assert not hub.refused_patches(DEVICE)


@pytest.mark.timeout(240)
def test_what_the_image_cannot_read_is_refused_not_dropped(connected: Connected) -> None:
    """A method payload or desired patch past the image's 256 bytes is answered 413 or said on the
    console, never dropped in silence; the next request is answered as before."""
    hub, console = connected.session.hub, connected.board.console
    assert hub is not None
    big = {"blob": "x" * 300}
    answer = hub.invoke_method(DEVICE, "hil-big", big, timeout=30)
    assert (answer.status, answer.payload) == (413, {"error": "payload larger than 256 bytes"})
    console.expect(rf"^method: hil-big refused: payload of {len(json.dumps(big))} bytes \(this image reads 256\)$",
                   timeout=10)
    since = len(hub.reported_patches(DEVICE))
    hub.set_desired(DEVICE, big)
    console.expect(r"^twin-desired: a patch of \d+ bytes, larger than the 256 this image reads: not acknowledged$",
                   timeout=30)
    assert hub.reported_patches(DEVICE)[since:] == []
    after = hub.invoke_method(DEVICE, "hil-after", [1], timeout=30)
    assert (after.status, after.payload) == (200, {"method": "hil-after", "received": [1]})


@pytest.mark.timeout(240)
def test_a_c2d_message_and_its_property_reach_the_middleware(connected: Connected) -> None:
    """A C2D message (cloud_message_enable, cloud_message_receive) and its application property
    (cloud_message_property_get) on the console. The middleware subscribes to
    ``devices/+/messages/devicebound/#``: found here, refused by the stand-in until it read that
    filter as the device's own, as IoT Hub does."""
    hub, console = connected.session.hub, connected.board.console
    assert hub is not None
    body = b"hil c2d from the stand-in"
    hub.send_c2d(DEVICE, body, {"hil-c2d": "azrtos-c2d-check"})
    assert console.expect(r"^c2d: \d+ bytes .*$", timeout=30).group(0) == f"c2d: {len(body)} bytes {body.decode()}"
    console.expect(r"^c2d-property: hil-c2d=azrtos-c2d-check$", timeout=10)


@pytest.mark.timeout(240)
def test_a_key_the_registry_does_not_know_is_refused(hub_lab: Lab_, session: RunSession) -> None:
    assert session.hub is not None
    board = session.board("az-hub-2")
    wrong = base64.b64encode(bytes(32)).decode()
    record = dataclasses.replace(_record(session, board, wrong), registration_id=DEVICE)
    with boot(session, "az-hub-2", hub_lab.build, record.encode_sector((1, 2))) as board:
        board.console.expect(rf"^dps: registration of {DEVICE} failed \(status 0x[0-9A-F]+\)$", timeout=90)
        assert "mqtt: connected" not in board.console.text


@pytest.mark.timeout(240)
def test_a_lost_connection_goes_back_to_the_assigned_hub(connected: Connected) -> None:
    """The broker goes away and comes back: the board connects to the hub it was assigned again,
    without a new DPS registration, and its security messages resume."""
    session, board = connected.session, connected.board
    assert session.broker is not None and session.collector is not None
    registrations = board.console.text.count("dps: registering")
    session.broker.stop()  # type: ignore[attr-defined]
    try:
        board.console.expect(r"^mqtt: disconnected from .*$", timeout=30)
    finally:
        session.broker.start()  # type: ignore[attr-defined]
    back = session.collector.mark()
    hub = session.lab.settings.broker.hub
    board.console.expect(rf"^mqtt: connected to {hub}:{connected.record.broker_port} as {DEVICE}$", timeout=60)
    assert board.console.text.count("dps: registering") == registrations, "registered with DPS again"
    session.collector.expect_event(DEVICE, PayloadType.NETWORK_ACTIVITY, within=30, since=back)
    assert session.hub is not None  # the services follow the new connection
    answer = session.hub.invoke_method(DEVICE, "hil-again", {"n": 2}, timeout=30)
    assert (answer.status, answer.payload) == (200, {"method": "hil-again", "received": {"n": 2}})
