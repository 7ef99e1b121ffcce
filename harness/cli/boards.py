"""`hil boards`: the lab's boards, who holds them, which are quarantined, which emulated machines run;
`--check` validates."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from harness.broker import BROKER_KINDS
from harness.emulation.machine_registry import MachineRecord, list_machines
from harness.errors import ConfigError
from harness.lab import LAB_FILE, Lab, load_lab
from harness.lease import clear_quarantine, live_holder, quarantined


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("boards", help="list the lab's boards, their holders and quarantine")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--check", action="store_true", help="validate every file; exit 2 on any error")
    what.add_argument("--clear", metavar="NAME", help="clear the quarantine of board NAME")
    p.set_defaults(func=run)


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """The reader went away (`hil boards | head`): end as every hil command does (harness.cli.main)."""
        self.quiet = True
        raise BrokenPipeError


def _machine_cell(record: MachineRecord | None) -> str:
    """For an emulated board: its running QEMU machine (pid, console), if any."""
    return f"running pid {record.pid}, console {record.console}" if record else ""


def _lab_wide_errors(lab: Lab) -> list[ConfigError]:
    """What only the whole harness can check: the broker kind names a registered kind, the state
    folder is a folder (or can be made; nothing is made here)."""
    errors = []
    try:
        BROKER_KINDS.get(lab.settings.broker.kind, where=f"{lab.root / LAB_FILE}: field broker.kind")
    except ConfigError as exc:
        errors.append(exc)
    try:
        lab.state  # noqa: B018 (resolving it checks it)
    except ConfigError as exc:
        errors.append(exc)
    return errors


def run(args: argparse.Namespace) -> int:
    errors: list[ConfigError] = []
    lab = load_lab(args.lab, collect_errors=errors)
    if args.clear is not None:
        lab.board(args.clear)  # a ConfigError naming the known boards if it is not one
        had = clear_quarantine(lab.state, args.clear)
        print(f"{args.clear}: quarantine cleared" if had else f"{args.clear}: was not quarantined")
        return 0
    if args.check:
        errors += _lab_wide_errors(lab)
        for err in errors:
            print(f"error: {err}", file=sys.stderr)
        if errors:
            print(f"{len(errors)} error(s) in {lab.root}", file=sys.stderr)
            return 2
        print(f"{lab.root}: {len(lab.boards)} board(s), {len(lab.settings.networks)} network(s): ok")
        return 0
    table = Table(title=f"boards in {lab.root}")
    for col in ("name", "kind", "target", "probe id", "holder", "quarantine", "machine"):
        table.add_column(col)
    state = lab.state
    machines = {m.name: m for m in list_machines(state)}
    for name, board in sorted(lab.boards.items()):
        holder = live_holder(state, name)
        q = quarantined(state, name)
        table.add_row(
            name,
            board.kind,
            board.probe.target,
            board.probe.id,
            f"pid {holder.pid} @ {holder.host} run {holder.run_id}" if holder else "",
            f"{q.reason} (since {q.since}{'; evidence ' + q.evidence if q.evidence else ''})" if q else "",
            _machine_cell(machines.get(name)),
        )
    _Console(width=160).print(table)
    for err in errors:
        print(f"error: {err}", file=sys.stderr)
    return 2 if errors else 0
