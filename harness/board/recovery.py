"""The recovery ladder for flashing: each rung a stronger remedy, each recorded in the run log.

    attempt -> retry -> reset and reconnect -> connect under reset
            -> erase (by the board's erase policy) and program without smart flash
            -> power-cycle and program -> quarantine the board

A rung is tried only after the one below failed; the first that succeeds ends the climb, and
its name is recorded with the result. Errors that no remedy can fix (a wrong image, an image that
reaches below the board's bootloader, a bad configuration) end the climb at once. At the top the
board is quarantined (reason, time and evidence in the lab state; later runs skip it until
``hil boards --clear NAME``) and :class:`~harness.board.errors.BoardBroken` is raised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeVar

from harness.board.errors import BoardBroken
from harness.errors import ConfigError, HarnessError, UsageError
from harness.flash import FlashOptions

if TYPE_CHECKING:
    from harness.board.board import Board

T = TypeVar("T")


@dataclass(frozen=True)
class Rung:
    name: str
    options: FlashOptions
    before: str | None = None  # "reset" | "power-cycle": what the rung does before programming


def rungs(erase_policy: str) -> list[Rung]:
    full = FlashOptions(smart_flash=False, chip_erase=erase_policy)
    return [
        Rung("attempt", FlashOptions()),
        Rung("retry", FlashOptions()),
        Rung("reset-reconnect", FlashOptions(), before="reset"),
        Rung("connect-under-reset", FlashOptions(connect_mode="under-reset")),
        Rung("erase-program", full),
        Rung("power-cycle", replace(full, connect_mode="under-reset"), before="power-cycle"),
    ]


class Ladder:
    """Climbs the rungs for one operation of one board; ``quarantine`` at the top (default)."""

    def __init__(self, *, quarantine: bool = True) -> None:
        self.quarantine = quarantine

    def run(self, board: Board, attempt: Callable[[FlashOptions], T], *, what: str) -> T:
        failures: list[str] = []
        last: HarnessError | None = None
        for rung in rungs(board.config.probe.erase):
            try:
                if rung.before == "reset":
                    board.parts.probe.reset("hardware", halt=True)
                elif rung.before == "power-cycle":
                    board.parts.power.cycle()
                result = attempt(rung.options)
            except (UsageError, ConfigError):
                raise  # nothing a probe or power can fix
            except HarnessError as exc:
                last = exc
                failures.append(f"{rung.name}: {exc.message}")
                board.log.record("rung", board=board.name, what=what, rung=rung.name, outcome="failed",
                                 error=exc.message, evidence=exc.evidence)
                continue
            board.log.record("rung", board=board.name, what=what, rung=rung.name, outcome="ok")
            return result
        reason = f"{what} failed on every rung of the recovery ladder ({'; '.join(failures)})"
        evidence = last.evidence if last is not None else None
        board.mark_broken(reason, evidence=evidence, quarantine_board=self.quarantine)
        raise BoardBroken(f"board {board.name}: {reason}",
                          fix=f"check the board and its probe, then 'hil boards --clear {board.name}'",
                          evidence=evidence or board.log.path) from last
