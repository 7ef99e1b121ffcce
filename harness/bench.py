"""A bench: one board of the lab brought up with the run's broker and collector.

``bring_up(lab, board, build, run_dir)`` leases the board, starts what its kind needs (for an
emulated board: a test network with DHCP, DNS and NTP, and the QEMU machine), starts the broker
and the collector, flashes the build and the board's provisioning block through pyOCD — the same
flashing path as a real board's — powers the board on, waits for the build's boot marker and for
its address, and yields a ``BenchBoard``. Everything is stopped on every exit path.

Kinds join ``BENCH_KINDS`` with a bring-up of their own; the emulated kind is here. Real boards
(kind ``pyocd``) join with board control.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.broker import Broker, BrokerOptions, DeviceCredentials, open_broker, parse_mqtt_url
from harness.console import Console
from harness.errors import UsageError
from harness.firmware import FirmwareBuild
from harness.flash import Flasher, FlashResult
from harness.lab import Board, Lab
from harness.lease import Lease
from harness.provisioning import PROVISIONING_ADDRESS, ProvisioningRecord
from harness.registry import Registry
from harness.state import ENV_STATE
from harness.telemetry.collector import Collector

log = logging.getLogger(__name__)

BOOT_TIMEOUT = 30.0
ADDRESS_TIMEOUT = 30.0
ARCHIVE_NAME = "telemetry.bin"


@dataclass
class Link:
    """What a kind's bring-up gives back: where the broker binds, how the board reaches it, and the
    board-side controls."""

    broker_bind: str
    broker_host_for_board: str
    time_server_for_board: str
    console_url: Callable[[], str]
    power_cycle: Callable[[], None]
    address: Callable[[float], ipaddress.IPv4Address]


@dataclass
class BenchBoard:
    """A board that is up: flashed, provisioned, booted, on the network, watched by the collector."""

    board: Board
    build: FirmwareBuild
    run_dir: Path
    broker: Broker
    collector: Collector
    console: Console
    credentials: DeviceCredentials
    address: ipaddress.IPv4Address
    flash_results: list[FlashResult]
    link: Link

    @property
    def device_id(self) -> str:
        return self.board.identity.device_id

    @property
    def archive(self) -> Path:
        return self.run_dir / ARCHIVE_NAME


#: A kind's bring-up: (lab, board, run dir, exit stack) -> Link; it registers its cleanups on the stack.
KindBringUp = Callable[[Lab, Board, Path, ExitStack], Link]
BENCH_KINDS: Registry[KindBringUp] = Registry("bench board")


@BENCH_KINDS.register("qemu")
def _qemu_bring_up(lab: Lab, board: Board, run_dir: Path, stack: ExitStack) -> Link:
    from harness.emulation.qemu import Machine
    from harness.emulation.tap_network import TapNetwork

    settings = board.settings
    if settings.network != "tap":
        raise UsageError(
            f"board {board.name}: a bench needs the tap network (NTP, DNS and DHCP for the firmware); "
            f"it has network: {settings.network}",
            fix=f"set 'qemu: {{network: tap}}' in {board.source} and run as root",
        )
    net = stack.enter_context(TapNetwork(run_dir / "net"))
    attachment = net.attach(board.name)
    flash_file = run_dir / f"{board.name}.flash"
    machine = Machine(board.name, settings.machine, flash_file=flash_file, run_dir=run_dir,
                      network=attachment, memory=settings.memory, state=lab.state)
    stack.callback(machine.stop)
    machine.start(run=False)  # halted: pyOCD programs it through the emu: probe
    return Link(
        broker_bind=str(net.harness_address),
        broker_host_for_board=next(n for n in net.names if n.startswith("broker.")),
        time_server_for_board=next(n for n in net.names if n.startswith("time.")),
        console_url=lambda: machine.console_url,
        power_cycle=lambda: machine.power_cycle(run=True),
        address=lambda timeout: net.wait_for_lease(attachment.mac, timeout),
    )


def provisioning_for(board: Board, link: Link, broker: Broker, creds: DeviceCredentials) -> ProvisioningRecord:
    return ProvisioningRecord(
        device_id=board.identity.device_id,
        broker_host=link.broker_host_for_board,
        broker_port=parse_mqtt_url(broker.url)[1],
        user_name=creds.username,
        secret=creds.password,
        time_server=link.time_server_for_board,
    )


@contextmanager
def bring_up(
    lab: Lab, board_name: str, build: FirmwareBuild, run_dir: Path, *, run_id: str | None = None,
    broker_kind: str | None = None, boot_timeout: float = BOOT_TIMEOUT,
) -> Iterator[BenchBoard]:
    board = lab.board(board_name)
    if not build.compatible_with(board.probe.target):
        raise UsageError(
            f"build {build.manifest.name} runs on {', '.join(build.manifest.targets)}, "
            f"not on {board.name} ({board.probe.target})",
            fix="choose a build whose manifest lists this board's target",
        )
    build.verify()
    if board.kind not in BENCH_KINDS:
        raise UsageError(
            f"board {board.name} is of kind {board.kind}: a bench can bring up only "
            f"{', '.join(BENCH_KINDS.names())} boards so far (real boards join with board control)",
            fix="choose an emulated board (hil boards)",
        )
    kind_bring_up = BENCH_KINDS.get(board.kind)
    run_dir.mkdir(parents=True, exist_ok=True)
    os.environ[ENV_STATE] = str(lab.state.root)  # the probe plugin (in pyOCD's worker) finds machines here
    with ExitStack() as stack:
        stack.enter_context(Lease(lab.state, board.name, run_id or run_dir.name).acquire(timeout=0))
        link = kind_bring_up(lab, board, run_dir, stack)
        broker = stack.enter_context(
            open_broker(broker_kind or lab.settings.broker.kind, run_dir / "broker",
                        BrokerOptions(bind=link.broker_bind, hub=lab.settings.broker.hub))
        )
        creds = broker.add_device(board.identity.device_id)
        collector = stack.enter_context(Collector.from_endpoint(broker.endpoint(), run_dir / ARCHIVE_NAME))
        sector = run_dir / "provisioning.bin"
        sector.write_bytes(provisioning_for(board, link, broker, creds).encode_sector())
        flasher = stack.enter_context(
            Flasher(board.probe.id, board.probe.target, board.probe.pack, board.probe.frequency,
                    board.probe.connect_mode, board.probe.erase, run_dir=run_dir)
        )
        m = build.manifest
        results = [
            flasher.program(build.image_path, fmt=m.format, base=m.base_address),
            flasher.program(sector, fmt="bin", base=PROVISIONING_ADDRESS),
        ]
        flasher.close()
        link.power_cycle()
        console = stack.enter_context(
            Console(link.console_url(), run_dir / f"{board.name}-console-read.log",
                    baudrate=board.console.baudrate, name=f"{board.name} console")
        )
        console.expect(m.behaviour.boot_marker, timeout=boot_timeout)
        address = link.address(ADDRESS_TIMEOUT)
        yield BenchBoard(board, build, run_dir, broker, collector, console, creds, address, results, link)

