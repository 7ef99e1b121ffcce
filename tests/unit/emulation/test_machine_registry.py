"""Machine records in the lab state folder: round trip, stale records dropped."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from harness.emulation.machine_registry import (
    MachineRecord,
    find_machine,
    list_machines,
    record_path,
    remove_record,
    write_record,
)
from harness.state import StateDir

NO_SUCH_PID = 2**22 + 1  # above Linux's largest pid_max: never a live process

KEYS = {"name", "machine", "pid", "owner_pid", "gdb", "qmp", "console", "flash_file", "flash_base",
        "flash_size", "started", "network"}


def _record(name: str, pid: int = 0, owner: int = 0) -> MachineRecord:
    return MachineRecord(name=name, machine="mps2-an385", pid=pid or os.getpid(),
                         owner_pid=owner or os.getpid(), gdb="unix:/x/gdb", qmp="unix:/x/qmp",
                         console="socket://127.0.0.1:1234", flash_file="/x/f.bin", flash_base=0,
                         flash_size=4194304, started="2026-01-01T00:00:00+00:00",
                         network={"mode": "tap", "address": "10.231.1.101"})


def test_record_keys_are_the_agreed_ones(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    path = write_record(state, _record("b1"))
    assert path == state.machines / "b1.json"
    assert set(json.loads(path.read_text())) == KEYS | {"console_log", "pcaps"}


def test_live_records_are_listed_and_found(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    write_record(state, _record("b2"))
    write_record(state, _record("b1"))
    assert [r.name for r in list_machines(state)] == ["b1", "b2"]
    found = find_machine(state, "b2")
    assert found is not None and found.network["address"] == "10.231.1.101"
    assert find_machine(state, "b3") is None


def test_records_with_a_dead_owner_or_qemu_are_dropped(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    write_record(state, _record("dead-owner", owner=NO_SUCH_PID))
    write_record(state, _record("dead-qemu", pid=NO_SUCH_PID))
    write_record(state, _record("live"))
    assert [r.name for r in list_machines(state)] == ["live"]
    assert not record_path(state, "dead-owner").exists()
    assert not record_path(state, "dead-qemu").exists()


def test_malformed_records_are_ignored(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    (state.machines / "junk.json").write_text("{not json")
    data = dataclasses.asdict(_record("partial"))
    del data["gdb"]
    (state.machines / "partial.json").write_text(json.dumps(data))
    assert list_machines(state) == []


def test_remove_only_the_record_of_the_given_qemu(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    write_record(state, _record("b1"))
    remove_record(state, "b1", pid=NO_SUCH_PID)  # a newer QEMU owns the name now: keep it
    assert record_path(state, "b1").exists()
    remove_record(state, "b1", pid=os.getpid())
    assert not record_path(state, "b1").exists()
