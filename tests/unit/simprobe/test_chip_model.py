"""Chip model flash semantics and algorithm dispatch (no processes)."""

from __future__ import annotations

import binascii
import struct
from pathlib import Path

import pytest
from pyocd.core import exceptions
from pyocd.target import TARGET

from harness.emulation.simprobe.chipmodel import ChipModel
from harness.emulation.simprobe.faults import FaultPlan

ALGO = TARGET["stm32l475xg"].MEMORY_MAP.get_boot_memory().algo
FLASH = 0x08000000
BUF = ALGO["page_buffers"][0]


def call(chip: ChipModel, entry: str, *args: int) -> int:
    for i, value in enumerate(args):
        chip.regs[i] = value
    chip.regs[14] = ALGO["load_address"] | 1
    chip.regs[15] = ALGO[entry]
    chip.halted = True
    chip.resume()
    assert chip.halted and chip.regs[15] == ALGO["load_address"]
    return chip.regs[0]


def program(chip: ChipModel, addr: int, data: bytes) -> int:
    chip.write_memory(BUF, data)
    return call(chip, "pc_program_page", addr, len(data), BUF)


def test_nor_semantics_program_clears_bits_erase_sets_ff(tmp_path: Path) -> None:
    chip = ChipModel("stm32l475xg", tmp_path / "f.bin")
    assert chip.read_memory(FLASH, 16) == b"\xff" * 16
    assert program(chip, FLASH, b"\xf0" * 1024) == 0
    assert program(chip, FLASH, b"\x0f" * 1024) == 0  # without an erase: bits only clear
    assert chip.read_memory(FLASH, 4) == b"\x00" * 4
    assert call(chip, "pc_erase_sector", FLASH + 0x10) == 0
    assert chip.read_memory(FLASH, 2048) == b"\xff" * 2048  # the 2 KiB sector
    with pytest.raises(exceptions.TransferFaultError):
        chip.write_memory(FLASH, b"\x00")  # flash takes no plain writes


def test_flash_persists_for_the_next_process(tmp_path: Path) -> None:
    chip = ChipModel("stm32l475xg", tmp_path / "f.bin")
    program(chip, FLASH + 0x800, bytes(range(256)) * 4)
    again = ChipModel("stm32l475xg", tmp_path / "f.bin")
    assert again.read_memory(FLASH + 0x800, 1024) == bytes(range(256)) * 4


def test_faults_in_the_algorithm_and_stuck_bits(tmp_path: Path) -> None:
    plan = FaultPlan.model_validate({"fail_erase_sector": "0x08001000", "fail_program_sector": FLASH + 0x2000,
                                     "stuck_bits": [{"address": FLASH + 1, "bit": 0, "value": 0}]})
    chip = ChipModel("stm32l475xg", tmp_path / "f.bin", plan)
    assert call(chip, "pc_erase_sector", FLASH + 0x1000) == 1
    assert call(chip, "pc_erase_sector", FLASH) == 0
    assert program(chip, FLASH + 0x2000, b"\x00" * 1024) == 1
    assert program(chip, FLASH, b"\xff" * 1024) == 0
    assert chip.read_memory(FLASH, 2) == b"\xff\xfe"


def test_crc_analyzer_through_the_boot_alias(tmp_path: Path) -> None:
    chip = ChipModel("stm32l475xg", tmp_path / "f.bin")
    program(chip, FLASH + 0x400, b"\x5a" * 1024)
    # pyOCD's command word: log2(size) | (address // size) << 16, truncated to 32 bits.
    words = [(10 | ((a // 1024) << 16)) & 0xFFFFFFFF for a in (FLASH, FLASH + 0x400)]
    chip.write_memory(BUF, struct.pack("<2I", *words))
    chip.regs[0], chip.regs[1], chip.regs[14] = BUF, 2, ALGO["load_address"] | 1
    chip.regs[15] = ALGO["analyzer_address"]
    chip.resume()
    crcs = struct.unpack("<2I", chip.read_memory(BUF, 8))
    assert crcs == (binascii.crc32(b"\xff" * 1024), binascii.crc32(b"\x5a" * 1024))


def test_reset_loads_vectors_from_boot_flash(tmp_path: Path) -> None:
    chip = ChipModel("stm32l475xg", tmp_path / "f.bin")
    program(chip, FLASH, struct.pack("<2I", 0x20018000, 0x080001C1) + b"\xff" * 1016)
    chip.reset(halt=True)
    assert chip.halted and chip.regs[13] == 0x20018000 and chip.regs[15] == 0x080001C0


@pytest.mark.parametrize("target", ["stm32f412xg", "mimxrt1060"])
def test_other_targets_have_their_algorithm_entries(target: str, tmp_path: Path) -> None:
    chip = ChipModel(target, tmp_path / "f.bin")
    assert {name for name, _ in chip._entries.values()} >= {"pc_init", "pc_erase_sector", "pc_program_page"}
    assert chip.flash.size == sum(r.length for r in chip.regions)
