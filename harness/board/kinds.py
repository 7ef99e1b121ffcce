"""The registry of board kinds that can be brought up, and what a kind's factory is given.

A kind registers a factory under the name used in YAML (``kind: pyocd``); the emulation package
registers ``qemu`` itself. The factory builds the :class:`~harness.board.parts.BoardParts` of one
board from its configuration and the run's :class:`BoardSite` (run folder, state folder, run log,
and the test network the session put the board on). Kinds are imported by name from the
``hil.board_kinds`` entry points (:func:`harness.lab.board_kinds`), so this module imports none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.lab import board_kinds
from harness.registry import Registry
from harness.runlog import RunLog
from harness.state import StateDir

if TYPE_CHECKING:
    from harness.board.parts import BoardParts
    from harness.lab import BoardConfig

log = logging.getLogger(__name__)


@dataclass
class BoardSite:
    """Where a board is brought up: the run's folders and log, and its place on a test network
    (``network``: the session's network object for the board's ``test_network``)."""

    run_dir: Path
    state: StateDir
    log: RunLog
    network: Any


BoardFactory = Callable[["BoardConfig", BoardSite], "BoardParts"]
BOARD_FACTORIES: Registry[BoardFactory] = Registry("board")

#: A kind's default firmware, for boards the harness can build an image for itself (emulated ones:
#: the reference firmware); ``(config, builds folder) -> build folder``.
DefaultBuild = Callable[["BoardConfig", Path], Path]
DEFAULT_BUILDS: Registry[DefaultBuild] = Registry("default build")


#: How a kind's board joins the harness's emulated network: "tap" (a network of its own, with
#: DHCP, DNS and NTP: root) or "user" (QEMU user networking: no root, no NTP, the broker through a
#: forward). Kinds without an entry do not go on the emulated network.
NETWORK_MODES: Registry[Callable[[BoardConfig], str]] = Registry("network mode")


def network_mode(config: BoardConfig) -> str | None:
    load_kinds()
    return NETWORK_MODES.get(config.kind)(config) if config.kind in NETWORK_MODES else None


def load_kinds() -> None:
    """Import every installed kind module (each registers itself); idempotent."""
    board_kinds()


def factory_for(kind: str, where: str = "") -> BoardFactory:
    if kind not in BOARD_FACTORIES:
        load_kinds()
    return BOARD_FACTORIES.get(kind, where=where)


def default_build_for(kind: str) -> DefaultBuild | None:
    """The kind's default firmware builder, or None (real boards: the user names the build)."""
    load_kinds()
    return DEFAULT_BUILDS.get(kind) if kind in DEFAULT_BUILDS else None
