"""The lab inventory: ``boards/*.yaml`` (one board a file) and the optional ``boards/lab.yaml``.

A lab is a folder: ``--lab DIR`` or ``$HIL_LAB``, else ``./boards``. Only files directly in the
folder are boards; ``lab.yaml`` holds what the boards share (test networks, broker, time server,
state folder). Board kinds (``pyocd`` for a real board on a probe, ``qemu`` for an emulated one)
register themselves in ``BOARD_KINDS`` with the model of their own section, so a new kind adds a
module, not a branch here.

Everything is validated at load: unknown keys, wrong types and impossible combinations are
``ConfigError``s naming the file, the field, the value and the fix.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from harness.broker.credentials import COLLECTOR_CLIENT_ID
from harness.broker.relay import SERVICE_CLIENT_ID
from harness.broker.sas import decode_key
from harness.broker.x509 import parse_thumbprint
from harness.config import StrictModel, load, no_nul, read_yaml, shown, validate
from harness.errors import ConfigError
from harness.netpolicy import TargetPolicy
from harness.registry import Registry, load_entry_points
from harness.state import StateDir, check_state_dir, lab_dir_source, resolve_state_dir
from harness.userfiles import list_user_folder, open_user_file

LAB_FILE = "lab.yaml"
#: Names a lab file might be given by mistake; refused so that it is never silently ignored.
LAB_FILE_MISNAMED = ("lab.yml",)
BOARD_SUFFIXES = (".yaml", ".yml")

#: Where a lab's test networks may be: the private ranges (RFC 1918, IPv6 unique local).
PRIVATE_RANGES = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")

#: Probe type prefixes pyOCD knows (built in) plus ours; a probe id without one is ambiguous.
PROBE_TYPES = ("cmsisdap", "stlink", "jlink", "picoprobe", "pemicro", "remote", "emu")

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
                            description="a name of 1-63 letters, digits, '.', '_' or '-', starting with a letter "
                                        "or digit")]
Port = Annotated[int, Field(ge=1, le=65535)]


# ---------------------------------------------------------------------------------------------
# Board kinds


@dataclass(frozen=True)
class BoardKind:
    """A kind of board: its name in YAML, the model of its own section (or None) and a doc line."""

    name: str
    settings_model: type[StrictModel] | None
    description: str
    requires_console_url: bool = True


BOARD_KINDS: Registry[BoardKind] = Registry("board")
#: Where board kinds come from: each kind's module registers its BoardKind (and its factory) here.
KIND_ENTRY_POINTS = "hil.board_kinds"
_kinds_loaded = False


def board_kinds() -> Registry[BoardKind]:
    """The board kinds, their modules imported on first use (``pyocd`` from harness.board,
    ``qemu`` from harness.emulation, and any a package installs)."""
    global _kinds_loaded
    if not _kinds_loaded:
        _kinds_loaded = True
        load_entry_points(KIND_ENTRY_POINTS)
    return BOARD_KINDS


# ---------------------------------------------------------------------------------------------
# Board sections


class ProbeConfig(StrictModel):
    id: str = Field(description="full pyOCD unique id with its type prefix, e.g. stlink:066DFF49")
    target: str = Field(description="pyOCD target type, e.g. stm32l475xg")
    pack: Path | None = None
    frequency: Annotated[int, Field(gt=0, le=100_000_000)] | None = None
    connect_mode: Literal["halt", "pre-reset", "under-reset", "attach"] | None = None
    erase: Literal["sector", "chip"] = "sector"
    keep_below: int | None = Field(
        default=None, description="address below which flash holds a bootloader that must survive"
    )

    @field_validator("id")
    @classmethod
    def _typed_id(cls, value: str) -> str:
        prefix, sep, rest = value.partition(":")
        if not sep or not rest:
            raise ValueError(
                f"probe id {value!r} has no type prefix; write it as TYPE:UNIQUE_ID "
                f"(TYPE one of {', '.join(PROBE_TYPES)}; `pyocd list` shows the unique id)"
            )
        if prefix.lower() not in PROBE_TYPES:
            raise ValueError(f"unknown probe type {prefix!r}; use one of {', '.join(PROBE_TYPES)}")
        return value

    _pack_path = field_validator("pack")(no_nul)

    @model_validator(mode="after")
    def _erase_policy(self) -> ProbeConfig:
        if self.erase == "chip" and self.keep_below is not None:
            raise ValueError(
                "erase: chip would destroy the bootloader below keep_below; use erase: sector"
            )
        return self


_CONSOLE_URL = re.compile(r"^(/dev/\S+|COM\d+|(socket|rfc2217|loop|spy|hwgrep|alt)://\S*)$")


class ConsoleConfig(StrictModel):
    url: str | None = Field(default=None, description="/dev/serial/by-id/..., socket://, rfc2217://")
    baudrate: Annotated[int, Field(gt=0)] = 115200

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not _CONSOLE_URL.match(value):
            raise ValueError(
                f"console url {value!r} is neither a device path nor a pyserial URL; "
                "use /dev/serial/by-id/..., socket://HOST:PORT or rfc2217://HOST:PORT"
            )
        return value


class NetworkConfig(StrictModel):
    address_from: Literal["static", "console", "lease"] = Field(
        description="static: 'address' below; console: read with 'console_pattern'; "
        "lease: the harness's DHCP server (emulated boards)"
    )
    address: ipaddress.IPv4Address | None = None
    console_pattern: str | None = Field(
        default=None, description="regular expression with a named group 'address'"
    )
    test_network: str = Field(description="a network named in lab.yaml, or 'emulated'")
    stack: Literal["native", "offload"] = "native"

    @model_validator(mode="after")
    def _how(self) -> NetworkConfig:
        if self.address_from == "static" and self.address is None:
            raise ValueError("address_from: static needs 'address: A.B.C.D'")
        if self.address_from == "console":
            if not self.console_pattern:
                raise ValueError("address_from: console needs 'console_pattern' with a group (?P<address>...)")
            try:
                compiled = re.compile(self.console_pattern)
            except re.error as exc:
                raise ValueError(f"console_pattern is not a valid regular expression: {exc}") from None
            if "address" not in compiled.groupindex:
                raise ValueError("console_pattern needs a named group (?P<address>...)")
        if self.address is not None and self.address_from != "static":
            raise ValueError(f"'address' is used only with address_from: static (here {self.address_from}); remove it")
        if self.console_pattern is not None and self.address_from != "console":
            raise ValueError(f"'console_pattern' is used only with address_from: console (here {self.address_from}); "
                             "remove it")
        return self


class Services(StrictModel):
    tcp_echo: Port | None = None
    udp_echo: Port | None = None


class Capabilities(StrictModel):
    icmp: bool = False
    ipv6: bool = False
    rst_closed_ports: bool = False
    services: Services = Services()

    def has(self, name: str) -> bool:
        """True if the board offers ``name`` (a flag, or a service such as 'tcp_echo')."""
        if name in ("icmp", "ipv6", "rst_closed_ports"):
            return bool(getattr(self, name))
        if name in Services.model_fields:
            return getattr(self.services, name) is not None
        raise ConfigError(f"unknown capability {name!r}", fix="use icmp, ipv6, rst_closed_ports, tcp_echo, udp_echo")


class ResetConfig(StrictModel):
    method: Literal["system", "hardware", "core", "power"] = "system"


class PowerConfig(StrictModel):
    kind: Literal["none", "command", "emulated"] = "none"
    on_command: list[str] | None = None
    off_command: list[str] | None = None

    @model_validator(mode="after")
    def _commands(self) -> PowerConfig:
        if self.kind == "command" and not (self.on_command and self.off_command):
            raise ValueError("power kind 'command' needs both 'on_command' and 'off_command' as argument lists")
        if self.kind != "command" and (self.on_command is not None or self.off_command is not None):
            raise ValueError("'on_command' and 'off_command' are used only with power kind: command "
                             f"(here {self.kind}); remove them")
        return self


class CredentialsConfig(StrictModel):
    source: Literal["generated", "file", "env"] = "generated"
    path: Path | None = None
    variable: str | None = None

    @model_validator(mode="after")
    def _where(self) -> CredentialsConfig:
        if self.source == "file" and self.path is None:
            raise ValueError("credentials source 'file' needs 'path'")
        if self.source == "env" and not self.variable:
            raise ValueError("credentials source 'env' needs 'variable'")
        if self.path is not None and self.source != "file":
            raise ValueError(f"'path' is used only with credentials source: file (here {self.source}); remove it")
        if self.variable is not None and self.source != "env":
            raise ValueError(f"'variable' is used only with credentials source: env (here {self.source}); remove it")
        return self

    _path = field_validator("path")(no_nul)


DEVICE_ID_PATTERN = r"[A-Za-z0-9\-.%_*?!(),:=@$']{1,128}"  # whole strings: re.fullmatch
DeviceId = Annotated[str, Field(pattern=f"^{DEVICE_ID_PATTERN}$",
                                description="an IoT Hub device id: 1-128 letters, digits or - . % _ * ? ! ( ) "
                                            ", : = @ $ '")]


class IdentityConfig(StrictModel):
    device_id: DeviceId
    module_id: str | None = None
    credentials: CredentialsConfig = CredentialsConfig()


class BoardConfig(StrictModel):
    """One board of the lab as its file ``boards/<name>.yaml`` configures it (the board brought
    up is :class:`harness.board.board.Board`)."""

    name: Name
    kind: str
    description: str | None = None
    probe: ProbeConfig
    console: ConsoleConfig = ConsoleConfig()
    network: NetworkConfig
    capabilities: Capabilities = Capabilities()
    reset: ResetConfig = ResetConfig()
    power: PowerConfig = PowerConfig()
    identity: IdentityConfig
    settings: Any = Field(default=None, description="the kind's own section, validated by the kind")

    _source: Path | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _kind_section(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "kind" not in data:
            return data
        kind_name = data["kind"]
        if not isinstance(kind_name, str) or kind_name not in board_kinds():
            raise ValueError(f"unknown board kind {kind_name!r}; use one of {', '.join(board_kinds().names())}")
        if "settings" in data:
            raise ValueError(f"put the kind's options under '{kind_name}:', not 'settings:'")
        kind = board_kinds().get(kind_name)
        data = dict(data)
        for other in board_kinds().names():
            if other != kind_name and other in data and board_kinds().get(other).settings_model is not None:
                raise ValueError(f"section '{other}:' belongs to boards of kind {other}, not {kind_name}")
        section = data.pop(kind_name, None)
        if kind.settings_model is not None:
            if section is None:
                raise ValueError(f"boards of kind {kind_name} need a '{kind_name}:' section")
            data["settings"] = _validate_section(kind.settings_model, kind_name, section)
        elif section is not None:
            raise ValueError(f"boards of kind {kind_name} take no '{kind_name}:' section")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> BoardConfig:
        kind = board_kinds().get(self.kind)
        if kind.requires_console_url and self.console.url is None:
            raise ValueError(f"boards of kind {self.kind} need 'console: {{url: ...}}'")
        if self.network.address_from == "lease" and self.network.test_network != "emulated":
            raise ValueError("address_from: lease is only for boards on the harness's own 'emulated' network")
        if self.network.stack == "offload" and self.capabilities.icmp:
            raise ValueError("an offload (Wi-Fi module) stack reports no ICMP; set capabilities.icmp: false")
        return self

    @property
    def kind_info(self) -> BoardKind:
        return board_kinds().get(self.kind)

    @property
    def source(self) -> Path | None:
        return self._source


def _validate_section(model: type[StrictModel], name: str, section: Any) -> StrictModel:
    """Validate a kind's own section; its errors name fields under the section ('qemu.machine')."""
    try:
        return model.model_validate(section)
    except ValidationError as exc:
        details: list[Any] = [
            {"type": e["type"], "loc": (name, *e["loc"]), "input": e["input"],
             **({"ctx": e["ctx"]} if "ctx" in e else {})}
            for e in exc.errors()
        ]
        raise ValidationError.from_exception_data(exc.title, details) from None


