"""Every validation rule of the lab inventory: the error names file, field and fix."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from harness.errors import ConfigError
from harness.lab import load_lab

if TYPE_CHECKING:
    from typing import Any as LabFactory

DELETE = "<delete>"  # the lab fixture's marker for "remove this key"

REPO = Path(__file__).resolve().parents[3]


def error_of(lab: LabFactory) -> str:
    with pytest.raises(ConfigError) as info:
        load_lab(lab.root)
    return str(info.value)


def test_good_board_loads(lab: LabFactory) -> None:
    lab.board()
    loaded = load_lab(lab.root)
    board = loaded.board("rt1060-a")
    assert board.probe.target == "mimxrt1060"
    assert str(board.network.address) == "192.168.50.20"
    assert board.capabilities.has("icmp") and board.capabilities.has("tcp_echo")
    assert not board.capabilities.has("udp_echo")
    assert board.source == lab.root / "rt1060-a.yaml"


def test_shipped_lab_and_examples_load() -> None:
    shipped = load_lab(REPO / "boards")
    assert {"qemu-an385", "qemu-an386"} <= set(shipped.boards)
    assert shipped.board("qemu-an385").settings.machine == "mps2-an385"
    examples = load_lab(REPO / "boards" / "examples")
    targets = {b.probe.target for b in examples.boards.values()}
    assert targets == {"stm32l475xg", "stm32l4s5vitx", "stm32f412xg", "mimxrt1060", "atsame54p20a"}
    az = next(b for b in examples.boards.values() if b.probe.target == "stm32f412xg")
    assert az.probe.erase == "sector" and az.probe.keep_below == 0x0800C000
    l4s5 = next(b for b in examples.boards.values() if b.probe.target == "stm32l4s5vitx")
    assert l4s5.probe.pack is None  # shipped without a pack file: the example says how to install it


def test_a_pack_resolves_beside_its_board_file(lab: LabFactory) -> None:
    (lab.root / "packs").mkdir()
    (lab.root / "packs" / "Vendor.DFP.pack").write_bytes(b"PK")
    lab.board(probe__pack="packs/Vendor.DFP.pack")
    board = load_lab(lab.root).board("rt1060-a")
    assert board.probe.pack == lab.root / "packs" / "Vendor.DFP.pack"


def test_misspelled_key_suggests_the_right_one(lab: LabFactory) -> None:
    path = lab.board(probe__frequncy=4000000)
    msg = error_of(lab)
    assert str(path) in msg
    assert "probe.frequncy" in msg and "did you mean 'frequency'" in msg


def test_unknown_top_level_key(lab: LabFactory) -> None:
    lab.board(consloe={"url": "/dev/ttyACM0"})
    msg = error_of(lab)
    assert "consloe" in msg and "did you mean 'console'" in msg


def test_wrong_type(lab: LabFactory) -> None:
    lab.board(console__baudrate="fast")
    msg = error_of(lab)
    assert "console.baudrate" in msg and "'fast'" in msg


def test_probe_id_without_type_prefix(lab: LabFactory) -> None:
    lab.board(probe__id="0229000000000000")
    msg = error_of(lab)
    assert "probe.id" in msg and "no type prefix" in msg and "TYPE:UNIQUE_ID" in msg


def test_probe_id_with_unknown_type(lab: LabFactory) -> None:
    lab.board(probe__id="usb:0229")
    assert "unknown probe type 'usb'" in error_of(lab)


def test_not_yaml(lab: LabFactory) -> None:
    path = lab.write("broken.yaml", "name: x\n  kind: [pyocd\n")
    msg = error_of(lab)
    assert str(path) in msg and "not valid YAML" in msg and "line" in msg


def test_empty_and_non_mapping_files(lab: LabFactory) -> None:
    lab.write("empty.yaml", "")
    assert "empty" in error_of(lab)
    (lab.root / "empty.yaml").unlink()
    lab.write("list.yaml", "- a\n- b\n")
    assert "expected a mapping" in error_of(lab)


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"kind": "jtag"}, "unknown board kind 'jtag'"),
        ({"kind": "qemu"}, "need a 'qemu:' section"),
        ({"qemu": {"machine": "mps2-an385"}}, "section 'qemu:' belongs to boards of kind qemu"),
        ({"probe__erase": "chip", "probe__keep_below": 0x0800C000}, "would destroy the bootloader"),
        ({"console__url": "ttyUSB0"}, "neither a device path nor a pyserial URL"),
        ({"console__url": DELETE}, "need 'console: {url: ...}'"),
        ({"network__address": DELETE}, "needs 'address: A.B.C.D'"),
        ({"network__address_from": "console"}, "needs 'console_pattern'"),
        ({"network__address_from": "console", "network__console_pattern": "IP: (.*)"}, "named group"),
        ({"network__address_from": "console", "network__console_pattern": "IP: ("}, "not a valid regular"),
        ({"network__address_from": "lease", "network__address": DELETE},
         "only for boards on the harness's own 'emulated' network"),
        ({"network__stack": "offload"}, "set capabilities.icmp: false"),
        ({"power": {"kind": "command", "on_command": ["x"]}}, "needs both 'on_command' and 'off_command'"),
        ({"identity__credentials": {"source": "file"}}, "needs 'path'"),
        ({"identity__credentials": {"source": "env"}}, "needs 'variable'"),
        ({"identity__device_id": "has space"}, "identity.device_id"),
        ({"name": "bad name!"}, "field name"),
        ({"capabilities__services__tcp_echo": 70000}, "capabilities.services.tcp_echo"),
        ({"probe__connect_mode": "sometimes"}, "probe.connect_mode"),
        ({"identity": DELETE}, "field identity: required but missing"),
        ({"network__test_network": "nowhere"}, "'nowhere' is not a network of"),
        ({"network__address": "10.9.9.9"}, "outside bench"),
    ],
)
def test_board_rules(lab: LabFactory, changes: dict[str, object], needle: str) -> None:
    path = lab.board(**changes)
    msg = error_of(lab)
    assert needle in msg
    assert str(path) in msg


def test_duplicate_board_names(lab: LabFactory) -> None:
    lab.board("one.yaml")
    lab.board("two.yaml")
    msg = error_of(lab)
    assert "already used by" in msg and "one.yaml" in msg and "two.yaml" in msg


@pytest.mark.parametrize(
    ("lab_yaml", "needle"),
    [
        ({"networks": [{"name": "a", "subnet": "8.8.8.0/24", "interface": "x"}]}, "8.8.8.0/24 is not a private range"),
        ({"networks": [{"name": "a", "subnet": "10.0.0.0/24", "interface": "x", "bridge": "y"}]}, "exactly one"),
        ({"networks": [{"name": "a", "subnet": "10.0.0.0/24", "interface": "x"}] * 2}, "unique"),
        ({"networks": [{"name": "emulated", "subnet": "10.0.0.0/24", "interface": "x"}]}, "reserved"),
        ({"broker": {"kind": "external"}}, "needs 'url"),
        ({"time_server": {"kind": "external"}}, "needs 'host'"),
        ({"time_server": {"names": ["pool ntp org"]}}, "'pool ntp org' is not a host name"),
        ({"brokr": {}}, "did you mean 'broker'"),
    ],
)
def test_lab_rules(lab: LabFactory, lab_yaml: dict[str, object], needle: str) -> None:
    path = lab.write("lab.yaml", lab_yaml)
    msg = error_of(lab)
    assert needle in msg and str(path) in msg


def test_collect_errors_keeps_good_boards(lab: LabFactory) -> None:
    lab.board("good.yaml")
    lab.board("bad.yaml", name="other", probe__id="nope")
    errors: list[ConfigError] = []
    loaded = load_lab(lab.root, collect_errors=errors)
    assert list(loaded.boards) == ["rt1060-a"]
    assert len(errors) == 1 and "bad.yaml" in str(errors[0])


def test_missing_lab_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_lab(tmp_path / "nope")


def test_state_dir_resolution(lab: LabFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    lab.board()
    assert load_lab(lab.root).state.root == (lab.root / ".hil-state").resolve()
    lab.write("lab.yaml", {**{"state_dir": "st"}, **{"networks": [
        {"name": "bench", "subnet": "192.168.50.0/24", "interface": "eth9"}]}})
    assert load_lab(lab.root).state.root == (lab.root / "st").resolve()
    monkeypatch.setenv("HIL_STATE", str(tmp_path / "env-state"))
    assert load_lab(lab.root).state.root == (tmp_path / "env-state").resolve()
