"""The security message as typed, immutable Python objects.

One class per table of the ``AzureIoTSecurity`` schema (``schema/AzureIoTSecurity.fbs``), with
Python types in place of wire types: ``ipaddress`` addresses instead of packed integers, IntEnums
for the schema's enums, ``ModuleVersion`` for the packed version, tuples for vectors. Objects carry
no wire detail (no offsets, no padding): ``codec.decode`` builds them and ``codec.encode`` writes them.

``to_json()`` renders any of them as plain JSON data for logs and reports: addresses as strings,
enums by name, bytes (event ids) as hex, the module version as ``"3.5.4"``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum, IntEnum
from ipaddress import IPv4Address, IPv6Address
from typing import Any, ClassVar

IPAddress = IPv4Address | IPv6Address


class Protocol(IntEnum):
    TCP = 0
    UDP = 1
    ICMP = 2


class PayloadType(IntEnum):
    """The ``Payload`` union's type tag."""

    NONE = 0
    NETWORK_ACTIVITY = 1
    SYSTEM_INFORMATION = 2
    LISTENING_PORTS = 3
    HEARTBEAT = 4
    BASELINE = 5
    PROCESS = 6
    LOG = 7


class BaselineCheckResult(IntEnum):
    PASS = 0
    FAIL = 1
    ERROR = 2


class BaselineCheckSeverity(IntEnum):
    CRITICAL = 0
    IMPORTANT = 1
    WARNING = 2
    INFORMATIONAL = 3


class ProcessEventType(IntEnum):
    FORK = 0
    EXEC = 1
    EXIT = 2


class LogLevel(IntEnum):
    NOTSET = 0
    FATAL = 1
    ERROR = 2
    WARN = 3
    INFO = 4
    DEBUG = 5


def _json_value(value: Any) -> Any:
    if isinstance(value, _Json):
        return value.to_json()
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, IPv4Address | IPv6Address):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple):
        return [_json_value(item) for item in value]
    return value


