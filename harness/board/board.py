"""A board of the lab, up or on its way: the one bring-up path for real and emulated boards.

    board = session.board("qemu-an385")          # leased, parts built by its kind
    board.bring_up(BoardState.ONLINE)             # from wherever it is: off -> flashed -> booted -> online
    board.address, board.console, board.telemetry
    board.health()                                # console, probe and network, each within a deadline
    board.power_cycle(); board.reset()

A :class:`Board` is composed of the :class:`~harness.board.parts.BoardParts` its kind supplies;
it knows no kind. Bring-up is a small state machine (labgrid's strategies are the model): each
step is timed and recorded in the run log, failures go up the recovery ladder
(:mod:`harness.board.recovery`), and a board that still fails is marked BROKEN for the rest of
the run (and quarantined when the ladder says so).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from harness.board.errors import BoardBroken
from harness.board.health import check_health, wait_reachable
from harness.board.parts import BoardParts, Progress
from harness.board.recovery import Ladder
from harness.board.state import BoardState, HealthReport
from harness.console import Console
from harness.errors import CheckFailed, HarnessError, UsageError
from harness.firmware import FirmwareBuild
from harness.flash import FlashResult
from harness.lease import Lease, quarantine
from harness.netpolicy import TargetPolicy
from harness.provisioning import ProvisioningRecord
from harness.runlog import RunLog
from harness.state import StateDir
from harness.traffic.capture import Datagram, module_datagrams, read_pcap
from harness.traffic.exchange import Target

if TYPE_CHECKING:
    from harness.broker import Broker
    from harness.lab import BoardConfig
    from harness.telemetry.device_view import DeviceTelemetry

log = logging.getLogger(__name__)

BOOT_TIMEOUT = 30.0
ADDRESS_TIMEOUT = 30.0
HEALTH_DEADLINE = 5.0
_BLOCK = re.compile(r"block at (0x[0-9A-Fa-f]+|\d+)")


def check_build(build: FirmwareBuild, config: BoardConfig) -> str:
    """Before anything is brought up: the build is for this board's target, and its image is the
    one its manifest names (sha256, format). Returns the image's sha256."""
    if not build.compatible_with(config.probe.target):
        raise UsageError(
            f"build {build.manifest.name} runs on {', '.join(build.manifest.targets)}, "
            f"not on {config.name} ({config.probe.target})",
            fix="choose a build whose manifest lists this board's target")
    return build.verify()


def provisioning_address(build: FirmwareBuild) -> int | None:
    """Where the build reads its identity from flash (``identity.provisioning: block at 0x...``),
    or None when the identity is built into the image (a stock image)."""
    match = _BLOCK.search(build.manifest.identity.provisioning)
    return int(match.group(1), 0) if match else None


