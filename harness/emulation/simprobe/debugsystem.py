"""The Cortex-M debug view an emulated probe shows to pyOCD: ROM table, SCS and debug registers.

A :class:`CoreBackend` (a QEMU machine behind its gdbstub, or a chip model in Python) provides
memory, core registers and run control. :class:`DebugSystem` puts the architectural debug
registers in front of it (DHCSR, DCRSR/DCRDR, DEMCR, DFSR, AIRCR, CPUID...), a CoreSight ROM
table and the component ID blocks pyOCD's discovery reads; every other address goes to the back end.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass

# JEP106 designer codes as pyOCD spells them (continuation << 8 | id).
ARM_DESIGNER = 0x43B
ST_DESIGNER = 0x020
NXP_DESIGNER = 0x00E  # Freescale/NXP

ROM_TABLE = 0xE00FF000
SCS = 0xE000E000
PPB_START = 0xE0000000
PPB_END = 0xE0100000

DHCSR = 0xE000EDF0
DCRSR = 0xE000EDF4
DCRDR = 0xE000EDF8
DEMCR = 0xE000EDFC
DFSR = 0xE000ED30
AIRCR = 0xE000ED0C
CPUID = 0xE000ED00

DBGKEY = 0xA05F0000
C_DEBUGEN, C_HALT, C_STEP, C_MASKINTS = 1 << 0, 1 << 1, 1 << 2, 1 << 3
S_REGRDY, S_HALT, S_SLEEP, S_LOCKUP = 1 << 16, 1 << 17, 1 << 18, 1 << 19
S_RETIRE_ST, S_RESET_ST = 1 << 24, 1 << 25
DFSR_HALTED, DFSR_BKPT, DFSR_VCATCH = 1 << 0, 1 << 1, 1 << 3
VC_CORERESET = 1 << 0
AIRCR_VECTKEY = 0x05FA0000
AIRCR_VECTRESET, AIRCR_SYSRESETREQ = 1 << 0, 1 << 2

# DCRSR REGSEL numbers (ARMv7-M): r0-r12, sp, lr, pc (debug return address), xpsr, msp, psp,
# 20 = CONTROL/FAULTMASK/BASEPRI/PRIMASK, 33 = FPSCR, 64-95 = s0-s31.
REG_PC, REG_XPSR = 15, 16


@dataclass(frozen=True)
class CpuProfile:
    """The identity registers of one Cortex-M core."""

    name: str
    cpuid: int
    isar3: int
    mvfr0: int = 0
    mvfr1: int = 0
    mvfr2: int = 0
    mpu_type: int = 0x800
    scs_part: int = 0x000  # v7-M SCS part number in its ID block


CORTEX_M3 = CpuProfile("cortex-m3", cpuid=0x412FC231, isar3=0x01111110)
CORTEX_M4F = CpuProfile("cortex-m4f", cpuid=0x410FC241, isar3=0x01111131, mvfr0=0x10110021,
                        mvfr1=0x11000011, scs_part=0x00C)
CORTEX_M7 = CpuProfile("cortex-m7", cpuid=0x411FC270, isar3=0x01111131, mvfr0=0x10110221,
                       mvfr1=0x12000011, mvfr2=0x40, scs_part=0x00C)


def id_block(component_class: int, designer: int, part: int) -> dict[int, int]:
    """PIDR/CIDR registers (offsets 0xFD0–0xFFC) of a CoreSight component."""
    pidr = (part & 0xFFF) | ((designer & 0x7F) << 12) | (1 << 19) | ((designer >> 8) & 0xF) << 32
    regs = {0xFD0 + 4 * i: 0 for i in range(12)}
    regs[0xFD0] = (pidr >> 32) & 0xFF
    for i in range(4):
        regs[0xFE0 + 4 * i] = (pidr >> (8 * i)) & 0xFF
    cidr = 0xB105000D | (component_class << 12)
    for i in range(4):
        regs[0xFF0 + 4 * i] = (cidr >> (8 * i)) & 0xFF
    return regs


class CoreBackend(ABC):
    """What a debug system needs from the thing it debugs."""

    @abstractmethod
    def read_memory(self, addr: int, size: int) -> bytes: ...

    @abstractmethod
    def write_memory(self, addr: int, data: bytes) -> None: ...

    @abstractmethod
    def is_halted(self) -> bool: ...

    @abstractmethod
    def halt(self) -> None: ...

    @abstractmethod
    def resume(self) -> None:
        """Run from the current PC; may complete at once (a chip model's flash algorithm)."""

    @abstractmethod
    def step(self) -> None: ...

    @abstractmethod
    def read_core_register(self, regsel: int) -> int: ...

    @abstractmethod
    def write_core_register(self, regsel: int, value: int) -> None: ...

    @abstractmethod
    def reset(self, halt: bool) -> None:
        """System reset; the core stops at the reset vector when ``halt`` (vector catch)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default has none."""


class DebugSystem:
    """Debug registers and ROM table in front of a :class:`CoreBackend` (32-bit little-endian bus)."""

    def __init__(self, backend: CoreBackend, cpu: CpuProfile, rom_designer: int = ARM_DESIGNER,
                 rom_part: int = 0x4C3) -> None:
        self.backend = backend
        self.cpu = cpu
        self.demcr = 0
        self.dfsr = 0
        self.dcrdr = 0
        self.reset_sticky = False
        self.debugen = False
        self.maskints = False
        self._regs: dict[int, int] = {
            CPUID: cpu.cpuid,
            0xE000ED6C: cpu.isar3,  # ID_ISAR3
            0xE000ED78: 0,  # CLIDR: no caches
            0xE000ED90: cpu.mpu_type,
            0xE000EF40: cpu.mvfr0,
            0xE000EF44: cpu.mvfr1,
            0xE000EF48: cpu.mvfr2,
        }
        self._scratch: dict[int, int] = {}
        # ROM table: one entry (the SCS), then the end marker.
        self._regs[ROM_TABLE] = ((SCS - ROM_TABLE) & 0xFFFFF000) | 0x3
        self._regs[ROM_TABLE + 4] = 0
        self._regs[ROM_TABLE + 0xFCC] = 1  # MEMTYPE: system memory present
        for off, value in id_block(0x1, rom_designer, rom_part).items():
            self._regs[ROM_TABLE + off] = value
        for off, value in id_block(0xE, ARM_DESIGNER, cpu.scs_part).items():
            self._regs[SCS + off] = value

    # ------------------------------------------------------------- bus

    def read(self, addr: int, size: int) -> bytes:
        if addr + size <= PPB_START or addr >= PPB_END:
            return self.backend.read_memory(addr, size)
        out = bytearray()
        for word_addr in range(addr & ~3, addr + size, 4):
            if PPB_START <= word_addr < PPB_END:
                out += struct.pack("<I", self._read_word(word_addr))
            else:
                out += self.backend.read_memory(word_addr, 4)
        start = addr & 3
        return bytes(out[start: start + size])

    def write(self, addr: int, data: bytes) -> None:
        if addr + len(data) <= PPB_START or addr >= PPB_END:
            self.backend.write_memory(addr, data)
            return
        if addr & 3 or len(data) & 3:  # sub-word access to the PPB: merge into the word
            base = addr & ~3
            span = ((addr + len(data) + 3) & ~3) - base
            words = bytearray(self.read(base, span))
            words[addr - base: addr - base + len(data)] = data
            addr, data = base, bytes(words)
        for off in range(0, len(data), 4):
            (value,) = struct.unpack_from("<I", data, off)
            self._write_word(addr + off, value)

    # ------------------------------------------------------------- registers

    def _dhcsr(self) -> int:
        halted = self.backend.is_halted()
        value = S_REGRDY | (S_HALT | C_HALT if halted else S_RETIRE_ST)
        if self.debugen:
            value |= C_DEBUGEN
        if self.maskints:
            value |= C_MASKINTS
        if self.reset_sticky:
            value |= S_RESET_ST
            self.reset_sticky = False
        return value

    def _read_word(self, addr: int) -> int:
        if addr == DHCSR:
            return self._dhcsr()
        if addr == DCRDR:
            return self.dcrdr
        if addr == DEMCR:
            return self.demcr
        if addr == DFSR:
            return self.dfsr
        if addr == AIRCR:
            return 0xFA050000
        if addr in self._regs:
            return self._regs[addr]
        return self._scratch.get(addr, 0)

    def _write_word(self, addr: int, value: int) -> None:
        if addr == DHCSR:
            self._write_dhcsr(value)
        elif addr == DCRSR:
            regsel = value & 0x7F
            if value & (1 << 16):
                self.backend.write_core_register(regsel, self.dcrdr)
            else:
                self.dcrdr = self.backend.read_core_register(regsel) & 0xFFFFFFFF
        elif addr == DCRDR:
            self.dcrdr = value
        elif addr == DEMCR:
            self.demcr = value
        elif addr == DFSR:
            self.dfsr &= ~value
        elif addr == AIRCR:
            if (value & 0xFFFF0000) == AIRCR_VECTKEY and value & (AIRCR_SYSRESETREQ | AIRCR_VECTRESET):
                self.system_reset()
        elif addr not in self._regs:
            self._scratch[addr] = value

    def _write_dhcsr(self, value: int) -> None:
        if (value & 0xFFFF0000) != DBGKEY:
            return  # writes without the key are ignored by the core
        was_debugen = self.debugen
        self.debugen = bool(value & C_DEBUGEN)
        self.maskints = bool(value & C_MASKINTS)
        halted = self.backend.is_halted()
        if value & C_HALT and self.debugen:
            if not halted:
                self.backend.halt()
                self.dfsr |= DFSR_HALTED
        elif halted and was_debugen and not self.debugen:
            self.backend.resume()  # leaving debug (pyOCD's disconnect) lets a halted core run
        elif halted and self.debugen:
            if value & C_STEP:
                self.backend.step()
                self.dfsr |= DFSR_HALTED
            else:
                self.backend.resume()
                if self.backend.is_halted():  # a model that finished at once stopped on the BKPT
                    self.dfsr |= DFSR_BKPT

    def system_reset(self) -> None:
        catch = bool(self.demcr & VC_CORERESET) or self._fpb_catches_reset()
        self.backend.reset(halt=catch)
        self.reset_sticky = True
        if catch:
            self.dfsr |= DFSR_VCATCH

    def _fpb_catches_reset(self) -> bool:
        """pyOCD's i.MX RT reset catch sets an FPB breakpoint on the image entry instead of DEMCR."""
        return bool(self._scratch.get(0xE0002000, 0) & 1) and bool(self._scratch.get(0xE0002008, 0) & 1)
