"""The ``qemu`` board kind: an emulated board, brought up on the same path as a real one.

The board's machine (QEMU mps2-an385/an386, :class:`~harness.emulation.qemu.Machine`) is powered
on halted on the session's tap test network; pyOCD then flashes, reads back, resets and inspects
it through the ``emu:`` probe plugin, exactly as it would a real board through its probe. Power is
the machine's (QEMU ends and starts again from the flash file), the console its relay's
``socket://`` URL (the same across power-cycles), the address the fixed lease the network's DHCP
server hands the board.
"""

from __future__ import annotations

import functools
import ipaddress
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from harness.board.kinds import BOARD_FACTORIES, DEFAULT_BUILDS, NETWORK_MODES, BoardSite
from harness.board.parts import BoardParts
from harness.board.pyocd_kind import probe_for
from harness.config import StrictModel
from harness.errors import ConfigError
from harness.lab import BOARD_KINDS, BoardConfig, BoardKind

if TYPE_CHECKING:
    from harness.console import Console
    from harness.emulation.qemu import Machine
    from harness.emulation.tap_network import TapAttachment, TapNetwork


class QemuSettings(StrictModel):
    """The ``qemu:`` section of an emulated board."""

    machine: Literal["mps2-an385", "mps2-an386"]
    network: Literal["tap", "user"] = "tap"
    memory: str | None = None


NETWORK_MODES.add("qemu", lambda config: str(config.settings.network))
BOARD_KINDS.add("qemu", BoardKind(
    "qemu", QemuSettings, "an emulated board: a QEMU machine flashed by pyOCD through the emu: probe plugin",
    requires_console_url=False))


class MachinePower:
    """Emulated power: off ends QEMU, on starts it from the flash file (the relay stays)."""

    cuts = True

    def __init__(self, machine: Machine) -> None:
        self.machine = machine

    def on(self) -> None:
        self.machine.power_on(run=True)

    def off(self) -> None:
        self.machine.power_off()

    def cycle(self) -> None:
        self.machine.power_cycle(run=True)


class LeaseAddress:
    """The address the test network's DHCP server leased to the board's MAC."""

    def __init__(self, network: TapNetwork, mac: str) -> None:
        self.network = network
        self.mac = mac

    def address(self, console: Callable[[], Console], timeout: float) -> ipaddress.IPv4Address:
        return self.network.wait_for_lease(self.mac, timeout)


class FixedAddress:
    """User networking: QEMU's DHCP always gives the board 10.0.2.15 (reached from the harness only
    through forwarded TCP ports)."""

    def address(self, console: Callable[[], Console], timeout: float) -> ipaddress.IPv4Address:
        from harness.emulation.network import USER_GUEST

        return ipaddress.IPv4Address(USER_GUEST)


@BOARD_FACTORIES.register("qemu")
def qemu_board(config: BoardConfig, site: BoardSite) -> BoardParts:
    from harness.emulation.network import UserAttachment
    from harness.emulation.qemu import Machine  # QEMU only when an emulated board is brought up

    settings = config.settings
    if config.probe.id.lower() != f"emu:{config.name}".lower():
        raise ConfigError(f"{config.source}: field probe.id: {config.probe.id!r} does not name this board's machine",
                          fix=f"write probe: {{id: 'emu:{config.name}'}}")
    if config.power.kind == "command":
        raise ConfigError(f"{config.source}: field power.kind: an emulated board's power is its machine's",
                          fix="remove the power section, or write power: {kind: emulated}")
    address: LeaseAddress | FixedAddress
    if settings.network == "tap":
        network: TapNetwork = site.network
        attachment: TapAttachment | UserAttachment = network.attach(config.name)
        address = LeaseAddress(network, attachment.mac)
        where = {"network": str(network.subnet), "namespace": attachment.namespace}
    else:  # user networking: the broker (on loopback) through a forward at 10.0.2.100
        port = site.network.broker_port
        attachment = UserAttachment.create(config.name, guest_services={port: port})
        address = FixedAddress()
        where = {"network": "user", "broker_forward": f"10.0.2.100:{port} -> 127.0.0.1:{port}"}
    # The board's flash outlives the run, as a real board's does: the next run (or `hil console`)
    # boots what was last programmed, and programming the same image again is skipped.
    machine = Machine(config.name, settings.machine, flash_file=site.state.root / "flash" / f"{config.name}.flash",
                      run_dir=site.run_dir, network=attachment, memory=settings.memory, state=site.state)
    machine.start(run=False)  # halted: pyOCD programs it through the emu: probe
    try:
        probe = probe_for(config, site)
    except BaseException:
        machine.stop()
        raise
    return BoardParts(probe=probe, console_url=lambda: machine.console_url, power=MachinePower(machine),
                      address=address, reset_kind=config.reset.method, close=machine.stop,
                      release=lambda: machine.resume() if machine.status() != "running" else None,
                      link_capture=lambda: machine.pcaps[-1] if machine.pcaps else None, mac=attachment.mac,
                      link=lambda up: machine.link_up() if up else machine.link_down(),
                      details={"machine": settings.machine, "qemu": _qemu_version(machine.qemu_binary), **where})


@functools.cache
def _qemu_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.splitlines()[0] if out else "unknown"


@DEFAULT_BUILDS.register("qemu")
def reference_build(config: BoardConfig, builds: Path) -> Path:
    """The reference firmware for the board's machine, fast preset, built into ``builds``."""
    from harness.firmware_build import build_reference

    machine = config.settings.machine
    return build_reference(machine, {}, "fast", builds / f"reference-{machine}-fast")
