"""Probe discovery from the lab state folder and fault plans (no processes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pyocd.core import exceptions

from harness.emulation.simprobe import catalog
from harness.emulation.simprobe.faults import FaultPlan, LinkGuard
from harness.errors import ConfigError


def write_machine(root: Path, name: str, pid: int) -> None:
    (root / "machines").mkdir(parents=True, exist_ok=True)
    (root / "machines" / f"{name}.json").write_text(json.dumps({
        "name": name, "machine": "mps2-an385", "pid": pid, "owner_pid": pid, "gdb": "unix:/nonexistent",
        "qmp": "unix:/nonexistent", "console": "socket://127.0.0.1:1", "flash_file": str(root / "f"),
        "flash_base": 0, "flash_size": 4194304, "started": "now", "network": {}}))


def test_machines_and_chips_become_probes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIL_SIMPROBE_CHIPS", "stm32l475xg, stm32f412xg,stm32l475xg")
    write_machine(tmp_path, "qemu-an385", os.getpid())
    write_machine(tmp_path, "gone", 2**22 + 12345)  # no such pid: skipped
    uids = {e.uid: e.target for e in catalog.list_entries(tmp_path)}
    assert uids == {"emu:qemu-an385": "mps2_an385", "emu:chip-stm32l475xg-0": "stm32l475xg",
                    "emu:chip-stm32f412xg-0": "stm32f412xg", "emu:chip-stm32l475xg-1": "stm32l475xg"}
    found = catalog.find_entry("CHIP-stm32f412xg-0", tmp_path)
    assert found is not None and found.uid == "emu:chip-stm32f412xg-0"
    assert catalog.find_entry("emu:chip", tmp_path) is None  # exact ids only (pyOCD does substrings)


def test_chip_list_file_and_its_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HIL_SIMPROBE_CHIPS", raising=False)
    folder = tmp_path / "simprobe"
    folder.mkdir()
    (folder / "chips.json").write_text(json.dumps({"chips": [{"target": "stm32l4s5vitx", "pack": "p.pack"}]}))
    (chip,) = catalog.configured_chips(tmp_path)
    assert chip.id == "chip-stm32l4s5vitx-0" and chip.pack == (folder / "p.pack").resolve()
    (folder / "chips.json").write_text(json.dumps({"chips": [{"pack": "x"}]}))
    with pytest.raises(ConfigError, match=r"chips\.json"):
        catalog.configured_chips(tmp_path)


def test_fault_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "chip-x-0.json"
    path.write_text(json.dumps({"unplug_after": 5}))
    with pytest.raises(ConfigError, match=r"chip-x-0\.json"):
        FaultPlan.load(path)
    assert FaultPlan.load(tmp_path / "missing.json") == FaultPlan()


def test_link_guard_unplugs_after_n_bytes_and_stays_unplugged() -> None:
    guard = LinkGuard(FaultPlan(unplug_after_bytes=100), "emu:x")
    guard.before_transfer(96)
    with pytest.raises(exceptions.ProbeDisconnected):
        guard.before_transfer(8)
    with pytest.raises(exceptions.ProbeDisconnected):
        guard.before_transfer(1)


def test_link_guard_silent_target_and_hang_release() -> None:
    with pytest.raises(exceptions.TransferTimeoutError):
        LinkGuard(FaultPlan(not_responding=True), "emu:x").check_dp()
    guard = LinkGuard(FaultPlan(hang_after_bytes=0, hang_seconds=30), "emu:x")
    guard.release()  # as close() does: the hung call returns at once
    with pytest.raises(exceptions.TransferTimeoutError, match="stopped answering"):
        guard.before_transfer(4)
