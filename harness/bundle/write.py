"""Writing a bundle from a bench run (``hil capture``): a folder, or a ``.tar.gz`` of one."""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import yaml

from harness.bundle.manifest import BUNDLE_FILE, FORMAT, BundleManifest
from harness.config import validate
from harness.errors import UsageError
from harness.firmware import FirmwareBuild

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


def is_archive(out: Path) -> bool:
    return out.name.endswith(ARCHIVE_SUFFIXES)


def check_out(out: Path) -> Path:
    """Refuse, before anything is brought up, an ``--out`` that holds something already."""
    if str(out) == "":
        raise UsageError("--out: an empty name was given for the bundle", fix="give a folder or a .tar.gz to write")
    if os.path.lexists(out) and not (out.is_dir() and not out.is_symlink() and not any(out.iterdir())):
        raise UsageError(f"--out {out}: exists already; a bundle is never written over another file",
                         fix="give a new path (a folder, or a name ending .tar.gz)")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"--out {out}: {parent} is not a folder", fix="give a path in an existing folder")
    return out


def write_bundle(out: Path, *, build: FirmwareBuild, board_type: str, device_id: str, device_address: str,
                 pcap: Path, archive: Path, console: Path | None, replay_from: float | None,
                 notes: str | None) -> Path:
    """Copy the run's evidence into a bundle at ``out`` (the files first, bundle.yaml last)."""
    m = build.manifest
    data: dict[str, Any] = {
        "bundle": FORMAT,
        "firmware": {"version": m.version, "build_id": m.build.build_id or "dev",
                     "module_version": m.security_module.version, "sha256": m.sha256},
        "board": {"type": board_type},
        "device": {"id": device_id, "address": device_address},
        "capture": "traffic.pcap",
        "telemetry": {"path": "telemetry.bin", "format": "archive"},
        "recorded": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    if console is not None:
        data["console"] = "console.log"
    if replay_from is not None:
        data["replay_from"] = round(replay_from, 6)
    if notes:
        data["notes"] = notes
    validate(BundleManifest, data, f"the bundle written to {out}")  # what we write, we can read
    if not is_archive(out):
        return _fill(out, data, pcap, archive, console)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        folder = _fill(Path(tmp) / out.name.removesuffix(".tar.gz").removesuffix(".tgz"), data, pcap, archive,
                       console)
        partial = out.with_name(f".{out.name}.partial")
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(folder, arcname=folder.name)
        os.replace(partial, out)
    return out


def _fill(folder: Path, data: dict[str, Any], pcap: Path, archive: Path, console: Path | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pcap, folder / "traffic.pcap")
    shutil.copyfile(archive, folder / "telemetry.bin")
    if console is not None:
        shutil.copyfile(console, folder / "console.log")
    (folder / BUNDLE_FILE).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return folder
