"""Fixtures for the reference firmware on emulated boards: builds, flash files, consoles."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.console import Console
from harness.emulation.flash_file import FlashFile
from harness.emulation.network import Attachment
from harness.emulation.process import pid_alive
from harness.emulation.qemu import Machine
from harness.firmware_build import IMAGE_STEM, build_reference
from harness.provisioning import PROVISIONING_ADDRESS
from harness.state import StateDir, resolve_state_dir

TEST_VERSION = "9.8.7"
TEST_BUILD_ID = "itest"


@pytest.fixture(scope="session")
def ref_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference firmware for mps2-an385 with the test publish on (built once per session)."""
    out = tmp_path_factory.mktemp("ref-build")
    return build_reference("mps2-an385", {"TEST_PUBLISH": 1, "VERSION": TEST_VERSION,
                                          "BUILD_ID": TEST_BUILD_ID}, None, out)


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    """A private lab state folder (machine records and name locks) for this test."""
    return resolve_state_dir(tmp_path / "state")


def write_flash(path: Path, image: bytes, sector: bytes | None) -> Path:
    """A flash file with the image at 0 and, when given, the provisioning sector at 0x003FF000."""
    flash = FlashFile(path)
    flash.erase()
    flash.program(0, image)
    if sector is not None:
        flash.program(PROVISIONING_ADDRESS, sector)
    return path


def image_bytes(build: Path) -> bytes:
    return (build / f"{IMAGE_STEM}.bin").read_bytes()


class Board:
    """A started machine with its console."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.console = Console(machine.console_url, machine.run_dir / f"{machine.name}-console-read.log",
                               name=f"{machine.name} console")


@contextmanager
def boot(name: str, run_dir: Path, image: bytes, sector: bytes | None, network: Attachment,
         state: StateDir, machine_type: str = "mps2-an385") -> Iterator[Board]:
    """Power on a machine from a fresh flash file; on exit stop it and prove QEMU is gone."""
    flash = write_flash(run_dir / f"{name}.flash", image, sector)
    machine = Machine(name, machine_type, flash_file=flash, run_dir=run_dir, network=network,
                      state=state)
    pid: int | None = None
    try:
        machine.start(run=True)
        pid = machine.pid
        board = Board(machine)
        try:
            yield board
        finally:
            board.console.close()
    finally:
        machine.stop()
        if pid is not None:
            assert not pid_alive(pid), f"QEMU pid {pid} still running after stop()"


