"""Which emulated probes exist: running QEMU machines and configured chip models.

- Machines: ``<state>/machines/<name>.json`` records written by the machine module (records whose
  QEMU pid is dead are skipped) → probe ``emu:<name>``, target ``mps2_an385``/``mps2_an386``.
- Chip models: ``$HIL_SIMPROBE_CHIPS="stm32l475xg,stm32f412xg"`` and/or ``<state>/simprobe/chips.json``
  (``{"chips": [{"target": "stm32l4s5vitx", "pack": "packs/Keil.STM32L4xx_DFP.pack", "id": "..."}]}``)
  → probes ``emu:chip-<target>-<n>`` (n counts chips of one target from 0).

Listing reads files only; nothing is opened, so pyOCD's enumeration stays cheap.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from harness.emulation.machine_registry import MachineRecord, list_machines
from harness.errors import ConfigError
from harness.state import StateDir, resolve_state_dir

log = logging.getLogger(__name__)

PREFIX = "emu:"
ENV_CHIPS = "HIL_SIMPROBE_CHIPS"
MACHINE_TARGETS = {"mps2-an385": "mps2_an385", "mps2-an386": "mps2_an386"}


@dataclass(frozen=True)
class ChipSpec:
    """One configured chip model."""

    id: str  # without the prefix, e.g. "chip-stm32l475xg-0"
    target: str
    pack: Path | None = None


@dataclass(frozen=True)
class ProbeEntry:
    uid: str  # with the prefix
    target: str
    description: str
    machine: MachineRecord | None = None
    chip: ChipSpec | None = None


def simprobe_dir(state_root: Path | None = None) -> Path:
    root = state_root or resolve_state_dir().root
    return root / "simprobe"


    return True


def running_machines(state_root: Path | None = None) -> list[MachineRecord]:
    """The lab's live machines that have an emulated probe target (records of dead ones are dropped)."""
    state = StateDir(state_root) if state_root is not None else resolve_state_dir()
    out = []
    for record in list_machines(state):
        if record.machine in MACHINE_TARGETS:
            out.append(record)
        else:
            log.debug("machine %s (%s) has no emulated probe target", record.name, record.machine)
    return out


def configured_chips(state_root: Path | None = None) -> list[ChipSpec]:
    wanted: list[tuple[str, Path | None, str | None]] = []
    env = os.environ.get(ENV_CHIPS, "")
    wanted += [(name.strip().lower(), None, None) for name in env.split(",") if name.strip()]
    path = simprobe_dir(state_root) / "chips.json"
    if path.exists():
        try:
            raw = json.loads(path.read_text())
            for item in raw.get("chips", []):
                pack = Path(item["pack"]) if item.get("pack") else None
                if pack is not None and not pack.is_absolute():
                    pack = (path.parent / pack).resolve()
                wanted.append((str(item["target"]).lower(), pack, item.get("id")))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"bad chip model list {path}: {exc!r}",
                              expected='{"chips": [{"target": "stm32l475xg", "pack": null}]}') from exc
    counts: dict[str, int] = {}
    chips = []
    for target, pack, explicit_id in wanted:
        n = counts.get(target, 0)
        counts[target] = n + 1
        chips.append(ChipSpec(id=explicit_id or f"chip-{target}-{n}", target=target, pack=pack))
    return chips


def list_entries(state_root: Path | None = None) -> list[ProbeEntry]:
    entries = [ProbeEntry(uid=PREFIX + m.name, target=MACHINE_TARGETS[m.machine],
                          description=f"QEMU {m.machine} '{m.name}' (gdbstub {m.gdb})", machine=m)
               for m in running_machines(state_root)]
    entries += [ProbeEntry(uid=PREFIX + c.id, target=c.target, description=f"chip model {c.target}", chip=c)
                for c in configured_chips(state_root)]
    return entries


def find_entry(unique_id: str, state_root: Path | None = None) -> ProbeEntry | None:
    """Exact match on the id, with or without the ``emu:`` prefix (case-insensitive)."""
    wanted = unique_id.lower()
    if not wanted.startswith(PREFIX):
        wanted = PREFIX + wanted
    for entry in list_entries(state_root):
        if entry.uid.lower() == wanted:
            return entry
    return None
