"""harness.flash image reading and argument checks (no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from intelhex import IntelHex

from harness.errors import UsageError
from harness.flash import Flasher, image_chunks, image_format


def test_formats_from_suffix_or_argument(tmp_path: Path) -> None:
    assert image_format(tmp_path / "a.axf", None) == "elf"
    assert image_format(tmp_path / "a.img", "BIN") == "bin"
    with pytest.raises(UsageError, match="format"):
        image_format(tmp_path / "a.img", None)


def test_hex_and_bin_chunks(tmp_path: Path) -> None:
    ih = IntelHex()
    ih.puts(0x08000000, b"abc")
    ih.puts(0x08001000, b"xyz")
    ih.write_hex_file(str(tmp_path / "a.hex"))
    assert image_chunks(tmp_path / "a.hex", "hex", None) == [(0x08000000, b"abc"), (0x08001000, b"xyz")]
    (tmp_path / "a.bin").write_bytes(b"\x01\x02")
    assert image_chunks(tmp_path / "a.bin", "bin", 0x60000000) == [(0x60000000, b"\x01\x02")]
    with pytest.raises(UsageError, match="base address"):
        image_chunks(tmp_path / "a.bin", "bin", None)


def test_program_checks_arguments_before_starting_anything(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="erase mode"):
        Flasher("emu:x", "stm32l475xg", erase="bulk")
    flasher = Flasher("emu:x", "stm32l475xg", run_dir=tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        flasher.program(tmp_path / "none.elf")
    (tmp_path / "a.bin").write_bytes(b"\x00")
    with pytest.raises(UsageError, match="base address"):
        flasher.program(tmp_path / "a.bin")
    assert flasher._worker is None
