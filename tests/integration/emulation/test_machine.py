"""A QEMU machine owned by the harness: flash file, power-cycle, gdbstub reflash, records, idle cost."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.emulation.gdbremote import GdbRemote
from harness.emulation.machine_registry import list_machines, reap_stale
from harness.emulation.network import USER_GUEST, USER_HOST, UserAttachment
from harness.emulation.qemu import Machine
from harness.emulation.qmp import QmpClient
from harness.errors import InfrastructureError, UsageError
from harness.state import StateDir

pytestmark = [pytest.mark.needs("qemu", "arm-gcc")]


MachineFactory = Callable[..., Machine]
ConsoleFactory = Callable[[str], Any]
ImageFactory = Callable[[str], bytes]


@pytest.fixture
def image(build_image: Callable[..., bytes]) -> ImageFactory:
    return lambda variant: build_image(board="m1", board_ip=str(USER_GUEST), harness_ip=str(USER_HOST),
                                       variant=variant)


@pytest.mark.timeout(60)
def test_power_cycle_boots_the_last_programmed_image(image: ImageFactory, machines: MachineFactory,
                                                     open_console: ConsoleFactory, state: StateDir) -> None:
    m = machines("m1", UserAttachment.create("m1"))
    m.program_flash(0, image("A"))
    m.start(run=True)
    console = open_console(m.console_url)
    console.expect(r"net-probe variant=A board=m1")
    first_pid = m.pid

    m.program_flash(0, image("B"))  # what pyOCD's probe plugin does beside its writes
    m.power_cycle()

    console.expect(r"net-probe variant=B board=m1")  # same console URL across the power-cycle
    assert m.pid != first_pid
    assert not Path(f"/proc/{first_pid}").exists()
    assert [p.name for p in m.pcaps] == ["m1-1.pcap", "m1-2.pcap"]
    assert all(p.exists() for p in m.pcaps)
    (record,) = list_machines(state)
    assert record.pid == m.pid and record.network["mode"] == "user"
    assert record.pcaps == [str(p) for p in m.pcaps] and record.console_log == str(m.console_log)


@pytest.mark.timeout(60)
def test_reset_boots_what_was_written_through_the_gdbstub(
        image: ImageFactory, machines: MachineFactory,
        open_console: ConsoleFactory) -> None:
    """The reason the flash is loaded through the gdbstub: a reset must not restore a boot copy."""
    m = machines("m1", None)
    m.program_flash(0, image("A"))
    m.start(run=True)
    console = open_console(m.console_url)
    console.expect(r"variant=A")
    with GdbRemote.connect(m.gdb_address) as gdb:  # attaching halts the running board
        gdb.write_memory(0, image("B"))
    m.reset()
    m.resume()
    console.expect(r"variant=B")


@pytest.mark.timeout(60)
def test_erased_flash_reads_ff_and_provisioning_block_is_loaded(machines: MachineFactory) -> None:
    m = machines("m1", None)
    m.program_flash(0x3FF000, b"PROV")
    m.start(run=False)
    with GdbRemote.connect(m.gdb_address) as gdb:
        assert gdb.read_memory(0x3FF000, 8) == b"PROV\xff\xff\xff\xff"
        assert gdb.read_memory(0x100000, 4) == b"\xff" * 4
    assert m.status() in ("paused", "prelaunch")


@pytest.mark.timeout(60)
def test_idle_guest_in_wfi_costs_little_cpu(
        image: ImageFactory, machines: MachineFactory,
        open_console: ConsoleFactory) -> None:
    m = machines("m1", UserAttachment.create("m1"))
    m.program_flash(0, image("A"))
    m.start(run=True)
    open_console(m.console_url).expect(r"net-probe")
    time.sleep(0.5)  # let the boot settle
    window = 3.0
    before, t0 = m.cpu_seconds(), time.monotonic()
    assert before > 0, "QEMU's CPU time reads as zero: the measurement is broken"  # loading cost some
    time.sleep(window)  # measuring CPU use over a fixed window
    share = (m.cpu_seconds() - before) / (time.monotonic() - t0)
    print(f"idle QEMU (WFI) used {share * 100:.2f}% of a host core over {window:.0f}s "
          f"(total CPU time since start {m.cpu_seconds():.2f}s)")
    assert share < 0.05


@pytest.mark.timeout(60)
def test_same_name_is_refused_while_running(machines: MachineFactory) -> None:
    machines("m1", None).start()
    with pytest.raises(UsageError, match="in use"):
        machines("m1", None).start()


@pytest.mark.timeout(60)
def test_qmp_freeze_and_thaw(image: ImageFactory, machines: MachineFactory) -> None:
    m = machines("m1", None)
    m.program_flash(0, image("A"))
    m.start(run=True)
    m.freeze()
    assert m.status() == "paused"
    m.thaw()
    assert m.status() == "running"
    with QmpClient.connect(m.qmp_address) as qmp:  # a second client (the probe plugin) may attach
        assert qmp.status() == "running"


@pytest.mark.timeout(60)
def test_a_crashed_machine_says_why(machines: MachineFactory) -> None:
    m = machines("m1", None)
    with pytest.raises(InfrastructureError, match="exited") as info:
        m.start(run=True)  # erased flash: the vector table is 0xFFFFFFFF, the core locks up, QEMU aborts
        for _ in range(100):
            m.status()
            time.sleep(0.05)  # polling until QEMU has died
    assert "Lockup" in str(info.value)


_ORPHAN_SCRIPT = """
import json, sys, pathlib, time
from harness.emulation.qemu import Machine
from harness.state import resolve_state_dir
run = pathlib.Path(sys.argv[1])
m = Machine("orphan", flash_file=run / "o.flash", run_dir=run, state=resolve_state_dir(sys.argv[2]))
m.start(run=False)  # erased flash: halted, or the core would lock up
print(json.dumps({"pid": m.pid}), flush=True)
time.sleep(60)
"""


@pytest.mark.timeout(60)
def test_machine_of_a_killed_owner_is_reaped(run_dir: Path, state: StateDir) -> None:
    owner = subprocess.Popen([sys.executable, "-c", _ORPHAN_SCRIPT, str(run_dir), str(state.root)],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert owner.stdout is not None
        qemu_pid = json.loads(owner.stdout.readline())["pid"]
        assert [r.name for r in list_machines(state)] == ["orphan"]
    finally:
        os.killpg(owner.pid, signal.SIGKILL)  # no cleanup can run: QEMU is left behind
        owner.wait(10)
    assert Path(f"/proc/{qemu_pid}").exists()
    reaped = reap_stale(state)
    assert [r.name for r in reaped] == ["orphan"]
    deadline = time.monotonic() + 5
    while Path(f"/proc/{qemu_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the kernel removes the killed process shortly
    assert not Path(f"/proc/{qemu_pid}").exists()
    assert list_machines(state) == []


@pytest.mark.timeout(30)
def test_tcp_pipe_carries_one_connection() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def echo_once() -> None:
        conn, _ = server.accept()
        with conn:
            while chunk := conn.recv(100):
                conn.sendall(chunk.upper())

    thread = threading.Thread(target=echo_once, daemon=True)
    thread.start()
    done = subprocess.run([sys.executable, "-m", "harness.emulation.tcp_pipe", "127.0.0.1", str(port)],
                          input=b"hello broker", capture_output=True, timeout=20)
    thread.join(5)
    server.close()
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"HELLO BROKER"
