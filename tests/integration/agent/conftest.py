"""An emulated board running the reference firmware with the security agent, on the tap test
network, publishing to the run's mosquitto, watched by the harness's collector.

``agent_board(knobs)`` builds the firmware (fast preset plus ``knobs``), starts network, broker and
collector, boots the board and waits for its first security message; on exit everything is stopped
and the QEMU process is proved gone.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.broker import Broker, BrokerOptions, open_broker, parse_mqtt_url
from harness.console import Console
from harness.emulation.flash_file import FlashFile
from harness.emulation.process import pid_alive
from harness.emulation.qemu import Machine
from harness.emulation.tap_network import TapAttachment, TapNetwork
from harness.firmware_build import IMAGE_STEM, build_reference
from harness.provisioning import PROVISIONING_ADDRESS, ProvisioningRecord
from harness.state import resolve_state_dir
from harness.telemetry.collector import Collector
from harness.telemetry.model import PayloadType

NEEDS = ("qemu", "arm-gcc", "root", "mosquitto", "dnsmasq", "chrony", "ip")
FIRST_MESSAGE_TIMEOUT = 60.0


@dataclass
class AgentBoard:
    device: str
    machine: Machine
    console: Console
    net: TapNetwork
    attachment: TapAttachment
    broker: Broker
    collector: Collector
    run: Path

    @property
    def address(self) -> str:
        return str(self.attachment.address)

    @property
    def broker_port(self) -> int:
        return parse_mqtt_url(self.broker.url)[1]

    @property
    def pcap(self) -> Path:
        return self.machine.pcaps[-1]




@contextmanager
def _agent_board(build: Path, run: Path, device: str) -> Iterator[AgentBoard]:
    os.environ.setdefault("HIL_STATE", str(run / "state"))
    state = resolve_state_dir()
    with (
        TapNetwork(run / "net") as net,
        open_broker("mosquitto", run / "broker", BrokerOptions(bind=str(net.harness_address))) as broker,
    ):
        creds = broker.add_device(device)
        record = ProvisioningRecord(
            device_id=device,
            broker_host="broker.hil.test",
            broker_port=parse_mqtt_url(broker.url)[1],
            user_name=creds.username,
            secret=creds.password,
            time_server="time.hil.test",
        )
        flash = FlashFile(run / f"{device}.flash")
        flash.erase()
        flash.program(0, (build / f"{IMAGE_STEM}.bin").read_bytes())
        flash.program(PROVISIONING_ADDRESS, record.encode_sector())
        with Collector.from_endpoint(broker.endpoint(), run / "telemetry.bin") as collector:
            attachment = net.attach(device)
            machine = Machine(device, "mps2-an385", flash_file=flash.path, run_dir=run, network=attachment, state=state)
            pid: int | None = None
            try:
                machine.start(run=True)
                pid = machine.pid
                console = Console(machine.console_url, run / f"{device}-console.log", name=f"{device} console")
                try:
                    board = AgentBoard(device, machine, console, net, attachment, broker, collector, run)
                    console.expect(
                        r"^\[INFO\] Azure IoT Security Module has been enabled, status=0$",
                        timeout=FIRST_MESSAGE_TIMEOUT,
                    )
                    collector.expect_event(device, PayloadType.HEARTBEAT, within=FIRST_MESSAGE_TIMEOUT)
                    yield board
                finally:
                    console.close()
            finally:
                machine.stop()
                if pid is not None:
                    assert not pid_alive(pid), f"QEMU pid {pid} still running after stop()"


@pytest.fixture(scope="session")
def agent_builds(tmp_path_factory: pytest.TempPathFactory) -> Callable[[dict[str, object]], Path]:
    """The reference firmware with the agent, fast preset plus `knobs` (built once per knob set)."""
    cache: dict[tuple[tuple[str, str], ...], Path] = {}

    def build(knobs: dict[str, object]) -> Path:
        key = tuple(sorted((k, str(v)) for k, v in knobs.items()))
        if key not in cache:
            out = tmp_path_factory.mktemp("agent-build")
            cache[key] = build_reference("mps2-an385", {"BUILD_ID": "agent-itest", **knobs}, "fast", out)
        return cache[key]

    return build


@pytest.fixture(scope="module")
def agent_board_factory(
    agent_builds: Callable[[dict[str, object]], Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., AbstractContextManager[AgentBoard]]:
    def make(device: str, knobs: dict[str, object] | None = None) -> AbstractContextManager[AgentBoard]:
        return _agent_board(agent_builds(knobs or {}), tmp_path_factory.mktemp(device), device)

    return make
