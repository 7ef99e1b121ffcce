"""The small protocols a Board is composed of, and what a board kind supplies.

A board kind (``pyocd`` for a real board on a probe; ``qemu``, registered by the emulation package)
builds :class:`BoardParts` for one board of the lab: how it is flashed and inspected (a probe),
where its console is, how it is reset and powered, and how its address is found. The
:class:`~harness.board.board.Board` drives only these, so nothing above it knows the kind.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from harness.flash import FlashOptions, FlashResult

if TYPE_CHECKING:
    from harness.console import Console

Progress = Callable[[float], None]


class Probe(Protocol):
    """Flash, read back, reset and inspect through the board's debug probe (pyOCD)."""

    def program(self, path: Path, fmt: str | None = None, base: int | None = None, verify: bool = True,
                progress: Progress | None = None, options: FlashOptions | None = None) -> FlashResult: ...

    def holds(self, path: Path, fmt: str | None = None, base: int | None = None) -> bool: ...

    def reset(self, kind: str = "default", *, halt: bool = False, connect_mode: str | None = None) -> str: ...

    def inspect(self, timeout: float | None = None) -> dict[str, Any]: ...

    def close(self) -> None: ...


class Power(Protocol):
    """The board's power: ``cuts`` is False when 'off' is only a reset held (no real power switch)."""

    cuts: bool

    def on(self) -> None: ...

    def off(self) -> None: ...

    def cycle(self) -> None: ...


class AddressSource(Protocol):
    """Where the board is on its test network."""

    def address(self, console: Callable[[], Console], timeout: float) -> ipaddress.IPv4Address:
        """``console`` opens the board's console if the source needs it."""
        ...


@dataclass
class BoardParts:
    """What a kind supplies for one board. ``console_url`` is asked each time a console opens
    (an emulated board's may change with its machine); ``close`` releases what the kind started."""

    probe: Probe
    console_url: Callable[[], str]
    power: Power
    address: AddressSource
    reset_kind: str = "system"  # the board's reset method: a pyOCD reset type, or 'power' (a power-cycle)
    close: Callable[[], None] = lambda: None
    release: Callable[[], None] = lambda: None  # let a board the kind holds halted run (a console session)
    link_capture: Callable[[], Path | None] = lambda: None  # a pcap of the board's link, while it is written
    mac: str | None = None  # the board's MAC on its test network, where known
    link: Callable[[bool], None] | None = None  # pull (False) or plug (True) its network cable, where the lab can
    details: dict[str, Any] = field(default_factory=dict)  # shown by health() and in the run log
