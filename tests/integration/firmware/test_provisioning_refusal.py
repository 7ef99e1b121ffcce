"""A missing or corrupt provisioning block stops networking with its console line: no packet leaves."""

from __future__ import annotations

import dataclasses
import struct
import zlib
from pathlib import Path

import pytest
from scapy.utils import rdpcap

from harness.provisioning import ProvisioningRecord
from harness.session import RunSession
from tests.boards import emulated_board, private_lab

from .conftest import TEST_BUILD_ID, TEST_VERSION, boot

pytestmark = [pytest.mark.needs("qemu", "arm-gcc"), pytest.mark.timeout(240)]

RECORD = ProvisioningRecord(device_id="refused-1", broker_host="10.0.2.2", broker_port=1883,
                            user_name="hub/refused-1/?api-version=2021-04-12", secret="pw",
                            time_server="10.0.2.2")
NO_TRAFFIC_WINDOW_S = 1.5  # DHCP would start within milliseconds of a good block


def _bad_crc() -> bytes:
    sector = bytearray(RECORD.encode_sector())
    sector[0x21C] ^= 0x40
    return bytes(sector)


def _version_7() -> bytes:
    sector = bytearray(RECORD.encode_sector())
    struct.pack_into("<H", sector, 4, 7)
    struct.pack_into("<I", sector, 860, zlib.crc32(bytes(sector[:860])))
    return bytes(sector)


def _tls_on_plain_build() -> bytes:
    """A valid version 2 block asking for TLS, given to the plain build (no TLS in it)."""
    return dataclasses.replace(RECORD, transport="tls").encode_sector(reads=(2,))


CASES = {
    "bad-crc": (_bad_crc(), r"provisioning: bad CRC \(stored 0x[0-9A-F]{8}, computed 0x[0-9A-F]{8}\)"),
    "version-7": (_version_7(), r"provisioning: unsupported version 7 \(this firmware reads 1 and 2\)"),
    "tls-on-plain-build": (_tls_on_plain_build(),
                           r"provisioning: transport tls needs the TLS build \(this image has no TLS"),
    "missing": (None, r"provisioning: block empty \(erased flash at 0x003FF000\)"),
}


def session_with(tmp_path: Path, name: str, device: str) -> RunSession:
    """A session of one emulated board on QEMU user networking (no root needed)."""
    lab = private_lab(tmp_path / "lab", [emulated_board(name, device, network="user")], broker_kind="embedded")
    return RunSession(lab, boards=[name], run_dir=tmp_path / "run")


@pytest.mark.parametrize("case", list(CASES))
def test_refused_block_stops_networking(case: str, ref_build: Path, tmp_path: Path) -> None:
    sector, line = CASES[case]
    name = f"refuse-{case}"
    with session_with(tmp_path, name, RECORD.device_id) as session, \
            boot(session, name, ref_build, sector) as board:
        board.console.expect(rf"^HIL-REF {TEST_VERSION} build {TEST_BUILD_ID} board mps2-an385$")
        board.console.expect(line)
        board.console.expect(r"provisioning: networking stopped")
        text = board.console.observe(NO_TRAFFIC_WINDOW_S)
        assert "net:" not in text and "mqtt:" not in text
        pcap = board.parts.link_capture()
    assert pcap is not None
    packets = rdpcap(str(pcap)) if pcap.stat().st_size > 24 else []
    assert len(packets) == 0, f"{case}: the board sent or received {len(packets)} frames ({pcap})"


def test_good_block_does_start_networking(ref_build: Path, tmp_path: Path) -> None:
    """The control for the refusals: the same image with a good block sends DHCP at once."""
    record = dataclasses.replace(RECORD, device_id="accepted-1")
    with session_with(tmp_path, "accept-1", record.device_id) as session, \
            boot(session, "accept-1", ref_build, record.encode_sector()) as board:
        board.console.expect(r"^provisioning: v1 device accepted-1 broker 10\.0\.2\.2:1883 "
                             r"time 10\.0\.2\.2 address dhcp$")
        board.console.expect(r"^net: address 10\.0\.2\.15 ", timeout=15)
        pcap = board.parts.link_capture()
    assert pcap is not None and len(rdpcap(str(pcap))) > 0
