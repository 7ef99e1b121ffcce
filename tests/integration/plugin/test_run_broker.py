"""The run-wide broker of the pytest plugin: one broker for every process of a run, xdist included."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

INNER = textwrap.dedent(
    '''
    import dataclasses
    import os
    from pathlib import Path

    import paho.mqtt.client as mqtt
    import pytest

    from harness.broker import parse_mqtt_url
    from harness.telemetry.codec import decode, encode
    from harness.telemetry.model import PayloadType
    from harness.telemetry.topic import security_topic

    VECTOR = decode(Path(os.environ["HIL_TEST_VECTOR"]).read_bytes())
    # one device per process: two processes connecting as one device would take over each other's
    # connection (the same client id), as two benches on one board would; leases prevent that
    DEVICES = {"gw1": "hil-qemu-an386-02"}


    def fresh_heartbeat():
        """The shared vector with a new event id (the collector counts an event id once)."""
        event = dataclasses.replace(VECTOR.events[0], id=os.urandom(16))
        return encode(dataclasses.replace(VECTOR, events=(event,)))


    def publish_as_device(endpoint, device):
        creds = endpoint.devices[device]
        host, port, _ = parse_mqtt_url(endpoint.url)
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=creds.client_id)
        client.username_pw_set(creds.username, creds.password)
        client.connect(host, port)
        client.loop_start()
        client.publish(security_topic(device), fresh_heartbeat(), qos=1).wait_for_publish(10)
        client.loop_stop()
        client.disconnect()


    @pytest.mark.parametrize("n", [1, 2, 3, 4])
    def test_each_process_sees_one_broker(n, hil_broker, hil_collector, hil_run_dir, worker_id):
        (hil_run_dir / f"url-{worker_id}-{n}").write_text(hil_broker.url)
        device = DEVICES.get(worker_id, "hil-qemu-an385-01")
        mark = hil_collector.mark()
        publish_as_device(hil_broker, device)
        hil_collector.expect_event(device, PayloadType.HEARTBEAT, within=10, since=mark)
    '''
)


def mosquitto_pids_for(run_dir: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "mosquitto" in cmd and str(run_dir) in cmd:
                pids.append(int(entry.name))
    return pids


def run_inner(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    (tmp_path / "test_inner.py").write_text(INNER)
    run_dir = tmp_path / "run"
    env = {**os.environ, "HIL_STATE": str(tmp_path / "state"),
           "HIL_TEST_VECTOR": str(REPO / "fixtures" / "vectors" / "heartbeat-flatcc.bin")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         "--lab", str(REPO / "boards"), "--report-dir", str(run_dir), "--broker-kind", "mosquitto",
         *extra, str(tmp_path / "test_inner.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    return result, run_dir


@pytest.mark.needs("mosquitto")
@pytest.mark.timeout(240)
def test_xdist_workers_share_the_run_broker(tmp_path: Path) -> None:
    result, run_dir = run_inner(tmp_path, "-n", "2", "--hil-broker")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    urls = {p.name: p.read_text() for p in run_dir.glob("url-*")}
    workers = {name.split("-")[1] for name in urls}
    assert workers == {"gw0", "gw1"}, urls
    assert len(set(urls.values())) == 1, urls  # every worker reached the same broker
    assert sorted(p.name for p in run_dir.glob("telemetry-*.bin")) == ["telemetry-gw0.bin", "telemetry-gw1.bin"]
    assert mosquitto_pids_for(run_dir) == []  # stopped with the session


@pytest.mark.needs("mosquitto")
@pytest.mark.timeout(240)
def test_single_process_starts_the_broker_on_first_use(tmp_path: Path) -> None:
    result, run_dir = run_inner(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert {p.read_text() for p in run_dir.glob("url-*")} and (run_dir / "telemetry.bin").stat().st_size > 0
    assert (run_dir / "broker").is_dir() and mosquitto_pids_for(run_dir) == []


@pytest.mark.needs("mosquitto")
@pytest.mark.timeout(240)
def test_xdist_without_the_option_says_what_to_pass(tmp_path: Path) -> None:
    result, _ = run_inner(tmp_path, "-n", "2")
    assert result.returncode != 0
    assert "pass --hil-broker" in result.stdout
