"""An emulated board owned by the harness: a QEMU mps2-an385/an386 machine.

    with Machine("b1", "mps2-an385", flash_file=run/"b1.flash", run_dir=run,
                 network=attachment) as m:
        m.start(run=True)            # power on: load the flash file, boot
        m.console_url                # socket://127.0.0.1:PORT (stays the same across power-cycles)
        m.freeze(); m.thaw()         # a hung board
        m.link_down(); m.link_up()   # a pulled cable
        m.program_flash(0, image)    # what the next power-on boots
        m.power_cycle()

Power-on starts QEMU halted (``-S``) with its gdbstub, QMP and UART on unix sockets in a private
folder (two QMP sockets: the machine keeps one, the record offers the other to the probe plugin),
writes the whole flash file into code memory through the gdbstub, resets the CPU (so it fetches
the new vector table) and, with ``run=True``, continues. The flash file is loaded this way, not
with ``-device loader``, because QEMU re-copies a loader's boot-time data on every
``system_reset`` and would undo what pyOCD later writes through the gdbstub.

Each QEMU process writes a pcap of the board's link (``-object filter-dump``); :attr:`pcaps` lists
them, one per power-on. While it runs the machine is recorded in the lab state folder
(:mod:`harness.emulation.machine_registry`) and its name is locked there, so names never collide
across processes.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from harness.emulation.console_relay import ConsoleRelay
from harness.emulation.flash_file import FlashFile
from harness.emulation.gdbremote import GdbRemote
from harness.emulation.machine_registry import (
    MachineRecord,
    reap_stale,
    record_path,
    remove_record,
    write_record,
)
from harness.emulation.network import Attachment, NoNetwork, mac_for
from harness.emulation.process import OwnedProcess, install_sigterm_exit
from harness.emulation.qmp import QmpClient, QmpCommandError
from harness.errors import InfrastructureError, UsageError
from harness.registry import Registry
from harness.state import StateDir, resolve_state_dir

log = logging.getLogger(__name__)

MACHINE_TYPES: Registry[str] = Registry("qemu machine")
"""QEMU machine types the harness can drive, mapped to their CPU (all share the MPS2 memory map)."""
MACHINE_TYPES.register("mps2-an385")("cortex-m3")
MACHINE_TYPES.register("mps2-an386")("cortex-m4")

NETDEV_ID = "n0"
QEMU_BINARY = "qemu-system-arm"
START_TIMEOUT = 10.0


class Machine:
    """One emulated board. Construct with plain arguments; nothing runs until :meth:`start`."""

    def __init__(self, name: str, machine: str = "mps2-an385", *, flash_file: Path, run_dir: Path,
                 network: Attachment | None = None, memory: str | None = None,
                 state: StateDir | None = None, qemu_binary: str = QEMU_BINARY) -> None:
        if machine not in MACHINE_TYPES.names():
            raise UsageError(f"unknown QEMU machine {machine!r} for board {name!r}",
                             expected=f"one of {sorted(MACHINE_TYPES.names())}", actual=machine,
                             fix="set qemu.machine in the board's YAML to a supported machine")
        if not name or "/" in name or name.startswith("."):
            raise UsageError(f"bad machine name {name!r}", fix="use letters, digits, '-' and '_'")
        self.name = name
        self.machine = machine
        self.run_dir = Path(run_dir).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.flash = FlashFile(Path(flash_file))
        self.network: Attachment = network or NoNetwork(mac_for(name))
        self.memory = memory
        self.state = state or resolve_state_dir()
        self.qemu_binary = qemu_binary
        self.pcaps: list[Path] = []
        self.qmp: QmpClient | None = None
        self._proc: OwnedProcess | None = None
        self._relay: ConsoleRelay | None = None
        self._sock_dir: Path | None = None
        self._lock: FileLock | None = None
        self._power_ons = 0

    # ---------------------------------------------------------------- addresses

    @property
    def flash_file(self) -> Path:
        return self.flash.path

    @property
    def console_url(self) -> str:
        return self._require_relay().url

    @property
    def console_log(self) -> Path:
        return self.run_dir / f"{self.name}-console.log"

    @property
    def qemu_log(self) -> Path:
        return self.run_dir / f"{self.name}-qemu.log"

    def _sock(self, what: str) -> Path:
        if self._sock_dir is None:
            raise UsageError(f"machine {self.name!r} is not started")
        return self._sock_dir / what

    @property
    def gdb_address(self) -> str:
        return f"unix:{self._sock('gdb')}"

    @property
    def qmp_address(self) -> str:
        return f"unix:{self._sock('qmp')}"

    @property
    def pid(self) -> int:
        return self._require_proc().pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.alive()

    def _require_proc(self) -> OwnedProcess:
        if self._proc is None:
            raise UsageError(f"machine {self.name!r} is not powered on", fix="call start() first")
        return self._proc

    def _require_relay(self) -> ConsoleRelay:
        if self._relay is None:
            raise UsageError(f"machine {self.name!r} is not started", fix="call start() first")
        return self._relay

    def _require_qmp(self) -> QmpClient:
        if self.qmp is None:
            raise UsageError(f"machine {self.name!r} is not powered on", fix="call start() first")
        return self.qmp

    # ---------------------------------------------------------------- life cycle

    def start(self, run: bool = False) -> Machine:
        """Power on: QEMU halted with the flash loaded; ``run=True`` lets the CPU go."""
        if self._relay is not None:
            raise UsageError(f"machine {self.name!r} is already started")
        install_sigterm_exit()
        reap_stale(self.state)
        self._lock = FileLock(str(record_path(self.state, self.name).with_suffix(".lock")))
        try:
            self._lock.acquire(timeout=0)
        except Timeout as exc:
            self._lock = None
            raise UsageError(f"machine name {self.name!r} is in use by another process",
                             evidence=record_path(self.state, self.name),
                             fix="give each parallel machine its own name") from exc
        atexit.register(self.stop)
        try:
            self._sock_dir = Path(tempfile.mkdtemp(prefix="hil-m-"))
            self._relay = ConsoleRelay(self.console_log)
            self._power_on(run)
        except BaseException:
            self.stop()
            raise
        return self

    def _qemu_argv(self, pcap: Path) -> list[str]:
        argv = [*self.network.command_prefix(), self.qemu_binary, "-M", self.machine,
                "-nodefaults", "-display", "none", "-monitor", "none", "-S",
                "-gdb", f"unix:{self._sock('gdb')},server=on,wait=off",
                "-qmp", f"unix:{self._sock('qmp')},server=on,wait=off",
                "-qmp", f"unix:{self._sock('qmp-owner')},server=on,wait=off",
                "-chardev", f"socket,id=uart0,path={self._sock('uart0')},server=on,wait=off",
                "-serial", "chardev:uart0",
                "-netdev", self.network.netdev(NETDEV_ID),
                "-net", f"nic,netdev={NETDEV_ID},model=lan9118,macaddr={self.network.mac}",
                "-object", f"filter-dump,id=dump0,netdev={NETDEV_ID},file={pcap}"]
        if self.memory:
            argv += ["-m", self.memory]
        return argv

    def _power_on(self, run: bool) -> None:
        self._power_ons += 1
        pcap = self.run_dir / f"{self.name}-{self._power_ons}.pcap"
        self._proc = OwnedProcess(f"qemu {self.name}", self._qemu_argv(pcap), self.qemu_log)
        self.pcaps.append(pcap)
        self._proc.wait_until(lambda: self._sock("qmp-owner").exists() and self._sock("uart0").exists(),
                              START_TIMEOUT, "QEMU's QMP and UART sockets")
        t0 = time.monotonic()
        try:
            self.qmp = QmpClient.connect(f"unix:{self._sock('qmp-owner')}", timeout=START_TIMEOUT)
            self._require_relay().attach(self._sock("uart0"))
            with GdbRemote.connect(self.gdb_address, timeout=START_TIMEOUT) as gdb:
                gdb.write_memory(self.flash.base, self.flash.read(), timeout=30.0)
            self.qmp.execute("system_reset")  # the CPU fetches SP and PC from the loaded vectors
        except InfrastructureError:
            self._proc.check_alive()  # QEMU died: its log says why
            raise
        log.info("machine %s: powered on (pid %d), flash loaded in %.2fs", self.name, self.pid,
                 time.monotonic() - t0)
        write_record(self.state, self.record())
        if run:
            self._qmp("cont")

    def _power_off(self) -> None:
        if self.qmp is not None:
            # QEMU may close the socket before answering, or be gone already: stop() makes sure
            with contextlib.suppress(InfrastructureError):
                self.qmp.execute("quit", timeout=2.0)
            self.qmp.close()
            self.qmp = None
        if self._proc is not None:
            self._proc.wait_exit(3.0)  # QEMU quits by itself; stop() below escalates if not
            self._proc.stop()
            remove_record(self.state, self.name, self._proc.pid)

    def stop(self) -> None:
        """Power off and release everything (sockets, record, name); idempotent."""
        atexit.unregister(self.stop)
        try:
            self._power_off()
        finally:
            if self._relay is not None:
                self._relay.close()
                self._relay = None
            if self._sock_dir is not None:
                shutil.rmtree(self._sock_dir, ignore_errors=True)
                self._sock_dir = None
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def power_off(self) -> None:
        """Cut power: QEMU ends; the console relay (the board's serial adapter) stays."""
        self._require_relay()
        self._power_off()

    def power_on(self, run: bool = True) -> None:
        """Power on from the flash file (after :meth:`power_off`); no-op while powered."""
        self._require_relay()
        if not self.running:
            self._power_on(run)

    def power_cycle(self, run: bool = True, off_time: float = 0.0) -> None:
        """Cut power, wait ``off_time``, power on again from the flash file."""
        self._require_relay()
        self._power_off()
        if off_time:
            time.sleep(off_time)  # the requested time without power, not a wait for an event
        self._power_on(run)

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- control

    def _qmp(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """A QMP command; if QEMU died, the error says so with its log."""
        try:
            return self._require_qmp().execute(command, arguments)
        except QmpCommandError:
            raise
        except InfrastructureError:
            proc = self._require_proc()
            proc.wait_exit(1.0)  # a dying QEMU closes QMP a moment before it exits
            proc.check_alive()
            raise

    def resume(self) -> None:
        self._qmp("cont")

    def freeze(self) -> None:
        """Stop the CPU (a hung board): no console output, no network answers."""
        self._qmp("stop")

    def thaw(self) -> None:
        self._qmp("cont")

    def reset(self) -> None:
        """Warm reset (memory kept, like the reset pin): the board reboots what is in memory."""
        self._qmp("system_reset")

    def link_down(self) -> None:
        """Pull the Ethernet cable."""
        self._qmp("set_link", {"name": NETDEV_ID, "up": False})

    def link_up(self) -> None:
        self._qmp("set_link", {"name": NETDEV_ID, "up": True})

    def status(self) -> str:
        return str(self._qmp("query-status")["status"])

    def program_flash(self, offset: int, data: bytes) -> None:
        """Update the flash file (what the next power-on loads); memory of a running QEMU is not
        touched (pyOCD writes that through the gdbstub)."""
        self.flash.program(offset, data)

    def cpu_seconds(self) -> float:
        """User + system CPU time QEMU has used so far (from /proc/<pid>/stat)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of the full line)
        return ticks / os.sysconf("SC_CLK_TCK")

    def record(self) -> MachineRecord:
        return MachineRecord(
            name=self.name, machine=self.machine, pid=self.pid, owner_pid=os.getpid(),
            gdb=self.gdb_address, qmp=self.qmp_address, console=self.console_url,
            flash_file=str(self.flash_file), flash_base=self.flash.base, flash_size=self.flash.size,
            started=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            network=self.network.record(), console_log=str(self.console_log),
            pcaps=[str(p) for p in self.pcaps])
