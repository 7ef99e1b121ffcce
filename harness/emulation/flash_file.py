"""The emulated board's flash, kept as a file: what was last programmed survives power-off.

The file mirrors code memory 0x00000000–0x003FFFFF (4 MiB, erased = 0xFF). The last 4 KiB sector
(0x003FF000) is the provisioning block the harness writes. At every power-on the machine loads the
whole file into the machine's code memory (which is RAM in QEMU).
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.errors import UsageError

FLASH_BASE = 0x00000000
FLASH_SIZE = 4 * 1024 * 1024
SECTOR_SIZE = 4096
PROVISIONING_OFFSET = FLASH_SIZE - SECTOR_SIZE
ERASED = 0xFF


class FlashFile:
    """A flash image file of fixed size; created erased when missing."""

    def __init__(self, path: Path, size: int = FLASH_SIZE, base: int = FLASH_BASE) -> None:
        self.path = Path(path)
        self.size = size
        self.base = base
        if not self.path.exists():
            self.erase()
        actual = self.path.stat().st_size
        if actual != size:
            raise UsageError(f"flash file {self.path} has {actual} bytes",
                             expected=f"{size} bytes (the board's flash size)", actual=str(actual),
                             fix="delete it to start from erased flash, or give the right flash size")

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise UsageError(f"flash access at offset {offset:#x}, {length} bytes, is outside the flash",
                             expected=f"0 ≤ offset, offset + length ≤ {self.size:#x}",
                             actual=f"{offset:#x}..{offset + length:#x}")

    def erase(self, offset: int = 0, length: int | None = None) -> None:
        """Set a range (default: all) to 0xFF."""
        length = self.size - offset if length is None else length
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_bytes(bytes([ERASED]) * self.size)
            return
        self.program(offset, bytes([ERASED]) * length)

    def program(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` (bytes from the flash base) and flush it to disk."""
        self._check_range(offset, len(data))
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, data, offset)
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self, offset: int = 0, length: int | None = None) -> bytes:
        length = self.size - offset if length is None else length
        self._check_range(offset, length)
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    def used_ranges(self, block: int = SECTOR_SIZE) -> list[tuple[int, bytes]]:
        """(offset, data) runs of sectors that are not fully erased, merged when adjacent."""
        image = self.read()
        erased = bytes([ERASED]) * block
        runs: list[tuple[int, bytes]] = []
        start: int | None = None
        for off in range(0, self.size, block):
            used = image[off:off + block] != erased
            if used and start is None:
                start = off
            if not used and start is not None:
                runs.append((start, image[start:off]))
                start = None
        if start is not None:
            runs.append((start, image[start:]))
        return runs
