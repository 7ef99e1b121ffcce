"""`hil broker` and `hil telemetry show` as a user runs them."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import queue
import signal
import socket
import ssl
import struct
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from harness.broker import parse_mqtt_url
from harness.broker.base import port_accepts
from harness.telemetry.topic import security_topic

REPO = Path(__file__).resolve().parents[2]
VECTOR = (REPO / "fixtures" / "vectors" / "network-flatcc.bin").read_bytes()


def _broker_test_helpers() -> Any:
    """The raw-MQTT helpers of the broker tests (tests are not a package)."""
    spec = importlib.util.spec_from_file_location("broker_test_helpers",
                                                  REPO / "tests" / "integration" / "broker" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


connect_packet = _broker_test_helpers().connect_packet


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


class ErrorLines:
    """A process's standard error, line by line, on a queue; ``until`` waits for a line, ``text`` is all of it."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self._lines: queue.Queue[str] = queue.Queue()
        self._seen: list[str] = []
        self._thread = threading.Thread(target=lambda: [self._lines.put(x) for x in proc.stderr], daemon=True)  # type: ignore[union-attr]
        self._thread.start()

    def until(self, needle: str, timeout: float = 30) -> None:
        while not any(needle in line for line in self._seen):
            self._seen.append(self._lines.get(timeout=timeout))

    def text(self) -> str:
        self._thread.join(10)
        while not self._lines.empty():
            self._seen.append(self._lines.get())
        return "".join(self._seen)


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
    hb = Running("--kind", kind, "--json", "--no-lab-devices", "--device", "dev-a", "--device", "dev-b",
                 "--run-dir", str(run_dir))
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
    (("broker", "--kind", "embedded", "--bind", "8.8.8.8"), "--bind 8.8.8.8: is not an address of this host"),
    (("broker", "--kind", "embedded", "--bind", "localhost:1883"), "--bind 'localhost:1883' is not an IP address"),
    (("broker", "--kind", "embedded", "--port", "99999"), "99999 is not a port number"),
    (("broker", "--kind", "embedded", "--port", "-1"), "-1 is not a port number"),
    (("broker", "--kind", "embedded", "--port", "http"), "'http' is not a port number"),
    (("broker", "--kind", "embedded", "--hub", "a/b"), "--hub: hub 'a/b' is not a host name"),
    (("--lab", "/nonexistent/lab", "broker", "--kind", "embedded"), "lab folder /nonexistent/lab does not exist"),
    (("telemetry", "show", "/nonexistent/t.bin"), "no such archive file"),
])
def test_bad_input_exits_2_without_traceback(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    result = hil(*args, *(["--run-dir", str(tmp_path)] if "broker" in args else []))
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr



@pytest.mark.timeout(60)
def test_broker_text_mode_shows_credentials_and_message_lines(tmp_path: Path) -> None:
    hb = Running("--kind", "embedded", "--no-lab-devices", "--device", "dev-a", "--run-dir", str(tmp_path / "run"))
    try:
        banner = [hb.line() for _ in range(6)]
        assert banner[0].startswith("embedded broker at mqtt://127.0.0.1:")
        assert banner[3] == f"lab: {REPO / 'boards'}; hub hil-lab.azure-devices.net\n"
        assert banner[4].startswith("device dev-a: client id dev-a, user name ") and "password " in banner[4]
        url = banner[0].split(" at ")[1].strip()
        words = banner[4].split()
        creds = {"client_id": "dev-a", "username": words[words.index("name") + 1].rstrip(","),
                 "password": words[-1]}
        assert banner[5].startswith("waiting for telemetry")
        publish_as(url, creds, "dev-a", VECTOR)
        line = hb.line()
        assert " dev-a NETWORK_ACTIVITY " in line and "HEARTBEAT" in line
    finally:
        hb.proc.send_signal(signal.SIGINT)
        _, err = hb.proc.communicate(timeout=30)
    assert hb.proc.returncode == 0 and "Traceback" not in err


def test_a_run_dir_that_is_a_file_exits_2_and_leaves_it_alone(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    result = hil("broker", "--kind", "embedded", "--run-dir", str(taken))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"--run-dir: run folder {taken} is a file, not a folder" in result.stderr
    assert taken.read_text() == "keep me"


def _lab(tmp_path: Path) -> Path:
    """A lab of two emulated boards (one with its secret in the environment) and an embedded broker."""
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "lab.yaml").write_text("name: t\nstate_dir: state\nbroker:\n  kind: embedded\n"
                                  "  hub: bench-hub.example.net\n")
    shipped = (REPO / "boards" / "qemu-an385.yaml").read_text()
    (lab / "one.yaml").write_text(shipped.replace("name: qemu-an385", "name: one")
                                  .replace("emu:qemu-an385", "emu:one").replace("hil-qemu-an385-01", "bench-one"))
    (lab / "two.yaml").write_text(shipped.replace("name: qemu-an385", "name: two")
                                  .replace("emu:qemu-an385", "emu:two").replace("hil-qemu-an385-01", "bench-two")
                                  .replace("source: generated", "source: env\n    variable: HIL_TEST_SECRET_TWO"))
    return lab


@pytest.mark.timeout(90)
@pytest.mark.parametrize("lab_devices", [True, False])
def test_broker_takes_the_labs_settings_and_boards(tmp_path: Path, lab_devices: bool) -> None:
    lab = _lab(tmp_path)
    env = {**os.environ, "HIL_TEST_SECRET_TWO": "s3cret-two"}
    env.pop("HIL_STATE", None)
    args = ["--lab", str(lab), "broker", "--json", *([] if lab_devices else ["--no-lab-devices"]), "--device", "extra"]
    hb = subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    try:
        assert hb.stdout is not None
        head = json.loads(hb.stdout.readline())
    finally:
        hb.send_signal(signal.SIGTERM)
        _, err = hb.communicate(timeout=30)
    assert hb.returncode == 0 and "Traceback" not in err, err
    assert head["kind"] == "embedded" and head["hub"] == "bench-hub.example.net" and head["lab"] == str(lab)
    run_dir = Path(head["archive"]).parent
    assert run_dir.parent == lab / "state" / "runs" and run_dir.is_dir()
    want = {"bench-one", "bench-two", "extra"} if lab_devices else {"extra"}
    assert set(head["devices"]) == want
    for device in want:
        assert head["devices"][device]["username"].startswith(f"bench-hub.example.net/{device}/?api-version=")
    if lab_devices:
        assert head["devices"]["bench-two"]["password"] == "s3cret-two"  # the secret the board file names
        assert head["devices"]["bench-one"]["password"] != "s3cret-two"


def test_a_board_secret_that_is_not_there_is_a_clear_error(tmp_path: Path) -> None:
    lab = _lab(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "HIL_TEST_SECRET_TWO"}
    result = subprocess.run([sys.executable, "-m", "harness", "--lab", str(lab), "broker", "--run-dir",
                             str(tmp_path / "run")], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{lab / 'two.yaml'}: field identity.credentials.variable: $HIL_TEST_SECRET_TWO is not set" in result.stderr


# The embedded broker with its old CONNECT handling put back, to show that `hil broker` reports a
# collector that stopped receiving (quick canary) with exit 3.
OLD_FAULT = textwrap.dedent("""
    import sys
    from amqtt.broker import Broker as AmqttBroker
    import harness.broker.canary as canary
    canary.CANARY_INTERVAL, canary.CANARY_TIMEOUT = 0.2, 2.0
    from harness.broker.amqtt_front import HubBroker
    HubBroker.stream_connected = AmqttBroker.stream_connected
    from harness.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.timeout(90)
def test_broker_exits_3_when_its_collector_stops_receiving(tmp_path: Path) -> None:
    hb = subprocess.Popen([sys.executable, "-c", OLD_FAULT, "broker", "--kind", "embedded", "--json",
                           "--no-lab-devices", "--device", "dev-a", "--run-dir", str(tmp_path / "run")],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert hb.stdout is not None
    errors = ErrorLines(hb)
    try:
        head = json.loads(hb.stdout.readline())
        collector = json.loads(Path(head["endpoint"]).read_text())["collector"]
        host, port, _ = parse_mqtt_url(head["url"])
        with socket.create_connection((host, port), timeout=10) as sock:  # the refused login that did it
            sock.sendall(connect_packet(collector["client_id"], collector["username"], "wrong"))
            assert sock.recv(4) == b"\x20\x02\x00\x05"
        publish_as(head["url"], head["devices"]["dev-a"], "dev-a", VECTOR)  # acknowledged, never delivered
        errors.until("collector stopped receiving")  # said at once, not only at the end
    finally:
        hb.send_signal(signal.SIGTERM)
        hb.wait(30)
    err = errors.text()
    assert hb.returncode == 3, err
    assert "ERROR harness.telemetry.collector: collector stopped receiving" in err
    assert "hil: error: collector integrity lost" in err and "Traceback" not in err


@pytest.mark.timeout(90)
def test_clients_that_drop_print_nothing_on_the_embedded_brokers_console(tmp_path: Path) -> None:
    """Clients that vanish mid-CONNECT, mid-packet, with a reset, or after a refusal: nothing on the
    terminal (the broker's log in the run folder has them)."""
    run_dir = tmp_path / "run"
    hb = Running("--kind", "embedded", "--json", "--no-lab-devices", "--device", "dev-a", "--tls",
                 "--run-dir", str(run_dir))
    try:
        head = json.loads(hb.line())
        d = head["devices"]["dev-a"]
        host, port, _ = parse_mqtt_url(head["url"])
        _, tls_port, _ = parse_mqtt_url(head["tls_url"])
        good = connect_packet("dev-a", d["username"], d["password"])
        drop_clients(host, port, tls_port, head["ca_path"], good, connect_packet("dev-a", d["username"], "bad"))
        publish_as(head["url"], d, "dev-a", VECTOR)  # the broker still serves
        assert json.loads(hb.line())["device"] == "dev-a"
    finally:
        hb.proc.send_signal(signal.SIGTERM)
        _, err = hb.proc.communicate(timeout=30)
    assert hb.proc.returncode == 0
    assert err == "", err
    assert "Connection from" in (run_dir / "embedded-broker.log").read_text()


def drop_clients(host: str, port: int, tls_port: int, ca: str, good: bytes, refused: bytes) -> None:
    def reset(sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    def connected(packet: bytes) -> socket.socket:
        sock = socket.create_connection((host, port), timeout=10)
        sock.sendall(packet)
        sock.recv(4)
        return sock

    socket.create_connection((host, port), timeout=10).close()  # nothing sent
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(good[:7])  # half a CONNECT
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(good[:7])
    reset(sock)
    reset(connected(good))  # connected, then reset
    sock = connected(good)
    sock.sendall(b"\x32\x80\x80\x01")  # half a PUBLISH header, then reset
    reset(sock)
    reset(connected(refused))  # refused, then reset
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")  # not MQTT
        sock.recv(16)
    with connected(good) as sock:
        sock.sendall(b"\x00\x00")  # a reserved packet type
        sock.recv(16)
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False
    with socket.create_connection((host, tls_port), timeout=10) as sock:
        sock.sendall(b"hello")  # not TLS
        sock.recv(16)
    raw = socket.create_connection((host, tls_port), timeout=10)
    tls = context.wrap_socket(raw)
    tls.sendall(good)
    tls.recv(4)
    reset(tls)  # TLS session reset
    with contextlib.suppress(ssl.SSLError, OSError), socket.create_connection((host, tls_port), timeout=10) as sock:
        ssl.create_default_context().wrap_socket(sock, server_hostname="localhost")  # does not trust the run's CA


@pytest.mark.timeout(90)
@pytest.mark.needs("mosquitto")
def test_broker_exits_3_when_its_mosquitto_died(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    hb = Running("--kind", "mosquitto", "--json", "--no-lab-devices", "--run-dir", str(run_dir))
    errors = ErrorLines(hb.proc)
    try:
        json.loads(hb.line())
        (pid,) = processes_using(run_dir / "mosquitto")
        os.kill(pid, signal.SIGKILL)
        errors.until("collector lost the broker")  # it is gone
    finally:
        hb.proc.send_signal(signal.SIGTERM)
        hb.proc.wait(30)
    err = errors.text()
    assert hb.proc.returncode == 3, err
    assert "hil: error: the mosquitto broker failed during the run: mosquitto exited with -9" in err
    assert "Traceback" not in err
