"""Fixtures for the reference firmware on emulated boards: builds, and boards booted through the
harness's one path (RunSession, Board, pyOCD through the emu: probe) with a provisioning block
of the test's choosing (a good one, a damaged one, none)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.board.board import Board
from harness.emulation.process import pid_alive
from harness.firmware import FirmwareBuild, load_build
from harness.firmware_build import build_reference
from harness.provisioning import PROVISIONING_ADDRESS, SECTOR_SIZE
from harness.session import RunSession

FIRMWARE = Path(__file__).resolve().parents[3] / "fixtures" / "firmware"
TEST_VERSION = "9.8.7"
TEST_BUILD_ID = "itest"
ERASED_BLOCK = b"\xff" * SECTOR_SIZE


@pytest.fixture(scope="session")
def ref_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference firmware for mps2-an385 with the test publish on (built once per session)."""
    out = tmp_path_factory.mktemp("ref-build")
    return build_reference("mps2-an385", {"TEST_PUBLISH": 1, "VERSION": TEST_VERSION,
                                          "BUILD_ID": TEST_BUILD_ID}, None, out)


@contextmanager
def boot(session: RunSession, name: str, build: Path | FirmwareBuild, sector: bytes | None) -> Iterator[Board]:
    """Flash ``build`` into the session's board ``name`` through pyOCD, write ``sector`` as its
    provisioning block (None: erased), reset it; on exit close it and prove its QEMU is gone."""
    board = session.board(name)
    machine = board.parts.power.machine  # type: ignore[attr-defined]
    try:
        board.flash(build if isinstance(build, FirmwareBuild) else load_build(build))
        board.write_block(sector if sector is not None else ERASED_BLOCK, PROVISIONING_ADDRESS, what="provision")
        board.reset()
        yield board
    finally:
        pid = machine.pid if machine.running else None
        session.boards.pop(name, None)
        board.close()
        assert pid is None or not pid_alive(pid), f"QEMU pid {pid} still running after the board closed"


def host_tool(tmp_path_factory: pytest.TempPathFactory, target: str, name: str, timeout: float = 60) -> Path:
    """A tool of the firmware's built for this host (``make TARGET``: host-tools, host-sas)."""
    build = tmp_path_factory.mktemp("host")
    subprocess.run(["make", "-s", "-C", str(FIRMWARE), target, f"BUILD_DIR={build}"],
                   check=True, timeout=timeout, capture_output=True)
    tool = build / "host" / name
    assert tool.is_file()
    return tool
