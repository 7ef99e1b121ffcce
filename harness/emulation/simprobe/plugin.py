"""pyOCD probe plugin entry point (group ``pyocd.probe``, name ``emu``).

Plugins load while ``import pyocd`` is still running, so this module imports nothing from pyOCD
beyond the plugin base class; the probe class is imported by :meth:`EmuProbePlugin.load`.
"""

from __future__ import annotations

from typing import Any

from pyocd.core.plugin import Plugin


class EmuProbePlugin(Plugin):
    """Emulated probes: QEMU machines of the lab and chip models of the lab's real targets."""

    def load(self) -> Any:
        from .mps2 import register_targets
        from .probe import EmuProbe

        register_targets()
        return EmuProbe

    @property
    def name(self) -> str:
        return "emu"

    @property
    def description(self) -> str:
        return "Emulated probes for QEMU machines and chip models (hil-harness)"


def register() -> type:
    """Register the probe class at run time (without the entry point installed)."""
    from pyocd.probe.aggregator import PROBE_CLASSES

    cls = EmuProbePlugin().load()
    PROBE_CLASSES["emu"] = cls
    return cls