# ---------------------------------------------------------------------------------------------
# lab.yaml


class TestNetwork(StrictModel):
    __test__ = False  # not a pytest class

    name: Name
    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network
    interface: str | None = None
    bridge: str | None = None

    @field_validator("subnet", mode="before")
    @classmethod
    def _network(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError(f"expected a network like 192.168.50.0/24 (got {shown(value)})")
        try:
            return ipaddress.ip_network(value.strip())
        except ValueError as exc:
            if "has host bits set" in str(exc):
                network = ipaddress.ip_network(value.strip(), strict=False)
                raise ValueError(f"{value} has host bits set: the network is written {network}") from None
            raise ValueError(f"expected a network like 192.168.50.0/24 (the range's first address and its prefix "
                             f"length): {exc}") from None

    @model_validator(mode="after")
    def _reach(self) -> TestNetwork:
        if (self.interface is None) == (self.bridge is None):
            raise ValueError(f"network {self.name}: give exactly one of 'interface' or 'bridge' that reaches it")
        if not any(self.subnet.version == r.version and self.subnet.subnet_of(r) for r in PRIVATE_RANGES):  # type: ignore[arg-type]
            raise ValueError(
                f"network {self.name}: {self.subnet} is not a private range; test networks must lie inside "
                f"{', '.join(map(str, PRIVATE_RANGES))}"
            )
        return self


class BrokerSettings(StrictModel):
    kind: str = "mosquitto"
    url: str | None = None
    hub: str = "hil-lab.azure-devices.net"
    dps: str = "hil-lab-dps.azure-devices-provisioning.net"  # the DPS host name images are built for
    id_scope: str = Field(default="0ne00000000", pattern=r"^[A-Za-z0-9]{1,64}$",
                          description="a DPS ID scope: 1-64 letters or digits, like 0ne00123ABC")
    bind: ipaddress.IPv4Address | None = None
    tls: bool = False

    @field_validator("hub", "dps")
    @classmethod
    def _host(cls, value: str) -> str:
        if not _HOST_NAME.match(value):
            raise ValueError(f"{shown(value)} is not a host name; write it like my-hub.azure-devices.net")
        return value

    @model_validator(mode="after")
    def _external(self) -> BrokerSettings:
        if self.dps == self.hub:
            raise ValueError(f"broker.dps and broker.hub are both {self.dps}; DPS and the hub have names of their own")
        if self.kind == "external" and not self.url:
            raise ValueError("broker kind 'external' needs 'url: mqtt://HOST:PORT'")
        if self.kind != "external" and self.url is not None:
            raise ValueError(f"'url' is used only with broker kind: external (here {self.kind}); remove it")
        return self


#: Client ids of the harness's own services on the broker: no device may take them.
RESERVED_CLIENT_IDS = (COLLECTOR_CLIENT_ID, SERVICE_CLIENT_ID)
REGISTRATION_ID_PATTERN = r"[a-z0-9\-._:]{1,128}"  # whole strings: re.fullmatch
RegistrationId = Annotated[str, Field(pattern=f"^{REGISTRATION_ID_PATTERN}$")]


class RegisteredDevice(StrictModel):
    """A device of the lab's registry (``lab.yaml`` ``devices:``), as IoT Hub and DPS know it: it
    signs in with SAS tokens signed with its symmetric key, or with an X.509 client certificate of
    its thumbprint (IoT Hub's self-signed X.509; to DPS the certificate's common name must be the
    registration id)."""

    id: DeviceId
    symmetric_key: str | None = Field(default=None, description="the device's primary key, base64")
    x509_thumbprint: str | None = Field(
        default=None, description="its certificate's SHA-1 or SHA-256 thumbprint, hex (`hil lab device-cert`)")
    registration_id: RegistrationId | None = Field(  # default: the device id (which must then be one)
        default=None, description="a DPS registration id: 1-128 lower-case letters, digits or - . _ :")

    @field_validator("symmetric_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                decode_key(value)
            except ValueError as exc:
                raise ValueError(f"symmetric key {shown(value)} {exc}; write the device's primary key as IoT "
                                 "Hub shows it (e.g. from `openssl rand -base64 32`)") from None
        return value

    @field_validator("x509_thumbprint")
    @classmethod
    def _thumbprint(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_thumbprint(value)
            except ValueError as exc:
                raise ValueError(f"thumbprint {shown(value)} {exc}; copy it as `hil lab device-cert` or "
                                 "`openssl x509 -noout -fingerprint -sha256 -in CERT` prints it") from None
        return value

    @model_validator(mode="after")
    def _credential(self) -> RegisteredDevice:
        if self.id in RESERVED_CLIENT_IDS:
            raise ValueError(f"device id {self.id} is the harness's own service's; give the device another id")
        if (self.symmetric_key is None) == (self.x509_thumbprint is None):
            raise ValueError(f"device {self.id}: needs exactly one of symmetric_key (its primary key, base64) or "
                             "x509_thumbprint (its certificate's thumbprint), as IoT Hub registers a device "
                             "with one authentication")
        if self.registration_id is None and not re.fullmatch(REGISTRATION_ID_PATTERN, self.id):
            raise ValueError(f"device {self.id}: its id cannot be a DPS registration id (lower-case letters, digits, "
                             "- . _ : only); set registration_id")
        return self

    @property
    def key(self) -> bytes | None:
        return None if self.symmetric_key is None else decode_key(self.symmetric_key)

    @property
    def thumbprint(self) -> bytes | None:
        return None if self.x509_thumbprint is None else parse_thumbprint(self.x509_thumbprint)

    @property
    def dps_registration_id(self) -> str:
        return self.registration_id or self.id


class TimeServerSettings(StrictModel):
    kind: Literal["chrony", "sntp", "external", "none"] = "chrony"
    host: str | None = None
    # the time servers' names the lab's images ask for (e.g. 0.pool.ntp.org): on the harness's
    # emulated network its DNS answers them with its own time server
    names: tuple[str, ...] = ()

    @field_validator("names")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _HOST_NAME.match(name):
                raise ValueError(f"{shown(name)} is not a host name; write it like 0.pool.ntp.org")
        return value

    @model_validator(mode="after")
    def _external(self) -> TimeServerSettings:
        if self.kind == "external" and not self.host:
            raise ValueError("time_server kind 'external' needs 'host'")
        if self.kind != "external" and self.host is not None:
            raise ValueError(f"'host' is used only with time_server kind: external (here {self.kind}); remove it")
        return self


class LabSettings(StrictModel):
    name: str = "lab"
    state_dir: Path | None = None
    networks: tuple[TestNetwork, ...] = ()
    broker: BrokerSettings = BrokerSettings()
    time_server: TimeServerSettings = TimeServerSettings()
    devices: tuple[RegisteredDevice, ...] = ()

    @field_validator("devices")
    @classmethod
    def _unique_devices(cls, devices: tuple[RegisteredDevice, ...]) -> tuple[RegisteredDevice, ...]:
        for what, values in (("device ids", [d.id for d in devices]),
                             ("registration ids", [d.dps_registration_id for d in devices])):
            dup = {v for v in values if values.count(v) > 1}
            if dup:
                raise ValueError(f"{what} must be unique in the registry; repeated: {', '.join(sorted(dup))}")
        return devices

    @field_validator("networks")
    @classmethod
    def _unique(cls, nets: tuple[TestNetwork, ...]) -> tuple[TestNetwork, ...]:
        names = [n.name for n in nets]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"network names must be unique; repeated: {', '.join(sorted(dup))}")
        if "emulated" in names:
            raise ValueError("'emulated' is reserved for the harness's own networks; choose another name")
        return nets

    _state_dir = field_validator("state_dir")(no_nul)

    @model_validator(mode="after")
    def _broker_reachable(self) -> LabSettings:
        bind = self.broker.bind
        if bind is not None and not bind.is_loopback and not any(bind in n.subnet for n in self.networks):
            nets = ", ".join(f"{n.name} {n.subnet}" for n in self.networks) or "none defined"
            raise ValueError(f"broker.bind {bind} is not loopback or an address on a test network of this lab "
                             f"({nets}); boards reach the broker there")
        return self


# ---------------------------------------------------------------------------------------------
# The lab


@dataclass
class Lab:
    """A loaded, validated lab folder."""

    root: Path
    settings: LabSettings
    boards: dict[str, BoardConfig] = field(default_factory=dict)

    @property
    def state(self) -> StateDir:
        state_dir = self.settings.state_dir
        if state_dir is not None and not state_dir.is_absolute():
            state_dir = self.root / state_dir
        return resolve_state_dir(lab_state_dir=state_dir, lab_dir=self.root)

    def board(self, name: str) -> BoardConfig:
        try:
            return self.boards[name]
        except KeyError:
            known = ", ".join(sorted(self.boards)) or "(none)"
            raise ConfigError(f"no board named {name!r} in {self.root}", fix=f"use one of: {known}") from None

    def registered(self, device_id: str) -> RegisteredDevice | None:
        """The registry's device with this id (it signs in with SAS tokens or its certificate), or None."""
        return next((d for d in self.settings.devices if d.id == device_id), None)

    def network(self, name: str) -> TestNetwork | None:
        return next((n for n in self.settings.networks if n.name == name), None)

    def target_policy(self) -> TargetPolicy:
        """Where traffic may go: loopback and this lab's test networks (harness networks join later)."""
        return TargetPolicy(n.subnet for n in self.settings.networks)


def lab_dir(explicit: str | Path | None = None) -> Path:
    return lab_dir_source(explicit)[0]


def load_board(path: Path) -> BoardConfig:
    board = load(BoardConfig, path)
    board._source = path
    return board


def load_lab(root: str | Path | None = None, *, collect_errors: list[ConfigError] | None = None) -> Lab:
    """Load a lab folder. With ``collect_errors``, bad boards are reported there and skipped;
    without it the first error is raised. Hidden files are not boards."""
    root_path, source = lab_dir_source(root)
    entries = list_user_folder(root_path, what="lab folder", error=ConfigError, source=source,
                               fix="point --lab or HIL_LAB at the folder that holds the lab's board files")
    names = {p.name for p in entries}
    lab_file = root_path / LAB_FILE
    for misnamed in LAB_FILE_MISNAMED:
        if misnamed in names:
            if LAB_FILE in names:
                raise ConfigError(f"{root_path / misnamed}: the lab's settings are read only from {LAB_FILE}, "
                                  "which is here too", fix=f"move what {misnamed} holds into {LAB_FILE}, remove it")
            raise ConfigError(f"{root_path / misnamed}: the lab's settings are read only from {LAB_FILE}",
                              fix=f"rename it {LAB_FILE}")
    settings = load(LabSettings, lab_file) if LAB_FILE in names else LabSettings()
    if settings.state_dir is not None:
        _check_state_dir(root_path, lab_file, settings.state_dir)
    lab = Lab(root=root_path, settings=settings)
    for path in entries:
        if path.suffix not in BOARD_SUFFIXES or path.name == LAB_FILE or path.name.startswith("."):
            continue
        try:
            board = load_board(path)
            _check_in_lab(lab, board, path)
        except ConfigError as exc:
            if collect_errors is None:
                raise
            collect_errors.append(exc)
            continue
        lab.boards[board.name] = board
    return lab


def _check_state_dir(root: Path, lab_file: Path, state_dir: Path) -> None:
    path = state_dir if state_dir.is_absolute() else root / state_dir
    try:
        check_state_dir(path)
    except ConfigError as exc:
        raise ConfigError(f"{lab_file}: field state_dir: {exc.message.removeprefix('state folder ')}",
                          fix="point state_dir at a folder (it is made if missing)") from None


def _check_in_lab(lab: Lab, board: BoardConfig, path: Path) -> None:
    if board.name in lab.boards:
        other = lab.boards[board.name].source
        raise ConfigError(
            f"{path}: field name: board name {board.name!r} is already used by {other}",
            fix="give every board a unique name",
        )
    _check_probe_unique(lab, board, path)
    if lab.registered(board.identity.device_id) is not None and board.identity.credentials.source != "generated":
        raise ConfigError(
            f"{path}: field identity.credentials.source: device {board.identity.device_id!r} is in the registry of "
            f"{lab.root / LAB_FILE}, so it signs in with SAS tokens from its symmetric key (or its X.509 "
            "certificate), not with a "
            f"{board.identity.credentials.source} secret",
            fix="remove identity.credentials (or give the board another device id)")
    net = board.network.test_network
    if net != "emulated" and lab.network(net) is None:
        known = ", ".join(n.name for n in lab.settings.networks) or "(none defined)"
        raise ConfigError(
            f"{path}: field network.test_network: {net!r} is not a network of {lab.root / LAB_FILE}",
            fix=f"use one of: {known}, or 'emulated'; or add it under 'networks:' in lab.yaml",
        )
    if board.network.address is not None and net != "emulated":
        subnet = lab.network(net).subnet  # type: ignore[union-attr]
        if board.network.address not in subnet:
            raise ConfigError(
                f"{path}: field network.address: {board.network.address} is outside {net} ({subnet})",
                fix="correct the address or the test_network",
            )
    if board.probe.pack is not None:
        pack = board.probe.pack if board.probe.pack.is_absolute() else path.parent / board.probe.pack
        _check_pack(pack, board, path)
        object.__setattr__(board.probe, "pack", pack)


def _check_probe_unique(lab: Lab, board: BoardConfig, path: Path) -> None:
    """Two boards on one probe would hold two leases on one chip. pyOCD compares ids without case
    and, without an exact match, by substring: refuse both kinds of overlap."""
    kind, _, uid = board.probe.id.lower().partition(":")
    for other in lab.boards.values():
        other_kind, _, other_uid = other.probe.id.lower().partition(":")
        if kind != other_kind:
            continue
        where = f"board {other.name!r} ({other.source})"
        if board.probe.id == other.probe.id:
            problem = f"{board.probe.id} is already used by {where}"
        elif uid == other_uid:
            problem = f"{board.probe.id} names the same probe as {other.probe.id} of {where}: pyOCD ignores case"
        elif uid in other_uid or other_uid in uid:
            problem = (f"{board.probe.id} and {other.probe.id} of {where}: one is a substring of the other, and "
                       "pyOCD matches probe ids by substring, so one board could open the other's probe")
        else:
            continue
        raise ConfigError(f"{path}: field probe.id: {problem}",
                          fix="give each board the full unique id of its own probe (`pyocd list` shows them)")


def _check_pack(pack: Path, board: BoardConfig, path: Path) -> None:
    target = board.probe.target
    if not os.path.lexists(pack):
        raise ConfigError(
            f"{path}: field probe.pack: {pack} does not exist",
            fix=f"download the CMSIS pack for {target} and put it there; or remove 'pack:' and install the "
                f"target's pack into pyOCD's cache once with `pyocd pack install {target}`",
        )
    try:
        with open_user_file(pack, what="CMSIS pack", limit=None, error=ConfigError):
            pass
    except ConfigError as exc:
        raise ConfigError(f"{path}: field probe.pack: {exc.message}", fix=exc.fix) from None


def device_secret(board: BoardConfig) -> str | None:
    """The secret a board's ``identity.credentials`` names (None: make one for the run)."""
    creds = board.identity.credentials
    source = board.source or Path(f"{board.name}.yaml")
    if creds.source == "file":
        assert creds.path is not None
        path = creds.path if creds.path.is_absolute() else source.parent / creds.path
        try:
            secret = path.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: field identity.credentials.path: cannot read {path} ({exc})",
                              fix="point it at a readable file holding the device's secret") from None
        if not secret:
            raise ConfigError(f"{source}: field identity.credentials.path: {path} is empty",
                              fix="write the device's secret into it")
        return secret
    if creds.source == "env":
        assert creds.variable is not None
        secret = os.environ.get(creds.variable, "")
        if not secret:
            raise ConfigError(f"{source}: field identity.credentials.variable: ${creds.variable} is not set",
                              fix=f"export {creds.variable}=<the device's secret>, or use source: generated")
        return secret
    return None


__all__ = [
    "BOARD_KINDS",
    "BoardConfig",
    "BoardKind",
    "Lab",
    "LabSettings",
    "RegisteredDevice",
    "TestNetwork",
    "device_secret",
    "load_board",
    "load_lab",
    "read_yaml",
    "validate",
]
