"""The ``pyocd`` board kind: a real board on a debug probe.

Flashing, read-back, resets and the probe's health go through pyOCD (:class:`~harness.flash.Flasher`:
a worker process under an outside deadline); the console is the board file's URL; power is the
board file's commands, or pyOCD hardware resets where the board has no power control; the address
is static or read from the console.
"""

from __future__ import annotations

from harness.board.kinds import BOARD_FACTORIES, BoardSite
from harness.board.link_capture import LinkCapture
from harness.board.parts import AddressSource, BoardParts, Power
from harness.board.power import CommandPower, ConsoleAddress, ProbeResetPower, StaticAddress
from harness.errors import ConfigError
from harness.flash import Flasher
from harness.lab import BOARD_KINDS, BoardConfig, BoardKind

BOARD_KINDS.add("pyocd", BoardKind("pyocd", None, "a real board on a debug probe, flashed by pyOCD"))


def probe_for(config: BoardConfig, site: BoardSite) -> Flasher:
    p = config.probe
    return Flasher(p.id, p.target, p.pack, p.frequency, p.connect_mode, p.erase, run_dir=site.run_dir,
                   state_dir=site.state.root, keep_below=p.keep_below)


def address_for(config: BoardConfig) -> AddressSource:
    net = config.network
    if net.address_from == "static" and net.address is not None:
        return StaticAddress(net.address)
    if net.address_from == "console" and net.console_pattern:
        return ConsoleAddress(net.console_pattern)
    raise ConfigError(f"{config.source}: field network.address_from: {net.address_from!r} needs the harness's "
                      "own DHCP server, which only emulated boards have",
                      fix="use address_from: static (with address:) or console (with console_pattern:)")


@BOARD_FACTORIES.register("pyocd")
def pyocd_board(config: BoardConfig, site: BoardSite) -> BoardParts:
    probe = probe_for(config, site)
    power: Power
    if config.power.kind == "command" and config.power.on_command and config.power.off_command:
        power = CommandPower(config.power.on_command, config.power.off_command, board=config.name)
    elif config.power.kind == "emulated":
        raise ConfigError(f"{config.source}: field power.kind: 'emulated' is for emulated boards",
                          fix="use 'command' (with on_command/off_command) or 'none'")
    else:
        power = ProbeResetPower(probe)
    url = config.console.url or ""
    capture = _capture_for(config, site)
    return BoardParts(probe=probe, console_url=lambda: url, power=power, address=address_for(config),
                      reset_kind=config.reset.method, details={"probe": config.probe.id, "target": config.probe.target},
                      link_capture=lambda: capture.path if capture is not None else None,
                      close=capture.stop if capture is not None else lambda: None)


def _capture_for(config: BoardConfig, site: BoardSite) -> LinkCapture | None:
    """tcpdump on the host's side of the board's lab network, if the session gave one."""
    net = site.network
    interface = getattr(net, "interface", None) or getattr(net, "bridge", None)
    if not interface:
        return None
    return LinkCapture(interface, site.run_dir / f"{config.name}-link.pcap").start()