class _Json:
    """Mixin: ``to_json()`` from the dataclass fields."""

    __slots__ = ()

    def to_json(self) -> dict[str, Any]:
        return {f.name: _json_value(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


# ---- NetworkActivity --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Flow(_Json):
    """One aggregated flow (``NetworkActivityV4``/``V6`` with its ``NetworkActivityCommon``)."""

    local_address: IPAddress
    remote_address: IPAddress
    local_port: int
    remote_port: int
    protocol: Protocol
    bytes_in: int = 0
    bytes_out: int = 0
    process_id: int = 0
    user_id: int = 0
    executable: str | None = None
    commandline: str | None = None

    @property
    def key(self) -> tuple[IPAddress, IPAddress, int, int, Protocol]:
        """The module's aggregation key: (local, remote, local port, remote port, protocol)."""
        return (self.local_address, self.remote_address, self.local_port, self.remote_port, self.protocol)


@dataclass(frozen=True, slots=True)
class NetworkActivity(_Json):
    KIND: ClassVar[PayloadType] = PayloadType.NETWORK_ACTIVITY

    ipv4: tuple[Flow, ...] = ()
    ipv6: tuple[Flow, ...] = ()

    @property
    def flows(self) -> tuple[Flow, ...]:
        return self.ipv4 + self.ipv6


# ---- SystemInformation, Heartbeat --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SystemInformation(_Json):
    KIND: ClassVar[PayloadType] = PayloadType.SYSTEM_INFORMATION

    os_info: str | None = None
    kernel_info: str | None = None
    hw_info: str | None = None


@dataclass(frozen=True, slots=True)
class Heartbeat(_Json):
    KIND: ClassVar[PayloadType] = PayloadType.HEARTBEAT


# ---- schema-only payloads ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListeningPort(_Json):
    """``ListeningPortsV4``/``V6`` struct."""

    local_address: IPAddress
    local_port: int
    protocol: Protocol = Protocol.TCP


@dataclass(frozen=True, slots=True)
class ListeningPorts(_Json):
    KIND: ClassVar[PayloadType] = PayloadType.LISTENING_PORTS

    ipv4_ports: tuple[ListeningPort, ...] = ()
    ipv6_ports: tuple[ListeningPort, ...] = ()


@dataclass(frozen=True, slots=True)
class BaselineCheck(_Json):
    id: str
    result: BaselineCheckResult = BaselineCheckResult.PASS
    error: str | None = None
    description: str | None = None
    severity: BaselineCheckSeverity = BaselineCheckSeverity.CRITICAL
    remediation: str | None = None


@dataclass(frozen=True, slots=True)
class Baseline(_Json):
    KIND: ClassVar[PayloadType] = PayloadType.BASELINE

    baseline_checks: tuple[BaselineCheck, ...] = ()


@dataclass(frozen=True, slots=True)
class Process(_Json):
    KIND: ClassVar[PayloadType] = PayloadType.PROCESS

    executable: str | None = None
    process_id: int = 0
    parent_process_id: int = 0
    user_id: int = 0
    user_name: str | None = None
    commandline: str | None = None
    event_type: ProcessEventType = ProcessEventType.FORK
    hit_count: int = 1


@dataclass(frozen=True, slots=True)
class LogRecord(_Json):
    """The schema's ``Record`` table."""

    message: str
    filename: str
    level: LogLevel = LogLevel.NOTSET
    timestamp: int = 0
    line: int = 0


@dataclass(frozen=True, slots=True)
class Log(_Json):
    KIND: ClassVar[PayloadType] = PayloadType.LOG

    logs: tuple[LogRecord, ...] = ()


Payload = NetworkActivity | SystemInformation | ListeningPorts | Heartbeat | Baseline | Process | Log

PAYLOAD_CLASSES: dict[PayloadType, type[Payload]] = {
    cls.KIND: cls for cls in (NetworkActivity, SystemInformation, ListeningPorts, Heartbeat, Baseline, Process, Log)
}


# ---- Event, version, message -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event(_Json):
    """One event; ``id`` is the 16 UUID bytes (two little-endian 64-bit counters on NetX)."""

    id: bytes
    time: int
    collection_interval: int
    payload: Payload

    @property
    def kind(self) -> PayloadType:
        return self.payload.KIND

    @property
    def id_counters(self) -> tuple[int, int]:
        """The id as NetX writes it: two little-endian 64-bit counters (bytes 0-7, 8-15)."""
        return int.from_bytes(self.id[:8], "little"), int.from_bytes(self.id[8:16], "little")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id.hex(),
            "time": self.time,
            "collection_interval": self.collection_interval,
            "kind": type(self.payload).__name__,
            "payload": self.payload.to_json(),
        }


@dataclass(frozen=True, slots=True, order=True)
class ModuleVersion:
    """The module version, packed on the wire as ``(major << 24) | (minor << 16) | patch``."""

    major: int
    minor: int
    patch: int

    @classmethod
    def from_int(cls, value: int) -> ModuleVersion:
        return cls((value >> 24) & 0xFF, (value >> 16) & 0xFF, value & 0xFFFF)

    def to_int(self) -> int:
        if not (0 <= self.major <= 0xFF and 0 <= self.minor <= 0xFF and 0 <= self.patch <= 0xFFFF):
            raise ValueError(f"module version {self} does not pack into 8.8.16 bits")
        return (self.major << 24) | (self.minor << 16) | self.patch

    @classmethod
    def parse(cls, text: str) -> ModuleVersion:
        """``"3.5.4"`` -> ``ModuleVersion(3, 5, 4)``."""
        parts = text.strip().split(".")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"module version {text!r} is not MAJOR.MINOR.PATCH (e.g. 3.5.4)")
        return cls(int(parts[0]), int(parts[1]), int(parts[2]))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


@dataclass(frozen=True, slots=True)
class SecurityMessage(_Json):
    """The root ``Message`` table."""

    security_module_id: str
    security_module_version: ModuleVersion
    events: tuple[Event, ...]
    timezone: int = 0

    def events_of(self, kind: PayloadType) -> tuple[Event, ...]:
        return tuple(e for e in self.events if kind == e.payload.KIND)

    def to_json(self) -> dict[str, Any]:
        return {
            "security_module_id": self.security_module_id,
            "security_module_version": str(self.security_module_version),
            "timezone": self.timezone,
            "events": [e.to_json() for e in self.events],
        }
