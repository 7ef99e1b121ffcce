"""The emulated debug port: a SW-DP with one AHB MEM-AP in front of a :class:`DebugSystem`.

pyOCD discovers a target through DP and AP registers (DPIDR, CTRL/STAT power-up, AP IDR, CSW, CFG,
BASE), then moves memory through TAR/DRW unless the probe offers a block memory interface (ours
does: :class:`MemoryPort`). TAR auto-increment wraps within 4 KiB, as pyOCD assumes.
"""

from __future__ import annotations

import struct
from typing import Protocol

from pyocd.core import exceptions
from pyocd.core.memory_interface import MemoryInterface

from .debugsystem import ROM_TABLE, DebugSystem

DPIDR_VALUE = 0x2BA01477  # ARM SW-DP v2 (ADIv5)
DP_IDR, DP_ABORT, DP_CTRL_STAT, DP_SELECT, DP_RDBUFF = 0x0, 0x0, 0x4, 0x8, 0xC
CSYSPWRUPREQ, CSYSPWRUPACK = 1 << 30, 1 << 31
CDBGPWRUPREQ, CDBGPWRUPACK = 1 << 28, 1 << 29

AP_CSW, AP_TAR, AP_DRW, AP_BD0, AP_CFG, AP_BASE, AP_IDR = 0x00, 0x04, 0x0C, 0x10, 0xF4, 0xF8, 0xFC
AHB_AP_IDR = 0x24770011
CSW_SIZE_MASK = 0x7
CSW_ADDRINC_MASK = 0x30
CSW_DEVICEEN = 1 << 6
CSW_FIXED = (1 << 24) | (1 << 25) | CSW_DEVICEEN  # HPROT data access, privileged; device enabled
WRAP = 0x1000
_SIZES = {0: 1, 1: 2, 2: 4}


class DebugAccessPort:
    """DP and AP register state; AP 0 is the MEM-AP, APs 1–3 read IDR 0 (absent)."""

    def __init__(self, system: DebugSystem) -> None:
        self.system = system
        self.ctrl_stat = 0
        self.select = 0
        self.csw = CSW_FIXED | 0x12  # 32-bit, single auto-increment
        self.tar = 0

    def read_dp(self, addr: int) -> int:
        if addr == DP_IDR:
            return DPIDR_VALUE
        if addr == DP_CTRL_STAT:
            value = self.ctrl_stat
            if value & CSYSPWRUPREQ:
                value |= CSYSPWRUPACK
            if value & CDBGPWRUPREQ:
                value |= CDBGPWRUPACK
            return value
        return 0  # SELECT is write-only, RDBUFF holds nothing we need

    def write_dp(self, addr: int, value: int) -> None:
        if addr == DP_CTRL_STAT:
            self.ctrl_stat = value & ~(CSYSPWRUPACK | CDBGPWRUPACK)
        elif addr == DP_SELECT:
            self.select = value

    def read_ap(self, addr: int) -> int:
        apsel, reg = (addr >> 24) & 0xFF, addr & 0xFC
        if apsel != 0:
            return 0
        if reg == AP_IDR:
            return AHB_AP_IDR
        if reg == AP_BASE:
            return ROM_TABLE | 0x3
        if reg == AP_CFG:
            return 0
        if reg == AP_CSW:
            return self.csw
        if reg == AP_TAR:
            return self.tar
        if reg == AP_DRW:
            return self._transfer(None)
        if AP_BD0 <= reg < AP_BD0 + 0x10:
            return self._word((self.tar & ~0xF) | (reg - AP_BD0))
        return 0

    def write_ap(self, addr: int, value: int) -> None:
        apsel, reg = (addr >> 24) & 0xFF, addr & 0xFC
        if apsel != 0:
            return
        if reg == AP_CSW:
            size = value & CSW_SIZE_MASK
            self.csw = (value & ~CSW_SIZE_MASK & 0xFF7FFF7F) | CSW_FIXED | (size if size in _SIZES else 2)
        elif reg == AP_TAR:
            self.tar = value & 0xFFFFFFFF
        elif reg == AP_DRW:
            self._transfer(value)
        elif AP_BD0 <= reg < AP_BD0 + 0x10:
            self.system.write((self.tar & ~0xF) | (reg - AP_BD0), struct.pack("<I", value))

    def _word(self, addr: int) -> int:
        return int(struct.unpack("<I", self.system.read(addr, 4))[0])

    def _transfer(self, value: int | None) -> int:
        """One DRW access at TAR with byte-lane placement, then auto-increment (4 KiB wrap)."""
        size = _SIZES[self.csw & CSW_SIZE_MASK]
        addr = self.tar
        lane = addr & 3
        result = 0
        if value is None:
            data = self.system.read(addr, size)
            result = int.from_bytes(data, "little") << (8 * lane)
        else:
            self.system.write(addr, ((value >> (8 * lane)) & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))
        if self.csw & CSW_ADDRINC_MASK:
            self.tar = (addr & ~(WRAP - 1)) | ((addr + size) & (WRAP - 1))
        return result & 0xFFFFFFFF


class TransferGuard(Protocol):
    def before_transfer(self, nbytes: int) -> None: ...


class MemoryPort(MemoryInterface):
    """Block memory access straight to the debug system (what ``get_memory_interface_for_ap`` returns)."""

    def __init__(self, system: DebugSystem, guard: TransferGuard) -> None:
        self._system = system
        self._guard = guard  # counts bytes, applies injected link faults

    def _check(self, size: int) -> None:
        self._guard.before_transfer(size)

    def write_memory(self, addr: int, data: int, transfer_size: int = 32, **attrs: object) -> None:
        nbytes = transfer_size // 8
        self._check(nbytes)
        self._system.write(addr, (data & ((1 << transfer_size) - 1)).to_bytes(nbytes, "little"))

    def read_memory(self, addr: int, transfer_size: int = 32, now: bool = True, **attrs: object):  # type: ignore[override]
        nbytes = transfer_size // 8
        try:
            self._check(nbytes)
            value: int | None = int.from_bytes(self._system.read(addr, nbytes), "little")
            error: Exception | None = None
        except exceptions.Error as exc:
            if now:
                raise
            value, error = None, exc
        if now:
            return value

        def result() -> int:
            if error is not None:
                raise error
            assert value is not None
            return value

        return result

    def write_memory_block32(self, addr: int, data, **attrs: object) -> None:  # type: ignore[override]
        self._check(len(data) * 4)
        self._system.write(addr, struct.pack(f"<{len(data)}I", *(w & 0xFFFFFFFF for w in data)))

    def read_memory_block32(self, addr: int, size: int, **attrs: object):  # type: ignore[override]
        self._check(size * 4)
        return list(struct.unpack(f"<{size}I", self._system.read(addr, size * 4)))

    def write_memory_block8(self, addr: int, data, **attrs: object) -> None:  # type: ignore[override]
        self._check(len(data))
        self._system.write(addr, bytes(data))

    def read_memory_block8(self, addr: int, size: int, **attrs: object):  # type: ignore[override]
        self._check(size)
        return list(self._system.read(addr, size))
