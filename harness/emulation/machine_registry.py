"""Records of running machines in the lab state folder, so other processes can find them.

One JSON file per machine, ``<state>/machines/<name>.json``, written when the machine has
started and removed when it stops. pyOCD's probe plugin and other test processes read them with
:func:`list_machines`, which ignores (and deletes) records whose owner or QEMU process is dead.

Keys (the probe plugin codes against them): ``name``, ``machine``, ``pid``, ``owner_pid``,
``gdb`` and ``qmp`` (``unix:/path`` or ``tcp:127.0.0.1:PORT``), ``console``
(``socket://127.0.0.1:PORT``), ``flash_file``, ``flash_base``, ``flash_size``, ``started``
(ISO 8601), ``network`` (``{"mode", "address", ...}``); for evidence also ``console_log`` and
``pcaps`` (one capture of the board's link per power-on, oldest first).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.emulation.process import pid_alive
from harness.errors import UsageError
from harness.state import StateDir

log = logging.getLogger(__name__)

RECORD_SUFFIX = ".json"


@dataclass(frozen=True)
class MachineRecord:
    name: str
    machine: str
    pid: int
    owner_pid: int
    gdb: str
    qmp: str
    console: str
    flash_file: str
    flash_base: int
    flash_size: int
    started: str
    network: dict[str, Any] = field(default_factory=dict)
    console_log: str = ""
    pcaps: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: Path | str = "<record>") -> MachineRecord:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            return cls(**known)
        except (KeyError, TypeError) as exc:
            raise UsageError(f"machine record {source} is malformed", actual=str(exc),
                             fix="delete the file; it is rewritten when the machine starts") from exc

    def is_live(self) -> bool:
        return pid_alive(self.owner_pid) and pid_alive(self.pid)


def record_path(state: StateDir, name: str) -> Path:
    return state.machines / f"{name}{RECORD_SUFFIX}"


def write_record(state: StateDir, record: MachineRecord) -> Path:
    """Write atomically (readers never see half a record)."""
    path = record_path(state, record.name)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(record.to_json())
    tmp.replace(path)
    return path


def remove_record(state: StateDir, name: str, pid: int | None = None) -> None:
    """Remove the record, only if it still describes QEMU process ``pid`` (when given)."""
    path = record_path(state, name)
    if pid is not None:
        current = read_record(path)
        if current is not None and current.pid != pid:
            return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def read_record(path: Path) -> MachineRecord | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("ignoring unreadable machine record %s: %s", path, exc)
        return None
    try:
        return MachineRecord.from_dict(data, path)
    except UsageError as exc:
        log.warning("ignoring %s", exc)
        return None


def list_machines(state: StateDir) -> list[MachineRecord]:
    """Live machines, sorted by name; records of dead owners or dead QEMU processes are deleted."""
    live = []
    for path in sorted(state.machines.glob(f"*{RECORD_SUFFIX}")):
        record = read_record(path)
        if record is None:
            continue
        if record.is_live():
            live.append(record)
        else:
            log.info("removing stale machine record %s (owner %d, qemu %d)", path, record.owner_pid,
                     record.pid)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return live


def reap_stale(state: StateDir) -> list[MachineRecord]:
    """Kill QEMU processes whose owner died (SIGKILL) and delete their records; return them."""
    reaped = []
    for path in sorted(state.machines.glob(f"*{RECORD_SUFFIX}")):
        record = read_record(path)
        if record is None or pid_alive(record.owner_pid):
            continue
        if pid_alive(record.pid) and _is_qemu(record.pid):
            log.warning("killing orphaned QEMU %d of machine %r (owner %d is gone)", record.pid,
                        record.name, record.owner_pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(record.pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        reaped.append(record)
    return reaped


def _is_qemu(pid: int) -> bool:
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return b"qemu-system" in argv0


def find_machine(state: StateDir, name: str) -> MachineRecord | None:
    for record in list_machines(state):
        if record.name == name:
            return record
    return None
