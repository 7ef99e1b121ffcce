"""A pack target: a chip model built from a local CMSIS pack (device memory map and FLM flash
algorithm, placed in RAM exactly where pyOCD places it). The pack is synthetic (built here from
``testchip_pack/``): the lab's vendor packs are not in the repository."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest
from pyocd.core import exceptions
from pyocd.core.helpers import ConnectHelper
from pyocd.flash.file_programmer import FileProgrammer

from harness.flash import Flasher
from harness.state import StateDir

PACK_SRC = Path(__file__).parent / "testchip_pack"
PDSC = "TestVendor.TESTCHIP_DFP.pdsc"

pytestmark = [pytest.mark.needs("arm-gcc"), pytest.mark.timeout(120)]


def build_pack(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    flm = out / "TESTCHIP.FLM"
    subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-Os", "-nostdlib", "-fno-common",
                    "-T", str(PACK_SRC / "flm.ld"), str(PACK_SRC / "testchip_flm.c"), "-o", str(flm)],
                   check=True, timeout=60)
    pack = out / "TestVendor.TESTCHIP_DFP.1.0.0.pack"
    with zipfile.ZipFile(pack, "w") as z:
        z.write(PACK_SRC / PDSC, PDSC)
        z.write(flm, "Flash/TESTCHIP.FLM")
    return pack


def test_pack_target_programs_verifies_and_fails_like_the_part(tmp_path: Path, state_dir: StateDir,
                                                              emu_probe_class: type) -> None:
    pack = build_pack(tmp_path / "pack")
    config = state_dir.root / "simprobe" / "chips.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps({"chips": [{"target": "testchip1", "pack": str(pack)}]}))
    uid = "emu:chip-testchip1-0"
    image = tmp_path / "image.bin"
    image.write_bytes(os.urandom(50_000))
    with Flasher(uid, "testchip1", pack=pack, run_dir=tmp_path, timeout=60,
                 plugins=("harness.emulation.simprobe.plugin:register",)) as flasher:
        first = flasher.program(image, base=0x08000000)
        assert first.verified and first.sectors_erased == 25 and first.pages_written == 49  # 2 KiB / 1 KiB
        assert flasher.program(image, base=0x08000000).pages_skipped == 49

    (state_dir.root / "simprobe" / "faults").mkdir()
    (state_dir.root / "simprobe" / "faults" / "chip-testchip1-0.json").write_text(
        json.dumps({"fail_erase_sector": "0x08000800"}))
    image.write_bytes(os.urandom(50_000))
    session = ConnectHelper.session_with_chosen_probe(
        blocking=False, return_first=False, unique_id=uid, target_override="testchip1", no_config=True,
        project_dir=str(tmp_path), options={"pack": [str(pack)]})
    assert session is not None
    with session, pytest.raises(exceptions.FlashEraseFailure):
        FileProgrammer(session).program(str(image), file_format="bin", base_address=0x08000000)
