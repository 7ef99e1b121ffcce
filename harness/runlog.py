"""The run log: what a run did, step by step, as JSON lines in the run folder.

Board bring-up steps, recovery rungs, quarantines and session services each append one record
(``time``, ``board``, ``event``, ``outcome``, ``duration``, details) to ``<run>/run-log.jsonl``
and to the Python log. Several processes of one run may append to the same file: each record is
one ``write`` of one line to a file opened with ``O_APPEND``, so lines never interleave.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RUN_LOG = "run-log.jsonl"


class RunLog:
    """Appends records to ``<run dir>/run-log.jsonl``; thread- and process-safe."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir).resolve() / RUN_LOG
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def record(self, event: str, *, board: str | None = None, outcome: str = "ok", **details: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds"),
            "event": event, "outcome": outcome,
        }
        if board is not None:
            entry["board"] = board
        entry.update(details)
        line = (json.dumps(entry, default=str) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        level = logging.INFO if outcome == "ok" else logging.WARNING
        log.log(level, "%s%s: %s %s", f"{board}: " if board else "", event, outcome,
                {k: v for k, v in details.items() if k != "evidence"} or "")
        return entry

    @contextmanager
    def step(self, event: str, *, board: str | None = None, **details: Any) -> Iterator[dict[str, Any]]:
        """Time a step and record it once it ends: ``ok``, or ``failed`` with the error. The yielded
        dict collects details the step learns on the way."""
        learned: dict[str, Any] = {}
        t0 = time.monotonic()
        try:
            yield learned
        except BaseException as exc:
            self.record(event, board=board, outcome="failed", duration=round(time.monotonic() - t0, 3),
                        error=f"{type(exc).__name__}: {exc}", **details, **learned)
            raise
        self.record(event, board=board, duration=round(time.monotonic() - t0, 3), **details, **learned)

    def entries(self, board: str | None = None) -> list[dict[str, Any]]:
        """Every record so far (of one board, if given); a torn last line is skipped."""
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if board is None or entry.get("board") == board:
                out.append(entry)
        return out
