"""Spec 1, transport: what every security message looks like on its way to the hub."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.board.board import Board
from harness.firmware import FirmwareManifest
from harness.report.plugin import ClauseRecord
from harness.suites.certification.observe import observe, over_tls
from harness.telemetry.streams import Received
from harness.telemetry.topic import UserNameError, parse_topic, parse_username
from harness.traffic.capture import parse_frame, read_pcap
from harness.traffic.tls_publish import sealed_framing

IFID = "urn:azureiot:Security:SecurityAgent:1"
#: A DPS registration's user name: the same client id may sign in to DPS before it signs in to the hub
DPS_USER = re.compile(r"^[^/]+/registrations/[^/]+/api-version=")


@pytest.mark.clause("1.topic", "topic and property bag: mti and $.ifid, nothing else")
def test_topic_and_property_bag(hil_board: Board, manifest: FirmwareManifest, clause: ClauseRecord) -> None:
    seen = observe(hil_board)
    assert seen.messages, "no security message arrived"
    wrong = []
    for m in seen.messages:
        topic = parse_topic(m.topic)
        expected = {"mti": manifest.security_module.mti, "$.ifid": IFID}
        if topic.device_id != hil_board.device_id or dict(topic.properties) != expected:
            wrong.append(f"{m.topic!r} (properties {dict(topic.properties)})")
    clause.write("topics.txt", "\n".join(sorted({m.topic for m in seen.messages})))
    assert not wrong, f"{len(wrong)} of {len(seen.messages)} messages on a wrong topic: {wrong[:3]}"


@pytest.mark.clause("1.qos", "QoS 1, retain 0")
def test_qos_1_and_no_retain(hil_board: Board) -> None:
    seen = observe(hil_board)
    wrong = [(m.seq, m.qos, m.retain) for m in seen.messages if m.qos != 1 or m.retain]
    assert not wrong, f"messages (collector seq, qos, retain) that are not QoS 1 without retain: {wrong[:5]}"


@pytest.mark.clause("1.framing", "PUBLISH framed as NetX frames it: 0x32 and a 4-byte Remaining Length")
def test_netx_framing_on_the_wire(hil_board: Board, clause: ClauseRecord) -> None:
    seen = observe(hil_board)
    pcap = hil_board.parts.link_capture()
    if pcap is None:
        clause.not_applicable("the board's link is not captured (no capture of its network)")
    clause.evidence("capture", pcap)
    if over_tls(hil_board):
        _sealed_framing(hil_board, seen.messages, pcap, clause)
        return
    publishes = []
    for _, frame in read_pcap(pcap):
        data = _tcp_payload_from(frame, str(hil_board.address))
        if data is not None and data[:1] in (b"\x32", b"\x3a") and b"mti=" in data[:200]:
            publishes.append(data)
    assert publishes, f"no security PUBLISH from the board in {pcap}"
    for data in publishes:
        assert all(b & 0x80 for b in data[1:4]) and not data[4] & 0x80, (
            f"Remaining Length {data[1:5].hex()} is not NetX's 4-byte form")


def _sealed_framing(board: Board, messages: list[Received], pcap: Path, clause: ClauseRecord) -> None:
    """Over TLS the frames cannot be read, but their size can: NetX's 4-byte Remaining Length makes
    each PUBLISH 2 bytes longer (or more) than the shortest encoding, and an AEAD suite adds a fixed
    overhead, so each TLS record holding a security message tells which framing it carries."""
    records = []
    for _, frame in read_pcap(pcap):
        data = _tcp_payload_from(frame, str(board.address))
        if data is not None and len(data) >= 5 and data[0] == 0x17 and data[1] == 3:
            records.append(int.from_bytes(data[3:5], "big"))
    found = sealed_framing(records, [(m.topic, len(m.payload)) for m in messages])
    if found is None:
        clause.not_applicable("over TLS, no TLS record of the board has the size of a security message received "
                              "under an AEAD suite: the framing cannot be told (a CBC suite, or a PUBLISH split "
                              "over records)")
    assert found is not None
    clause.write("framing-over-tls.json", {"records": len(records), "protection": found.protection,
                                           "netx_framed": found.netx, "shortest_framed": found.shortest})
    assert not found.shortest, (f"{found.shortest} of the security PUBLISHes sealed in TLS records "
                                f"({found.protection}) have the shortest Remaining Length, not NetX's 4 bytes "
                                f"({found.netx} have)")


def _tcp_payload_from(frame: bytes, source: str) -> bytes | None:
    """The TCP payload of a frame from ``source`` (an Ethernet frame, a VLAN tag allowed), or None."""
    packet = parse_frame(0.0, frame)
    if packet is None or packet.proto != 6 or str(packet.src) != source or packet.offset or len(packet.payload) < 20:
        return None
    tcp = packet.payload
    return tcp[(tcp[12] >> 4) * 4:]


@pytest.mark.clause("1.identity", "client id = device id, hub user name, no clean session; module id and version")
def test_identity_and_module(hil_board: Board, manifest: FirmwareManifest, clause: ClauseRecord) -> None:
    seen = observe(hil_board)
    for m in seen.messages:
        assert m.message is not None, f"message {m.seq} did not decode: {m.error}"
        assert m.message.security_module_id == manifest.security_module.id, (
            f"security_module_id {m.message.security_module_id!r}, the manifest says {manifest.security_module.id!r}")
        version = str(m.message.security_module_version)
        assert version == manifest.security_module.version, (
            f"security_module_version {version}, the manifest says {manifest.security_module.version}")
    connects = hil_board.broker.connections() if hil_board.broker is not None else None
    if connects is None:
        clause.not_applicable("this broker kind does not report the CONNECTs it accepted")
    mine = [c for c in connects if c.client_id == hil_board.device_id]
    dps = [c for c in mine if DPS_USER.match(c.username)]  # registrations, which go to DPS, not the hub
    mine = [c for c in mine if c not in dps]
    clause.write("connects.json", [c.__dict__ for c in mine])
    if dps:
        clause.write("dps-connects.json", [c.__dict__ for c in dps])
    assert mine, f"no connection with client id {hil_board.device_id!r}"
    for c in mine:
        try:
            user = parse_username(c.username)
        except UserNameError as exc:
            raise AssertionError(f"user name {c.username!r} is not an IoT Hub user name: {exc}") from None
        assert user.device_id == hil_board.device_id and user.module_id is None
        assert "api-version" in user.params, f"user name {c.username!r} has no api-version"
        assert not c.clean_session, "the device connected with a clean session (stock images keep theirs)"
