"""Chip models of the lab's real targets, through the unmodified pyOCD and through harness.flash:
real memory maps and flash algorithms, ELF/HEX/BIN, smart flash, and injected faults surfacing as
the exceptions a real probe raises."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest
from pyocd.core import exceptions
from pyocd.core.helpers import ConnectHelper
from pyocd.flash.file_programmer import FileProgrammer

from harness.flash import Flasher, FlashFailed, ProbeNotFound, VerifyFailed
from harness.state import StateDir

from .conftest import build_image

pytestmark = [pytest.mark.needs("arm-gcc"), pytest.mark.timeout(180)]

TARGETS = {"stm32l475xg": 0x08000000, "stm32f412xg": 0x08000000, "mimxrt1060": 0x60000000}
PLUGIN = ("harness.emulation.simprobe.plugin:register",)


@pytest.fixture
def chips(state_dir: StateDir, monkeypatch: pytest.MonkeyPatch) -> StateDir:
    monkeypatch.setenv("HIL_SIMPROBE_CHIPS", ",".join(TARGETS))
    return state_dir


def set_faults(state: StateDir, uid: str, **faults: object) -> None:
    folder = state.root / "simprobe" / "faults"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{uid.removeprefix('emu:')}.json").write_text(json.dumps(faults))


def flash_contents(state: StateDir, uid: str) -> bytes:
    return (state.root / "simprobe" / "flash" / f"{uid.removeprefix('emu:')}.bin").read_bytes()


def session_for(uid: str, target: str, tmp_path: Path):
    session = ConnectHelper.session_with_chosen_probe(
        blocking=False, return_first=False, unique_id=uid, target_override=target, no_config=True,
        project_dir=str(tmp_path))
    assert session is not None, f"no probe {uid}"
    return session


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_program_elf_hex_bin_with_verify_and_smart_flash(target: str, chips: StateDir, tmp_path: Path,
                                                         emu_probe_class: type) -> None:
    base = TARGETS[target]
    uid = f"emu:chip-{target}-0"
    rng = random.Random(target)
    images = {fmt: build_image(tmp_path / fmt, base, rng.randbytes(150_000), f"{target} {fmt}")
              for fmt in ("elf", "hex", "bin")}
    with Flasher(uid, target, run_dir=tmp_path, plugins=PLUGIN, timeout=120) as flasher:
        for fmt, elf in images.items():
            path = elf.with_suffix("." + fmt)
            seen: list[float] = []
            result = flasher.program(path, base=base if fmt == "bin" else None, progress=seen.append)
            image = elf.with_suffix(".bin").read_bytes()
            assert result.verified and result.pages_written > 0 and result.bytes_total == len(image)
            assert seen and seen[-1] == pytest.approx(1.0)
            # The chip (its persisted flash, seen by any process) holds exactly the image.
            assert flash_contents(chips, uid)[: len(image)] == image
        again = flasher.program(images["bin"].with_suffix(".bin"), base=base)
        assert again.pages_written == 0 and again.sectors_erased == 0
        assert again.pages_skipped == result.pages_written + result.pages_skipped

        # Change one byte: only that sector is erased and reprogrammed.
        changed = bytearray(images["bin"].with_suffix(".bin").read_bytes())
        changed[100_000] ^= 0xFF
        patched = tmp_path / "patched.bin"
        patched.write_bytes(changed)
        partial = flasher.program(patched, base=base)
        assert partial.sectors_erased == 1
        assert 0 < partial.pages_written < again.pages_skipped


def test_pyocd_api_reset_and_separate_processes_share_the_chip(chips: StateDir, tmp_path: Path,
                                                               emu_probe_class: type) -> None:
    uid, target = "emu:chip-stm32l475xg-0", "stm32l475xg"
    elf = build_image(tmp_path / "img", 0x08000000, os.urandom(5000))
    with session_for(uid, target, tmp_path) as session:
        FileProgrammer(session).program(str(elf))
        session.target.reset_and_halt()
        image = elf.with_suffix(".bin").read_bytes()
        assert session.target.read_core_register("pc") == int.from_bytes(image[4:8], "little") & ~1
        assert session.target.read_core_register("sp") == int.from_bytes(image[0:4], "little")
    # A new session (as a later process would) reads the same flash back.
    with session_for(uid, target, tmp_path) as session:
        assert bytes(session.target.read_memory_block8(0x08000000, len(image))) == image


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_algorithm_failures_raise_flash_exceptions(target: str, chips: StateDir, tmp_path: Path,
                                                   emu_probe_class: type) -> None:
    base, uid = TARGETS[target], f"emu:chip-{target}-0"
    first = build_image(tmp_path / "a", base, b"\x11" * 70_000)
    second = build_image(tmp_path / "b", base, b"\x22" * 70_000)
    with session_for(uid, target, tmp_path) as session:
        FileProgrammer(session).program(str(first))
    set_faults(chips, uid, fail_erase_sector=base + 0x100)
    with session_for(uid, target, tmp_path) as session, pytest.raises(exceptions.FlashEraseFailure) as info:
        FileProgrammer(session).program(str(second))
    assert info.value.result_code == 1
    set_faults(chips, uid, fail_program_sector=base)
    with session_for(uid, target, tmp_path) as session, pytest.raises(exceptions.FlashProgramFailure):
        FileProgrammer(session).program(str(second))


def test_unplugged_mid_transfer_raises_probe_disconnected(chips: StateDir, tmp_path: Path,
                                                          emu_probe_class: type) -> None:
    uid, target = "emu:chip-stm32f412xg-0", "stm32f412xg"
    elf = build_image(tmp_path / "img", 0x08000000, os.urandom(100_000))
    set_faults(chips, uid, unplug_after_bytes=50_000)
    with session_for(uid, target, tmp_path) as session, pytest.raises(exceptions.ProbeDisconnected):
        FileProgrammer(session).program(str(elf))
    # harness.flash reports it as a failed probe operation (the board's recovery ladder retries).
    with pytest.raises(FlashFailed, match="ProbeDisconnected") as info:
        Flasher(uid, target, run_dir=tmp_path, plugins=PLUGIN, timeout=60).program(elf)
    assert "unplugged" in str(info.value.actual)


def test_target_not_responding(chips: StateDir, tmp_path: Path, emu_probe_class: type) -> None:
    uid = "emu:chip-mimxrt1060-0"
    set_faults(chips, uid, not_responding=True)
    session = session_for(uid, "mimxrt1060", tmp_path)
    with pytest.raises(exceptions.Error, match="Target not detected") as info:
        session.open()
    assert isinstance(info.value.__cause__, exceptions.TransferTimeoutError)
    session.close()


def test_stuck_bit_is_caught_by_read_back_verify(chips: StateDir, tmp_path: Path, emu_probe_class: type) -> None:
    uid, target = "emu:chip-stm32l475xg-0", "stm32l475xg"
    elf = build_image(tmp_path / "img", 0x08000000, b"\xff" * 8192)
    image = elf.with_suffix(".bin").read_bytes()
    addr = 0x08000000 + len(image) - 100  # inside the 0xFF blob: bit 5 wants to stay 1
    set_faults(chips, uid, stuck_bits=[{"address": hex(addr), "bit": 5, "value": 0}])
    with session_for(uid, target, tmp_path) as session:
        FileProgrammer(session).program(str(elf))  # pyOCD itself notices nothing
    with pytest.raises(VerifyFailed, match=f"0x{addr:08x}") as info:
        Flasher(uid, target, run_dir=tmp_path, plugins=PLUGIN, timeout=60).program(elf)
    assert info.value.expected.startswith("0xff") and info.value.actual == "0xdf"


def test_slow_link_and_hung_probe_meet_the_outside_deadline(chips: StateDir, tmp_path: Path,
                                                            emu_probe_class: type) -> None:
    uid, target = "emu:chip-stm32f412xg-0", "stm32f412xg"
    elf = build_image(tmp_path / "img", 0x08000000, os.urandom(20_000))
    set_faults(chips, uid, delay_per_transfer=0.002)
    t0 = time.monotonic()
    with session_for(uid, target, tmp_path) as session:
        opened = time.monotonic() - t0
        FileProgrammer(session).program(str(elf))
    assert opened > 0.05, "a slow link makes even the connection slow"

    set_faults(chips, uid, hang_after_bytes=4096)
    earlier = set(our_flash_workers())  # workers of other tests' Flashers may still be alive
    flasher = Flasher(uid, target, run_dir=tmp_path, plugins=PLUGIN, timeout=4)
    t0 = time.monotonic()
    with pytest.raises(FlashFailed, match="program through emu:chip-stm32f412xg-0 did not finish in 4s"):
        flasher.program(elf)
    assert time.monotonic() - t0 < 10
    assert flasher._worker is None  # the hung worker was killed, not kept
    assert not set(our_flash_workers()) - earlier, "a flash worker outlived its deadline"


def our_flash_workers() -> list[int]:
    """Live worker processes of harness.flash whose parent is this test process."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            ppid = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"worker_main" in cmdline and ppid == os.getpid():
            found.append(int(proc.name))
    return found


