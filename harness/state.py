"""The lab state folder: what outlives one process on a host.

Layout under the root::

    leases/       one lock file and one holder record per board (harness.lease)
    quarantine/   one record per quarantined board
    machines/     one record per running emulated machine (harness.emulation.qemu)
    runs/<id>/    everything one run produces, unless --report-dir says otherwise

Resolution order: an explicit path, the folder a worker process was handed
(:func:`use_state_root`), ``$HIL_STATE``, the lab's ``state_dir`` (boards/lab.yaml),
else ``<lab dir>/.hil-state``. Every process on a host that looks at the same lab finds the same
folder, which is what lets pyOCD's own command line find running machines.
"""

from __future__ import annotations

import datetime as _dt
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

ENV_STATE = "HIL_STATE"
ENV_LAB = "HIL_LAB"
DEFAULT_STATE_NAME = ".hil-state"

_process_root: Path | None = None


def use_state_root(root: Path | None) -> None:
    """Make ``root`` this process's state folder when no explicit one is given (for a worker
    process handed the folder as an argument, such as the pyOCD worker); None forgets it."""
    global _process_root
    _process_root = Path(root).resolve() if root is not None else None


def default_lab_dir() -> Path:
    """The lab folder: ``$HIL_LAB`` if set, else ``./boards``."""
    env = os.environ.get(ENV_LAB)
    return Path(env) if env else Path("boards")


@dataclass(frozen=True)
class StateDir:
    """Paths inside the lab state folder; folders are made on first use."""

    root: Path

    def _sub(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def leases(self) -> Path:
        return self._sub("leases")

    @property
    def quarantine(self) -> Path:
        return self._sub("quarantine")

    @property
    def machines(self) -> Path:
        return self._sub("machines")

    @property
    def runs(self) -> Path:
        return self._sub("runs")

    def new_run_dir(self, run_id: str | None = None) -> Path:
        """Make ``runs/<run id>/`` and return it; the id is time-ordered and unique."""
        rid = run_id or new_run_id()
        path = self.runs / rid
        path.mkdir(parents=True, exist_ok=False)
        return path


def new_run_id() -> str:
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def resolve_state_dir(explicit: Path | str | None = None, lab_state_dir: Path | None = None,
                      lab_dir: Path | None = None) -> StateDir:
    """Find the state folder (see the module docstring for the order)."""
    if explicit is not None:
        return StateDir(Path(explicit).resolve())
    if _process_root is not None:
        return StateDir(_process_root)
    env = os.environ.get(ENV_STATE)
    if env:
        return StateDir(Path(env).resolve())
    if lab_state_dir is not None:
        return StateDir(lab_state_dir.resolve())
    return StateDir(((lab_dir or default_lab_dir()) / DEFAULT_STATE_NAME).resolve())
