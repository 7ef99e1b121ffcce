"""A run: what its boards share, owned in one place for the CLI, the pytest plugin and the tests.

    with RunSession(lab, boards=["qemu-an385"]) as session:   # networks, then broker, then collector
        board = session.board("qemu-an385")                     # leased; its kind built its parts
        session.bring_up(board, build)                          # flashed, provisioned, booted, online
        board.telemetry.expect_event(PayloadType.HEARTBEAT, within=70)

A :class:`RunSession` owns the run folder (``<state>/runs/<run id>/`` unless given), the run log,
the test networks of its boards (created first: the harness's emulated network, or the lab's
networks as ``lab.yaml`` declares them), **one** broker listening on each of those networks and on
loopback, the collector (on loopback), and the target policy (loopback, the lab's networks, the
networks the session made). Several boards of one session share one test network per network
name and one broker; each board's telemetry is its own stream (``board.telemetry``). Everything
is stopped on every exit path, in reverse order of starting.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import socket
import threading
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from harness.board.board import Board, BoardState
from harness.board.kinds import BoardSite, factory_for, network_mode
from harness.broker import Broker, BrokerOptions, DeviceCredentials, open_broker, parse_mqtt_url
from harness.broker.ports import IOT_HUB_TLS_PORT
from harness.errors import ConfigError, InfrastructureError, UsageError
from harness.firmware import FirmwareBuild
from harness.hub.ca import lab_ca
from harness.hub.service import IotHubStandIn
from harness.lab import BoardConfig, Lab, TestNetwork, device_secret
from harness.lease import Lease
from harness.netpolicy import TargetPolicy
from harness.provisioning import ProvisioningRecord
from harness.runlog import RunLog
from harness.telemetry.collector import Collector
from harness.telemetry.device_view import DeviceTelemetry

log = logging.getLogger(__name__)

ARCHIVE_NAME = "telemetry.bin"
EMULATED = "emulated"


@dataclass
class NetworkPlace:
    """A test network as the session uses it: where the broker listens on it, and what its boards
    are told (the broker's and the time server's names or addresses)."""

    name: str
    subnet: ipaddress.IPv4Network
    harness_address: ipaddress.IPv4Address
    broker_host: str
    time_server: str
    handle: Any = None  # the object a board kind attaches to (the TapNetwork of the emulated network)
    routed: bool = True  # the harness reaches its boards' addresses (not so behind QEMU's user NAT)


class RunSession:
    """See the module docstring. Use as a context manager, or call :meth:`start` / :meth:`close`."""

    def __init__(self, lab: Lab, *, boards: Sequence[str] = (), run_dir: Path | None = None,
                 broker_kind: str | None = None, collector_archive: Path | None = None,
                 with_collector: bool = True, register_lab_devices: bool = False, run_id: str | None = None) -> None:
        self.lab = lab
        self.state = lab.state
        self.run_dir = (Path(run_dir) if run_dir is not None else self.state.new_run_dir()).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id or self.run_dir.name  # a worker of a parallel run: the run's id, a folder of its own
        self.log = RunLog(self.run_dir)
        self.policy: TargetPolicy = lab.target_policy()
        self.board_names = list(dict.fromkeys(boards))
        for name in self.board_names:
            lab.board(name)  # an unknown name fails here, before anything starts
        self.broker_kind = broker_kind or lab.settings.broker.kind
        self.archive = collector_archive or self.run_dir / ARCHIVE_NAME
        self.with_collector = with_collector
        self.register_lab_devices = register_lab_devices  # every lab board's device known from the start
        self.networks: dict[str, NetworkPlace] = {}
        self.boards: dict[str, Board] = {}
        self.broker: Broker | None = None
        self.hub: IotHubStandIn | None = None  # twin, methods, C2D and DPS, when the lab has a device registry
        self.collector: Collector | None = None
        self._stack = ExitStack()
        self._services: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._started = False

    # -- life ----------------------------------------------------------------------------------
    def start(self) -> RunSession:
        """Networks of the session's boards first, then the broker on them, then the collector."""
        with self._lock:
            if self._started:
                return self
            self._started = True
            try:
                for name in self.board_names:
                    self._network_for(self.lab.board(name))
                self._start_broker()
                if self.register_lab_devices:
                    for config in self.lab.boards.values():
                        self.credentials_for(config)
                if self.with_collector:
                    self._start_collector()
            except BaseException:
                self.close()
                raise
            return self

    def close(self) -> None:
        """Boards (their machines, consoles, leases), collector, broker, networks: every one, in
        reverse order, whatever fails on the way."""
        with self._lock:
            for board in reversed(list(self.boards.values())):
                with contextlib.suppress(Exception):
                    board.close()
            self.boards.clear()
            self._stack.close()
            self._started = False

    def __enter__(self) -> RunSession:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- networks ------------------------------------------------------------------------------
    def _network_for(self, config: BoardConfig) -> NetworkPlace:
        name = config.network.test_network
        place = self.networks.get(name)
        if place is not None:
            return place
        if self.broker is not None:
            raise UsageError(f"board {config.name} is on network {name!r}, which this session did not prepare",
                             fix="name every board when the session starts (RunSession(lab, boards=[...]))")
        place = self._emulated_network(config) if name == EMULATED else self._lab_network(self.lab.network(name))
        self.networks[name] = place
        if place.routed:  # QEMU's user network is not reachable from here: traffic must not go there
            self.policy.allow_created(f"{self.run_id}:{name}", place.subnet)
        self.log.record("network", network=name, subnet=str(place.subnet), harness=str(place.harness_address),
                        bridge=getattr(place.handle, "bridge", None))  # its namespaces are named after it
        return place

    def _emulated_network(self, config: BoardConfig) -> NetworkPlace:
        """The harness's own network for emulated boards: a tap network (DHCP, DNS and NTP of its
        own; root), or QEMU user networking (no root; the broker on loopback through a forward;
        no time server), as the session's boards' kind says. One session uses one of the two."""
        boards = [self.lab.board(n) for n in self.board_names] or [config]
        modes = {network_mode(b) for b in boards if b.network.test_network == EMULATED}
        if modes == {"user"}:
            return NetworkPlace(EMULATED, ipaddress.IPv4Network("10.0.2.0/24"), ipaddress.IPv4Address("127.0.0.1"),
                                "10.0.2.100", "time.invalid", _UserNetwork(self), routed=False)
        if len(modes) > 1:
            raise UsageError(f"the emulated boards of one session share one network: these want {sorted(modes)}",
                             fix="give every emulated board of the run the same qemu.network")
        from harness.emulation.tap_network import TapNetwork

        settings = self.lab.settings  # the names the images were built for answer with our services
        aliases = {settings.broker.hub: "broker", settings.broker.dps: "broker",
                   **{name: "time" for name in settings.time_server.names}}
        net = self._stack.enter_context(TapNetwork(self.run_dir / "net", aliases))
        assert net.subnet is not None
        names = {n.split(".", 1)[0]: n for n in net.names}
        return NetworkPlace(EMULATED, net.subnet, net.harness_address, names["broker"], names["time"], net)

    def _lab_network(self, net: TestNetwork | None) -> NetworkPlace:
        """A network of lab.yaml: boards reach the broker (and, with ``time_server: chrony``, the
        time server the session starts) at ``broker.bind``, this host's address for the lab's boards."""
        if net is None or not isinstance(net.subnet, ipaddress.IPv4Network):
            raise ConfigError(f"{self.lab.root}: a board's test network is not an IPv4 network of lab.yaml")
        bind = self.lab.settings.broker.bind
        if bind is None:
            raise ConfigError(f"{self.lab.root / 'lab.yaml'}: field broker.bind: boards on {net.name} ({net.subnet}) "
                              "need the address of this host they reach the broker on",
                              fix=f"set broker: {{bind: <this host's address in {net.subnet}>}}")
        _require_local(bind, net)
        return NetworkPlace(net.name, net.subnet, bind, str(bind), self._time_server_at(bind), net)

    def _time_server_at(self, bind: ipaddress.IPv4Address) -> str:
        settings = self.lab.settings.time_server
        if settings.kind == "external" and settings.host:
            return settings.host
        if settings.kind == "none":
            return "time.invalid"  # never resolves (RFC 6761): the lab gives its boards no time
        if settings.kind != "chrony":
            raise ConfigError(f"{self.lab.root / 'lab.yaml'}: field time_server.kind: {settings.kind!r} is not "
                              "offered by this harness", fix="use chrony, external (with host:) or none")
        if "chrony" not in self._services:
            from harness.emulation.services import Chrony

            chrony = Chrony(self.run_dir / "chrony", None, ipaddress.IPv4Interface(f"{bind}/32"))
            (self.run_dir / "chrony").mkdir(exist_ok=True)
            self._stack.callback(chrony.stop)
            chrony.start()
            self._services["chrony"] = chrony
        return str(bind)

    # -- broker and collector --------------------------------------------------------------------
    def _start_broker(self) -> None:
        settings = self.lab.settings.broker
        # one broker for the run: on loopback (the collector, tools, QEMU's user-network forwards)
        # and on each of the run's test networks (what the boards there connect to)
        networks = [str(p.harness_address) for p in self.networks.values() if p.routed]
        lab_tls = settings.tls and self.broker_kind != "external"  # TLS with the lab CA images trust
        # stock images on a lab network connect to 8883 only: the TLS listener takes it there
        stock = {str(p.harness_address): IOT_HUB_TLS_PORT for p in self.networks.values() if p.name != EMULATED}
        options = BrokerOptions(bind="127.0.0.1", also_bind=tuple(a for a in networks if a != "127.0.0.1"),
                                hub=settings.hub, id_scope=settings.id_scope, tls=settings.tls, url=settings.url,
                                tls_files=lab_ca(self.lab).files if lab_tls else None,
                                tls_ports=stock if lab_tls else {})
        broker = open_broker(self.broker_kind, self.run_dir / "broker", options)
        for device in self.lab.settings.devices:  # the lab's registry: SAS tokens from their keys, or certificates
            broker.add_device(device.id, key=device.key, thumbprint=device.thumbprint,
                              registration_id=device.dps_registration_id)
        self._stack.callback(broker.stop)
        broker.start()
        self.broker = broker
        if self.lab.settings.devices and broker.kind != "external":  # the registry's devices talk to IoT Hub
            self.hub = IotHubStandIn(broker).start()
            self._stack.callback(self.hub.stop)
        self.log.record("broker", kind=broker.kind, url=broker.url, tls_url=broker.tls_url)

    def _start_collector(self) -> None:
        assert self.broker is not None
        collector = Collector.from_endpoint(self.broker.endpoint(), self.archive)
        self._stack.callback(collector.stop)
        collector.start()
        self.collector = collector

    def credentials_for(self, config: BoardConfig) -> DeviceCredentials:
        """The device identity the board connects as (a secret made for the run, unless the board
        file says where its secret is)."""
        if self.broker is None:
            raise UsageError("the session is not started", fix="use RunSession as a context manager")
        registered = self.lab.registered(config.identity.device_id)
        if registered is not None:
            return self.broker.add_device(registered.id, key=registered.key,
                                          registration_id=registered.dps_registration_id)
        return self.broker.add_device(config.identity.device_id, password=device_secret(config))

    # -- boards --------------------------------------------------------------------------------
    def board(self, name: str, *, lease_timeout: float = 0.0) -> Board:
        """The named board, leased for this run, with its parts built by its kind (an emulated
        board's machine is powered on halted, ready for pyOCD)."""
        with self._lock:
            if name in self.boards:
                return self.boards[name]
            self.start()
            config = self.lab.board(name)
            place = self._network_for(config)
            factory = factory_for(config.kind, where=str(config.source))
            lease = Lease(self.state, name, self.run_id).acquire(timeout=lease_timeout)
            try:
                site = BoardSite(self.run_dir, self.state, self.log, place.handle)
                with self.log.step("parts", board=name, kind=config.kind):
                    parts = factory(config, site)
            except BaseException:
                lease.release()
                raise
            board = Board(config, parts, run_dir=self.run_dir, state=self.state, log=self.log, lease=lease,
                          run_id=self.run_id)
            board.policy = self.policy
            board.broker = self.broker
            if self.collector is not None:
                board.telemetry = DeviceTelemetry(self.collector, config.identity.device_id)
            self.boards[name] = board
            return board

    def provisioning_for(self, board: Board, build: FirmwareBuild | None = None) -> ProvisioningRecord:
        """The board's record; for a ``build`` that can (TLS, SAS, DPS), a device of the lab's registry
        registers through DPS and signs in with its key over TLS, by the names the image was built for."""
        place = self.networks[board.config.network.test_network]
        creds = self.credentials_for(board.config)
        assert self.broker is not None
        record = ProvisioningRecord(device_id=board.device_id, broker_host=place.broker_host,
                                    broker_port=parse_mqtt_url(self.broker.url)[1], user_name=creds.username,
                                    secret=creds.password, time_server=place.time_server)
        device = self.lab.registered(board.device_id)
        if build is None or not {"tls", "sas", "dps"} <= set(build.manifest.identity.provisioning_features):
            return record
        if device is None or not device.symmetric_key or self.broker.tls_url is None:
            if build.manifest.build.stack == "netxduo":  # the middleware signs in in no other way
                missing = ("the broker serves no TLS (broker.tls)" if self.broker.tls_url is None else
                           f"device {board.device_id} is not in the lab's registry with a symmetric key (devices:)")
                raise ConfigError(f"build {build.manifest.name} (the Azure IoT middleware) signs in only over TLS "
                                  f"with a SAS token from its device key, and {missing}: the board would never "
                                  "reach the hub",
                                  fix=f"in lab.yaml: broker: {{tls: true}} and devices: [{{id: {board.device_id}, "
                                      "symmetric_key: <base64 key>}]")
            return record
        trusted = build.manifest.identity.trusted_ca_sha256
        ours = hashlib.sha256(lab_ca(self.lab).ca_der()).hexdigest()
        if trusted is not None and trusted != ours:
            raise ConfigError(f"build {build.manifest.name} trusts the CA sha256 {trusted}, not this lab's ({ours}): "
                              "the board would refuse the broker's certificate",
                              fix="build it again for this lab: hil firmware build-reference --tls --lab LAB")
        names = self.lab.settings.broker
        return replace(record, broker_host=names.hub, broker_port=parse_mqtt_url(self.broker.tls_url)[1],
                       user_name="", secret="", transport="tls", auth="sas", device_key=device.symmetric_key,
                       dps_host=names.dps, id_scope=names.id_scope, registration_id=device.dps_registration_id)

    def bring_up(self, board: Board | str, build: FirmwareBuild, *, to: BoardState = BoardState.ONLINE,
                 force_flash: bool = False) -> Board:
        """Take a board of this session to ``to`` with ``build`` and this run's identity for it."""
        b = self.board(board) if isinstance(board, str) else board
        b.bring_up(to, build=build, provisioning=self.provisioning_for(b, build), force_flash=force_flash)
        if b.telemetry is not None:
            b.telemetry.restart()
        return b


class _UserNetwork:
    """What a board on QEMU user networking is wired to: the broker's port on loopback."""

    def __init__(self, session: RunSession) -> None:
        self._session = session

    @property
    def broker_port(self) -> int:
        if self._session.broker is None:
            raise UsageError("the session's broker is not started")
        return parse_mqtt_url(self._session.broker.url)[1]


def _require_local(address: ipaddress.IPv4Address, net: TestNetwork) -> None:
    """The lab's boards reach this host at ``address``: it must be one of this host's."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError as exc:
            raise InfrastructureError(
                f"{address} (lab.yaml broker.bind) is not an address of this host ({exc.strerror}): the boards on "
                f"{net.name} ({net.subnet}) cannot reach this run's broker",
                fix=f"run on the lab host whose {net.interface or net.bridge} has {address}, or correct broker.bind",
            ) from None
