"""`hil broker` and `hil telemetry show` as a user runs them."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from harness.broker import parse_mqtt_url
from harness.broker.base import port_accepts
from harness.telemetry.topic import security_topic

REPO = Path(__file__).resolve().parents[2]
VECTOR = (REPO / "fixtures" / "vectors" / "network-flatcc.bin").read_bytes()


def hil(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)


class Running:
    """`hil broker` in the background; its stdout lines arrive on a queue."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "harness", "broker", *args], cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def line(self, timeout: float = 20) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"no output line within {timeout} s; stderr: {err}") from None


def publish_as(url: str, creds: dict[str, str], device: str, payload: bytes) -> None:
    host, port, _ = parse_mqtt_url(url)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=creds["client_id"])
    c.username_pw_set(creds["username"], creds["password"])
    c.connect(host, port)
    c.loop_start()
    try:
        c.publish(security_topic(device), payload, qos=1).wait_for_publish(10)
    finally:
        c.disconnect()
        c.loop_stop()


def processes_using(folder: Path) -> list[int]:
    """Pids whose command line mentions ``folder`` (our broker's config lives there)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(folder).encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("kind", "sig"), [
    pytest.param("mosquitto", signal.SIGINT, marks=pytest.mark.needs("mosquitto")),
    pytest.param("mosquitto", signal.SIGTERM, marks=pytest.mark.needs("mosquitto")),
    ("embedded", signal.SIGTERM),
])
def test_broker_prints_credentials_then_messages_and_stops_cleanly(tmp_path: Path, kind: str,
                                                                   sig: signal.Signals) -> None:
    run_dir = tmp_path / "run"
    hb = Running("--kind", kind, "--json", "--device", "dev-a", "--device", "dev-b", "--run-dir", str(run_dir))
    try:
        head = json.loads(hb.line())
        assert set(head["devices"]) == {"dev-a", "dev-b"}
        assert head["devices"]["dev-a"]["username"].split("/")[1] == "dev-a" and head["devices"]["dev-a"]["password"]
        assert head["archive"] == str(run_dir / "telemetry.bin") and head["url"].startswith("mqtt://127.0.0.1:")
        publish_as(head["url"], head["devices"]["dev-a"], "dev-a", VECTOR)
        row = json.loads(hb.line())
        assert row["device"] == "dev-a"
        assert [e["kind"] for e in row["message"]["events"]] == ["NetworkActivity", "SystemInformation", "Heartbeat"]
    finally:
        hb.proc.send_signal(sig)
        _, err = hb.proc.communicate(timeout=30)
    assert hb.proc.returncode == 0, err
    assert "Traceback" not in err
    host, port, _ = parse_mqtt_url(head["url"])
    assert not port_accepts(host, port)
    assert processes_using(run_dir) == []

    shown = hil("telemetry", "show", head["archive"])
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == 1 and " dev-a NETWORK_ACTIVITY " in lines[0] and "10.0.0.1:8883" in lines[0]
    as_json = [json.loads(x) for x in hil("telemetry", "show", "--json", head["archive"]).stdout.splitlines()]
    assert as_json[0]["device"] == "dev-a" and as_json[0]["qos"] == 1 and "message" in as_json[0]


def test_show_reports_a_torn_archive_and_undecodable_records(tmp_path: Path) -> None:
    from harness.telemetry.archive import ArchiveWriter, read_archive
    from harness.telemetry.archive_format import HEADER

    path = tmp_path / "t.bin"
    with ArchiveWriter(path) as w:
        w.append(security_topic("dev-a"), VECTOR, qos=1)
        w.append(security_topic("dev-a"), b"\xff\xff", qos=1)
        w.append(security_topic("dev-a"), VECTOR, qos=1)
        left = bytearray(path.read_bytes())  # as a killed writer leaves it: unclosed, zeros after the records
    last = [r.offset for r in read_archive(path)][-1]
    left[last:last + HEADER] = bytes(HEADER)  # killed after the last body, before its header
    path.write_bytes(left)
    shown = hil("telemetry", "show", str(path))
    assert shown.returncode == 0
    lines = shown.stdout.splitlines()
    assert len(lines) == 2 and "UNDECODABLE (2 bytes)" in lines[1]
    assert "last record incomplete" in shown.stderr


def test_show_reads_an_archive_that_is_still_being_written(tmp_path: Path) -> None:
    from harness.telemetry.archive import ArchiveWriter

    path = tmp_path / "t.bin"
    with ArchiveWriter(path) as w:
        w.append(security_topic("dev-a"), VECTOR, qos=1)
        w.append(security_topic("dev-b"), VECTOR, qos=1)
        shown = hil("telemetry", "show", str(path))
    assert shown.returncode == 0, shown.stderr
    assert [line.split()[2] for line in shown.stdout.splitlines()] == ["dev-a", "dev-b"]
    assert "not closed: its collector is still writing it, or died; 2 complete record(s) shown" in shown.stderr


@pytest.mark.parametrize(("args", "needle"), [
    (("broker", "--kind", "embedded", "--device", "bad/id"), "device id 'bad/id'"),
    (("broker", "--kind", "external"), "needs a URL"),
    (("broker", "--kind", "nope"), "invalid choice"),
    (("telemetry", "show", "/nonexistent/t.bin"), "no such archive file"),
])
def test_bad_input_exits_2_without_traceback(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    result = hil(*args, *(["--run-dir", str(tmp_path)] if args[0] == "broker" else []))
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr



@pytest.mark.timeout(60)
def test_broker_text_mode_shows_credentials_and_message_lines(tmp_path: Path) -> None:
    hb = Running("--kind", "embedded", "--device", "dev-a", "--run-dir", str(tmp_path / "run"))
    try:
        banner = [hb.line() for _ in range(5)]
        assert banner[0].startswith("embedded broker at mqtt://127.0.0.1:")
        assert banner[3].startswith("device dev-a: client id dev-a, user name ") and "password " in banner[3]
        url = banner[0].split(" at ")[1].strip()
        words = banner[3].split()
        creds = {"client_id": "dev-a", "username": words[words.index("name") + 1].rstrip(","),
                 "password": words[-1]}
        assert banner[4].startswith("waiting for telemetry")
        publish_as(url, creds, "dev-a", VECTOR)
        line = hb.line()
        assert " dev-a NETWORK_ACTIVITY " in line and "HEARTBEAT" in line
    finally:
        hb.proc.send_signal(signal.SIGINT)
        _, err = hb.proc.communicate(timeout=30)
    assert hb.proc.returncode == 0 and "Traceback" not in err
