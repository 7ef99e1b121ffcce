"""Crashes: a SIGKILLed collector leaves an archive whose every complete record decodes; a SIGKILLed
harness takes its mosquitto with it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from harness.broker import Broker, parse_mqtt_url
from harness.telemetry.archive import ArchiveScan, read_archive
from harness.telemetry.codec import decode
from harness.telemetry.topic import security_topic

from .conftest import REPO, heartbeat_payload, process_gone

COLLECTOR = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from harness.broker import BrokerEndpoint
    from harness.telemetry.collector import Collector
    col = Collector.from_endpoint(BrokerEndpoint.read(Path(sys.argv[1])), Path(sys.argv[2]))
    col.start()
    col.on_received(lambda item: item.record == 200 and print("flowing", flush=True))
    print("ready", flush=True)
    threading.Event().wait()
""")


@pytest.mark.timeout(60)
@pytest.mark.needs("mosquitto")
def test_sigkilled_collector_leaves_a_readable_archive(brokers: Callable[..., Broker], tmp_path: Path) -> None:
    b = brokers("mosquitto")
    creds = b.add_device("dev-a")
    archive = tmp_path / "telemetry.bin"
    proc = subprocess.Popen([sys.executable, "-c", COLLECTOR, str(b.endpoint_path), str(archive)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    stop = threading.Event()
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        host, port, _ = parse_mqtt_url(b.url)
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=creds.client_id)
        pub.username_pw_set(creds.username, creds.password)
        pub.connect(host, port)
        pub.loop_start()

        def flood() -> None:
            n = 0
            while not stop.is_set() and n < 200_000:
                pub.publish(security_topic("dev-a"), heartbeat_payload(n), qos=1)
                n += 1

        sender = threading.Thread(target=flood)
        sender.start()
        assert proc.stdout.readline().strip() == "flowing"  # killed in the middle of the stream
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    sender.join(30)
    pub.disconnect()
    pub.loop_stop()
    assert process_gone(proc.pid)
    scan = ArchiveScan()
    ids = [int.from_bytes(decode(r.payload).events[0].id, "big") for r in read_archive(archive, scan)]
    print(f"\ncollector SIGKILLed after {len(ids)} archived records; torn tail {scan.torn_tail} bytes")
    assert len(ids) > 200 and not scan.corrupt
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # one publisher, in order, none repeated


@pytest.mark.timeout(60)
@pytest.mark.needs("mosquitto")
def test_sigkilled_harness_takes_its_mosquitto_along(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    hb = subprocess.Popen([sys.executable, "-m", "harness", "broker", "--kind", "mosquitto", "--json",
                           "--run-dir", str(run_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert hb.stdout is not None and hb.stdout.readline().startswith("{")
    conf = str(run_dir / "mosquitto" / "mosquitto.conf")
    pgrep = subprocess.run(["pgrep", "-f", conf], capture_output=True, text=True)
    (mosquitto_pid,) = [int(p) for p in pgrep.stdout.split()]
    hb.kill()
    hb.wait(10)
    waited = subprocess.run(["timeout", "10", "tail", f"--pid={mosquitto_pid}", "-f", "/dev/null"])
    assert waited.returncode == 0 and process_gone(mosquitto_pid)
