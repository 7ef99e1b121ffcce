"""pyOCD → emu probe → QEMU mps2-an385: flash a freshly built image, reset, read its banner;
power-cycle and read it again (the flash file kept it)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import serial
from pyocd.core.helpers import ConnectHelper
from pyocd.core.target import Target
from pyocd.flash.file_programmer import FileProgrammer

from harness.emulation.simprobe import catalog

from .conftest import build_banner

pytestmark = [pytest.mark.needs("qemu", "arm-gcc"), pytest.mark.timeout(120)]


def read_until(port: serial.SerialBase, wanted: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {wanted!r} on {port.port} within {timeout}s; saw {seen[-200:]!r}")
        seen += port.read(256)
    return seen


def open_session(uid: str, project_dir: Path):
    session = ConnectHelper.session_with_chosen_probe(
        blocking=False, return_first=False, unique_id=uid, no_config=True, project_dir=str(project_dir),
        options={"frequency": 1000000})
    assert session is not None, f"probe {uid} not found"
    return session


@pytest.mark.parametrize("kind", ["mps2-an385", "mps2-an386"])
def test_flash_banner_reset_and_power_cycle(kind: str, tmp_path: Path, machine_factory, emu_probe_class) -> None:
    elf = build_banner(tmp_path / "img", "banner from pyOCD v1")
    name = "qemu-" + kind.removeprefix("mps2-")
    target = kind.replace("-", "_")
    machine = machine_factory(name, kind)
    machine.start(run=False)  # erased flash: QEMU would lock up and exit if the CPU ran
    console = serial.serial_for_url(machine.console_url, timeout=0.1)
    entries = {e.uid: e for e in catalog.list_entries()}
    assert entries["emu:" + name].target == target

    session = open_session("emu:" + name, tmp_path)
    with session:
        assert session.options.get("target_override") == target  # named by the probe's board info
        assert session.target.selected_core.architecture is not None
        progress: list[float] = []
        FileProgrammer(session, progress=progress.append).program(str(elf))
        assert progress and progress[-1] == pytest.approx(1.0)
        image = elf.with_suffix(".bin").read_bytes()
        assert bytes(session.target.read_memory_block8(0, len(image))) == image
        session.target.reset_and_halt()
        assert session.target.get_state() == Target.State.HALTED
        assert session.target.read_core_register("pc") & ~1 == int.from_bytes(image[4:8], "little") & ~1
        session.target.reset()
    with console:
        read_until(console, b"banner from pyOCD v1", 10)
        # The flash file holds the image: a power-cycle boots it again.
        assert machine.flash_file.read_bytes()[: len(image)] == image
        machine.power_cycle(run=True)
        read_until(console, b"banner from pyOCD v1", 10)


def test_reflash_with_smart_flash_skips_unchanged(tmp_path: Path, machine_factory, emu_probe_class) -> None:
    v1 = build_banner(tmp_path / "v1", "image one")
    v2 = build_banner(tmp_path / "v2", "image two")
    machine = machine_factory("qemu-smart")
    machine.start(run=False)
    with serial.serial_for_url(machine.console_url, timeout=0.1) as console:
        for elf, text in ((v1, b"image one"), (v2, b"image two")):
            with open_session("emu:qemu-smart", tmp_path) as session:
                FileProgrammer(session, smart_flash=True).program(str(elf))
                session.target.reset()
            read_until(console, text, 10)
    flash = machine.flash_file.read_bytes()
    image = v2.with_suffix(".bin").read_bytes()
    assert flash[: len(image)] == image
    assert flash[0x1000:0x2000] == b"\xff" * 0x1000  # untouched sectors stay erased
