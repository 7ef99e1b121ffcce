"""Emulated boards on the one bring-up path: RunSession, Board, pyOCD through the emu: probe.

Flash, provision, boot, the console both ways, health (a frozen machine found within the deadline,
recovered by a power-cycle), a second flash of the same image skipped by read-back, and two boards
in one session sharing one test network and one broker with a telemetry stream each."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.board.board import BoardState
from harness.emulation.process import pid_alive
from harness.firmware import FirmwareBuild, load_build
from harness.firmware_build import build_reference
from harness.lab import Lab, load_lab
from harness.session import RunSession
from harness.telemetry.model import PayloadType

pytestmark = [pytest.mark.needs("qemu", "arm-gcc", "root", "mosquitto", "dnsmasq", "chrony", "ip"),
              pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """The shipped lab with a private state folder (so this module's boards are its own)."""
    folder = tmp_path_factory.mktemp("lab")
    for name in ("qemu-an385.yaml", "qemu-an386.yaml", "lab.yaml"):
        (folder / name).write_text((REPO / "boards" / name).read_text())
    return load_lab(folder)


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FirmwareBuild]:
    out = tmp_path_factory.mktemp("builds")
    return {m: load_build(build_reference(m, {}, "fast", out / m)) for m in ("mps2-an385", "mps2-an386")}


@pytest.fixture(scope="module")
def session(lab: Lab) -> Iterator[RunSession]:
    with RunSession(lab, boards=["qemu-an385", "qemu-an386"]) as s:
        yield s


def test_flash_provision_boot_and_the_console_both_ways(session: RunSession, builds: dict[str, FirmwareBuild]) -> None:
    board = session.bring_up("qemu-an385", builds["mps2-an385"])
    assert board.state is BoardState.ONLINE
    events = [e["event"] for e in board.log.entries(board.name)]
    assert events[:2] == ["parts", "read-back"] or "flash" in events  # read back first, then programmed
    assert [e for e in board.log.entries(board.name) if e["event"] == "provision" and e["outcome"] == "ok"]
    assert board.console.text.startswith("HIL-REF")
    board.console.send_line("echo typed-at-the-board")
    board.console.expect("^typed-at-the-board$", timeout=5)
    assert board.health().ok


def test_a_frozen_machine_is_found_by_health_and_recovered_by_a_power_cycle(session: RunSession,
                                                                            builds: dict[str, FirmwareBuild]) -> None:
    board = session.bring_up("qemu-an385", builds["mps2-an385"])
    machine = board.parts.power.machine  # type: ignore[attr-defined]
    old_pid = machine.pid
    machine.freeze()
    t0 = time.monotonic()
    report = board.health(deadline=2.0)
    took = time.monotonic() - t0
    assert not report.ok and report.network and report.console, report
    assert report.probe is None  # the probe still answers: the core is stopped, not gone
    assert took < 2.0 + 1.0, f"health took {took:.1f} s for a 2 s deadline"
    board.power_cycle()
    board.bring_up(BoardState.ONLINE)
    assert board.health().ok and machine.pid != old_pid and not pid_alive(old_pid)


def test_a_second_flash_of_the_same_image_is_skipped(session: RunSession, builds: dict[str, FirmwareBuild]) -> None:
    board = session.board("qemu-an385")
    again = board.flash(builds["mps2-an385"])
    assert again.skipped and again.pages_written == 0
    assert board.flash(builds["mps2-an385"], force=True).pages_written > 0


def test_two_boards_share_one_network_and_one_broker_with_a_stream_each(
        session: RunSession, builds: dict[str, FirmwareBuild]) -> None:
    one = session.bring_up("qemu-an385", builds["mps2-an385"])
    two = session.bring_up("qemu-an386", builds["mps2-an386"])
    assert len(session.networks) == 1
    net = next(iter(session.networks.values()))
    assert one.address in net.subnet and two.address in net.subnet and one.address != two.address
    assert one.telemetry is not None and two.telemetry is not None
    first = one.telemetry.expect_event(PayloadType.HEARTBEAT, within=30)
    second = two.telemetry.expect_event(PayloadType.HEARTBEAT, within=30)
    assert first.id != second.id
    assert session.collector is not None
    assert {one.device_id, two.device_id} <= set(session.collector.devices())
    assert all(e.id != second.id for e in one.telemetry.events())  # streams are per device
