"""Fixtures for the emulation tests: the net-probe image built per test, machines, networks."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import traffic
from harness.console import Console
from harness.emulation.network import Attachment
from harness.emulation.qemu import Machine
from harness.emulation.tap_network import SUPERNET
from harness.netpolicy import TargetPolicy
from harness.state import StateDir, resolve_state_dir

REPO = Path(__file__).resolve().parents[3]
NET_PROBE = REPO / "fixtures" / "test-images" / "net-probe"
HELLO_PORT = 9999


def build_net_probe(out_dir: Path, *, board: str, board_ip: str, harness_ip: str,
                    variant: str = "A", port: int = HELLO_PORT, cpu: str = "cortex-m3") -> bytes:
    """Compile the net-probe image for one board; returns the raw binary for the flash file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    elf = out_dir / f"net-probe-{board}-{variant}.elf"
    defines = [f"-DBOARD_IP={int(ipaddress.IPv4Address(board_ip))}u",
               f"-DHARNESS_IP={int(ipaddress.IPv4Address(harness_ip))}u",
               f"-DHARNESS_PORT={port}", f'-DBOARD_NAME="{board}"', f'-DVARIANT="{variant}"']
    subprocess.run(["arm-none-eabi-gcc", f"-mcpu={cpu}", "-mthumb", "-Os", "-ffreestanding",
                    "-nostdlib", "-Wall", "-Werror", *defines, "-T", str(NET_PROBE / "link.ld"),
                    str(NET_PROBE / "net-probe.c"), "-o", str(elf)], check=True, timeout=60)
    binary = elf.with_suffix(".bin")
    subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", str(elf), str(binary)], check=True,
                   timeout=30)
    return binary.read_bytes()


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    return resolve_state_dir(tmp_path / "state")


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path


MachineFactory = Callable[[str, Attachment | None], Machine]


@pytest.fixture
def machines(run_dir: Path, state: StateDir) -> Iterator[MachineFactory]:
    """Make machines that are stopped after the test; proves their QEMU processes are gone."""
    made: list[Machine] = []

    def make(name: str, network: Attachment | None = None) -> Machine:
        machine = Machine(name, "mps2-an385", flash_file=run_dir / f"{name}.flash", run_dir=run_dir,
                          network=network, state=state)
        made.append(machine)
        return machine

    yield make
    pids = []
    for machine in made:
        if machine.running:
            pids.append(machine.pid)
        machine.stop()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"QEMU pid {pid} still running after stop()"


@pytest.fixture
def ping() -> Callable[..., bool]:
    """``ping(address, timeout=1.0) -> bool``: one ICMP echo from the harness side."""
    policy = TargetPolicy()
    policy.allow_created("emulated networks", SUPERNET)  # the networks these tests make themselves
    return lambda address, timeout=1.0: traffic.ping(str(address), timeout=timeout, size=16, policy=policy).replies == 1


@pytest.fixture
def build_image(tmp_path: Path) -> Callable[..., bytes]:
    """``build_image(board=, board_ip=, harness_ip=, variant=)`` → the net-probe binary."""
    return lambda **kw: build_net_probe(tmp_path / "img", **kw)


@pytest.fixture
def open_console(tmp_path: Path) -> Iterator[Callable[[str], Console]]:
    """``open_console(url) -> Console`` (harness.console, logged under tmp_path); closed after the test."""
    opened: list[Console] = []

    def open_(url: str) -> Console:
        opened.append(Console(url, tmp_path / f"console-{len(opened)}.log", name=f"console {len(opened)}"))
        return opened[-1]

    yield open_
    for console in opened:
        console.close()
