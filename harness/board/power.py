"""Power and address sources that any board kind may use.

- :class:`CommandPower`: the board file's ``power: {kind: command, on_command, off_command}`` (a USB
  hub port, a lab PDU), each command run with a deadline; it really cuts power.
- :class:`ProbeResetPower`: a board without power control: 'off' holds the core halted after a
  hardware reset, 'on' and 'cycle' are pyOCD hardware resets (it does not cut power).
- :class:`StaticAddress` and :class:`ConsoleAddress`: ``network.address_from`` static or console.
"""

from __future__ import annotations

import ipaddress
import logging
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from harness.errors import InfrastructureError, WaitTimeout

if TYPE_CHECKING:
    from harness.board.parts import Probe
    from harness.console import Console

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 30.0
OFF_TIME = 1.0  # seconds without power in a cycle: lets the board's capacitors drain


class CommandPower:
    cuts = True

    def __init__(self, on_command: Sequence[str], off_command: Sequence[str], *, board: str,
                 off_time: float = OFF_TIME, timeout: float = COMMAND_TIMEOUT) -> None:
        self.on_command = list(on_command)
        self.off_command = list(off_command)
        self.board = board
        self.off_time = off_time
        self.timeout = timeout

    def _run(self, argv: list[str]) -> None:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout, check=False,
                                  start_new_session=True)
        except FileNotFoundError:
            raise InfrastructureError(f"board {self.board}: power command {argv[0]!r} is not installed",
                                      fix="install it, or correct power.on_command/off_command") from None
        except subprocess.TimeoutExpired:
            raise InfrastructureError(f"board {self.board}: power command {' '.join(argv)} did not finish "
                                      f"in {self.timeout:g} s") from None
        if done.returncode != 0:
            raise InfrastructureError(f"board {self.board}: power command {' '.join(argv)} failed "
                                      f"(exit {done.returncode})", actual=(done.stderr or done.stdout).strip()[-500:])

    def on(self) -> None:
        self._run(self.on_command)

    def off(self) -> None:
        self._run(self.off_command)

    def cycle(self) -> None:
        self.off()
        time.sleep(self.off_time)  # time without power, not a wait for an event
        self.on()


class ProbeResetPower:
    cuts = False

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    def on(self) -> None:
        self.probe.reset("hardware")

    def off(self) -> None:
        self.probe.reset("hardware", halt=True)

    def cycle(self) -> None:
        self.probe.reset("hardware")


class StaticAddress:
    def __init__(self, address: ipaddress.IPv4Address) -> None:
        self._address = address

    def address(self, console: Callable[[], Console], timeout: float) -> ipaddress.IPv4Address:
        return self._address


class ConsoleAddress:
    """The address the board prints, read with the board file's ``console_pattern``."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def address(self, console: Callable[[], Console], timeout: float) -> ipaddress.IPv4Address:
        board_console = console()
        match = board_console.expect(self.pattern, timeout=timeout)
        text = match.group("address")
        try:
            return ipaddress.IPv4Address(text)
        except ValueError:
            raise WaitTimeout(f"{board_console.name}: the line {match.group(0)!r} matched the console pattern, but "
                              f"{text!r} is not an IPv4 address", evidence=board_console.log_path) from None
