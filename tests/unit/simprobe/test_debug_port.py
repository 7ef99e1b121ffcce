"""The emulated DP/AP and Cortex-M debug registers, against a chip model (no processes)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from harness.emulation.simprobe import dap, debugsystem
from harness.emulation.simprobe.chipmodel import ChipModel, identity_for
from harness.emulation.simprobe.debugsystem import DebugSystem


@pytest.fixture
def chip(tmp_path: Path) -> ChipModel:
    return ChipModel("stm32l475xg", tmp_path / "flash.bin")


@pytest.fixture
def system(chip: ChipModel) -> DebugSystem:
    ident = identity_for("stm32l475xg")
    return DebugSystem(chip, ident.cpu, ident.rom_designer, ident.rom_part)


def word(system: DebugSystem, addr: int) -> int:
    return int(struct.unpack("<I", system.read(addr, 4))[0])


def put(system: DebugSystem, addr: int, value: int) -> None:
    system.write(addr, struct.pack("<I", value))


def test_dp_power_up_acks_mirror_requests(system: DebugSystem) -> None:
    port = dap.DebugAccessPort(system)
    assert port.read_dp(dap.DP_IDR) == dap.DPIDR_VALUE
    assert port.read_dp(dap.DP_CTRL_STAT) & (dap.CSYSPWRUPACK | dap.CDBGPWRUPACK) == 0
    port.write_dp(dap.DP_CTRL_STAT, dap.CSYSPWRUPREQ | dap.CDBGPWRUPREQ)
    value = port.read_dp(dap.DP_CTRL_STAT)
    assert value & dap.CSYSPWRUPACK and value & dap.CDBGPWRUPACK
    port.write_dp(dap.DP_CTRL_STAT, dap.CDBGPWRUPREQ)
    assert not port.read_dp(dap.DP_CTRL_STAT) & dap.CSYSPWRUPACK


def test_one_mem_ap_with_csw_size_and_rom_table_base(system: DebugSystem) -> None:
    port = dap.DebugAccessPort(system)
    assert port.read_ap(dap.AP_IDR) == dap.AHB_AP_IDR
    assert all(port.read_ap((n << 24) | dap.AP_IDR) == 0 for n in (1, 2, 3))
    assert port.read_ap(dap.AP_BASE) & ~0xFFF == debugsystem.ROM_TABLE
    port.write_ap(dap.AP_CSW, (port.read_ap(dap.AP_CSW) & ~7) | 0)  # 8-bit
    assert port.read_ap(dap.AP_CSW) & 7 == 0


def test_tar_auto_increment_wraps_at_4k(system: DebugSystem) -> None:
    port = dap.DebugAccessPort(system)
    port.write_ap(dap.AP_CSW, dap.CSW_FIXED | 0x12)
    port.write_ap(dap.AP_TAR, 0x20000FFC)
    port.write_ap(dap.AP_DRW, 0xAABBCCDD)
    assert port.read_ap(dap.AP_TAR) == 0x20000000  # wrapped within the 4 KiB block
    port.write_ap(dap.AP_TAR, 0x20000FFC)
    assert port.read_ap(dap.AP_DRW) == 0xAABBCCDD
    # byte access lands in its lane
    port.write_ap(dap.AP_CSW, dap.CSW_FIXED | 0x10)
    port.write_ap(dap.AP_TAR, 0x20000101)
    port.write_ap(dap.AP_DRW, 0x5A00)
    assert system.read(0x20000101, 1) == b"\x5a"


def test_rom_table_points_at_an_scs_with_st_designer(system: DebugSystem) -> None:
    entry = word(system, debugsystem.ROM_TABLE)
    assert entry & 3 == 3
    scs = (debugsystem.ROM_TABLE + (entry & 0xFFFFF000)) & 0xFFFFFFFF
    assert scs == debugsystem.SCS
    cidr = sum(word(system, scs + 0xFF0 + 4 * i) << (8 * i) for i in range(4))
    assert cidr == 0xB105E00D  # class 0xE: generic IP (the v7-M SCS)
    pidr1, pidr2 = word(system, debugsystem.ROM_TABLE + 0xFE4), word(system, debugsystem.ROM_TABLE + 0xFE8)
    designer = (pidr1 >> 4) | ((pidr2 & 7) << 4)
    assert designer == 0x20  # ST


def test_halt_registers_resume_and_reset_catch(system: DebugSystem, chip: ChipModel) -> None:
    key = debugsystem.DBGKEY | debugsystem.C_DEBUGEN
    put(system, debugsystem.DHCSR, key | debugsystem.C_HALT)
    assert word(system, debugsystem.DHCSR) & debugsystem.S_HALT
    put(system, debugsystem.DCRDR, 0x1234)
    put(system, debugsystem.DCRSR, (1 << 16) | 3)  # write r3
    put(system, debugsystem.DCRSR, 3)
    assert word(system, debugsystem.DCRDR) == 0x1234 == chip.regs[3]
    put(system, debugsystem.DHCSR, key)  # resume (not at an algorithm entry: the core "runs")
    assert not word(system, debugsystem.DHCSR) & debugsystem.S_HALT
    put(system, debugsystem.DEMCR, debugsystem.VC_CORERESET)
    put(system, debugsystem.AIRCR, debugsystem.AIRCR_VECTKEY | debugsystem.AIRCR_SYSRESETREQ)
    first = word(system, debugsystem.DHCSR)
    assert first & debugsystem.S_RESET_ST and first & debugsystem.S_HALT
    assert not word(system, debugsystem.DHCSR) & debugsystem.S_RESET_ST  # sticky bit clears on read
    assert word(system, debugsystem.DFSR) & debugsystem.DFSR_VCATCH


def test_writes_without_the_key_are_ignored(system: DebugSystem) -> None:
    put(system, debugsystem.DHCSR, debugsystem.C_DEBUGEN | debugsystem.C_HALT)
    assert not word(system, debugsystem.DHCSR) & debugsystem.C_DEBUGEN
