"""Fixtures for the simprobe integration tests: a banner image built with arm-none-eabi-gcc and a
QEMU mps2 machine started by the test itself (until the machine module is used here), recorded in
the lab state folder the way the machine module records it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.emulation.gdbremote import GdbRemote

REPO = Path(__file__).resolve().parents[3]
BANNER_SRC = REPO / "fixtures" / "test-images" / "banner"
FLASH_SIZE = 4 * 1024 * 1024


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


@pytest.fixture
def banner_builder(tmp_path: Path) -> Callable[[str], Path]:
    return lambda text: build_banner(tmp_path / "img" / str(abs(hash(text))), text)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Machine:
    """A QEMU process the test owns, with its machine record."""

    name: str
    state_dir: Path
    flash_file: Path
    gdb_path: Path
    console_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=Path)

    @property
    def gdb(self) -> str:
        return f"unix:{self.gdb_path}"

    @property
    def console(self) -> str:
        return f"socket://127.0.0.1:{self.console_port}"

    def start(self) -> None:
        """Power on: start QEMU halted, load the flash file through the gdbstub, reset, run."""
        self.console_port = _free_port()
        self.gdb_path.unlink(missing_ok=True)
        cmd = ["qemu-system-arm", "-M", "mps2-an385", "-S", "-display", "none", "-monitor", "none",
               "-gdb", f"unix:{self.gdb_path},server=on,wait=off",
               "-serial", f"tcp:127.0.0.1:{self.console_port},server=on,wait=off"]
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        with GdbRemote.connect(self.gdb, timeout=5.0) as gdb:
            gdb.write_memory(0, self.flash_file.read_bytes())
        record = {"name": self.name, "machine": "mps2-an385", "pid": self.proc.pid,
                  "owner_pid": os.getpid(), "gdb": self.gdb, "qmp": None, "console": self.console,
                  "flash_file": str(self.flash_file), "flash_base": 0, "flash_size": FLASH_SIZE,
                  "started": time.time(), "network": None}
        (self.state_dir / "machines").mkdir(parents=True, exist_ok=True)
        (self.state_dir / "machines" / f"{self.name}.json").write_text(json.dumps(record))

    def boot(self) -> None:
        """Reset so the core loads SP/PC from the written vector table, then run."""
        with GdbRemote.connect(self.gdb, timeout=5.0) as gdb:
            gdb.monitor("system_reset")
            gdb.cont()

    def stop(self) -> None:
        (self.state_dir / "machines" / f"{self.name}.json").unlink(missing_ok=True)
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


@pytest.fixture
def machine_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Machine]]:
    if shutil.which("qemu-system-arm") is None:
        pytest.skip("needs qemu-system-arm")
    state = tmp_path / "state"
    monkeypatch.setenv("HIL_STATE", str(state))
    made: list[Machine] = []

    def make(name: str) -> Machine:
        flash = state / f"{name}.flash"
        state.mkdir(parents=True, exist_ok=True)
        if not flash.exists():
            flash.write_bytes(b"\xff" * FLASH_SIZE)
        m = Machine(name, state, flash, Path(f"/tmp/hil-{os.getpid()}-{name}.gdb"), log=tmp_path / f"{name}.log")
        made.append(m)
        return m

    yield make
    for m in made:
        m.stop()
        m.gdb_path.unlink(missing_ok=True)
        assert m.proc is None or m.proc.poll() is not None, f"QEMU {m.name} still running"
