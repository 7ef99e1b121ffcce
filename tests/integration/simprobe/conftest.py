"""Fixtures for the simprobe integration tests: a banner image built with arm-none-eabi-gcc, the
``emu`` probe class registered at run time, and QEMU machines from :mod:`harness.emulation.qemu`
recorded in a private lab state folder."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.emulation.qemu import Machine
from harness.state import StateDir

REPO = Path(__file__).resolve().parents[3]
BANNER_SRC = REPO / "fixtures" / "test-images" / "banner"


def build_banner(out_dir: Path, text: str, cpu: str = "cortex-m3") -> Path:
    """Compile the banner image printing ``text``; returns the ELF (a .bin sits beside it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    elf = out_dir / "banner.elf"
    subprocess.run(["arm-none-eabi-gcc", f"-mcpu={cpu}", "-mthumb", "-Os", "-nostdlib",
                    "-T", str(BANNER_SRC / "banner.ld"), f'-DBANNER="{text}"',
                    str(BANNER_SRC / "banner.c"), "-o", str(elf)], check=True, timeout=60)
    subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", str(elf), str(elf.with_suffix(".bin"))],
                   check=True, timeout=30)
    return elf


def build_image(out_dir: Path, base: int, blob: bytes, text: str = "chip image") -> Path:
    """An ELF linked at ``base`` carrying the banner code and ``blob`` (so it spans many sectors);
    ``.hex`` and ``.bin`` of the same image sit beside it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "blob.bin").write_bytes(blob)
    (out_dir / "blob.S").write_text('.section .rodata.blob\n.global blob\nblob:\n.incbin "blob.bin"\n')
    (out_dir / "image.ld").write_text(
        (BANNER_SRC / "banner.ld").read_text().replace("ORIGIN = 0x00000000", f"ORIGIN = 0x{base:08x}"))
    elf = out_dir / "image.elf"
    subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-Os", "-nostdlib",
                    "-T", str(out_dir / "image.ld"), f'-DBANNER="{text}"', "-Wl,--undefined=blob",
                    str(BANNER_SRC / "banner.c"), str(out_dir / "blob.S"), "-o", str(elf)],
                   check=True, timeout=60, cwd=out_dir)
    for fmt, suffix in (("binary", ".bin"), ("ihex", ".hex")):
        subprocess.run(["arm-none-eabi-objcopy", "-O", fmt, str(elf), str(elf.with_suffix(suffix))],
                       check=True, timeout=30)
    return elf


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StateDir:
    root = tmp_path / "state"
    monkeypatch.setenv("HIL_STATE", str(root))
    monkeypatch.delenv("HIL_SIMPROBE_CHIPS", raising=False)
    return StateDir(root)


@pytest.fixture
def emu_probe_class() -> type:
    from harness.emulation.simprobe.plugin import register

    return register()


@pytest.fixture
def machine_factory(tmp_path: Path, state_dir: StateDir) -> Iterator[Callable[[str], Machine]]:
    made: list[Machine] = []

    def make(name: str, kind: str = "mps2-an385") -> Machine:
        run_dir = tmp_path / "run"
        run_dir.mkdir(exist_ok=True)
        machine = Machine(name, kind, flash_file=run_dir / f"{name}.flash", run_dir=run_dir,
                          state=state_dir)
        made.append(machine)
        return machine

    yield make
    for machine in made:
        pid = machine._proc.pid if machine._proc is not None else None
        machine.stop()
        if pid is not None:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
