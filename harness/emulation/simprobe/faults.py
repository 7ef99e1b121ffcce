"""Injected probe faults, read per probe from ``<state>/simprobe/faults/<probe id>.json``.

Each fault surfaces as the exception a real probe of that kind raises::

    {"unplug_after_bytes": 65536}        ProbeDisconnected once that many bytes moved
    {"fail_erase_sector": 134348800}     the flash algorithm's EraseSector returns 1 → FlashEraseFailure
    {"fail_program_sector": 134348800}   ProgramPage returns 1 for pages in that sector → FlashProgramFailure
    {"stuck_bits": [{"address": 134217744, "bit": 3, "value": 0}]}   the cell ignores programming
    {"not_responding": true}             DP reads time out → pyOCD's "Target not detected"
    {"delay_per_transfer": 0.002}        every transfer takes that long (a slow link)
    {"hang_after_bytes": 0}              the probe stops answering (blocks ``hang_seconds``, then times out)
    {"analyzer_wedges": true}            after smart flash's CRC analyzer ran, ProgramPage fails (an
                                         erratum): programming without smart flash works

How long a fault lasts (default: as long as the file exists; remove the file to lift it):

    {"sessions": 1, ...}                 only the next N probe sessions see it (a transient fault)
    {"until_hardware_reset": true, ...}  lifted by the probe's hardware reset (nRST), until the file changes
    {"unless_under_reset": true, ...}    sessions that connect under reset do not see it (firmware that
                                         turns the debug pins off once it runs)

Addresses may be given as integers or as hex strings ("0x08004000").
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from pyocd.core import exceptions

from harness.errors import ConfigError


def _int(value: object) -> object:
    return int(value, 0) if isinstance(value, str) else value


Address = Annotated[int, BeforeValidator(_int)]


class StuckBit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: Address
    bit: int
    value: int = 0


class FaultPlan(BaseModel):
    """What goes wrong on one emulated probe (all off by default)."""

    model_config = ConfigDict(extra="forbid")
    unplug_after_bytes: int | None = None
    fail_erase_sector: Address | None = None
    fail_program_sector: Address | None = None
    stuck_bits: list[StuckBit] = []
    not_responding: bool = False
    delay_per_transfer: float = 0.0
    hang_after_bytes: int | None = None
    hang_seconds: float = 3600.0
    analyzer_wedges: bool = False
    sessions: int | None = None
    until_hardware_reset: bool = False
    unless_under_reset: bool = False

    @classmethod
    def load(cls, path: Path) -> FaultPlan:
        if not path.exists():
            return cls()
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except (ValueError, ValidationError) as exc:
            raise ConfigError(f"bad fault file {path}: {exc}", fix=f"see {__name__} for the fields") from exc

    @classmethod
    def for_session(cls, path: Path) -> FaultPlan:
        """The plan a new probe session sees: the file's, unless its duration is over (and then
        counting this session against ``sessions``)."""
        plan = cls.load(path)
        if plan == cls():
            return plan
        reset_mark = path.with_suffix(".reset")
        reset_since = reset_mark.exists() and reset_mark.stat().st_mtime_ns >= path.stat().st_mtime_ns
        if plan.until_hardware_reset and reset_since:
            return cls()
        if plan.sessions is not None:
            used_path = path.with_suffix(".used")
            try:
                used = int(used_path.read_text())
            except (FileNotFoundError, ValueError):
                used = 0
            if used >= plan.sessions:
                return cls()
            used_path.write_text(str(used + 1))
        return plan

    @staticmethod
    def note_hardware_reset(path: Path) -> None:
        """The probe pulsed nRST: faults lasting ``until_hardware_reset`` are lifted."""
        if path.exists():
            path.with_suffix(".reset").write_text("")


class LinkGuard:
    """Counts the bytes a probe moves and raises the injected link faults."""

    def __init__(self, plan: FaultPlan, uid: str) -> None:
        self.plan = plan
        self.uid = uid
        self.moved = 0
        self.unplugged = False
        self.under_reset = False  # this session connected with reset asserted
        self._released = threading.Event()

    def before_transfer(self, nbytes: int) -> None:
        plan = self.plan
        if self.unplugged:
            raise exceptions.ProbeDisconnected(f"probe {self.uid} was unplugged")
        if plan.delay_per_transfer:
            time.sleep(plan.delay_per_transfer)  # the emulated link's latency
        if plan.hang_after_bytes is not None and self.moved >= plan.hang_after_bytes:
            self._released.wait(plan.hang_seconds)
            raise exceptions.TransferTimeoutError(f"probe {self.uid} stopped answering")
        if plan.unplug_after_bytes is not None and self.moved + nbytes > plan.unplug_after_bytes:
            self.unplugged = True
            raise exceptions.ProbeDisconnected(f"probe {self.uid} was unplugged after {self.moved} bytes")
        self.moved += nbytes

    def check_dp(self) -> None:
        """Before a DP access: a silent target never answers."""
        if self.plan.not_responding and not (self.plan.unless_under_reset and self.under_reset):
            raise exceptions.TransferTimeoutError(f"no ACK from the target behind {self.uid}")
        self.before_transfer(4)

    def release(self) -> None:
        """Let a hung call return (on close)."""
        self._released.set()
