"""Leases: one test process per board on a host, and the boards' quarantine.

A lease is an exclusive ``flock`` on ``<state>/leases/<board>.lock`` (through ``filelock``) with a
holder record beside it (pid, host, run id, start time). The kernel drops the lock when its holder
dies, however it dies, so a board held by a SIGKILLed process is free again at once; a holder
record left behind by such a process is recognised as stale because its lock can be taken, and is
never shown as a live holder.

A quarantined board (``<state>/quarantine/<board>.json``, written by later board-control code
when a board keeps failing) cannot be leased until ``hil boards --clear NAME``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

from harness.errors import InfrastructureError
from harness.state import StateDir

#: How often a waiting acquirer retries the lock (flock has no timed wait).
POLL_INTERVAL = 0.002


class BoardBusy(InfrastructureError):
    """The board is leased by another live process."""


class BoardQuarantined(InfrastructureError):
    """The board is quarantined."""


@dataclass(frozen=True)
class Holder:
    board: str
    pid: int
    host: str
    run_id: str
    started: str


@dataclass(frozen=True)
class Quarantine:
    board: str
    reason: str
    since: str
    run_id: str | None = None
    evidence: str | None = None  # where the failure is recorded (a run log, a probe log)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _lock_path(state: StateDir, board: str) -> Path:
    return state.leases / f"{board}.lock"


def _holder_path(state: StateDir, board: str) -> Path:
    return state.leases / f"{board}.holder.json"


def _write_json(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


class Lease:
    """An exclusive hold on one board for this process; use as a context manager."""

    def __init__(self, state: StateDir, board: str, run_id: str) -> None:
        self.state = state
        self.board = board
        self.run_id = run_id
        self._lock = FileLock(_lock_path(state, board), thread_local=False, is_singleton=False)

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def acquire(self, timeout: float = 0.0) -> Lease:
        """Take the board, waiting up to ``timeout`` seconds for another holder to let go."""
        q = quarantined(self.state, self.board)
        if q is not None:
            raise BoardQuarantined(
                f"board {self.board} is quarantined since {q.since}: {q.reason}",
                fix=f"repair the board, then `hil boards --clear {self.board}`",
            )
        try:
            self._lock.acquire(timeout=timeout, poll_interval=POLL_INTERVAL)
        except Timeout:
            h = live_holder(self.state, self.board)
            who = f"pid {h.pid} on {h.host}, run {h.run_id}, since {h.started}" if h else "another process"
            raise BoardBusy(
                f"board {self.board} is leased by {who}",
                expected=f"the board free within {timeout:g} s",
                fix="wait for that run to end, or choose another board",
            ) from None
        holder = Holder(self.board, os.getpid(), socket.gethostname(), self.run_id, _now())
        _write_json(_holder_path(self.state, self.board), asdict(holder))
        return self

    def release(self) -> None:
        if not self._lock.is_locked:
            return
        path = _holder_path(self.state, self.board)
        record = _read_json(path)
        if record is not None and record.get("pid") == os.getpid():
            path.unlink(missing_ok=True)
        self._lock.release(force=True)

    def __enter__(self) -> Lease:
        if not self.held:
            self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def live_holder(state: StateDir, board: str) -> Holder | None:
    """The process holding the board now, or None. A record whose lock is free is stale."""
    lock_path = _lock_path(state, board)
    if not lock_path.exists():
        return None
    probe = FileLock(lock_path, thread_local=False, is_singleton=False)
    try:
        probe.acquire(timeout=0)
    except Timeout:
        record = _read_json(_holder_path(state, board))
        if record is None:
            return Holder(board, -1, "?", "?", "?")
        return Holder(
            board=board,
            pid=int(record.get("pid", -1)),  # type: ignore[call-overload]
            host=str(record.get("host", "?")),
            run_id=str(record.get("run_id", "?")),
            started=str(record.get("started", "?")),
        )
    try:
        _holder_path(state, board).unlink(missing_ok=True)  # stale: its holder died
    finally:
        probe.release(force=True)
    return None


def quarantine(state: StateDir, board: str, reason: str, run_id: str | None = None,
               evidence: str | None = None) -> Quarantine:
    q = Quarantine(board, reason, _now(), run_id, evidence)
    _write_json(state.quarantine / f"{board}.json", asdict(q))
    return q


def quarantined(state: StateDir, board: str) -> Quarantine | None:
    path = state.quarantine / f"{board}.json"
    record = _read_json(path)
    if record is None:
        if not path.exists():
            return None
        # a damaged record still quarantines: the board stays out until someone looks
        return Quarantine(board, f"its quarantine record {path} is unreadable", "?", evidence=str(path))
    return Quarantine(
        board=board,
        reason=str(record.get("reason", "")),
        since=str(record.get("since", "?")),
        run_id=None if record.get("run_id") is None else str(record.get("run_id")),
        evidence=None if record.get("evidence") is None else str(record.get("evidence")),
    )


def clear_quarantine(state: StateDir, board: str) -> bool:
    """Lift a quarantine; True if there was one."""
    path = state.quarantine / f"{board}.json"
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed
