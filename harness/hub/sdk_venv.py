"""A venv of its own for the Azure IoT Python device SDK (``azure-iot-device`` 2.14), which the
interoperability tests drive as a subprocess: it pins paho-mqtt below 2, and the harness needs 2.

The venv lives in the harness's cache (``$HIL_CACHE``, else ``$XDG_CACHE_HOME/hil``, else
``~/.cache/hil``) under ``sdk/azure-iot-device-<version>/``; it is made once per machine (CI's
bootstrap makes it: ``python -m harness.hub.sdk_venv``), under a file lock, and counts as made
only when its stamp file is written, so a half-made one is made again. Making it needs PyPI.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from filelock import FileLock

from harness.broker.plugin_build import cache_dir
from harness.errors import InfrastructureError

SDK_VERSION = "2.14.0"
REQUIREMENT = f"azure-iot-device=={SDK_VERSION}"
STAMP = ".hil-ready"
INSTALL_TIMEOUT = 600.0


def sdk_venv_dir(cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "sdk" / f"azure-iot-device-{SDK_VERSION}"


def sdk_python(cache: Path | None = None) -> Path | None:
    """The SDK venv's python when it is made, else None (nothing is made here)."""
    folder = sdk_venv_dir(cache)
    return folder / "bin" / "python" if (folder / STAMP).is_file() else None


def ensure_sdk_python(cache: Path | None = None) -> Path:
    """The SDK venv's python, making the venv first where it is missing or half made."""
    folder = sdk_venv_dir(cache)
    ready = sdk_python(cache)
    if ready is not None:
        return ready
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.with_name(folder.name + ".lock")), timeout=INSTALL_TIMEOUT + 60):
        ready = sdk_python(cache)
        if ready is not None:
            return ready
        shutil.rmtree(folder, ignore_errors=True)  # a half-made one (killed, or no network then)
        _run([sys.executable, "-m", "venv", str(folder)], "make a venv")
        _run([str(folder / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
              REQUIREMENT], f"pip install {REQUIREMENT} (it needs PyPI)")
        (folder / STAMP).write_text(REQUIREMENT + "\n")
    return folder / "bin" / "python"


def _run(argv: list[str], what: str) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise InfrastructureError(f"cannot {what}: it took over {INSTALL_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        raise InfrastructureError(f"cannot {what} (exit {done.returncode})",
                                  actual=(done.stderr or done.stdout).strip()[-2000:] or "no output",
                                  fix="is PyPI reachable? CI's bootstrap makes this venv once per machine")


if __name__ == "__main__":  # pragma: no cover - CI's bootstrap
    print(ensure_sdk_python())
