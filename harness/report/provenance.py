"""Provenance: what was certified and with what — the firmware as read back from the board, the
board and its probe, and the versions of the harness, pyOCD, the broker and QEMU."""

from __future__ import annotations

import functools
import importlib.metadata
import shutil
import subprocess
from typing import TYPE_CHECKING

import pytest

from harness.report.plugin import CERTIFICATE_KEY, PROVENANCE_KEY

if TYPE_CHECKING:
    from harness.board.board import Board


@functools.cache
def version_of(argv: tuple[str, ...]) -> str:
    if shutil.which(argv[0]) is None:
        return "not installed"
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0][:120] if text else "unknown"


def _package(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def board_provenance(board: Board) -> dict[str, str]:
    build = board.build
    assert build is not None
    m = build.manifest
    flashed = [r for r in board.flash_results if r.image.endswith(m.image) or r.skipped]
    broker = board.broker
    return {
        "board": board.name, "kind": board.config.kind, "probe": board.config.probe.id,
        "target": board.config.probe.target, "device": board.device_id,
        "firmware": f"{m.name} {m.version}", "firmware_sha256": m.sha256,
        "firmware_read_back": "verified" if any(r.verified or r.skipped for r in flashed) else "not verified",
        "security_module": f"{m.security_module.id} {m.security_module.version} (mti {m.security_module.mti})",
        "known_defects_declared": ", ".join(m.behaviour.known_defects) or "none",
        "not_for_release": "; ".join(m.build.bench_only()) or "no",
        "harness": _package("hil-harness"), "pyocd": _package("pyocd"),
        "broker": f"{broker.kind} {version_of(('mosquitto', '-h')) if broker and broker.kind == 'mosquitto' else ''}"
        .strip() if broker is not None else "none",
        "run_id": board.run_id,
        **{k: str(v) for k, v in board.parts.details.items()},  # what the kind says of itself (QEMU's version)
    }


def record_provenance(config: pytest.Config, board: Board) -> None:
    """Kept for the board's clause reports to carry (:mod:`harness.report.plugin`), and written at
    once where this process writes the certificate."""
    if board.build is None:
        return
    m = board.build.manifest
    entry = {"board": board_provenance(board),
             "firmware": {"name": m.name, "version": m.version, "sha256": m.sha256, "image": m.image}}
    kept = config.stash.setdefault(PROVENANCE_KEY, {})
    kept[board.name] = entry
    cert = config.stash.get(CERTIFICATE_KEY, None)
    if cert is not None:
        cert.provenance[board.name] = entry["board"]
        cert.firmware.update(entry["firmware"])
        cert.write()
