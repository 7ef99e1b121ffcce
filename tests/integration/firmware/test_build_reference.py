"""build_reference runs make and leaves a firmware build folder the harness can load and boot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from harness.errors import UsageError
from harness.firmware import load_build
from harness.firmware_build import IMAGE_STEM, build_reference
from harness.provisioning import PROVISIONING_ADDRESS, ProvisioningRecord
from harness.session import RunSession
from tests.boards import emulated_board, private_lab

from .conftest import TEST_BUILD_ID, TEST_VERSION, boot


@pytest.mark.timeout(300)
@pytest.mark.needs("arm-gcc")
def test_build_folder_and_manifest(ref_build: Path) -> None:
    build = load_build(ref_build)
    assert build.verify() == build.manifest.sha256
    m = build.manifest
    assert (m.version, m.build.build_id, m.targets) == (TEST_VERSION, TEST_BUILD_ID, ("mps2_an385",))
    assert re.match(m.behaviour.boot_marker, f"HIL-REF {TEST_VERSION} build {TEST_BUILD_ID} board mps2-an385")
    assert m.build.knobs["TEST_PUBLISH"] == "1"
    for suffix in ("elf", "bin", "hex"):
        assert (ref_build / f"{IMAGE_STEM}.{suffix}").stat().st_size > 0
    log = (ref_build / "build.log").read_text()
    size = re.search(r"size: code (\d+) bytes, ram (\d+) bytes", log)
    assert size and (int(size[1]), int(size[2])) == (m.build.code_bytes, m.build.ram_bytes)
    with (ref_build / f"{IMAGE_STEM}.elf").open("rb") as fh:
        elf = ELFFile(fh)
        loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD" and s["p_filesz"]]
        assert all(s["p_paddr"] + s["p_filesz"] <= PROVISIONING_ADDRESS for s in loads), (
            "the image must stay below the provisioning sector")


@pytest.mark.timeout(60)
def test_unknown_board_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown board"):
        build_reference("stm32l475xg", {}, None, tmp_path / "x")


@pytest.mark.timeout(60)
@pytest.mark.needs("arm-gcc")
def test_unknown_knob_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        build_reference("mps2-an385", {"TEST_PUBLSH": 1}, None, tmp_path / "x")
    assert "TEST_PUBLSH" in str(info.value) and "TEST_PUBLISH" in str(info.value)


@pytest.mark.timeout(60)
@pytest.mark.needs("arm-gcc")
@pytest.mark.parametrize(("knob", "value", "words"), [
    ("ECHO_PORT", "70000", "ECHO_PORT=70000 must be a port number from 1 to 65535"),
    ("MQTT_STORE_BYTES", "10", "MQTT_STORE_BYTES=10 must be a byte count"),
    ("IP_FRAGMENT_ENABLE", "yes", "IP_FRAGMENT_ENABLE=yes must be 0 or 1"),
    ("ASC_LOG_LEVEL", "9", "ASC_LOG_LEVEL=9 must be 0"),
    ("THREADX_VERSION", "6", "THREADX_VERSION=6 must be major.minor"),
])
def test_a_knob_value_the_build_refuses_is_a_usage_error(tmp_path: Path, knob: str, value: str,
                                                         words: str) -> None:
    """Refused before anything is built, naming the knob and what it takes (exit 2, not 3)."""
    with pytest.raises(UsageError) as info:
        build_reference("mps2-an385", {knob: value}, None, tmp_path / "x")
    assert words in str(info.value)
    assert not (tmp_path / "x" / "build.log").exists()


@pytest.mark.timeout(300)
@pytest.mark.needs("arm-gcc", "qemu")
def test_an386_build_boots(tmp_path: Path) -> None:
    out = build_reference("mps2-an386", {"VERSION": "4.5.6", "BUILD_ID": "m4", "ECHO_PORT": 7007},
                          None, tmp_path / "an386")
    assert load_build(out).manifest.targets == ("mps2_an386",)
    record = ProvisioningRecord(device_id="m4-board", broker_host="10.0.2.2", broker_port=1883,
                                user_name="u", secret="p", time_server="10.0.2.2")
    lab = private_lab(tmp_path / "lab", [emulated_board("an386", "m4-board", machine="mps2-an386", network="user")],
                      broker_kind="embedded")
    with RunSession(lab, boards=["an386"], run_dir=tmp_path / "run") as session, \
            boot(session, "an386", out, record.encode_sector()) as board:
        board.console.expect(r"^HIL-REF 4\.5\.6 build m4 board mps2-an386$")
        board.console.expect(r"^services: tcp echo 7007, udp echo 7007, icmp echo$", timeout=15)
