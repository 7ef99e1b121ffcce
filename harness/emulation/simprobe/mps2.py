"""pyOCD target types for QEMU's mps2 boards, programmed without an on-chip flash algorithm.

Code memory (0x0–0x3FFFFF) is RAM in QEMU; the flash class below gives it flash semantics for
pyOCD's loader (4 KiB sectors) and writes every change both into the machine and into its flash
file through the probe's QEMU bridge, so a power-cycle keeps the image.
"""

from __future__ import annotations

from typing import Any

from pyocd.core import exceptions
from pyocd.core.memory_map import FlashRegion, MemoryMap, RamRegion
from pyocd.coresight.coresight_target import CoreSightTarget
from pyocd.flash.flash import Flash

SECTOR = 0x1000
FLASH_SIZE = 0x400000


class EmulatedCodeFlash(Flash):
    """Programs code memory through the probe's back end; no algorithm runs on the core."""

    def __init__(self, target: Any) -> None:
        super().__init__(target, None)
        self.is_valid = True

    def _bridge(self) -> Any:
        probe = self.target.session.probe
        backend = getattr(probe, "backend", None)
        if backend is None or not hasattr(backend, "flash_write"):
            raise exceptions.FlashFailure("this flash is programmable only through an emulated machine's probe")
        return backend

    def init(self, operation: Any, address: int | None = None, clock: int = 0, reset: bool = True) -> None:
        self._active_operation = operation

    def uninit(self) -> None:
        self._active_operation = None

    def cleanup(self) -> None:
        self._active_operation = None

    def erase_sector(self, address: int) -> None:
        start = address - address % SECTOR
        self._bridge().flash_write(start, b"\xff" * SECTOR)

    def program_page(self, address: int, bytes: Any) -> None:
        self._bridge().flash_write(address, bytearray(bytes))

    @property
    def is_erase_all_supported(self) -> bool:
        return True

    def erase_all(self) -> None:
        bridge = self._bridge()
        for start in range(0, FLASH_SIZE, 0x10000):
            bridge.flash_write(start, b"\xff" * 0x10000)


def _memory_map() -> MemoryMap:
    return MemoryMap(
        FlashRegion(name="code", start=0x0, length=FLASH_SIZE, sector_size=SECTOR, page_size=SECTOR,
                    is_boot_memory=True, flash_class=EmulatedCodeFlash, erased_byte_value=0xFF),
        RamRegion(name="sram", start=0x20000000, length=0x400000),
    )


class MPS2_AN385(CoreSightTarget):
    """QEMU mps2-an385 (Cortex-M3)."""

    VENDOR = "Arm"
    MEMORY_MAP = _memory_map()

    def __init__(self, session: Any) -> None:
        super().__init__(session, self.MEMORY_MAP)


class MPS2_AN386(CoreSightTarget):
    """QEMU mps2-an386 (Cortex-M4)."""

    VENDOR = "Arm"
    MEMORY_MAP = _memory_map()

    def __init__(self, session: Any) -> None:
        super().__init__(session, self.MEMORY_MAP)


TARGETS = {"mps2_an385": MPS2_AN385, "mps2_an386": MPS2_AN386}


def register_targets() -> None:
    """Add the mps2 target types to pyOCD's table (idempotent)."""
    from pyocd.target import TARGET

    for name, cls in TARGETS.items():
        TARGET.setdefault(name, cls)