class Board:
    """One leased board of the lab with its parts; see the module docstring."""

    def __init__(self, config: BoardConfig, parts: BoardParts, *, run_dir: Path, state: StateDir, log: RunLog,
                 lease: Lease | None, run_id: str, ladder: Ladder | None = None) -> None:
        self.config = config
        self.parts = parts
        self.run_dir = run_dir
        self.state_dir = state
        self.log = log
        self.lease = lease
        self.run_id = run_id
        self.ladder = ladder or Ladder()
        self.state = BoardState.OFF
        self.build: FirmwareBuild | None = None
        self.provisioning: ProvisioningRecord | None = None
        self.telemetry: DeviceTelemetry | None = None
        self.policy: TargetPolicy = TargetPolicy()  # where traffic may go (the session's: loopback, its networks)
        self.broker: Broker | None = None  # the session's broker the board connects to
        self.broken_reason: str | None = None
        self.flash_results: list[FlashResult] = []
        self._console: Console | None = None
        self._address: ipaddress.IPv4Address | None = None
        self._restart_due = True  # not restarted since it was written to (or since we met it): reset before booting
        self.boot_mark = 0  # the collector's mark just before the board's last (re)start
        self.boot_time = 0.0  # and the harness's clock then

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def device_id(self) -> str:
        return self.config.identity.device_id

    # -- the parts -----------------------------------------------------------------------------
    @property
    def console(self) -> Console:
        """The board's console, opened on first use (kept across resets and power-cycles)."""
        if self._console is None:
            self._console = Console(self.parts.console_url, self.run_dir / f"{self.name}-console-read.log",
                                    baudrate=self.config.console.baudrate, name=f"{self.name} console")
        return self._console

    @property
    def address(self) -> ipaddress.IPv4Address:
        if self._address is None:
            raise UsageError(f"board {self.name} has no address yet", fix="bring it up to ONLINE first")
        return self._address

    # -- operations ----------------------------------------------------------------------------
    def flash(self, build: FirmwareBuild, *, force: bool = False, progress: Progress | None = None) -> FlashResult:
        """Program the build's image (verified by read-back), through the recovery ladder. Skipped
        when the board already holds exactly that image; ``force`` programs every page anyway."""
        self._refuse_if_broken()
        digest = check_build(build, self.config)
        m = build.manifest
        path = build.image_path
        with self.log.step("flash", board=self.name, build=m.name, sha256=digest, force=force) as learned:
            if not force and self._holds(path, m.format, m.base_address):
                learned["skipped"] = "the board already holds this image (read back)"
                result = FlashResult(self.config.probe.id, self.config.probe.target, str(path), [], 0, 0, 0, 0,
                                     0.0, True, skipped=True)
            else:
                # forced: every page programmed, none skipped by smart flash either
                result = self.ladder.run(self, lambda opts: self.parts.probe.program(
                    path, m.format, m.base_address, progress=progress,
                    options=replace(opts, smart_flash=False) if force else opts), what="flash")
                learned.update(pages_written=result.pages_written, pages_skipped=result.pages_skipped,
                               options=result.options)
        self.flash_results.append(result)
        self.build = build
        self.state = BoardState.FLASHED
        self._restart_due = self._restart_due or not result.skipped
        return result

    def _holds(self, path: Path, fmt: str, base: int | None) -> bool:
        try:
            return self.parts.probe.holds(path, fmt, base)
        except HarnessError as exc:  # cannot read back: program it (the ladder deals with the probe)
            self.log.record("read-back", board=self.name, outcome="failed", error=str(exc))
            return False

    def provision(self, record: ProvisioningRecord, *, force: bool = False) -> FlashResult | None:
        """Write the identity block the build reads (None when the build has its identity built in)."""
        self._refuse_if_broken()
        if self.build is None:
            raise UsageError(f"board {self.name}: flash a build before provisioning it")
        address = provisioning_address(self.build)
        identity = self.build.manifest.identity
        if address is not None:  # refused before anything is written or remembered
            record.check_image(identity.provisioning_versions, identity.provisioning_features,
                               self.build.manifest.name)
        self.provisioning = record
        if address is None:
            self.log.record("provision", board=self.name, outcome="skipped",
                            reason=f"the build's identity is {self.build.manifest.identity.provisioning!r}")
            return None
        return self.write_block(record.encode_sector(identity.provisioning_versions), address,
                                what="provision", force=force, device=record.device_id)

    def write_block(self, data: bytes, address: int, *, what: str = "block", force: bool = False,
                    **details: object) -> FlashResult | None:
        """Program ``data`` at ``address`` (verified by read-back, through the ladder); None when the
        flash already holds it (unless ``force``)."""
        self._refuse_if_broken()
        block = self.run_dir / f"{self.name}-{what}-0x{address:08x}.bin"
        block.write_bytes(data)
        with self.log.step(what, board=self.name, address=f"0x{address:08x}", **details):
            if not force and self._holds(block, "bin", address):
                return None
            result = self.ladder.run(self, lambda opts: self.parts.probe.program(block, "bin", address, options=opts),
                                     what=what)
        self.flash_results.append(result)
        self._restart_due = True
        return result

    def reset(self) -> None:
        """The board's reset method: a pyOCD reset of its type, or a power-cycle (``reset: power``)."""
        self._before_restart()
        with self.log.step("reset", board=self.name, method=self.parts.reset_kind):
            if self.parts.reset_kind == "power":
                self.parts.power.cycle()
            else:
                self.parts.probe.reset(self.parts.reset_kind)
        self._after_restart()

    def power_cycle(self) -> None:
        """Power off and on (emulated power, the board file's commands, or pyOCD's hardware reset)."""
        self._before_restart()
        with self.log.step("power-cycle", board=self.name, cuts_power=self.parts.power.cuts):
            self.parts.power.cycle()
        self._after_restart()

    def _before_restart(self) -> None:
        """Expects after a restart must see only what the board prints from now on (marked before
        the restart: the board may print its banner before the restart call returns)."""
        if self._console is not None:
            self._console.skip_to_end()
        if self.telemetry is not None:
            self.boot_mark = self.telemetry.collector.mark()
        self.boot_time = time.time()

    def _after_restart(self) -> None:
        self._restart_due = False
        if self.state in (BoardState.BOOTED, BoardState.ONLINE):
            self.state = BoardState.FLASHED

    def wait_booted(self, timeout: float = BOOT_TIMEOUT) -> re.Match[str]:
        """Wait for the build's boot marker on the console."""
        if self.build is None:
            raise UsageError(f"board {self.name}: no build flashed in this run, so no boot marker to wait for")
        marker = self.build.manifest.behaviour.boot_marker
        with self.log.step("boot", board=self.name, marker=marker) as learned:
            match = self.console.expect(marker, timeout=timeout)
            learned["line"] = match.group(0)
        self.state = BoardState.BOOTED
        return match

    def find_address(self, timeout: float = ADDRESS_TIMEOUT) -> ipaddress.IPv4Address:
        """Learn the board's address and wait until it answers there (ICMP echo or its TCP echo
        service, as its capabilities say): ONLINE means reachable, not only addressed."""
        deadline = time.monotonic() + timeout
        with self.log.step("address", board=self.name, source=self.config.network.address_from) as learned:
            self._address = self.parts.address.address(lambda: self.console, timeout)
            learned["address"] = str(self._address)
            learned["reachable_by"] = wait_reachable(self, deadline)
        self.state = BoardState.ONLINE
        return self._address

    def traffic_target(self) -> Target:
        """Where traffic generators aim at this board: its address, the run's target policy, its
        services, and (where the link is captured) what the module counted on it."""
        caps = self.config.capabilities
        capture = frames = None
        if self.parts.link_capture() is not None:
            address, mac, stack = self.address, self.parts.mac, self.config.network.stack

            def capture() -> list[Datagram]:
                pcap = self.parts.link_capture()
                return module_datagrams(read_pcap(pcap), address, mac=mac, stack=stack) if pcap else []

            def frames() -> int:
                pcap = self.parts.link_capture()
                return sum(1 for _ in read_pcap(pcap)) if pcap else 0
        return Target(self.address, self.policy, capture, frames, evidence=self.run_dir / "traffic" / self.name,
                      tcp_echo=caps.services.tcp_echo,
                      udp_echo=caps.services.udp_echo, icmp=caps.icmp, rst_closed_ports=caps.rst_closed_ports)

    def health(self, deadline: float = HEALTH_DEADLINE) -> HealthReport:
        """Ask console, probe and network each to answer within ``deadline`` seconds."""
        report = check_health(self, deadline)
        self.log.record("health", board=self.name, outcome="ok" if report.ok else "failed",
                        problems=report.problems() or None)
        return report

    # -- the state machine ---------------------------------------------------------------------
    def bring_up(self, to: BoardState = BoardState.ONLINE, *, build: FirmwareBuild | None = None,
                 provisioning: ProvisioningRecord | None = None, force_flash: bool = False,
                 boot_timeout: float = BOOT_TIMEOUT) -> Board:
        """Take the board to ``to`` from wherever it is. A failure that the ladder cannot recover
        marks the board BROKEN for the rest of the run and raises :class:`BoardBroken`."""
        self._refuse_if_broken()
        build = build or self.build
        if build is None:
            raise UsageError(f"board {self.name}: bring-up needs a firmware build")
        same = self.build is not None and (build.folder, build.manifest.sha256) == (
            self.build.folder, self.build.manifest.sha256)
        if not same and self.state >= BoardState.FLASHED:
            self.state = BoardState.OFF  # another build: start over
        try:
            if self.state < BoardState.FLASHED <= to:
                self.flash(build, force=force_flash)
                if provisioning is not None:
                    self.provision(provisioning)
            if self.state < BoardState.BOOTED <= to:
                if self._restart_due:  # a programmed core stays halted until it is reset
                    self.reset()
                self._boot(boot_timeout)
            if self.state < BoardState.ONLINE <= to:
                self.find_address()
        except BoardBroken:
            raise
        except HarnessError as exc:  # keeps its class: a firmware's failure is not the lab's
            self.mark_broken(exc.message, evidence=exc.evidence)
            raise
        return self

    def _boot(self, timeout: float) -> None:
        """Wait for the boot marker; a board that does not boot gets one power-cycle (a rung of the
        ladder, recorded) before it counts as broken."""
        try:
            self.wait_booted(timeout)
        except CheckFailed as first:
            self.log.record("rung", board=self.name, rung="power-cycle", what="boot", outcome="trying",
                            after=first.message)
            self.power_cycle()
            self.wait_booted(timeout)

    def mark_broken(self, reason: str, *, evidence: object = None, quarantine_board: bool = False) -> None:
        self.state = BoardState.BROKEN
        self.broken_reason = reason
        self.log.record("broken", board=self.name, outcome="failed", reason=reason, evidence=evidence)
        if quarantine_board:
            q = quarantine(self.state_dir, self.name, reason, self.run_id,
                           evidence=str(evidence) if evidence else str(self.log.path))
            self.log.record("quarantine", board=self.name, outcome="failed", reason=reason, since=q.since)

    def _refuse_if_broken(self) -> None:
        if self.state is BoardState.BROKEN:
            raise BoardBroken(f"board {self.name} is broken for this run: {self.broken_reason}",
                              evidence=self.log.path)

    # -- life --------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the console, the probe's worker and what the kind started; release the lease."""
        t0 = time.monotonic()
        try:
            if self._console is not None:
                self._console.close()
                self._console = None
            self.parts.probe.close()
            self.parts.close()
        finally:
            if self.lease is not None:
                self.lease.release()
            log.debug("board %s closed in %.2fs", self.name, time.monotonic() - t0)

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
