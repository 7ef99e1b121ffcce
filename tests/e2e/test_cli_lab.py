"""`hil boards`, `hil firmware verify` and `hil --version` as a user runs them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import __version__
from harness.lease import Lease, quarantine
from harness.state import StateDir

REPO = Path(__file__).resolve().parents[2]
BOARD = (REPO / "boards" / "qemu-an385.yaml").read_text()


def hil(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("HIL_LAB", "HIL_STATE")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60
    )


def assert_clean_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_version() -> None:
    result = hil("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"hil {__version__}"


def test_check_shipped_lab() -> None:
    result = hil("boards", "--check")
    assert result.returncode == 0, result.stderr
    assert "2 board(s)" in result.stdout


def test_check_examples_lab() -> None:
    result = hil("--lab", "boards/examples", "boards", "--check")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (BOARD.replace("baudrate:", "baudrat:"), ("console.baudrat", "did you mean 'baudrate'")),
        (BOARD.replace("baudrate: 115200", "baudrate: quick"), ("console.baudrate", "'quick'")),
        (BOARD.replace("id: emu:qemu-an385", "id: qemu-an385"), ("probe.id", "no type prefix", "TYPE:UNIQUE_ID")),
        ("name: [unclosed\nkind: qemu\n", ("not valid YAML", "line")),
    ],
    ids=["misspelled-key", "wrong-type", "probe-id-without-prefix", "not-yaml"],
)
def test_check_bad_board_file(tmp_path: Path, text: str, needles: tuple[str, ...]) -> None:
    (tmp_path / "board.yaml").write_text(text)
    result = hil("--lab", str(tmp_path), "boards", "--check")
    assert_clean_error(result, 2, str(tmp_path / "board.yaml"), *needles)


def test_lab_from_environment(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(BOARD.replace("name: qemu-an385", "name: envboard"))
    result = hil("boards", env={"HIL_LAB": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "envboard" in result.stdout


def test_table_shows_live_holder_and_quarantine(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(BOARD)
    state = StateDir(tmp_path / ".hil-state")
    quarantine(state, "qemu-an385", "console silent")
    with Lease(state, "qemu-an386", run_id="run-42").acquire():
        (tmp_path / "c.yaml").write_text((REPO / "boards" / "qemu-an386.yaml").read_text())
        result = hil("--lab", str(tmp_path), "boards")
    assert result.returncode == 0, result.stderr
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 3}
    assert "console silent" in lines["qemu-an385"]
    assert f"pid {os.getpid()}" in lines["qemu-an386"] and "run-42" in lines["qemu-an386"]
    cleared = hil("--lab", str(tmp_path), "boards", "--clear", "qemu-an385")
    assert cleared.returncode == 0 and "quarantine cleared" in cleared.stdout
    assert "console silent" not in hil("--lab", str(tmp_path), "boards").stdout
    assert_clean_error(hil("--lab", str(tmp_path), "boards", "--clear", "nope"), 2, "no board named 'nope'")


def test_firmware_verify(tmp_path: Path) -> None:
    image = b"\x7fELF-not-really"
    (tmp_path / "fw.elf").write_bytes(image)
    manifest = {
        "name": "t", "version": "1.0.0", "image": "fw.elf", "format": "elf",
        "sha256": hashlib.sha256(image).hexdigest(), "targets": ["mps2_an385"],
        "security_module": {"version": "3.5.4"}, "behaviour": {"boot_marker": "HIL"},
        "identity": {"provisioning": "block at 0x003FF000"},
    }
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    ok = hil("firmware", "verify", str(tmp_path))
    assert ok.returncode == 0 and "ok sha256" in ok.stdout
    (tmp_path / "fw.elf").write_bytes(image + b"!")
    assert_clean_error(hil("firmware", "verify", str(tmp_path)), 1, "sha256 does not match", "expected:")
    assert_clean_error(hil("firmware", "verify", str(tmp_path / "nothing")), 2, "no firmware manifest")


def test_usage_errors_exit_2() -> None:
    assert_clean_error(hil("no-such-command"), 2, "invalid choice")
    assert hil().returncode == 2


def test_debug_shows_traceback(tmp_path: Path) -> None:
    result = hil("--debug", "--lab", str(tmp_path / "missing"), "boards")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_table_shows_a_running_emulated_machine(tmp_path: Path) -> None:
    from harness.emulation.machine_registry import MachineRecord, write_record

    (tmp_path / "b.yaml").write_text(BOARD)
    state = StateDir(tmp_path / ".hil-state")
    me = os.getpid()  # a live owner and process: the record counts as a running machine
    write_record(state, MachineRecord(
        name="qemu-an385", machine="mps2-an385", pid=me, owner_pid=me, gdb="unix:/nowhere", qmp="unix:/nowhere",
        console="socket://127.0.0.1:5555", flash_file=str(tmp_path / "f"), flash_base=0, flash_size=4 << 20,
        started="2026-11-28T00:00:00Z"))
    result = hil("--lab", str(tmp_path), "boards")
    assert result.returncode == 0, result.stderr
    assert f"running pid {me}" in result.stdout  # (rich may wrap the console URL inside the cell)


def test_global_options_after_the_subcommand(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(BOARD.replace("name: qemu-an385", "name: afterboard"))
    for argv in (("boards", "--check", "--lab", str(tmp_path)), ("boards", "--lab", str(tmp_path), "--check"),
                 ("--lab", "boards", "boards", "--check", "--lab", str(tmp_path))):
        result = hil(*argv)
        assert result.returncode == 0, (argv, result.stderr)
        assert f"{tmp_path}: 1 board(s)" in result.stdout
    assert "afterboard" in hil("boards", "--lab", str(tmp_path)).stdout
    assert_clean_error(hil("boards", "--check", "--lab", str(tmp_path / "none")), 2, "does not exist")


def _build(folder: Path, image: bytes, sha_of: bytes | None = None) -> Path:
    folder.mkdir()
    (folder / "fw.elf").write_bytes(image)
    manifest = {
        "name": folder.name, "version": "1.0.0", "image": "fw.elf", "format": "elf",
        "sha256": hashlib.sha256(image if sha_of is None else sha_of).hexdigest(), "targets": ["mps2_an385"],
        "security_module": {"version": "3.5.4"}, "behaviour": {"boot_marker": "HIL"},
        "identity": {"provisioning": "block at 0x003FF000"},
    }
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    return folder


def test_firmware_verify_checks_every_build(tmp_path: Path) -> None:
    good = _build(tmp_path / "good", b"\x7fELF-good")
    changed = _build(tmp_path / "changed", b"\x7fELF-changed", sha_of=b"\x7fELF-original")
    not_elf = _build(tmp_path / "notelf", b"MZ-a windows program")
    result = hil("firmware", "verify", str(changed), str(good), str(not_elf), str(tmp_path / "missing"))
    assert result.returncode == 2, result.stderr  # the worst of: 1 (changed), 2 (not an ELF, missing)
    assert f"{good / 'fw.elf'}: ok sha256" in result.stdout
    assert_clean_error(result, 2, f"{changed / 'fw.elf'}: sha256 does not match", f"{not_elf / 'fw.elf'}: not an ELF",
                       f"{tmp_path / 'missing'}: no firmware manifest", "3 of 4 build(s) failed")
    only_changed = hil("firmware", "verify", str(good), str(changed))
    assert only_changed.returncode == 1 and "1 of 2 build(s) failed" in only_changed.stderr
