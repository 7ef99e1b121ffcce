"""pyOCD's own command line finds the emulated probes through the installed ``pyocd.probe`` entry
point: ``pyocd list`` shows running machines and chip models, ``pyocd load`` programs both."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from harness.state import StateDir

from .conftest import build_banner, build_image

PYOCD = str(Path(sys.executable).parent / "pyocd")


def pyocd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYOCD, *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy())


@pytest.mark.needs("qemu", "arm-gcc")
@pytest.mark.timeout(120)
def test_list_and_load_on_both_back_ends(tmp_path: Path, machine_factory, state_dir: StateDir,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIL_SIMPROBE_CHIPS", "stm32f412xg")
    machine = machine_factory("qemu-cli")
    machine.start(run=False)
    listing = pyocd("list")
    assert listing.returncode == 0, listing.stderr
    assert "emu:qemu-cli" in listing.stdout and "emu:chip-stm32f412xg-0" in listing.stdout

    elf = build_banner(tmp_path / "banner", "loaded by pyocd load")
    with serial.serial_for_url(machine.console_url, timeout=0.1) as console:
        load = pyocd("load", "--uid", "emu:qemu-cli", str(elf))  # target type from the probe
        assert load.returncode == 0, load.stderr
        reset = pyocd("cmd", "--uid", "emu:qemu-cli", "-c", "reset")
        assert reset.returncode == 0, reset.stderr
        seen, deadline = b"", time.monotonic() + 10
        while b"loaded by pyocd load" not in seen:
            assert time.monotonic() < deadline, f"no banner; console said {seen!r}"
            seen += console.read(256)

    image = build_image(tmp_path / "chip", 0x08000000, os.urandom(30_000))
    load = pyocd("load", "--uid", "emu:chip-stm32f412xg-0", "--target", "stm32f412xg", str(image.with_suffix(".hex")))
    assert load.returncode == 0, load.stderr
    flash = (state_dir.root / "simprobe" / "flash" / "chip-stm32f412xg-0.bin").read_bytes()
    data = image.with_suffix(".bin").read_bytes()
    assert flash[: len(data)] == data

    # (without --no-wait pyOCD would wait forever for the probe to appear)
    missing = pyocd("load", "--no-wait", "--uid", "emu:chip-nothing-0", "--target", "stm32f412xg", str(image),
                    timeout=30)
    assert missing.returncode != 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("first", ["harness.emulation.simprobe.plugin", "harness.emulation.simprobe.probe", "pyocd"])
def test_any_import_order_loads_the_plugin(first: str) -> None:
    """pyOCD loads entry points while 'import pyocd' runs: importing our modules first must not
    leave it a half-made plugin module (a circular import)."""
    code = (f"import {first}\nfrom pyocd.probe.aggregator import PROBE_CLASSES\n"
            "print(PROBE_CLASSES['emu'].__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "EmuProbe"
