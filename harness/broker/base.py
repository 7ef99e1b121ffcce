"""What every broker kind offers, the registry the kinds join, and the endpoint tests read.

A kind subclasses :class:`Broker`, implements ``_start``/``_stop``/``_identities_changed``/
``_alive`` and registers itself: ``@BROKER_KINDS.register("name")``.
"""

from __future__ import annotations

import atexit
import json
import logging
import shutil
import socket
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from harness.broker.credentials import (
    COLLECTOR_CLIENT_ID,
    COLLECTOR_SUBSCRIBE,
    DEFAULT_HUB,
    DEFAULT_ID_SCOPE,
    DeviceCredentials,
    IdentityTable,
)
from harness.broker.ports import require_free
from harness.errors import ConfigError, InfrastructureError, UsageError
from harness.registry import Registry
from harness.telemetry.archive import MAX_RECORD

if TYPE_CHECKING:
    from harness.broker.tls import TlsFiles

log = logging.getLogger(__name__)

ENDPOINT_FILE = "broker-endpoint.json"
# The largest MQTT packet a local broker accepts, counted as mosquitto's max_packet_size counts it
# (the type byte and the Remaining Length's value, not the bytes encoding it): a PUBLISH any larger
# carries a message the archive could not hold (a record is the message, its topic and a few fields,
# at most MAX_RECORD bytes), so the broker refuses it by closing the connection instead of
# acknowledging it. 64 bytes leave room for the record's own fields.
MAX_PACKET = MAX_RECORD - 64


@dataclass
class BrokerOptions:
    """How to run a broker. ``bind`` is 127.0.0.1 or a test-network address the harness made;
    ``also_bind``: more addresses it listens on, on the same ports (the other test networks of a run)."""

    bind: str = "127.0.0.1"
    also_bind: tuple[str, ...] = ()
    port: int = 0  # 0: pick a free port and verify the broker holds it
    tls: bool = False
    tls_port: int = 0
    # with tls: addresses whose TLS listener takes a fixed port instead of ``tls_port`` (8883 on a lab
    # network's bind address: stock images connect there and nowhere else); each must be ``bind`` or
    # in ``also_bind``, and the port free, else an infrastructure error names the port and its holder
    tls_ports: dict[str, int] = field(default_factory=dict)
    hub: str = DEFAULT_HUB
    id_scope: str = DEFAULT_ID_SCOPE  # DPS registrations sign in under it
    url: str | None = None  # external kind only: mqtt[s]://[user:password@]host:port
    ca_path: Path | None = None  # external kind only: CA to trust for mqtts
    collector_id: str = COLLECTOR_CLIENT_ID
    # with tls: the CA and server certificate to serve (the lab CA's, :func:`harness.broker.tls.lab_pki`);
    # default: a CA made for the run
    tls_files: TlsFiles | None = None


@dataclass(frozen=True)
class Connect:
    """One CONNECT the broker accepted: who, from where, how."""

    time: str
    address: str
    client_id: str
    username: str
    clean_session: bool
    keepalive: int


@dataclass(frozen=True)
class BrokerHealth:
    ok: bool
    detail: str


@dataclass
class BrokerEndpoint:
    """Everything a test process needs to reach the run's broker; JSON-serialisable."""

    url: str
    collector: DeviceCredentials
    devices: dict[str, DeviceCredentials] = field(default_factory=dict)
    tls_url: str | None = None
    ca_path: str | None = None
    hub: str = DEFAULT_HUB
    kind: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "url": self.url, "tls_url": self.tls_url, "ca_path": self.ca_path,
            "hub": self.hub, "collector": self.collector.to_json(),
            "devices": {k: v.to_json() for k, v in self.devices.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], *, where: str = "endpoint") -> BrokerEndpoint:
        try:
            return cls(
                url=data["url"], tls_url=data.get("tls_url"), ca_path=data.get("ca_path"),
                hub=data.get("hub", DEFAULT_HUB), kind=data.get("kind", ""),
                collector=DeviceCredentials.from_json(data["collector"]),
                devices={k: DeviceCredentials.from_json(v) for k, v in data.get("devices", {}).items()},
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{where}: broker endpoint lacks field {exc}",
                              fix="write it with BrokerEndpoint.write()") from None

    def write(self, path: Path) -> Path:
        """Write atomically (other processes may be reading it)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.touch(mode=0o600)
        tmp.write_text(json.dumps(self.to_json(), indent=2))
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, path: Path) -> BrokerEndpoint:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no broker endpoint file",
                              fix="start the run's broker first (it writes this file)") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not JSON ({exc})", fix="rewrite it with BrokerEndpoint.write()") from None
        return cls.from_json(data, where=str(path))


def parse_mqtt_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://host:port`` or ``mqtts://host:port`` -> (host, port, tls)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
        raise ConfigError(f"broker URL {url!r} is not mqtt://host:port or mqtts://host:port",
                          fix="write it as mqtt://127.0.0.1:1883")
    tls = parts.scheme in ("mqtts", "ssl")
    return parts.hostname, parts.port or (8883 if tls else 1883), tls


def make_url(host: str, port: int, *, tls: bool = False) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{'mqtts' if tls else 'mqtt'}://{shown}:{port}"


def free_port(bind: str) -> int:
    """A port free on ``bind`` right now (the broker then verifies it really holds it)."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((bind, 0))
        return int(s.getsockname()[1])


