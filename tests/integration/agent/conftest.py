"""An emulated board running the reference firmware with the security agent, on the tap test
network, publishing to the run's mosquitto, watched by the harness's collector.

``agent_board(knobs)`` builds the firmware (fast preset plus ``knobs``), starts network, broker and
collector, boots the board and waits for its first security message; on exit everything is stopped
and the QEMU process is proved gone. Unless ``knobs`` say otherwise, the module's console lines are
on (``LOGGED``: the core's state lines and the middleware's, in their real formats), so that tests
can see the states; a stock image prints none of them.
"""

from __future__ import annotations

import os
import signal
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection
from scapy.config import conf
from scapy.layers.inet import IP, TCP
from scapy.packet import Packet
from scapy.sendrecv import sendp
from scapy.utils import rdpcap

from harness.broker import Broker, parse_mqtt_url
from harness.console import Console
from harness.emulation.gdbremote import GdbRemote
from harness.emulation.process import pid_alive
from harness.emulation.qemu import Machine
from harness.emulation.tap_network import TapAttachment, TapNetwork
from harness.firmware import load_build
from harness.firmware_build import IMAGE_STEM, build_reference
from harness.netpolicy import TargetPolicy
from harness.session import RunSession
from harness.telemetry.collector import Collector
from harness.telemetry.model import Flow, NetworkActivity, PayloadType
from tests.boards import emulated_board, private_lab

NEEDS = ("qemu", "arm-gcc", "root", "mosquitto", "dnsmasq", "chrony", "ip")
FIRST_MESSAGE_TIMEOUT = 60.0
LOGGED = {"ASC_LOG_LEVEL": 4, "NX_AZURE_IOT_LOG_LEVEL": 2}
STOCK_CONSOLE = {"ASC_LOG_LEVEL": 0, "NX_AZURE_IOT_LOG_LEVEL": 0}
ENABLED_LINE = r"^\[INFO\] Azure IoT Security Module has been enabled, status=0$"
STATE_LINE = r"^INFO \[core\.c/_security_module_state_cb:\d+\] Security Module inserted to '{}' state$"


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
    build: Path
    policy: TargetPolicy

    @property
    def address(self) -> str:
        return str(self.attachment.address)

    @property
    def broker_port(self) -> int:
        return parse_mqtt_url(self.broker.url)[1]

    @property
    def pcap(self) -> Path:
        return self.machine.pcaps[-1]

    @property
    def mac(self) -> str:
        return self.attachment.mac

    def flows(self, since: int = 0) -> list[Flow]:
        """Every NetworkActivity flow of the unique events that arrived after collector mark `since`."""
        return [f for e in self.collector.events(self.device, since=since, kind=PayloadType.NETWORK_ACTIVITY)
                if isinstance(e.payload, NetworkActivity) for f in e.payload.ipv4]

    def wait_for_flow(self, matches: Callable[[Flow], bool], what: str, within: float, since: int = 0) -> Flow:
        """The first flow matching `matches` in a NetworkActivity event after mark `since`."""

        def has(event: object) -> bool:
            payload = getattr(event, "payload", None)
            return isinstance(payload, NetworkActivity) and any(matches(f) for f in payload.ipv4)

        event = self.collector.wait_for(self.device, has, within, since=since, what=what)
        assert isinstance(event.payload, NetworkActivity)
        return next(f for f in event.payload.ipv4 if matches(f))

    def send_frames(self, frames: list[Packet]) -> None:
        """Put Ethernet frames on the board's test network (the harness side of its bridge)."""
        conf.ifaces.reload()  # scapy lists interfaces once, at import: the run's bridge is newer
        sendp(frames, iface=self.net.bridge, verbose=False)

    def step_clock(self, seconds: int) -> None:
        """Move the board's unix time `seconds` forward at once, as an SNTP step would: its clock is
        `unix_ms_at_boot + millis` (src/unix_time.c), rewritten through the gdbstub while halted."""
        address = elf_symbol(self.build / f"{IMAGE_STEM}.elf", "unix_ms_at_boot")
        with GdbRemote.connect(self.machine.gdb_address, timeout=5.0) as gdb:
            gdb.halt()
            try:
                (value,) = struct.unpack("<Q", gdb.read_memory(address, 8))
                gdb.write_memory(address, struct.pack("<Q", value + seconds * 1000))
            finally:
                gdb.cont()

    @contextmanager
    def broker_frozen(self) -> Iterator[None]:
        """The broker process stopped (SIGSTOP; its host's TCP still acknowledges) until the block
        ends, then continued on every path out."""
        pid = getattr(self.broker, "pid", None)
        if not isinstance(pid, int):
            raise RuntimeError(f"the {type(self.broker).__name__} broker has no process to stop")
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)


