"""The flash file: erased on creation, programmed in place, bounds checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.emulation.flash_file import FLASH_SIZE, PROVISIONING_OFFSET, SECTOR_SIZE, FlashFile
from harness.errors import UsageError


def test_a_new_flash_file_is_erased(tmp_path: Path) -> None:
    flash = FlashFile(tmp_path / "f.bin")
    assert flash.path.stat().st_size == FLASH_SIZE
    assert flash.read(0, 16) == b"\xff" * 16
    assert flash.used_ranges() == []


def test_program_writes_in_place_and_survives_reopening(tmp_path: Path) -> None:
    flash = FlashFile(tmp_path / "f.bin")
    flash.program(0x100, b"abc")
    flash.program(PROVISIONING_OFFSET, b"PROV")
    again = FlashFile(tmp_path / "f.bin")
    assert again.read(0xFE, 7) == b"\xff\xffabc\xff\xff"
    assert again.read(PROVISIONING_OFFSET, 4) == b"PROV"
    ranges = again.used_ranges()
    assert [(off, len(data)) for off, data in ranges] == [(0, SECTOR_SIZE), (PROVISIONING_OFFSET, SECTOR_SIZE)]


def test_adjacent_used_sectors_merge_and_erase_restores(tmp_path: Path) -> None:
    flash = FlashFile(tmp_path / "f.bin")
    flash.program(SECTOR_SIZE - 2, b"1234")
    assert [(off, len(d)) for off, d in flash.used_ranges()] == [(0, 2 * SECTOR_SIZE)]
    flash.erase(0, 2 * SECTOR_SIZE)
    assert flash.used_ranges() == []


@pytest.mark.parametrize(("offset", "data"), [(-1, b"x"), (FLASH_SIZE - 1, b"xy"), (FLASH_SIZE, b"x")])
def test_writes_outside_the_flash_are_refused(tmp_path: Path, offset: int, data: bytes) -> None:
    flash = FlashFile(tmp_path / "f.bin")
    with pytest.raises(UsageError, match="outside the flash"):
        flash.program(offset, data)


def test_a_file_of_the_wrong_size_is_refused_with_a_fix(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"\0" * 100)
    with pytest.raises(UsageError, match="100 bytes") as info:
        FlashFile(path)
    assert info.value.fix and "delete" in info.value.fix