def port_accepts(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


BROKER_KINDS: Registry[type[Broker]] = Registry("broker")


def default_kind() -> str:
    return "mosquitto" if shutil.which("mosquitto") else "embedded"


def open_broker(kind: str | None, run_dir: Path, options: BrokerOptions | None = None) -> Broker:
    """Make (not start) a broker of ``kind`` (default: mosquitto where installed, else embedded)."""
    cls = BROKER_KINDS.get(kind or default_kind(), where="--kind")
    return cls(Path(run_dir), options or BrokerOptions())


class Broker(ABC):
    """A run-wide MQTT broker standing in for IoT Hub. Use as a context manager."""

    kind: ClassVar[str] = ""

    def __init__(self, run_dir: Path, options: BrokerOptions) -> None:
        self.run_dir = run_dir
        self.options = options
        self.identities = IdentityTable(hub=options.hub, id_scope=options.id_scope)
        self._collector = self.identities.add_service(options.collector_id)
        self._lock = threading.RLock()
        self._running = False

    # -- to implement --------------------------------------------------------------------------
    @abstractmethod
    def _start(self) -> None: ...

    @abstractmethod
    def _stop(self, graceful: bool) -> None: ...

    @abstractmethod
    def _identities_changed(self) -> None:
        """Make a running broker enforce the current identity table."""

    @abstractmethod
    def _alive(self, grace: float = 0.0) -> str | None:
        """None when the broker's own machinery runs, else why not. ``grace``: seconds a process that
        may be dying gets to be seen dead (a killed process closes its sockets before it can be
        reaped, so a refused port can come first)."""

    @property
    @abstractmethod
    def url(self) -> str: ...

    @property
    def tls_url(self) -> str | None:
        return None

    @property
    def ca_path(self) -> Path | None:
        return None

    @property
    def log_path(self) -> Path | None:
        return None

    def connections(self) -> list[Connect] | None:
        """Every CONNECT the broker accepted so far, oldest first; None when this kind cannot say."""
        return None

    # -- common --------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> Broker:
        with self._lock:
            if self._running:
                return self
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atexit.register(self._atexit_stop)
            try:
                self._start()
            except BaseException:
                self._stop(graceful=False)
                atexit.unregister(self._atexit_stop)
                raise
            self._running = True
            self.write_endpoint()
            log.info("%s broker running at %s", self.kind, self.url)
            return self

    def stop(self) -> None:
        with self._lock:
            try:
                self._stop(graceful=True)
            finally:
                self._running = False
                atexit.unregister(self._atexit_stop)

    def restart(self, graceful: bool = True) -> None:
        """Stop (SIGTERM and wait when graceful, SIGKILL otherwise) and start on the same port."""
        with self._lock:
            if not self._running:
                raise UsageError("restart() on a broker that is not running", fix="call start() first")
            self._stop(graceful=graceful)
            self._running = False
            self._start()
            self._running = True

    def _atexit_stop(self) -> None:
        if self._running:
            self._stop(graceful=False)
            self._running = False

    def health(self) -> BrokerHealth:
        if not self._running:
            return BrokerHealth(False, "not started")
        why = self._alive()
        if why:
            return BrokerHealth(False, why)
        host, port, _ = parse_mqtt_url(self.url)
        if not port_accepts(host, port):
            return BrokerHealth(False, self._alive(grace=2.0) or f"nothing accepts connections on {host}:{port}")
        return BrokerHealth(True, f"{self.kind} at {self.url}")

    def require_healthy(self) -> None:
        h = self.health()
        if not h.ok:
            raise InfrastructureError(f"{self.kind} broker is not healthy: {h.detail}",
                                      evidence=self.log_path)

    def add_device(self, device_id: str, *, password: str | None = None, key: bytes | None = None,
                   thumbprint: bytes | None = None, registration_id: str | None = None,
                   **username_params: str) -> DeviceCredentials:
        """Register a device for this run (also while running) and return what it connects with; the
        broker enforces it when this returns. ``password``: the device's own secret (default: one
        made for the run); or ``key``: its symmetric key (it signs in with SAS tokens); or
        ``thumbprint``: its X.509 certificate's SHA-1 or SHA-256 thumbprint (it signs in with that
        certificate, on the TLS listener). With a key or thumbprint, ``registration_id``: it may also
        register with DPS under that id (with a certificate: one whose common name is that id)."""
        if registration_id is not None and key is None and thumbprint is None:
            raise UsageError(f"device {device_id!r}: a DPS registration needs the device's key or thumbprint")
        with self._lock:
            known = self.identities.get(device_id) is not None and (
                registration_id is None or self.identities.registration(registration_id) is not None)
            ident = self.identities.add_device(device_id, password=password, key=key, thumbprint=thumbprint,
                                               **username_params)
            if registration_id is not None:
                self.identities.add_registration(registration_id, device_id, key, thumbprint=thumbprint)
            if self._running and not known:
                self._identities_changed()
                self.write_endpoint()
            return ident.credentials

    def add_service(self, client_id: str, *, subscribe: tuple[str, ...] = COLLECTOR_SUBSCRIBE,
                    publish: tuple[str, ...] = ()) -> DeviceCredentials:
        """Register a non-device identity (another reader such as a benchmark's or a tool's); its
        user name is its client id. By default it reads every device's events, like the collector,
        and its own canary topic. The broker enforces it when this returns."""
        with self._lock:
            known = self.identities.get(client_id) is not None
            ident = self.identities.add_service(client_id, subscribe=subscribe, publish=publish)
            if self._running and not known:
                self._identities_changed()
            return ident.credentials

    @property
    def collector_credentials(self) -> DeviceCredentials:
        return self._collector.credentials

    def endpoint(self) -> BrokerEndpoint:
        ca = self.ca_path
        return BrokerEndpoint(
            url=self.url, tls_url=self.tls_url, ca_path=str(ca) if ca else None, hub=self.options.hub,
            kind=self.kind, collector=self.collector_credentials,
            devices={i.device_id: i.credentials for i in self.identities.identities() if i.device_id},
        )

    @property
    def endpoint_path(self) -> Path:
        return self.run_dir / ENDPOINT_FILE

    def write_endpoint(self) -> Path:
        return self.endpoint().write(self.endpoint_path)

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def all_binds(options: BrokerOptions) -> list[str]:
    """Every address a local broker listens on, ``bind`` first, each once."""
    return list(dict.fromkeys([options.bind, *options.also_bind]))


class LocalBroker(Broker):
    """A broker the harness runs itself (a process or in this process): it owns its ports and, with
    TLS, the run's CA."""

    def __init__(self, run_dir: Path, options: BrokerOptions) -> None:
        super().__init__(run_dir, options)
        self._port = options.port
        self._tls_port = options.tls_port
        self._tls: TlsFiles | None = None

    @property
    def url(self) -> str:
        return make_url(self.options.bind, self._port)

    @property
    def tls_url(self) -> str | None:
        return make_url(self.options.bind, self.tls_port_at(self.options.bind), tls=True) if self.options.tls else None

    @property
    def ca_path(self) -> Path | None:
        return self._tls.ca_cert if self._tls else None

    def tls_port_at(self, address: str) -> int:
        """The TLS listener's port at ``address``: a fixed one of ``tls_ports``, else the run's."""
        return self.options.tls_ports.get(address, self._tls_port)

    def check_fixed_ports(self) -> None:
        """Before a start: every fixed TLS port is at an address the broker listens on, and free there."""
        binds = all_binds(self.options)
        for address, port in self.options.tls_ports.items():
            if address not in binds:
                raise UsageError(f"a fixed TLS port for {address}, where the broker does not listen ({binds})",
                                 fix="give tls_ports only for bind or also_bind addresses")
            if self.options.tls:
                require_free(address, port, "for the boards that connect to its TLS listener there")
