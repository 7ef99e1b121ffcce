"""Reproducing a bundle on the bench: bring a board up with the lab build, replay, collect, compare.

The bench run keeps the bundle's relative timing: each segment of the replay (see
:mod:`harness.bundle.plan`) begins as long after the board's first security message as it did
after the device's (on the capture's clock), gaps scaled by ``speed``; collection goes on for as
long as the bundle's telemetry lasted (at most :data:`MAX_SPAN`; the bundle's later messages are
left out of the comparison, and the report says so), and at least two collection intervals after
the replay (so the window holding its last datagrams is reported). The hub's outages seen on the
capture are re-enacted at the bench's broker (stopped and started again) at the same offsets from
the first security message, in real time (``speed`` scales only the replay), by the thread that
runs the replay: the broker's process is tied to the thread that starts it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.broker import Broker
from harness.bundle.compare import Comparison, Side, compare
from harness.bundle.load import Bundle
from harness.bundle.plan import ReplayPlan, plan_replay
from harness.bundle.telemetry import DeviceMessages, load_messages
from harness.errors import CheckFailed, ConfigError, HarnessError, InfrastructureError
from harness.firmware import FirmwareBuild
from harness.lab import Lab
from harness.session import RunSession
from harness.traffic.replay import replay
from harness.traffic.tls_publish import TlsPublishMarks

MAX_SPAN = 600.0  # seconds of the bundle's telemetry the bench matches at most (past the replay and outages)
RECONNECT = 15.0  # the device's reconnection back-off after the broker returns, at most
FIRST_MESSAGE_SLACK = 60.0  # seconds past the build's first-collection window to wait for a first message

Pause = Callable[[float], bool]  # wait up to S seconds; True when a stop was asked for


@dataclass
class Reproduction:
    bundle: Bundle
    build: FirmwareBuild
    build_why: str
    board: str
    plan: ReplayPlan
    run_dir: Path
    speed: float
    bench: DeviceMessages | None = None
    comparison: Comparison | None = None
    replay: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    complete: bool = False
    error: HarnessError | None = None  # what ended the bench run; the report is written all the same


def fresh_folder(parent: Path, name: str) -> Path:
    """``parent/name``, or ``name-2``, ``name-3``... when an earlier run in the same report folder
    left it (its evidence is kept, never mixed with this run's)."""
    candidate, n = parent / name, 1
    while candidate.exists():
        n += 1
        candidate = parent / f"{name}-{n}"
    return candidate


def reproduce(lab: Lab, bundle: Bundle, build: FirmwareBuild, build_why: str, board_name: str, report: Path, *,
              speed: float = 1.0, pause: Pause, progress: Callable[[str], None] = lambda _: None) -> Reproduction:
    where = f"{bundle.yaml}: field capture: {bundle.manifest.capture}"
    tls = TlsPublishMarks.of(m.wire for m in bundle.messages.messages if m.wire is not None)
    plan = plan_replay(bundle.capture, bundle.device_address, bundle.manifest.replay_from, report / "replay.pcap",
                       where=where, tls=tls)
    result = Reproduction(bundle, build, build_why, board_name, plan, fresh_folder(report, "run"), speed)
    fw = bundle.manifest.firmware
    if (build.manifest.version, build.manifest.build.build_id) != (fw.version, fw.build_id):
        result.notes.append(f"the build run ({build.manifest.version}, build id {build.manifest.build.build_id}) is "
                            f"not the bundle's ({fw.version}, build id {fw.build_id}): chosen with --firmware")
    if build.manifest.security_module.version != fw.module_version:
        result.notes.append(f"the build carries module {build.manifest.security_module.version}, the bundle "
                            f"{fw.module_version}")
    messages = bundle.messages.messages
    try:
        address, device_id, archive = _bench_run(lab, result, pause, progress)
    except HarnessError as exc:  # the caller writes the report with what there is, then raises it
        result.error = exc
        return result
    try:
        bench = load_messages(archive, "archive", device_id, what=f"the bench's archive {archive}")
    except ConfigError as exc:  # the harness's own archive: not the user's input
        result.error = InfrastructureError(exc.message, evidence=archive)
        return result
    result.bench = bench
    if not bench.messages:
        result.error = CheckFailed(f"board {board_name} sent no security message on the bench", evidence=archive)
        return result
    # the bundle's telemetry as far as the bench's run went (a field bundle may hold hours of it)
    covered = bench.messages[-1].received - bench.messages[0].received + build.manifest.behaviour.intervals_s.high
    compared = [m for m in messages if m.received - messages[0].received <= covered]
    if len(compared) < len(messages):
        result.notes.append(f"{len(messages) - len(compared)} message(s) of the bundle arrived later than the bench "
                            f"ran ({covered:.0f} s after the first): not compared")
    replay_started = result.replay.get("started", float("inf"))
    bundle_side = Side("bundle", bundle.device_address, frozenset(plan.peers), frozenset(plan.keys),
                       plan.boot_messages)
    bench_side = Side("bench", address, frozenset({result.replay.get("harness_address", address)}),
                      frozenset(plan.keys), sum(1 for m in bench.messages if m.received < replay_started))
    result.comparison = compare(compared, bench.messages, bundle_side, bench_side,
                                pending_time_s=build.manifest.behaviour.pending_time_s)
    return result


def _bench_run(lab: Lab, result: Reproduction, pause: Pause, progress: Callable[[str], None]) -> tuple[Any, str, Path]:
    """Bring the board up, replay and re-enact, collect; the board's address, device and archive."""
    bundle, build, board_name, plan, speed = result.bundle, result.build, result.board, result.plan, result.speed
    messages = bundle.messages.messages
    span = min(messages[-1].received - messages[0].received, MAX_SPAN)
    with RunSession(lab, boards=[board_name], run_dir=result.run_dir) as session:
        assert session.collector is not None
        progress(f"bringing {board_name} up with {build.manifest.name}")
        board = session.bring_up(board_name, build)
        behaviour = build.manifest.behaviour
        first_due = behaviour.first_collection_window[1] + FIRST_MESSAGE_SLACK
        session.collector.wait_for(board.device_id, lambda e: True, first_due, since=board.boot_mark,
                                   what="the board's first security message")
        first = session.collector.messages(board.device_id, since=board.boot_mark)[0].received
        assert session.broker is not None
        try:
            stopped = _enact(session.broker, board, plan, first, speed, pause, progress, result)
            if not stopped:
                end = max(first + span, time.time() + 2 * behaviour.intervals_s.high + 3,
                          *(first + b + RECONNECT + behaviour.intervals_s.low for _, b in plan.outages))
                stopped = pause(end - time.time())
        finally:
            if not session.broker.running:  # stopped while the hub was gone: back, for a clean end
                session.broker.start()
        session.collector.require_intact()  # a collector that lost its session: exit 3, not a difference
        result.complete = not stopped
        address, device_id, archive = board.address, board.device_id, session.archive
    return address, device_id, archive


def _enact(broker: Broker, board: Any, plan: ReplayPlan, first: float, speed: float, pause: Pause,
           progress: Callable[[str], None], result: Reproduction) -> bool:
    """The replay and the outages, in the order of their times after ``first``, all in this thread
    (the broker's process must be started by a thread that lives as long as the run). An action
    due while the replay still runs happens when it ends; the times each happened are recorded.
    True when a stop was asked for."""
    actions: list[tuple[float, str, float]] = [(first + plan.offset_of(seg.first) * speed, "replay", i)
                                               for i, seg in enumerate(plan.segments)]
    for start, end in plan.outages:
        actions += [(first + start, "stop", end - start), (first + end, "start", 0.0)]
    done: list[list[float]] = []
    segments: list[dict[str, Any]] = []
    result.replay.update(outages=done, segments=segments)
    for at, what, detail in sorted(actions, key=lambda a: a[0]):
        if pause(at - time.time()):
            return True
        late = round(time.time() - at, 1)
        if what == "replay":
            segment = plan.segments[int(detail)]
            progress(f"replaying {segment.frames} frame(s) of the bundle's traffic at {board.address} "
                     f"(segment {int(detail) + 1} of {len(plan.segments)}, speed {speed:g})")
            started = time.time()
            exchange = replay(board.traffic_target(), segment.pcap, str(plan.device), speed=speed)
            segments.append({**exchange.details, "started": round(started - first, 3),
                             "ended": round(time.time() - first, 3)})
            result.replay.setdefault("started", started)
            result.replay.update(ended=time.time(), harness_address=_harness_address(board))
        elif what == "stop":
            progress(f"broker stopped for {detail:.1f} s, as the hub was gone in the bundle")
            broker.stop()
            done.append([round(time.time() - first, 1)])
        else:
            broker.start()
            done[-1].append(round(time.time() - first, 1))
        if late > 1.0:
            result.notes.append(f"{what} at {at - first:.1f} s came {late:g} s late (the replay was still running)")
    return False


def _harness_address(board: Any) -> Any:
    """The harness address the replay's traffic left from (the bench's only peer)."""
    import ipaddress
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((str(board.address), 9))
        return ipaddress.IPv4Address(probe.getsockname()[0])


def report_data(result: Reproduction) -> dict[str, Any]:
    """What the report shows, as JSON (see :mod:`harness.report.reproduction`)."""
    b, m, fw = result.bundle, result.build.manifest, result.bundle.manifest.firmware
    comparison = result.comparison
    error = result.error
    verdict = ({3: "infrastructure", 1: "differs"}.get(error.exit_code, "error") if error is not None else
               "incomplete" if not result.complete or comparison is None else
               "reproduced" if comparison.reproduced else "differs")
    messages = b.messages.messages
    data: dict[str, Any] = {
        "verdict": verdict, "complete": result.complete,
        "bundle": {"path": str(b.root), "firmware_version": fw.version, "build_id": fw.build_id,
                   "module_version": fw.module_version, "field_sha256": fw.sha256 or "-",
                   "board_type": b.manifest.board.type, "device": b.messages.device_id,
                   "device_address": str(b.device_address), "messages": len(messages),
                   "duplicates_dropped": b.messages.duplicates,
                   "span_s": round(messages[-1].received - messages[0].received, 1),
                   "recorded": b.manifest.recorded or "-", "notes": b.manifest.notes},
        "bench": {"board": result.board, "build": m.name, "build_folder": str(result.build.folder),
                  "build_version": m.version, "build_id": m.build.build_id or "-", "build_sha256": m.sha256,
                  "build_chosen": result.build_why, "speed": result.speed,
                  "messages": len(result.bench.messages) if result.bench else 0,
                  "replayed_frames": result.plan.frames, "replay_from_s": round(result.plan.start, 3),
                  "replay_offset_s": round(result.plan.offset, 3)},
        "replay": {k: v for k, v in result.replay.items() if k not in ("started", "ended")},
        "notes": result.notes,
        "error": str(error) if error is not None else None,
        "evidence": {"replayed capture": "replay.pcap", "bench run folder": result.run_dir.name,
                     "bench telemetry": f"{result.run_dir.name}/telemetry.bin",
                     "run log": f"{result.run_dir.name}/run-log.jsonl"},
    }
    if comparison is not None:
        data["comparison"] = comparison.to_json()
    return data
