"""`hil watch` as a user runs it: the whole path on an emulated board.

Build the reference firmware, bring the board up on its own test network, flash image and
provisioning block through pyOCD's emu: probe, boot, and print the security telemetry the
collector decodes. Afterwards nothing the run started is left running.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.firmware_build import build_reference
from harness.telemetry.archive import read_archive
from tests.processes import processes_mentioning

REPO = Path(__file__).resolve().parents[2]
NEEDS = ("root", "qemu", "arm-gcc", "mosquitto", "dnsmasq", "chrony", "ip")


@pytest.mark.needs(*NEEDS)
@pytest.mark.timeout(240)
def test_watch_shows_security_telemetry_and_leaves_nothing_running(tmp_path: Path) -> None:
    build = build_reference("mps2-an385", {}, "fast", tmp_path / "build")
    run_dir = tmp_path / "run"
    env = {**os.environ, "HIL_STATE": str(tmp_path / "state")}
    result = subprocess.run(
        [sys.executable, "-m", "harness", "watch", "qemu-an385", "--firmware", str(build),
         "--duration", "8", "--json", "--report-dir", str(run_dir)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines, result.stderr
    assert {line["device"] for line in lines} == {"hil-qemu-an385-01"}
    kinds = [event["kind"] for line in lines for event in line["message"]["events"]]
    assert "Heartbeat" in kinds and "NetworkActivity" in kinds
    assert all(line["message"]["security_module_version"] == "3.5.4" for line in lines)
    # evidence stays in the run folder: the raw archive holds at least what was printed
    records = list(read_archive(run_dir / "telemetry.bin"))
    assert len(records) >= len(lines)
    assert (run_dir / "qemu-an385-console.log").read_text().startswith("HIL-REF")
    assert not processes_mentioning(str(run_dir)), "processes of the run still alive"
    assert not processes_mentioning(str(tmp_path / "state"))


def test_watch_unknown_board_is_a_clean_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "harness", "watch", "no-such-board"],
        cwd=REPO, env={**os.environ, "HIL_STATE": str(tmp_path)}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "no board named 'no-such-board'" in result.stderr and "Traceback" not in result.stderr


def test_watch_missing_build_is_a_clean_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "harness", "watch", "qemu-an385", "--firmware", str(tmp_path / "none")],
        cwd=REPO, env={**os.environ, "HIL_STATE": str(tmp_path)}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "no firmware manifest" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.needs("chrony")
def test_watch_a_real_board_of_another_bench_is_an_infrastructure_error(tmp_path: Path) -> None:
    """The example bench's boards are reached through 192.168.50.1, an address this host lacks: the
    run cannot bring up its services there (exit 3), and no board is leased or quarantined."""
    image = b"rt1060 image"
    (tmp_path / "fw.bin").write_bytes(image)
    (tmp_path / "manifest.yaml").write_text(json.dumps({
        "name": "rt", "version": "1.0.0", "image": "fw.bin", "format": "bin", "base_address": 0x60000000,
        "sha256": hashlib.sha256(image).hexdigest(), "targets": ["mimxrt1060"],
        "security_module": {"version": "3.5.4"}, "behaviour": {"boot_marker": "x"},
        "identity": {"provisioning": "none"}}))
    result = subprocess.run(
        [sys.executable, "-m", "harness", "--lab", "boards/examples", "watch", "mimxrt1060-evk-1",
         "--firmware", str(tmp_path), "--report-dir", str(tmp_path / "run")],
        cwd=REPO, env={**os.environ, "HIL_STATE": str(tmp_path / "state")}, capture_output=True, text=True,
        timeout=60,
    )
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr
    assert "192.168.50.1" in result.stderr
    assert not list((tmp_path / "state").glob("quarantine/*.json"))
