"""Boards of kind ``pyocd`` on the emu: probe's chip models (real targets' memory maps and flash
algorithms, injectable faults), built as the lab would build them: a board file, a firmware build
with its manifest, the pyocd kind's parts, a Board."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from harness.board.board import Board
from harness.board.kinds import BoardSite, factory_for
from harness.firmware import FirmwareBuild, load_build, sha256_file
from harness.lab import load_board
from harness.runlog import RunLog
from harness.state import StateDir

REPO = Path(__file__).resolve().parents[3]
FLASH_BASE = 0x08000000
TARGET = "stm32l475xg"
UID = f"emu:chip-{TARGET}-0"


def write_build(folder: Path, elf: Path, target: str = TARGET) -> FirmwareBuild:
    folder.mkdir(parents=True, exist_ok=True)
    image = folder / "image.elf"
    image.write_bytes(elf.read_bytes())
    manifest = {
        "name": folder.name, "version": "1.0.0", "image": "image.elf", "format": "elf",
        "sha256": sha256_file(image), "targets": [target],
        "security_module": {"version": "3.5.4"},
        "behaviour": {"boot_marker": "^booted$"},
        "identity": {"provisioning": "built into the image"},
    }
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    return load_build(folder)


def set_faults(state: StateDir, uid: str, **faults: object) -> Path:
    folder = state.root / "simprobe" / "faults"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uid.removeprefix('emu:')}.json"
    path.write_text(json.dumps(faults))
    return path


@pytest.fixture
def chip_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StateDir:
    """A private lab state folder; the chip model is configured there, not through the environment."""
    state = StateDir(tmp_path / "state")
    chips = state.root / "simprobe" / "chips.json"
    chips.parent.mkdir(parents=True)
    chips.write_text(json.dumps({"chips": [{"target": TARGET}]}))
    monkeypatch.delenv("HIL_STATE", raising=False)
    monkeypatch.delenv("HIL_SIMPROBE_CHIPS", raising=False)
    return state


@pytest.fixture
def chip_board(tmp_path: Path, chip_state: StateDir) -> Iterator[Callable[..., Board]]:
    """``make(**board_file_overrides)``: a Board of kind pyocd on the chip model."""
    made: list[Board] = []

    def make(run_dir: Path | None = None, **overrides: object) -> Board:
        data: dict[str, object] = {
            "name": "chip-board", "kind": "pyocd",
            "probe": {"id": UID, "target": TARGET},
            "console": {"url": "socket://127.0.0.1:9"},
            "network": {"address_from": "static", "address": "127.0.0.1", "test_network": "emulated"},
            "identity": {"device_id": "chip-board-01"},
        }
        for key, value in overrides.items():
            data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) \
                else value  # type: ignore[dict-item]
        path = tmp_path / "lab" / "chip-board.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(data))
        config = load_board(path)
        run = run_dir if run_dir is not None else tmp_path / "run"
        log = RunLog(run)
        site = BoardSite(run, chip_state, log, None)
        board = Board(config, factory_for("pyocd")(config, site), run_dir=run, state=chip_state, log=log,
                      lease=None, run_id="test-run")
        made.append(board)
        return board

    yield make
    for board in made:
        board.close()
