"""Where a board is on its way up, and what its health check found."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class BoardState(enum.IntEnum):
    """Where a board is on its way up; BROKEN stays for the rest of the run."""

    OFF = 0
    FLASHED = 1
    BOOTED = 2
    ONLINE = 3
    BROKEN = 9


@dataclass(frozen=True)
class HealthReport:
    """Each part's answer within the deadline: None when it answered, else why not."""

    console: str | None
    probe: str | None
    network: str | None
    details: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.console is None and self.probe is None and self.network is None

    def problems(self) -> str:
        return "; ".join(f"{part}: {why}" for part, why in
                         (("console", self.console), ("probe", self.probe), ("network", self.network)) if why)
