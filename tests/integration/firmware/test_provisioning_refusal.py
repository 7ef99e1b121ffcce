"""A missing or corrupt provisioning block stops networking with its console line: no packet leaves."""

from __future__ import annotations

import dataclasses
import struct
import zlib
from pathlib import Path

import pytest
from scapy.utils import rdpcap

from harness.emulation.network import UserAttachment
from harness.provisioning import ProvisioningRecord
from harness.state import StateDir

from .conftest import TEST_BUILD_ID, TEST_VERSION, boot, image_bytes

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


CASES = {
    "bad-crc": (_bad_crc(), r"provisioning: bad CRC \(stored 0x[0-9A-F]{8}, computed 0x[0-9A-F]{8}\)"),
    "version-7": (_version_7(), r"provisioning: unsupported version 7 \(this firmware reads 1\)"),
    "missing": (None, r"provisioning: block empty \(erased flash at 0x003FF000\)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_block_stops_networking(case: str, ref_build: Path, tmp_path: Path,
                                        state: StateDir) -> None:
    sector, line = CASES[case]
    name = f"refuse-{case}"
    network = UserAttachment.create(name)
    with boot(name, tmp_path, image_bytes(ref_build), sector, network, state) as board:
        board.console.expect(rf"^HIL-REF {TEST_VERSION} build {TEST_BUILD_ID} board mps2-an385$")
        board.console.expect(line)
        board.console.expect(r"provisioning: networking stopped")
        text = board.console.observe(NO_TRAFFIC_WINDOW_S)
        assert "net:" not in text and "mqtt:" not in text
        pcap = board.machine.pcaps[-1]
    packets = rdpcap(str(pcap)) if pcap.stat().st_size > 24 else []
    assert len(packets) == 0, f"{case}: the board sent or received {len(packets)} frames ({pcap})"


def test_good_block_does_start_networking(ref_build: Path, tmp_path: Path, state: StateDir) -> None:
    """The control for the refusals: the same image with a good block sends DHCP at once."""
    record = dataclasses.replace(RECORD, device_id="accepted-1")
    network = UserAttachment.create("accept-1")
    with boot("accept-1", tmp_path, image_bytes(ref_build), record.encode_sector(), network,
              state) as board:
        board.console.expect(r"^provisioning: v1 device accepted-1 broker 10\.0\.2\.2:1883 "
                             r"time 10\.0\.2\.2 address dhcp$")
        board.console.expect(r"^net: address 10\.0\.2\.15 ", timeout=15)
        pcap = board.machine.pcaps[-1]
    assert len(rdpcap(str(pcap))) > 0
