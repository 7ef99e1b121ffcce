"""GdbRemote against a real QEMU mps2-an385 gdbstub."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.emulation.gdbremote import GdbConnectionError, GdbRemote, GdbRemoteError, GdbTimeout

pytestmark = [pytest.mark.needs("qemu"), pytest.mark.timeout(60)]


@pytest.fixture
def qemu(tmp_path: Path) -> Iterator[str]:
    sock = Path(f"/tmp/hil-gdbtest-{os.getpid()}.sock")
    sock.unlink(missing_ok=True)
    proc = subprocess.Popen(["qemu-system-arm", "-M", "mps2-an385", "-S", "-display", "none",
                             "-monitor", "none", "-serial", "none", "-gdb", f"unix:{sock},server=on,wait=off"],
                            stdout=subprocess.DEVNULL, stderr=(tmp_path / "qemu.log").open("wb"),
                            start_new_session=True)
    try:
        yield f"unix:{sock}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
        sock.unlink(missing_ok=True)
    assert proc.poll() is not None


def test_features_and_register_numbering(qemu: str) -> None:
    with GdbRemote.connect(qemu, timeout=5) as gdb:
        assert gdb.packet_size >= 256
        assert gdb.is_halted()
        assert gdb.register_number("pc") == 15
        assert gdb.register_number("xpsr") == 25
        regs = gdb.read_registers()
        assert set(range(16)) | {25} <= set(regs)
        gdb.write_register(3, 0xDEADBEEF)
        assert gdb.read_register(3) == 0xDEADBEEF
        assert gdb.read_registers()[3] == 0xDEADBEEF


def test_block_memory_larger_than_packet(qemu: str) -> None:
    data = os.urandom(100_000)
    with GdbRemote.connect(qemu, timeout=5) as gdb:
        gdb.write_memory(0x20000003, data)  # unaligned, many packets
        assert gdb.read_memory(0x20000003, len(data)) == data
        gdb.write_memory(0x0, b"\x00\x01\x02\x20\x09\x00\x00\x00")  # code memory is writable (RAM)
        assert gdb.read_memory(0x0, 8) == b"\x00\x01\x02\x20\x09\x00\x00\x00"
        with pytest.raises(GdbRemoteError):
            gdb.read_memory(0xF0000000, 4)  # unmapped


def test_step_continue_halt_and_monitor(qemu: str) -> None:
    # A loop at 0x100: 'b .' ; vector table: SP, reset = 0x101.
    with GdbRemote.connect(qemu, timeout=5) as gdb:
        gdb.write_memory(0x0, (0x20010000).to_bytes(4, "little") + (0x101).to_bytes(4, "little"))
        gdb.write_memory(0x100, b"\xfe\xe7")
        out = gdb.monitor("system_reset")
        assert isinstance(out, str)
        assert gdb.read_register(15) == 0x100
        stop = gdb.step()
        assert stop.signal == 5
        assert gdb.read_register(15) == 0x100
        gdb.cont()
        time.sleep(0.05)
        assert not gdb.is_halted()
        gdb.halt()
        assert gdb.is_halted()
        assert gdb.read_register(15) == 0x100
        assert "R00" in gdb.monitor("info registers")


def test_timeouts_and_dead_socket(qemu: str, tmp_path: Path) -> None:
    with pytest.raises(GdbConnectionError, match="cannot connect"):
        GdbRemote.connect(f"unix:{tmp_path}/nothing.sock", timeout=0.3)
    with pytest.raises(GdbRemoteError, match="bad gdbstub address"):
        GdbRemote.connect("serial:/dev/x", timeout=0.3)
    gdb = GdbRemote.connect(qemu, timeout=5)
    gdb.write_memory(0x0, (0x20010000).to_bytes(4, "little") + (0x101).to_bytes(4, "little"))
    gdb.write_memory(0x100, b"\xfe\xe7")
    gdb.monitor("system_reset")
    gdb.cont()
    with pytest.raises(GdbTimeout, match="did not halt"):
        gdb.wait_halted(timeout=0.2)
    gdb.halt()
    gdb.close()
    with pytest.raises(GdbConnectionError):
        gdb.read_memory(0, 4)


def test_machine_dying_mid_session_is_a_connection_error(tmp_path: Path) -> None:
    sock = Path(f"/tmp/hil-gdbdie-{os.getpid()}.sock")
    sock.unlink(missing_ok=True)
    proc = subprocess.Popen(["qemu-system-arm", "-M", "mps2-an385", "-S", "-display", "none", "-monitor", "none",
                             "-serial", "none", "-gdb", f"unix:{sock},server=on,wait=off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        gdb = GdbRemote.connect(f"unix:{sock}", timeout=5)
        gdb.read_memory(0x20000000, 4)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
        with pytest.raises(GdbConnectionError):
            gdb.read_memory(0x20000000, 4)
        gdb.close()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        sock.unlink(missing_ok=True)
    assert proc.poll() is not None
