"""A chip model: a lab target's memory map, NOR flash and flash algorithm, performed in Python.

The model takes the memory map and flash algorithm of a pyOCD target type (built in, or from a
local CMSIS pack) — the same data pyOCD uses for the real part. pyOCD loads the algorithm into RAM
and calls it by setting PC at an entry point and resuming; when the core is resumed at one of the
algorithm's known entry points (Init, UnInit, EraseSector, ProgramPage, EraseChip, and pyOCD's CRC
analyzer), the model performs the operation in Python, sets R0 and stops on the return breakpoint,
as the real algorithm does. Flash has NOR semantics: programming only clears bits, erasing sets a
sector to 0xFF. Flash contents persist in a file, so separate processes see the same chip.
"""

from __future__ import annotations

import binascii
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pyocd.core import exceptions
from pyocd.core.memory_map import FlashRegion, MemoryMap, MemoryType

from .debugsystem import (
    ARM_DESIGNER,
    CORTEX_M4F,
    CORTEX_M7,
    NXP_DESIGNER,
    ST_DESIGNER,
    CoreBackend,
    CpuProfile,
)
from .faults import FaultPlan

log = logging.getLogger(__name__)

PAGE = 0x1000
XPSR_THUMB = 1 << 24


@dataclass(frozen=True)
class ChipIdentity:
    cpu: CpuProfile
    rom_designer: int
    rom_part: int


# ROM table identities of the lab's parts (ST's packs check the designer id).
IDENTITIES: dict[str, ChipIdentity] = {
    "stm32l475": ChipIdentity(CORTEX_M4F, ST_DESIGNER, 0x415),
    "stm32l4s5": ChipIdentity(CORTEX_M4F, ST_DESIGNER, 0x470),
    "stm32f412": ChipIdentity(CORTEX_M4F, ST_DESIGNER, 0x441),
    "mimxrt106": ChipIdentity(CORTEX_M7, NXP_DESIGNER, 0x88C),
}
DEFAULT_IDENTITY = ChipIdentity(CORTEX_M4F, ARM_DESIGNER, 0x4C4)


def identity_for(target: str) -> ChipIdentity:
    for prefix, ident in IDENTITIES.items():
        if target.startswith(prefix):
            return ident
    return DEFAULT_IDENTITY


def load_memory_map(target: str, pack: Path | None = None) -> MemoryMap:
    """The target's memory map with flash algorithms, as pyOCD builds it for a session."""
    from pyocd.target import TARGET, normalise_target_type_name

    if pack is None:
        cls = TARGET.get(target)
        if cls is None:
            raise exceptions.TargetSupportError(f"no built-in target type '{target}' (give a pack)")
        memory_map = getattr(cls, "MEMORY_MAP", None) or getattr(cls, "memoryMap", None)
        if memory_map is None:
            raise exceptions.TargetSupportError(f"target type '{target}' has no static memory map")
        return memory_map.clone()
    from pyocd.target.pack.cmsis_pack import CmsisPack
    from pyocd.target.pack.flm_region_builder import FlmFlashRegionBuilder

    devices = [d for d in CmsisPack(str(pack)).devices if normalise_target_type_name(d.part_number) == target]
    if not devices:
        raise exceptions.TargetSupportError(f"pack {pack} has no device '{target}'")
    memory_map = devices[0].memory_map.clone()
    # Finalise FLM regions exactly as a pyOCD session would, so the algorithm lands at the same place.
    builder = FlmFlashRegionBuilder.__new__(FlmFlashRegionBuilder)
    builder._memory_map = memory_map  # type: ignore[attr-defined]
    builder._target = None  # type: ignore[attr-defined]
    builder._session = SimpleNamespace(options={"debug.log_flm_info": False},  # type: ignore[attr-defined]
                                       find_user_file=lambda _a, paths: paths[0])
    for region in list(memory_map.iter_matching_regions(type=MemoryType.FLASH)):
        builder.finalise_region(region)
    return memory_map


