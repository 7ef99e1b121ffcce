"""The ``AzureIoTSecurity`` schema: ``AzureIoTSecurity.fbs`` is its single written form.

``generate(out_dir)`` runs ``flatc --python`` on it, producing what is committed under
``harness/telemetry/generated/``; ``accessors`` reads a buffer through that generated code.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from harness.errors import InfrastructureError

SCHEMA_FILE = Path(__file__).with_name("AzureIoTSecurity.fbs")
GENERATED_DIR = Path(__file__).parent.parent / "generated"
FLATC_TIMEOUT_S = 60.0


def generate(out_dir: Path, flatc: str = "flatc") -> Path:
    """Run ``flatc --python`` on the schema into ``out_dir``; returns the ``AzureIoTSecurity`` package dir."""
    exe = shutil.which(flatc)
    if exe is None:
        raise InfrastructureError(
            f"{flatc!r} is not on PATH", fix="install flatc 2.0.8 (Debian package flatbuffers-compiler)"
        )
    cmd = [exe, "--python", "-o", str(out_dir), str(SCHEMA_FILE)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=FLATC_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise InfrastructureError(f"flatc did not finish within {FLATC_TIMEOUT_S:.0f} s: {' '.join(cmd)}") from exc
    if done.returncode != 0:
        raise InfrastructureError(
            f"flatc failed (exit {done.returncode}) on {SCHEMA_FILE.name}",
            actual=(done.stderr or done.stdout).strip(),
        )
    return out_dir / "AzureIoTSecurity"
