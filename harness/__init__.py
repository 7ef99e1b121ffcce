"""Hardware-in-the-loop test harness for Azure RTOS firmware with the IoT security module."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hil-harness")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
