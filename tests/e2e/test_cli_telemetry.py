"""`hil telemetry decode` end to end, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / "fixtures" / "vectors"


def hil(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    raw = subprocess.run(
        [sys.executable, "-m", "harness", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    done = subprocess.CompletedProcess(raw.args, raw.returncode, raw.stdout.decode(), raw.stderr.decode())
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_decode_prints_one_json_object_per_file() -> None:
    files = [str(VECTORS / "heartbeat-flatcc.bin"), str(VECTORS / "network-flatcc.bin")]
    done = hil("telemetry", "decode", *files)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    heartbeat, network = (json.loads(line) for line in lines)
    assert heartbeat["file"] == files[0]
    assert heartbeat["message"]["security_module_version"] == "3.5.4"
    assert [e["kind"] for e in heartbeat["message"]["events"]] == ["Heartbeat"]
    assert [e["kind"] for e in network["message"]["events"]] == ["NetworkActivity", "SystemInformation", "Heartbeat"]
    flow = network["message"]["events"][0]["payload"]["ipv4"][0]
    assert (flow["local_address"], flow["remote_address"], flow["protocol"]) == ("192.168.1.10", "10.0.0.1", "TCP")
    assert network["message"]["events"][1]["id"] == "202122232425262728292a2b2c2d2e2f"


def test_decode_stdin() -> None:
    done = hil("telemetry", "decode", "-", stdin=(VECTORS / "network-flatcc.bin").read_bytes())
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["file"] == "-"
    assert len(record["message"]["events"]) == 3


def test_decode_pretty() -> None:
    done = hil("telemetry", "decode", "--pretty", str(VECTORS / "heartbeat-flatcc.bin"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["message"]["security_module_id"] == "defender-iot-micro-agent"
    assert "\n  " in done.stdout


def test_malformed_file_exits_1_naming_file_and_offset(tmp_path: Path) -> None:
    bad = tmp_path / "truncated.bin"
    bad.write_bytes((VECTORS / "network-flatcc.bin").read_bytes()[:100])
    done = hil("telemetry", "decode", str(bad))
    assert done.returncode == 1
    assert str(bad) in done.stderr
    assert "offset 4 (0x4)" in done.stderr
    assert done.stdout == ""


def test_missing_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.bin"
    done = hil("telemetry", "decode", str(missing))
    assert done.returncode == 2
    assert f"{missing}: no such file" in done.stderr


@pytest.mark.parametrize("args", [("telemetry",), ("telemetry", "decode")])
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    assert hil(*args).returncode == 2
