"""The ``emu:`` debug probe: pyOCD's DebugProbe over a QEMU machine or a chip model.

Unique ids: ``emu:<machine name>`` for a running machine (lab state folder ``machines/``),
``emu:chip-<target>-<n>`` for a configured chip model. Opening the probe connects the back end
(the machine's gdbstub, or the chip's flash file); pyOCD then discovers the target through the
emulated DP/AP and moves memory through the block interface of ``get_memory_interface_for_ap``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from pyocd.board.board import Board
from pyocd.board.board_ids import BoardInfo
from pyocd.core import exceptions
from pyocd.probe.debug_probe import DebugProbe

from . import catalog
from .chipmodel import ChipModel, identity_for
from .dap import DebugAccessPort, MemoryPort
from .debugsystem import ARM_DESIGNER, CORTEX_M3, CORTEX_M4F, CoreBackend, DebugSystem
from .faults import FaultPlan, LinkGuard
from .mps2 import register_targets

log = logging.getLogger(__name__)

GDB_TIMEOUT = 5.0


def fault_file(uid: str) -> Path:
    return catalog.simprobe_dir() / "faults" / f"{uid.removeprefix(catalog.PREFIX)}.json"


def chip_flash_file(uid: str) -> Path:
    return catalog.simprobe_dir() / "flash" / f"{uid.removeprefix(catalog.PREFIX)}.bin"


class EmuProbe(DebugProbe):
    """A debug probe whose wire ends in an emulator instead of a chip."""

    def __init__(self, entry: catalog.ProbeEntry) -> None:
        super().__init__()
        self.entry = entry
        self.backend: CoreBackend | None = None
        self.system: DebugSystem | None = None
        self._dap: DebugAccessPort | None = None
        self._memory: MemoryPort | None = None
        self._guard = LinkGuard(FaultPlan(), entry.uid)
        self._is_open = False
        self._protocol: DebugProbe.Protocol | None = None
        self._reset_asserted = False
        self._lock: FileLock | None = None

    # ------------------------------------------------------------- enumeration

    @classmethod
    def get_all_connected_probes(cls, unique_id: str | None = None, is_explicit: bool = False) -> list[EmuProbe]:
        return [cls(entry) for entry in catalog.list_entries()]

    @classmethod
    def get_probe_with_id(cls, unique_id: str, is_explicit: bool = False) -> EmuProbe | None:
        entry = catalog.find_entry(unique_id)
        return cls(entry) if entry is not None else None

    # ------------------------------------------------------------- identity

    @property
    def description(self) -> str:
        return self.entry.description

    @property
    def vendor_name(self) -> str:
        return "hil-harness"

    @property
    def product_name(self) -> str:
        return "emulated probe"

    @property
    def supported_wire_protocols(self) -> list[DebugProbe.Protocol]:
        return [DebugProbe.Protocol.DEFAULT, DebugProbe.Protocol.SWD]

    @property
    def unique_id(self) -> str:
        return self.entry.uid

    @property
    def wire_protocol(self) -> DebugProbe.Protocol | None:
        return self._protocol

    @property
    def is_open(self) -> bool:
        return self._is_open

    @property
    def capabilities(self) -> set[DebugProbe.Capability]:
        return set()

    @property
    def associated_board_info(self) -> BoardInfo:
        return BoardInfo(name=self.entry.description, target=self.entry.target, binary=None)

    def create_associated_board(self) -> Board:
        assert self.session is not None
        register_targets()
        return Board(self.session, board_info=self.associated_board_info)

    # ------------------------------------------------------------- lifecycle

    def open(self) -> None:
        # Like a USB probe, one process at a time: a second opener gets "busy", not a shared chip.
        name = self.entry.uid.removeprefix(catalog.PREFIX)
        lock_path = catalog.simprobe_dir() / "locks" / f"{name}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(lock_path))
        try:
            self._lock.acquire(timeout=0)
        except Timeout as exc:
            self._lock = None
            raise exceptions.ProbeError(f"probe {self.entry.uid} is in use by another process") from exc
        try:
            self._open_backend()
        except BaseException:
            self.close()
            raise

    def _open_backend(self) -> None:
        plan = FaultPlan.for_session(fault_file(self.entry.uid))
        self._guard = LinkGuard(plan, self.entry.uid)
        if self.entry.machine is not None:
            from .qemu_bridge import QemuBackend

            record = self.entry.machine
            self.backend = QemuBackend(record, timeout=GDB_TIMEOUT)
            cpu = CORTEX_M3 if record.machine == "mps2-an385" else CORTEX_M4F
            self.system = DebugSystem(self.backend, cpu, ARM_DESIGNER, 0x4C3)
        else:
            chip = self.entry.chip
            assert chip is not None
            self.backend = ChipModel(chip.target, chip_flash_file(self.entry.uid), plan, chip.pack)
            ident = identity_for(chip.target)
            self.system = DebugSystem(self.backend, ident.cpu, ident.rom_designer, ident.rom_part)
        self._dap = DebugAccessPort(self.system)
        self._memory = MemoryPort(self.system, self._guard)
        self._is_open = True

    def close(self) -> None:
        self._guard.release()
        try:
            if self.backend is not None:
                self.backend.close()
        finally:
            self.backend = self.system = self._dap = self._memory = None
            self._is_open = False
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def connect(self, protocol: DebugProbe.Protocol | None = None) -> None:
        self._protocol = DebugProbe.Protocol.SWD

    def disconnect(self) -> None:
        self._protocol = None

    def swj_sequence(self, length: int, bits: int) -> None:
        pass

    def set_clock(self, frequency: float) -> None:
        pass

    def reset(self) -> None:
        self._require().system_reset()
        FaultPlan.note_hardware_reset(fault_file(self.entry.uid))

    def assert_reset(self, asserted: bool) -> None:
        if asserted and self._dap is not None and not self._guard.moved:
            self._guard.under_reset = True  # nothing moved yet: this session connects under reset
        if self._reset_asserted and not asserted:
            self._require().system_reset()
            FaultPlan.note_hardware_reset(fault_file(self.entry.uid))
        self._reset_asserted = asserted

    def is_reset_asserted(self) -> bool:
        return self._reset_asserted

    def flush(self) -> None:
        pass

    def _require(self) -> DebugSystem:
        if self.system is None:
            raise exceptions.ProbeError(f"probe {self.entry.uid} is not open")
        return self.system

    # ------------------------------------------------------------- DAP

    def _deferred(self, func: Any, now: bool) -> Any:
        if now:
            return func()
        try:
            value = func()
        except exceptions.Error as exc:
            error = exc

            def raise_later() -> Any:
                raise error

            return raise_later
        return lambda: value

    def read_dp(self, addr: int, now: bool = True) -> Any:
        def read() -> int:
            self._guard.check_dp()
            assert self._dap is not None
            return self._dap.read_dp(addr)

        return self._deferred(read, now)

    def write_dp(self, addr: int, data: int) -> None:
        self._guard.check_dp()
        assert self._dap is not None
        self._dap.write_dp(addr, data)

    def read_ap(self, addr: int, now: bool = True) -> Any:
        def read() -> int:
            self._guard.before_transfer(4)
            assert self._dap is not None
            return self._dap.read_ap(addr)

        return self._deferred(read, now)

    def write_ap(self, addr: int, data: int) -> None:
        self._guard.before_transfer(4)
        assert self._dap is not None
        self._dap.write_ap(addr, data)

    def read_ap_multiple(self, addr: int, count: int = 1, now: bool = True) -> Any:
        def read() -> list[int]:
            assert self._dap is not None
            out = []
            for _ in range(count):
                self._guard.before_transfer(4)
                out.append(self._dap.read_ap(addr))
            return out

        return self._deferred(read, now)

    def write_ap_multiple(self, addr: int, values: Any) -> None:
        for value in values:
            self.write_ap(addr, value)

    def get_memory_interface_for_ap(self, ap_address: Any) -> MemoryPort | None:
        if getattr(ap_address, "apsel", None) != 0:
            return None
        return self._memory
