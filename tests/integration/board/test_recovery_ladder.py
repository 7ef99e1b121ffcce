"""The recovery ladder against chip models with injected faults: each fault is recovered by the
rung meant for it (recorded in the run log), a persistent fault quarantines the board, a hung
probe is ended at its deadline, and an image that would overwrite a kept bootloader is refused
before anything is erased."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from harness.board.errors import BoardBroken
from harness.errors import UsageError
from harness.flash import Flasher, FlashFailed
from harness.lease import Lease, quarantined
from harness.state import StateDir

from ..simprobe.conftest import build_image
from .conftest import FLASH_BASE, TARGET, UID, set_faults, write_build

pytestmark = [pytest.mark.needs("arm-gcc"), pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_image(tmp_path_factory.mktemp("img"), FLASH_BASE, os.urandom(40_000), "ladder image")


def rungs_of(board, what: str = "flash") -> list[tuple[str, str]]:
    return [(e["rung"], e["outcome"]) for e in board.log.entries(board.name) if e["event"] == "rung"
            and e["what"] == what]


def flash_contents(state: StateDir) -> bytes:
    return (state.root / "simprobe" / "flash" / f"{UID.removeprefix('emu:')}.bin").read_bytes()


CASES = {
    # fault -> the rung that recovers it
    "wedged until a hardware reset": ({"fail_erase_sector": FLASH_BASE, "until_hardware_reset": True},
                                      "reset-reconnect"),
    "debug pins off while the firmware runs": ({"not_responding": True, "unless_under_reset": True},
                                               "connect-under-reset"),
    "smart flash erratum": ({"analyzer_wedges": True}, "erase-program"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_fault_is_recovered_by_its_rung(case: str, chip_board, chip_state: StateDir, elf: Path,
                                             tmp_path: Path) -> None:
    faults, rung = CASES[case]
    board = chip_board()
    build = write_build(tmp_path / "build", elf)
    if faults.get("analyzer_wedges"):
        board.flash(build, force=True)  # smart flash needs something in flash to analyse
        other = build_image(tmp_path / "other", FLASH_BASE, os.urandom(40_000), "another image")
        build = write_build(tmp_path / "build2", other)
        board.log.path.unlink()
    set_faults(chip_state, UID, **faults)
    # forced (no read-back session first), except where the fault needs smart flash's analyzer
    result = board.flash(build, force=not faults.get("analyzer_wedges"))
    assert result.verified and not result.skipped
    climbed = rungs_of(board)
    assert climbed[-1] == (rung, "ok"), climbed
    assert all(outcome == "failed" for _, outcome in climbed[:-1])
    image = build.image_path.with_suffix(".bin") if build.image_path.with_suffix(".bin").exists() else None
    assert image is None or flash_contents(chip_state).startswith(image.read_bytes())
    assert quarantined(chip_state, board.name) is None


def test_transient_fault_is_recovered_by_a_retry(chip_board, chip_state: StateDir, elf: Path,
                                                 tmp_path: Path) -> None:
    board = chip_board()
    set_faults(chip_state, UID, unplug_after_bytes=2000, sessions=1)
    board.flash(write_build(tmp_path / "build", elf), force=True)
    assert rungs_of(board) == [("attempt", "failed"), ("retry", "ok")]


def test_power_cycle_rung_runs_the_board_files_power_command(chip_board, chip_state: StateDir, elf: Path,
                                                             tmp_path: Path) -> None:
    fault = set_faults(chip_state, UID, not_responding=True)
    # The board's power switch: cutting power is what clears this chip's fault.
    board = chip_board(power={"kind": "command", "on_command": ["true"], "off_command": ["rm", "-f", str(fault)]})
    board.parts.power.off_time = 0.0
    board.flash(write_build(tmp_path / "build", elf), force=True)
    climbed = rungs_of(board)
    assert climbed[-1] == ("power-cycle", "ok") and len(climbed) == 6, climbed


def test_a_persistent_fault_quarantines_the_board(chip_board, chip_state: StateDir, elf: Path,
                                                  tmp_path: Path) -> None:
    board = chip_board()
    stuck = FLASH_BASE + 0x100
    set_faults(chip_state, UID, stuck_bits=[{"address": hex(stuck), "bit": 0, "value": 0}])
    build = write_build(tmp_path / "build", build_image(tmp_path / "ones", FLASH_BASE, b"\xff" * 4096, "ones"))
    with pytest.raises(BoardBroken, match="every rung"):
        board.flash(build)
    assert [r for r, _ in rungs_of(board)] == ["attempt", "retry", "reset-reconnect", "connect-under-reset",
                                               "erase-program", "power-cycle"]
    q = quarantined(chip_state, board.name)
    assert q is not None and "0x08000100" in q.reason and q.evidence
    # Later runs skip it until it is cleared.
    with pytest.raises(Exception, match="quarantined"):
        Lease(chip_state, board.name, "a later run").acquire()
    with pytest.raises(BoardBroken, match="broken for this run"):
        board.flash(build)


def test_keep_below_refuses_an_image_that_reaches_the_bootloader_before_erasing(chip_board, chip_state: StateDir,
                                                                                elf: Path, tmp_path: Path) -> None:
    board = chip_board(probe={"keep_below": FLASH_BASE + 0xC000})
    before = flash_contents(chip_state) if (chip_state.root / "simprobe" / "flash").exists() else None
    with pytest.raises(UsageError, match="below 0x0800c000"):
        board.flash(write_build(tmp_path / "build", elf))
    assert rungs_of(board) == []  # refused before any rung, nothing erased
    after = flash_contents(chip_state) if (chip_state.root / "simprobe" / "flash").exists() else None
    assert after == before
    above = build_image(tmp_path / "app", FLASH_BASE + 0xC000, os.urandom(1000), "application")
    result = board.flash(write_build(tmp_path / "app-build", above))
    assert result.ranges[0][0] == FLASH_BASE + 0xC000


def test_second_flash_of_the_same_image_is_skipped_by_read_back(chip_board, elf: Path, tmp_path: Path) -> None:
    board = chip_board()
    build = write_build(tmp_path / "build", elf)
    first = board.flash(build)
    again = board.flash(build)
    forced = board.flash(build, force=True)
    assert first.pages_written > 0 and again.skipped and not forced.skipped


def test_a_hung_probe_is_ended_within_half_a_second_of_its_deadline(chip_state: StateDir, elf: Path,
                                                                    tmp_path: Path) -> None:
    set_faults(chip_state, UID, hang_after_bytes=4096)
    flasher = Flasher(UID, TARGET, run_dir=tmp_path, state_dir=chip_state.root, timeout=3)
    t0 = time.monotonic()
    with pytest.raises(FlashFailed, match="did not finish in 3s"):
        flasher.program(elf)
    late = time.monotonic() - t0 - 3
    assert late < 0.5, f"ended {late:.2f} s after the deadline"
    assert flasher._worker is None


def test_a_relative_run_folder_recovers_like_an_absolute_one(chip_board, chip_state: StateDir, elf: Path,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    board = chip_board(run_dir=Path("relative-run"))
    set_faults(chip_state, UID, unplug_after_bytes=2000, sessions=1)
    board.flash(write_build(tmp_path / "build", elf), force=True)
    assert rungs_of(board) == [("attempt", "failed"), ("retry", "ok")]
    assert (tmp_path / "relative-run" / f"probe-{UID.replace(':', '_')}.log").exists()
