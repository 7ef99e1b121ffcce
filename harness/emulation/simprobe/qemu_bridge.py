"""The QEMU bridge: a running machine's gdbstub as the core behind the emulated debug port.

Memory moves in blocks (``m``/``M`` packets chunked to the stub's PacketSize); run control and core
registers map onto halt/continue/step and ``p``/``P``; a system reset is QEMU's ``system_reset``.
QEMU's gdbstub stops the machine whenever a packet arrives while it runs, so an access to a running
core halts it, does the access and lets it run again. Flash operations also write the machine's
flash file, so a power-cycle boots what was programmed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from pyocd.core import exceptions

from harness.emulation.flash_file import FlashFile
from harness.emulation.gdbremote import GdbConnectionError, GdbRemote, GdbRemoteError, GdbTimeout
from harness.emulation.machine_registry import MachineRecord
from harness.emulation.qmp import QmpClient
from harness.errors import InfrastructureError, UsageError

from .debugsystem import REG_XPSR, CoreBackend

log = logging.getLogger(__name__)

# DCRSR REGSEL → register name in QEMU's target description (beyond r0–r15).
STEP_TIMEOUT = 0.5
_SPECIAL = {REG_XPSR: "xpsr", 17: "msp", 18: "psp", 33: "fpscr"}


@contextlib.contextmanager
def _as_probe_errors(record: MachineRecord) -> Iterator[None]:
    """Translate gdbstub failures to the exceptions a real probe raises."""
    try:
        yield
    except GdbConnectionError as exc:
        raise exceptions.ProbeDisconnected(f"emulated machine '{record.name}' is gone: {exc.message}") from exc
    except GdbTimeout as exc:
        raise exceptions.TransferTimeoutError(f"machine '{record.name}': {exc.message}") from exc
    except GdbRemoteError as exc:
        raise exceptions.TransferFaultError(f"machine '{record.name}': {exc.message}") from exc


def _machine_running(record: MachineRecord, timeout: float) -> bool:
    """Whether the machine's CPU runs (QMP ``query-status``); a machine without QMP counts as running."""
    try:
        with QmpClient.connect(record.qmp, timeout=timeout) as qmp:
            return bool(qmp.execute("query-status").get("running", True))
    except InfrastructureError as exc:
        log.debug("machine %s: no QMP answer (%s); assuming it runs", record.name, exc)
        return True


class QemuBackend(CoreBackend):
    """One open gdbstub connection to a running machine."""

    def __init__(self, record: MachineRecord, timeout: float = 5.0) -> None:
        self.record = record
        self._flash_file = FlashFile(record.flash_file, record.flash_size, record.flash_base)
        # QEMU stops a running machine when a debugger attaches (QEMU 7.2 reports it as SIGTRAP);
        # a probe's attach does not stop the core. So ask QMP first whether it runs, and let it run on.
        running = _machine_running(record, timeout)
        with _as_probe_errors(record):
            self.gdb = GdbRemote.connect(record.gdb, timeout=timeout)
            if running and self.gdb.last_stop is not None:
                self.gdb.cont()

    def close(self) -> None:
        self.gdb.close()

    @contextlib.contextmanager
    def _stopped(self) -> Iterator[None]:
        with _as_probe_errors(self.record):
            running = not self.gdb.is_halted()
            if running:
                self.gdb.halt()
            try:
                yield
            finally:
                if running:
                    self.gdb.cont()

    def read_memory(self, addr: int, size: int) -> bytes:
        with self._stopped():
            return self.gdb.read_memory(addr, size)

    def write_memory(self, addr: int, data: bytes) -> None:
        with self._stopped():
            self.gdb.write_memory(addr, data)

    def is_halted(self) -> bool:
        with _as_probe_errors(self.record):
            return self.gdb.is_halted()

    def halt(self) -> None:
        with _as_probe_errors(self.record):
            self.gdb.halt()

    def resume(self) -> None:
        with _as_probe_errors(self.record):
            self.gdb.cont()

    def step(self) -> None:
        with _as_probe_errors(self.record):
            try:
                self.gdb.step(timeout=STEP_TIMEOUT)
            except GdbTimeout:
                # QEMU steps with interrupts masked: a core asleep in WFI never completes the step
                # (on the part it would wake). Stop it again; the PC stays where it was.
                log.info("machine %s: single step did not complete (core asleep in WFI)", self.record.name)
                self.gdb.halt()

    def _regnum(self, regsel: int) -> int | None:
        if regsel < 16:
            return regsel
        name = _SPECIAL.get(regsel)
        reg = self.gdb.registers.get(name) if name else None
        return reg.number if reg is not None else None

    def read_core_register(self, regsel: int) -> int:
        number = self._regnum(regsel)
        if number is None:
            return 0  # not exposed by this QEMU's target description
        with self._stopped():
            return self.gdb.read_register(number)

    def write_core_register(self, regsel: int, value: int) -> None:
        number = self._regnum(regsel)
        if number is None:
            log.debug("ignoring write of core register %d (not exposed by the gdbstub)", regsel)
            return
        with self._stopped():
            self.gdb.write_register(number, value)

    def reset(self, halt: bool) -> None:
        with _as_probe_errors(self.record):
            if not self.gdb.is_halted():
                self.gdb.halt()
            self.gdb.monitor("system_reset")
            if not halt:
                self.gdb.cont()

    # ------------------------------------------------------------- flash (code memory + flash file)

    def _in_flash(self, addr: int, size: int) -> bool:
        base, end = self.record.flash_base, self.record.flash_base + self.record.flash_size
        return base <= addr and addr + size <= end

    def flash_write(self, addr: int, data: bytes) -> None:
        """Store into code memory and into the flash file at the same offset."""
        if not self._in_flash(addr, len(data)):
            raise exceptions.FlashFailure(f"0x{addr:08x}+{len(data)} is outside the flash of '{self.record.name}'",
                                          address=addr)
        self.write_memory(addr, data)
        try:
            self._flash_file.program(addr - self.record.flash_base, data)
        except (OSError, UsageError) as exc:
            raise exceptions.FlashFailure(f"cannot write flash file {self.record.flash_file}: {exc}",
                                          address=addr) from exc