def elf_symbol(elf: Path, name: str) -> int:
    with elf.open("rb") as fh:
        for section in ELFFile(fh).iter_sections():
            if isinstance(section, SymbolTableSection):
                for symbol in section.get_symbol_by_name(name) or []:
                    return int(symbol["st_value"])
    raise AssertionError(f"no symbol {name!r} in {elf}")


def mqtt_from_board(board: AgentBoard, *, last_connection: bool = False) -> list[bytes]:
    """The MQTT packets the board sent to the broker, connection by connection in the order they
    appear in the capture (or on the last one only), each connection's stream reassembled by
    sequence number (retransmissions once)."""
    streams: dict[int, dict[int, bytes]] = {}
    for pkt in rdpcap(str(board.pcap)):
        if IP not in pkt or TCP not in pkt or pkt[IP].src != board.address or pkt[TCP].dport != board.broker_port:
            continue
        sport = pkt[TCP].sport
        streams.setdefault(sport, {})
        data = bytes(pkt[TCP].payload)
        if data:
            segments = streams.setdefault(sport, {})
            segments[pkt[TCP].seq] = max(segments.get(pkt[TCP].seq, b""), data, key=len)
    packets = []
    for segments in list(streams.values())[-1:] if last_connection else streams.values():
        stream = b"".join(segments[seq] for seq in sorted(segments))
        at = 0
        while at + 2 <= len(stream):
            length, i = 0, 1
            while i <= 4 and at + i < len(stream):
                length |= (stream[at + i] & 0x7F) << (7 * (i - 1))
                if not stream[at + i] & 0x80:
                    break
                i += 1
            end = at + i + 1 + length
            if i > 4 or end > len(stream):
                break  # the capture ends inside a packet
            packets.append(stream[at:end])
            at = end
    return packets


def publish_payload(packet: bytes) -> bytes:
    """The application message of a QoS 1 PUBLISH with NetX's 4-byte Remaining Length."""
    (topic_len,) = struct.unpack_from(">H", packet, 5)
    return packet[5 + 2 + topic_len + 2 :]


def wait_until(condition: Callable[[], bool], within: float, what: str) -> None:
    """Poll `condition` (for facts with no event to wait on, like a capture file's content)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:g} s: {what}")
        time.sleep(0.2)




@contextmanager
def _agent_board(build: Path, run: Path, device: str, logged: bool) -> Iterator[AgentBoard]:
    """The board brought up on the harness's one path: a private lab with one emulated board named
    after the device, its RunSession (tap network, mosquitto, collector), pyOCD flashing image and
    provisioning block through the emu: probe, boot, address."""
    lab = private_lab(run / "lab", [emulated_board(device, device)])
    with RunSession(lab, boards=[device], run_dir=run / "run", broker_kind="mosquitto") as session:
        board = session.bring_up(device, load_build(build))
        machine = board.parts.power.machine  # type: ignore[attr-defined]
        pid = machine.pid
        net = session.networks["emulated"].handle
        assert session.broker is not None and session.collector is not None
        agent = AgentBoard(device, machine, board.console, net, net.attachments[device], session.broker,
                           session.collector, session.run_dir, build, session.policy)
        if logged:
            board.console.expect(ENABLED_LINE, timeout=FIRST_MESSAGE_TIMEOUT)
        session.collector.expect_event(device, PayloadType.HEARTBEAT, within=FIRST_MESSAGE_TIMEOUT)
        yield agent
    assert not pid_alive(pid), f"QEMU pid {pid} still running after the session closed"


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
        knobs = {**LOGGED, **(knobs or {})}
        logged = str(knobs["NX_AZURE_IOT_LOG_LEVEL"]) != "0"
        return _agent_board(agent_builds(knobs), tmp_path_factory.mktemp(device), device, logged)

    return make
