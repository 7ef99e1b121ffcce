"""The lab state folder: what outlives one process on a host.

Layout under the root::

    leases/       one lock file and one holder record per board (harness.lease)
    quarantine/   one record per quarantined board
    machines/     one record per running emulated machine (harness.emulation.qemu)
    runs/<id>/    everything one run produces, unless --report-dir says otherwise

Resolution order: an explicit path, the folder a worker process was handed
(:func:`use_state_root`), ``$HIL_STATE``, the lab's ``state_dir`` (boards/lab.yaml),
else ``<lab dir>/.hil-state``. Every process on a host that looks at the same lab finds the same
folder, which is what lets pyOCD's own command line find running machines. A state folder that
is a file, lies under a file, or cannot be written is a ``ConfigError`` that says where its path
came from.
"""

from __future__ import annotations

import datetime as _dt
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError
from harness.userfiles import check_folder_path, explain

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
    return lab_dir_source(None)[0]


def lab_dir_source(explicit: str | Path | None) -> tuple[Path, str]:
    """The lab folder and where its name came from, for messages ('' when given explicitly)."""
    if explicit is not None:
        if str(explicit) == "":
            raise ConfigError("--lab: an empty name was given for the lab folder", fix="give the lab folder's path")
        return Path(explicit), ""
    env = os.environ.get(ENV_LAB)
    if env:
        return Path(env), f" (from {ENV_LAB})"
    return Path("boards"), f" (the default: no --lab and no {ENV_LAB})"


@dataclass(frozen=True)
class StateDir:
    """Paths inside the lab state folder; folders are made on first use. ``source`` says where the
    path came from (e.g. ' (from HIL_STATE)'), for messages."""

    root: Path
    source: str = ""

    def _mkdir(self, path: Path, *, exist_ok: bool = True) -> Path:
        try:
            path.mkdir(parents=True, exist_ok=exist_ok)
        except FileExistsError:
            if path.is_dir():  # only without exist_ok: a run id used twice
                raise
            raise ConfigError(f"state folder {self.root}{self.source}: {path} is a file, not a folder",
                              fix="move the file away; the harness keeps its own folders here") from None
        except OSError as exc:
            message, fix = explain(path, exc, what="state folder", action="write")
            reason = message.removeprefix(f"{path}: ")
            raise ConfigError(f"state folder {self.root}{self.source}: cannot make {path.relative_to(self.root)}/ in "
                              f"it: {reason}", fix=fix) from None
        return path

    def _sub(self, name: str) -> Path:
        return self._mkdir(self.root / name)

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
        return self._mkdir(self.runs / rid, exist_ok=False)


def new_run_id() -> str:
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def resolve_state_dir(explicit: Path | str | None = None, lab_state_dir: Path | None = None,
                      lab_dir: Path | None = None) -> StateDir:
    """Find the state folder (see the module docstring for the order); refuse one that cannot be."""
    if explicit is None and _process_root is not None:
        return StateDir(_process_root, " (handed to this process)")
    env = os.environ.get(ENV_STATE)
    if explicit is not None:
        path, source = Path(explicit), ""
    elif env:
        path, source = Path(env), f" (from {ENV_STATE})"
    elif lab_state_dir is not None:
        path, source = lab_state_dir, " (state_dir of the lab)"
    else:
        path, source = (lab_dir or default_lab_dir()) / DEFAULT_STATE_NAME, ""
    return StateDir(check_state_dir(path, source).resolve(), source)


def check_state_dir(path: Path, source: str = "") -> Path:
    """``path`` if it can be the state folder: a folder, or nothing yet with no file on its way."""
    return check_folder_path(path, what="state folder", error=ConfigError, source=source)