def test_unknown_probe_id_is_reported_not_waited_for(chips: StateDir, tmp_path: Path) -> None:
    elf = build_image(tmp_path / "img", 0x08000000, b"\x00" * 16)
    t0 = time.monotonic()
    with pytest.raises(ProbeNotFound, match="emu:chip-stm32l475xg-7"):
        Flasher("emu:chip-stm32l475xg-7", "stm32l475xg", run_dir=tmp_path, timeout=30).program(elf)
    assert time.monotonic() - t0 < 20


def test_chip_erase(chips: StateDir, tmp_path: Path) -> None:
    uid, target = "emu:chip-stm32l475xg-0", "stm32l475xg"
    big = build_image(tmp_path / "big", 0x08000000, b"\x00" * 60_000)
    small = build_image(tmp_path / "small", 0x08000000, b"\x00" * 100)
    with Flasher(uid, target, run_dir=tmp_path, timeout=60, erase="chip") as flasher:
        flasher.program(big)
        result = flasher.program(small)
    assert result.verified
    flash = flash_contents(chips, uid)
    size = len(small.with_suffix(".bin").read_bytes())
    assert flash[size:60_000] == b"\xff" * (60_000 - size)  # the chip erase cleared the rest


def test_a_probe_serves_one_process_at_a_time(chips: StateDir, tmp_path: Path) -> None:
    uid, target = "emu:chip-stm32f412xg-0", "stm32f412xg"
    with session_for(uid, target, tmp_path):
        other = session_for(uid, target, tmp_path)
        with pytest.raises(exceptions.ProbeError, match="in use"):
            other.open()
        other.close()
    with session_for(uid, target, tmp_path) as again:  # released on close
        assert again.target is not None
