"""`hil flash`, `hil reset`, `hil power` and `hil console` on an emulated board, as a user runs
them: one path (pyOCD through the emu: probe), the board's flash kept between commands as a real
board keeps it, and nothing left running after each command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.firmware_build import build_reference
from tests.processes import processes_mentioning

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.needs("root", "qemu", "arm-gcc", "mosquitto", "dnsmasq", "chrony", "ip"),
              pytest.mark.timeout(600)]


def hil(lab: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", "--lab", str(lab), *args], cwd=REPO, input=stdin,
                          capture_output=True, text=True, timeout=300)


def test_flash_reset_power_and_console(tmp_path: Path) -> None:
    lab = tmp_path / "lab"
    lab.mkdir()
    for name in ("qemu-an385.yaml", "lab.yaml"):
        shutil.copy(REPO / "boards" / name, lab / name)
    build = build_reference("mps2-an385", {}, "fast", tmp_path / "build")

    first = hil(lab, "flash", "qemu-an385", str(build))
    assert first.returncode == 0, first.stderr[-2000:]
    assert "programmed and verified" in first.stdout
    again = hil(lab, "flash", "qemu-an385", str(build))
    assert again.returncode == 0 and "already holds" in again.stdout, again.stdout + again.stderr[-2000:]
    forced = hil(lab, "flash", "qemu-an385", str(build), "--force")
    assert forced.returncode == 0 and "programmed and verified" in forced.stdout

    # the board boots what the earlier command programmed (its flash is kept in the lab state)
    console = hil(lab, "console", "qemu-an385", stdin="echo typed-through-hil-console\n")
    assert console.returncode == 0, console.stderr[-2000:]
    assert "HIL-REF" in console.stdout and "typed-through-hil-console" in console.stdout

    reset = hil(lab, "reset", "qemu-an385")
    assert reset.returncode == 0 and "reset (system)" in reset.stdout, reset.stderr[-2000:]
    cycle = hil(lab, "power", "qemu-an385", "cycle")
    assert cycle.returncode == 0 and "power cycle" in cycle.stdout, cycle.stderr[-2000:]
    runs = [e for e in (lab / ".hil-state" / "runs").iterdir()]
    assert len(runs) == 6 and all((r / "run-log.jsonl").exists() for r in runs)
    assert not processes_mentioning(str(tmp_path)), "a command left a process running"
    assert os.path.exists(lab / ".hil-state" / "flash" / "qemu-an385.flash")
