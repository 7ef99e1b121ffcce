"""Machine construction: plain arguments, clear errors, the flash file kept in sync."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.emulation.qemu import MACHINE_TYPES, Machine
from harness.errors import UsageError
from harness.state import StateDir


def test_supported_machines() -> None:
    assert sorted(MACHINE_TYPES.names()) == ["mps2-an385", "mps2-an386"]


def test_an_unknown_machine_names_the_board_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="'mps2-an505' for board 'b1'") as info:
        Machine("b1", "mps2-an505", flash_file=tmp_path / "f", run_dir=tmp_path, state=StateDir(tmp_path))
    assert info.value.fix and "qemu.machine" in info.value.fix


@pytest.mark.parametrize("name", ["", "a/b", ".hidden"])
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UsageError, match="bad machine name"):
        Machine(name, flash_file=tmp_path / "f", run_dir=tmp_path, state=StateDir(tmp_path))


def test_program_flash_updates_the_file_without_starting_anything(tmp_path: Path) -> None:
    m = Machine("b1", "mps2-an386", flash_file=tmp_path / "b1.flash", run_dir=tmp_path / "run",
                state=StateDir(tmp_path / "state"))
    m.program_flash(0x10, b"\x01\x02")
    assert m.flash_file.read_bytes()[0x0E:0x14] == b"\xff\xff\x01\x02\xff\xff"
    assert not m.running
    with pytest.raises(UsageError, match="not started"):
        _ = m.console_url
    m.stop()  # stopping a machine never started is harmless