class FlashArray:
    """All flash regions of a chip in one file-backed byte array (erased = 0xFF)."""

    def __init__(self, regions: list[FlashRegion], path: Path) -> None:
        self.path = path
        self.spans: list[tuple[int, int, int]] = []  # (start, end, offset in the array)
        offset = 0
        for region in sorted(regions, key=lambda r: r.start):
            self.spans.append((region.start, region.end + 1, offset))
            offset += region.length
        self.size = offset
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.stat().st_size != offset:
            path.write_bytes(b"\xff" * offset)
        self.data = bytearray(path.read_bytes())

    def locate(self, addr: int) -> tuple[int, int] | None:
        """(offset in the array, bytes to the end of that span) for an address, or None."""
        for start, end, offset in self.spans:
            if start <= addr < end:
                return offset + addr - start, end - addr
        return None

    def persist(self, offset: int, length: int) -> None:
        with self.path.open("r+b") as f:
            f.seek(offset)
            f.write(self.data[offset: offset + length])


class ChipModel(CoreBackend):
    """A chip with RAM, NOR flash and a core that runs only flash algorithms."""

    def __init__(self, target: str, flash_file: Path, faults: FaultPlan | None = None,
                 pack: Path | None = None) -> None:
        self.target = target
        self.faults = faults or FaultPlan()
        self.memory_map = load_memory_map(target, pack)
        flash_regions = [r for r in self.memory_map.iter_matching_regions(type=MemoryType.FLASH)
                         if isinstance(r, FlashRegion)]
        if not flash_regions:
            raise exceptions.TargetSupportError(f"target '{target}' has no flash region")
        self.flash = FlashArray(flash_regions, flash_file)
        self.regions = flash_regions
        self._entries: dict[int, tuple[str, dict[str, Any]]] = {}
        for region in flash_regions:
            algo = region.algo
            if not algo:
                continue
            for key in ("pc_init", "pc_unInit", "pc_erase_sector", "pc_program_page", "pc_eraseAll"):
                if algo.get(key) is not None:
                    self._entries[algo[key] & ~1] = (key, algo)
            if algo.get("analyzer_supported"):
                self._entries[algo["analyzer_address"] & ~1] = ("analyzer", algo)
        self._ram: dict[int, bytearray] = {}
        self.regs = [0] * 128
        self.halted = True
        self.calls: list[tuple[str, int]] = []  # the algorithm operations performed (for tests)
        self._apply_stuck_bits(0, self.flash.size)

    # ------------------------------------------------------------- memory

    def read_memory(self, addr: int, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            at = addr + len(out)
            where = self.flash.locate(at)
            if where is not None:
                offset, room = where
                n = min(room, size - len(out))
                out += self.flash.data[offset: offset + n]
                continue
            page = self._ram.get(at // PAGE)
            n = min(PAGE - at % PAGE, size - len(out))
            out += page[at % PAGE: at % PAGE + n] if page is not None else bytes(n)
        return bytes(out)

    def write_memory(self, addr: int, data: bytes) -> None:
        done = 0
        while done < len(data):
            at = addr + done
            if self.flash.locate(at) is not None:
                raise exceptions.TransferFaultError(f"write to flash at 0x{at:08x} without the flash algorithm",
                                                    fault_address=at)
            page = self._ram.setdefault(at // PAGE, bytearray(PAGE))
            n = min(PAGE - at % PAGE, len(data) - done)
            page[at % PAGE: at % PAGE + n] = data[done: done + n]
            done += n

    def _read32(self, addr: int) -> int:
        return int(struct.unpack("<I", self.read_memory(addr, 4))[0])

    # ------------------------------------------------------------- core

    def is_halted(self) -> bool:
        return self.halted

    def halt(self) -> None:
        self.halted = True

    def step(self) -> None:
        self.regs[15] = (self.regs[15] + 2) & 0xFFFFFFFF  # no instruction set: advance one halfword

    def read_core_register(self, regsel: int) -> int:
        return self.regs[regsel & 0x7F]

    def write_core_register(self, regsel: int, value: int) -> None:
        self.regs[regsel & 0x7F] = value & 0xFFFFFFFF

    def reset(self, halt: bool) -> None:
        self.regs = [0] * 128
        boot = next((r for r in self.regions if r.is_boot_memory), self.regions[0])
        self.regs[13] = self._read32(boot.start) & ~3
        self.regs[15] = self._read32(boot.start + 4) & ~1
        self.regs[16] = XPSR_THUMB
        self.halted = halt

    def resume(self) -> None:
        entry = self._entries.get(self.regs[15] & ~1)
        if entry is None:
            self.halted = False  # "firmware" runs; nothing executes in the model
            return
        name, algo = entry
        r0, r1, r2 = self.regs[0], self.regs[1], self.regs[2]
        result = getattr(self, "_op_" + name)(algo, r0, r1, r2)
        self.regs[0] = result & 0xFFFFFFFF
        self.regs[15] = self.regs[14] & ~1  # returned to the breakpoint at the load address
        self.halted = True

    # ------------------------------------------------------------- flash algorithm

    def _region_for(self, addr: int) -> FlashRegion | None:
        return next((r for r in self.regions if r.contains_address(addr)), None)

    def _sector_of(self, addr: int) -> tuple[int, int] | None:
        region = self._region_for(addr)
        if region is None:
            return None
        size = region.sector_size
        return region.start + (addr - region.start) // size * size, size

    def _op_pc_init(self, algo: dict[str, Any], addr: int, clock: int, op: int) -> int:
        self.calls.append(("init", op))
        return 0

    def _op_pc_unInit(self, algo: dict[str, Any], op: int, _r1: int, _r2: int) -> int:
        self.calls.append(("uninit", op))
        return 0

    def _op_pc_erase_sector(self, algo: dict[str, Any], addr: int, _r1: int, _r2: int) -> int:
        sector = self._sector_of(addr)
        self.calls.append(("erase_sector", addr))
        if sector is None:
            return 2
        start, size = sector
        failing = self.faults.fail_erase_sector
        if failing is not None and start <= failing < start + size:
            return 1
        self._fill(start, size)
        return 0

    def _op_pc_eraseAll(self, algo: dict[str, Any], _r0: int, _r1: int, _r2: int) -> int:
        self.calls.append(("erase_all", 0))
        for region in self.regions:
            if region.algo is algo or region.algo == algo:
                self._fill(region.start, region.length)
        return 0

    def _op_pc_program_page(self, algo: dict[str, Any], addr: int, size: int, buf: int) -> int:
        self.calls.append(("program_page", addr))
        where = self.flash.locate(addr)
        if where is None or where[1] < size:
            return 2
        if self.faults.analyzer_wedges and any(call[0] == "analyzer" for call in self.calls):
            return 1
        failing = self.faults.fail_program_sector
        sector = self._sector_of(addr)
        if failing is not None and sector is not None and sector[0] <= failing < sector[0] + sector[1]:
            return 1
        data = self.read_memory(buf, size)
        offset = where[0]
        cells = self.flash.data
        cells[offset: offset + size] = bytes(a & b for a, b in zip(cells[offset: offset + size], data, strict=True))
        self._apply_stuck_bits(offset, size)
        self.flash.persist(offset, size)
        return 0

    def _op_analyzer(self, algo: dict[str, Any], buf: int, count: int, _r2: int) -> int:
        """pyOCD's CRC analyzer: each word (log2 size | index << 16) becomes the CRC32 of that block."""
        self.calls.append(("analyzer", count))
        words = struct.unpack(f"<{count}I", self.read_memory(buf, count * 4))
        crcs = []
        for word in words:
            size = 1 << (word & 0xFFFF)
            addr = self._unalias((word >> 16) * size, size << 16)
            crcs.append(binascii.crc32(self.read_memory(addr, size)) & 0xFFFFFFFF)
        self.write_memory(buf, struct.pack(f"<{count}I", *crcs))
        return 0

    def _unalias(self, addr: int, modulus: int) -> int:
        """The analyzer's block index is 16 bits wide; on the parts it reaches flash through the boot
        alias at 0x0. Map such an address to the flash address it stands for."""
        if self.flash.locate(addr) is not None:
            return addr
        for start, end, _off in self.flash.spans:
            candidate = start - start % modulus + addr % modulus
            if candidate < start:
                candidate += modulus
            if candidate < end:
                return candidate
        return addr

    def _fill(self, addr: int, size: int) -> None:
        where = self.flash.locate(addr)
        if where is None:
            return
        offset = where[0]
        self.flash.data[offset: offset + size] = b"\xff" * size
        self._apply_stuck_bits(offset, size)
        self.flash.persist(offset, size)

    def _apply_stuck_bits(self, offset: int, size: int) -> None:
        for stuck in self.faults.stuck_bits:
            where = self.flash.locate(stuck.address)
            if where is None or not offset <= where[0] < offset + size:
                continue
            mask = 1 << stuck.bit
            cell = self.flash.data[where[0]]
            self.flash.data[where[0]] = (cell | mask) if stuck.value else (cell & ~mask)
