"""The Board's state machine and recovery ladder with fake parts (no processes)."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.board.board import Board, BoardState, provisioning_address
from harness.board.errors import BoardBroken
from harness.board.parts import BoardParts
from harness.errors import InfrastructureError, UsageError, WaitTimeout
from harness.firmware import load_build, sha256_file
from harness.flash import FlashOptions, FlashResult
from harness.lab import load_board
from harness.lease import quarantined
from harness.provisioning import ProvisioningError, ProvisioningRecord, block_version, decode
from harness.runlog import RunLog
from harness.state import StateDir


class FakeProbe:
    def __init__(self, failures: int = 0, holds: bool = False) -> None:
        self.failures = failures
        self.holding = holds
        self.calls: list[tuple[str, Any]] = []

    def program(self, path: Path, fmt: str | None = None, base: int | None = None, verify: bool = True,
                progress: Any = None, options: FlashOptions | None = None) -> FlashResult:
        self.calls.append(("program", options))
        if self.failures:
            self.failures -= 1
            raise InfrastructureError("the probe said no")
        return FlashResult("fake:1", "t", str(path), [(0, 4)], 4, 1, 1, 0, 0.0, True)

    def holds(self, path: Path, fmt: str | None = None, base: int | None = None) -> bool:
        return self.holding

    def reset(self, kind: str = "default", *, halt: bool = False, connect_mode: str | None = None) -> str:
        self.calls.append(("reset", kind))
        return "RUNNING"

    def inspect(self, timeout: float | None = None) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


class FakePower:
    cuts = True

    def __init__(self) -> None:
        self.cycles = 0

    def on(self) -> None: ...

    def off(self) -> None: ...

    def cycle(self) -> None:
        self.cycles += 1


class FakeConsole:
    def __init__(self, boots: int = 1) -> None:
        self.boots = boots

    def expect(self, pattern: str, timeout: float = 10.0) -> Any:
        if self.boots <= 0:
            raise WaitTimeout("no boot marker")
        self.boots -= 1
        import re

        return re.match(".*", "booted")

    def skip_to_end(self) -> None: ...

    def close(self) -> None: ...


class FakeAddress:
    def address(self, console: Any, timeout: float) -> ipaddress.IPv4Address:
        return ipaddress.IPv4Address("127.0.0.1")


def make_board(tmp_path: Path, probe: FakeProbe, *, boots: int = 1) -> tuple[Board, FakePower]:
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump({
        "name": "b", "kind": "pyocd", "probe": {"id": "cmsisdap:1", "target": "t"},
        "console": {"url": "socket://127.0.0.1:9"},
        "network": {"address_from": "static", "address": "127.0.0.1", "test_network": "emulated"},
        "identity": {"device_id": "dev-b"}}))
    power = FakePower()
    parts = BoardParts(probe=probe, console_url=lambda: "x", power=power, address=FakeAddress())
    state = StateDir(tmp_path / "state")
    board = Board(load_board(path), parts, run_dir=tmp_path / "run", state=state, log=RunLog(tmp_path / "run"),
                  lease=None, run_id="r")
    board._console = FakeConsole(boots)  # type: ignore[assignment]
    return board, power


def make_build(tmp_path: Path, provisioning: str = "block at 0x003FF000",
               **identity: object) -> Any:
    folder = tmp_path / "build"
    folder.mkdir(parents=True)
    (folder / "fw.bin").write_bytes(b"\x01\x02\x03\x04")
    (folder / "manifest.yaml").write_text(yaml.safe_dump({
        "name": "fw", "version": "1", "image": "fw.bin", "format": "bin", "base_address": 0,
        "sha256": sha256_file(folder / "fw.bin"), "targets": ["t"], "security_module": {"version": "3.5.4"},
        "behaviour": {"boot_marker": "booted"}, "identity": {"provisioning": provisioning, **identity}}))
    return load_build(folder)


def test_bring_up_walks_every_state_and_records_each_step(tmp_path: Path) -> None:
    board, _ = make_board(tmp_path, FakeProbe())
    board.bring_up(BoardState.ONLINE, build=make_build(tmp_path))
    assert board.state is BoardState.ONLINE and str(board.address) == "127.0.0.1"
    steps = [e["event"] for e in board.log.entries("b")]
    assert steps == ["rung", "flash", "reset", "boot", "address"]


def test_bring_up_from_flashed_does_not_flash_again(tmp_path: Path) -> None:
    probe = FakeProbe()
    board, _ = make_board(tmp_path, probe)
    build = make_build(tmp_path)
    board.bring_up(BoardState.FLASHED, build=build)
    assert board.state is BoardState.FLASHED
    board.bring_up(BoardState.ONLINE)
    assert [c for c, _ in probe.calls].count("program") == 1


def test_ladder_climbs_until_a_rung_works(tmp_path: Path) -> None:
    probe = FakeProbe(failures=4)
    board, power = make_board(tmp_path, probe)
    result = board.flash(make_build(tmp_path), force=True)
    assert result.verified
    climbed = [(e["rung"], e["outcome"]) for e in board.log.entries("b") if e["event"] == "rung"]
    assert climbed == [("attempt", "failed"), ("retry", "failed"), ("reset-reconnect", "failed"),
                       ("connect-under-reset", "failed"), ("erase-program", "ok")]
    options = [o for c, o in probe.calls if c == "program"]
    assert options[3].connect_mode == "under-reset" and options[4].smart_flash is False
    assert ("reset", "hardware") in probe.calls and power.cycles == 0


def test_top_of_the_ladder_quarantines_and_the_board_stays_broken(tmp_path: Path) -> None:
    board, power = make_board(tmp_path, FakeProbe(failures=99))
    build = make_build(tmp_path)
    with pytest.raises(BoardBroken, match="every rung"):
        board.bring_up(BoardState.ONLINE, build=build)
    assert board.state is BoardState.BROKEN and power.cycles == 1
    q = quarantined(board.state_dir, "b")
    assert q is not None and "the probe said no" in q.reason
    with pytest.raises(BoardBroken, match="broken for this run"):
        board.bring_up(BoardState.ONLINE, build=build)


def test_a_usage_error_does_not_climb(tmp_path: Path) -> None:
    class Refusing(FakeProbe):
        def program(self, *a: Any, **k: Any) -> FlashResult:
            raise UsageError("image reaches below keep_below")

    board, _ = make_board(tmp_path, Refusing())
    with pytest.raises(UsageError):
        board.flash(make_build(tmp_path), force=True)
    assert [e for e in board.log.entries("b") if e["event"] == "rung"] == []
    assert quarantined(board.state_dir, "b") is None


def test_a_board_that_does_not_boot_gets_one_power_cycle_then_is_broken_not_quarantined(tmp_path: Path) -> None:
    board, power = make_board(tmp_path, FakeProbe(), boots=0)
    with pytest.raises(WaitTimeout):
        board.bring_up(BoardState.BOOTED, build=make_build(tmp_path))
    assert power.cycles == 1 and board.state is BoardState.BROKEN
    assert quarantined(board.state_dir, "b") is None  # the firmware's failure, not the board's


def test_a_board_that_boots_after_a_power_cycle_is_up(tmp_path: Path) -> None:
    class Flaky(FakeConsole):
        calls = 0

        def expect(self, pattern: str, timeout: float = 10.0) -> Any:
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise WaitTimeout("no boot marker")
            return super().expect(pattern, timeout)

    board, power = make_board(tmp_path, FakeProbe())
    board._console = Flaky()  # type: ignore[assignment]
    board.bring_up(BoardState.BOOTED, build=make_build(tmp_path))
    assert power.cycles == 1 and board.state is BoardState.BOOTED


def test_already_held_image_is_not_programmed(tmp_path: Path) -> None:
    probe = FakeProbe(holds=True)
    board, _ = make_board(tmp_path, probe)
    assert board.flash(make_build(tmp_path)).skipped
    assert not [c for c, _ in probe.calls if c == "program"]


def test_provisioning_address_from_the_manifest(tmp_path: Path) -> None:
    assert provisioning_address(make_build(tmp_path)) == 0x003FF000
    assert provisioning_address(make_build(tmp_path / "x", "compiled into the image")) is None


RECORD = ProvisioningRecord(device_id="dev-b", broker_host="hub.hil.test", broker_port=8883,
                            user_name="u", secret="p", time_server="time.hil.test")
TLS_RECORD = dataclasses.replace(RECORD, user_name="", secret="", transport="tls", auth="sas",
                                 device_key="a2V5", dps_host="dps.hil.test", id_scope="0ne1",
                                 registration_id="dev-b")


def _written(tmp_path: Path) -> bytes:
    return (tmp_path / "run" / "b-provision-0x003ff000.bin").read_bytes()


def test_a_version_1_image_gets_a_version_1_block(tmp_path: Path) -> None:
    """A manifest without provisioning_versions (every image built before version 2) reads 1."""
    board, _ = make_board(tmp_path, FakeProbe())
    board.flash(make_build(tmp_path))
    board.provision(RECORD)
    assert block_version(_written(tmp_path)) == 1 and _written(tmp_path) == RECORD.encode_sector((1,))


def test_an_image_reading_both_versions_gets_the_lowest_that_carries_the_record(tmp_path: Path) -> None:
    board, _ = make_board(tmp_path, FakeProbe())
    board.flash(make_build(tmp_path, provisioning_versions=[1, 2],
                           provisioning_features=["tls", "sas", "dps"]))
    board.provision(RECORD)
    assert block_version(_written(tmp_path)) == 1
    board.provision(TLS_RECORD)
    assert block_version(_written(tmp_path)) == 2 and decode(_written(tmp_path)) == TLS_RECORD


@pytest.mark.parametrize(("identity", "words"), [
    ({}, "cannot use dps, sas, tls"),
    ({"provisioning_versions": [1, 2]}, "cannot use dps, sas, tls"),
    ({"provisioning_versions": [1], "provisioning_features": ["tls", "sas", "dps"]},
     "reads block version 1; TLS, a SAS token or DPS needs version 2"),
])
def test_a_record_the_image_cannot_use_is_refused_before_writing(tmp_path: Path, identity: dict[str, Any],
                                                                words: str) -> None:
    probe = FakeProbe()
    board, _ = make_board(tmp_path, probe)
    board.flash(make_build(tmp_path, **identity))
    with pytest.raises(ProvisioningError) as info:
        board.provision(TLS_RECORD)
    assert words in str(info.value) and info.value.fix
    assert board.provisioning is None
    assert not (tmp_path / "run" / "b-provision-0x003ff000.bin").exists()


def test_a_damaged_quarantine_record_still_quarantines(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    (state.quarantine / "b.json").write_text("{not json")
    q = quarantined(state, "b")
    assert q is not None and "unreadable" in q.reason


def test_a_board_programmed_again_is_reset_before_its_boot_is_awaited(tmp_path: Path) -> None:
    """Programming leaves the core halted: bring-up from FLASHED must reset it (it once waited for a
    boot marker that a halted board never prints), and a restart already done is not repeated."""
    probe = FakeProbe()
    board, power = make_board(tmp_path, probe, boots=3)
    build = make_build(tmp_path)
    board.bring_up(BoardState.ONLINE, build=build)
    board.flash(build, force=True)
    assert board.state is BoardState.FLASHED
    board.bring_up(BoardState.ONLINE)
    assert [c for c, _ in probe.calls].count("reset") == 2
    board.power_cycle()
    board.bring_up(BoardState.ONLINE)
    assert [c for c, _ in probe.calls].count("reset") == 2 and power.cycles == 1
