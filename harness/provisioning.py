"""The provisioning block: the board's identity and network settings, at 0x003FF000.

One 4 KiB flash sector, outside the firmware image, that the harness writes (through pyOCD) and the
reference firmware reads at boot. Version 1 is a fixed 864-byte little-endian record protected by a
CRC-32/IEEE; the rest of the sector stays erased (0xFF). Version 2 (1252 bytes) keeps every version 1
field where it is and adds the transport (TLS), the authentication (a SAS token the device computes
from ``device_key``) and the DPS fields. A record is written in the lowest version that carries it
(``encode(reads=...)``: the versions the image's manifest says it reads), so an image that reads only
version 1 keeps getting exactly the version 1 block. The format is described field by field in
``fixtures/firmware/PROVISIONING.md``; the firmware's C decoder (``fixtures/firmware/src/
provisioning.c``) and this module are tested against the same vectors
(``fixtures/vectors/provisioning/``), and refuse a bad block with the same words.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import struct
import zlib
from dataclasses import dataclass
from typing import Literal

from harness.errors import ConfigError

PROVISIONING_ADDRESS = 0x003FF000
SECTOR_SIZE = 4096
MAGIC = b"HILP"
VERSION = 1  # the first version; VERSIONS are all this module reads and writes
VERSIONS = (1, 2)
RECORD_LENGTH = 864
RECORD_LENGTHS = {1: 864, 2: 1252}
ERASED = 0xFF

AddressMode = Literal["dhcp", "static"]
Transport = Literal["tcp", "tls"]
Auth = Literal["password", "sas"]

# (field, size) of the text fields, in record order; each holds UTF-8 padded with NUL bytes and
# must keep at least one NUL, so it carries at most size - 1 bytes.
TEXT_FIELDS: tuple[tuple[str, int], ...] = (
    ("device_id", 128),
    ("broker_host", 128),
    ("user_name", 256),
    ("secret", 256),
    ("time_server", 64),
)
# magic, version, length, address_mode, reserved, broker_port, address, netmask, gateway, dns
_HEADER = struct.Struct("<4sHHBBH4s4s4s4s")
_MODES: dict[int, AddressMode] = {0: "dhcp", 1: "static"}
_MODE_CODES = {name: code for code, name in _MODES.items()}
_ADDR_FIELDS = ("address", "netmask", "gateway", "dns")
_ZERO = "0.0.0.0"
# version 2, appended before the CRC: transport, auth, reserved2, then these text fields
_V2_HEADER = struct.Struct("<BBH")
V2_TEXT_FIELDS: tuple[tuple[str, int], ...] = (
    ("device_key", 64),
    ("dps_host", 128),
    ("id_scope", 64),
    ("registration_id", 128),
)
_TRANSPORTS: dict[int, Transport] = {0: "tcp", 1: "tls"}
_TRANSPORT_CODES = {name: code for code, name in _TRANSPORTS.items()}
_AUTHS: dict[int, Auth] = {0: "password", 1: "sas"}
_AUTH_CODES = {name: code for code, name in _AUTHS.items()}

assert _HEADER.size + sum(size for _, size in TEXT_FIELDS) + 4 == RECORD_LENGTHS[1]
assert (RECORD_LENGTHS[1] + _V2_HEADER.size + sum(size for _, size in V2_TEXT_FIELDS)
        == RECORD_LENGTHS[2])


class ProvisioningError(ConfigError):
    """A provisioning block or record is wrong.

    ``kind`` is one of ``empty``, ``magic``, ``length``, ``crc``, ``version``, ``field``;
    ``reason`` is the text the firmware prints after ``provisioning: `` for the same block.
    """

    def __init__(self, kind: str, reason: str, *, fix: str, field: str | None = None) -> None:
        super().__init__(f"provisioning block: {reason}", fix=fix)
        self.kind = kind
        self.reason = reason
        self.field = field

    @property
    def console_line(self) -> str:
        return f"provisioning: {self.reason}"


def _field_error(field: str, what: str, fix: str) -> ProvisioningError:
    return ProvisioningError("field", f"field {field}: {what}", fix=fix, field=field)


def _is_base64(text: str) -> bool:
    """Standard base64 with its padding, as the firmware checks it (length a multiple of 4)."""
    if not text or len(text) % 4:
        return False
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _v2_rules(values: dict[str, str], fix: str | None = None) -> None:
    """The version 2 rules between fields, in the firmware's order (``values`` maps field names to
    the decoded text plus ``auth``); ``fix`` overrides every fix (the decoder's: write a new block)."""
    sas = values["auth"] == "sas"
    if sas and values["secret"]:
        raise _field_error("secret", "set with auth sas",
                           fix or "leave secret empty: with auth sas the device computes its token")
    if sas and not values["device_key"]:
        raise _field_error("device_key", "empty with auth sas",
                           fix or "give the device's symmetric key (base64), or use auth password")
    if not sas and values["device_key"]:
        raise _field_error("device_key", "set with auth password",
                           fix or "leave device_key empty, or use auth sas")
    if values["device_key"] and not _is_base64(values["device_key"]):
        raise _field_error("device_key", "not base64",
                           fix or "give the key as IoT Hub shows it (standard base64 with padding)")
    dps = bool(values["dps_host"])
    for name in ("id_scope", "registration_id"):
        if dps and not values[name]:
            raise _field_error(name, "empty with dps_host set",
                               fix or f"give the DPS {name.replace('_', ' ')}, or leave dps_host empty")
        if not dps and values[name]:
            raise _field_error(name, "set without dps_host",
                               fix or f"give dps_host, or leave {name} empty")
    if dps and not sas:
        raise _field_error("auth", "password with dps_host set (DPS needs auth sas)",
                           fix or "use auth sas with a device_key")


@dataclass(frozen=True)
class ProvisioningRecord:
    """What one board is told at boot: who it is, where its hub and time server are, its address;
    from version 2 on, how it reaches the hub (TLS, a SAS token from its key, DPS)."""

    device_id: str
    broker_host: str
    broker_port: int
    user_name: str
    secret: str
    time_server: str
    address_mode: AddressMode = "dhcp"
    address: str = _ZERO
    netmask: str = _ZERO
    gateway: str = _ZERO
    dns: str = _ZERO  # 0.0.0.0: use the server DHCP gives
    # version 2
    transport: Transport = "tcp"
    auth: Auth = "password"
    device_key: str = ""  # base64 symmetric key (auth sas)
    dps_host: str = ""  # empty: broker_host is the hub
    id_scope: str = ""
    registration_id: str = ""

    @property
    def min_version(self) -> int:
        """The lowest block version that carries this record."""
        v2 = (self.transport != "tcp" or self.auth != "password"
              or any(getattr(self, name) for name, _ in V2_TEXT_FIELDS))
        return 2 if v2 else 1

    @property
    def features(self) -> frozenset[str]:
        """What an image must be able to do with this record: ``tls``, ``sas``, ``dps``."""
        wanted = {"tls": self.transport == "tls", "sas": self.auth == "sas", "dps": bool(self.dps_host)}
        return frozenset(name for name, on in wanted.items() if on)

    def check_image(self, versions: tuple[int, ...], features: tuple[str, ...], image: str) -> None:
        """Raise ProvisioningError when an image reading block ``versions`` and acting on
        ``features`` (its manifest's identity) cannot use this record."""
        missing = sorted(self.features - set(features))
        if missing:
            raise ProvisioningError(
                "version", f"image {image} cannot use {', '.join(missing)} (its manifest's "
                f"provisioning_features: {', '.join(features) or 'none'})",
                fix="flash a build that can (hil firmware build-reference --tls), or provision "
                    "without transport tls, auth sas and dps_host")
        self.encode(tuple(versions))

    def validate(self) -> None:
        """Raise ProvisioningError naming the first wrong field and how to fix it."""
        sas = self.auth == "sas"
        for name, size in TEXT_FIELDS + V2_TEXT_FIELDS:
            value = getattr(self, name)
            data = value.encode("utf-8")
            optional = name in dict(V2_TEXT_FIELDS) or (sas and name in ("user_name", "secret"))
            if not data and not optional:
                raise _field_error(name, "empty", f"give a {name.replace('_', ' ')}")
            if len(data) > size - 1:
                raise _field_error(name, f"{len(data)} bytes, more than the {size - 1} that fit",
                                   f"shorten {name} to at most {size - 1} bytes of UTF-8")
            if b"\0" in data:
                raise _field_error(name, "contains a NUL byte", f"remove the NUL from {name}")
        if not 1 <= self.broker_port <= 65535:
            raise _field_error("broker_port", str(self.broker_port), "give a TCP port 1..65535")
        if self.address_mode not in _MODE_CODES:
            raise _field_error("address_mode", repr(self.address_mode), "use 'dhcp' or 'static'")
        for name in _ADDR_FIELDS:
            value = getattr(self, name)
            try:
                ipaddress.IPv4Address(value)
            except ValueError:
                raise _field_error(name, f"{value!r} is not an IPv4 address",
                                   f"write {name} as dotted IPv4, e.g. 192.168.1.10, or 0.0.0.0") from None
        if self.address_mode == "static":
            for name in ("address", "netmask"):
                if getattr(self, name) == _ZERO:
                    raise _field_error(name, "0.0.0.0 with address_mode static",
                                       f"give the board's {name}, or use address_mode dhcp")
            try:
                ipaddress.IPv4Network(f"0.0.0.0/{self.netmask}")
            except ValueError:
                raise _field_error("netmask", f"{self.netmask} is not a contiguous netmask",
                                   "use a netmask such as 255.255.255.0") from None
        elif any(getattr(self, name) != _ZERO for name in ("address", "netmask", "gateway")):
            raise _field_error("address_mode", "dhcp with a static address, netmask or gateway set",
                               "set address_mode static, or leave address/netmask/gateway at 0.0.0.0")
        if self.transport not in _TRANSPORT_CODES:
            raise _field_error("transport", repr(self.transport), "use 'tcp' or 'tls'")
        if self.auth not in _AUTH_CODES:
            raise _field_error("auth", repr(self.auth), "use 'password' or 'sas'")
        _v2_rules({name: getattr(self, name) for name in ("auth", "secret", *dict(V2_TEXT_FIELDS))})

    def encode(self, reads: tuple[int, ...] = VERSIONS) -> bytes:
        """The record (validated first) in the lowest version that carries it among ``reads``, the
        versions the image reads: 864 bytes for version 1, 1252 for version 2."""
        self.validate()
        version = min((v for v in reads if v >= self.min_version), default=None)
        if version is None or version not in VERSIONS:
            needs = ("TLS, a SAS token or DPS" if self.min_version == 2 else "this record")
            raise ProvisioningError(
                "version",
                f"the image reads block version {', '.join(map(str, reads)) or 'none'}; "
                f"{needs} needs version {self.min_version}",
                fix="flash an image that reads version 2 (hil firmware build-reference --tls), "
                    "or provision without transport tls, auth sas and dps_host")
        head = _HEADER.pack(MAGIC, version, RECORD_LENGTHS[version], _MODE_CODES[self.address_mode],
                            0, self.broker_port,
                            *(ipaddress.IPv4Address(getattr(self, n)).packed for n in _ADDR_FIELDS))
        fields = TEXT_FIELDS
        record = head + b"".join(getattr(self, name).encode("utf-8").ljust(size, b"\0")
                                 for name, size in fields)
        if version == 2:
            record += _V2_HEADER.pack(_TRANSPORT_CODES[self.transport], _AUTH_CODES[self.auth], 0)
            record += b"".join(getattr(self, name).encode("utf-8").ljust(size, b"\0")
                               for name, size in V2_TEXT_FIELDS)
        return record + struct.pack("<I", zlib.crc32(record))

    def encode_sector(self, reads: tuple[int, ...] = VERSIONS) -> bytes:
        """The whole 4 KiB sector as written to flash: the record, then erased bytes."""
        return self.encode(reads).ljust(SECTOR_SIZE, bytes([ERASED]))


def _text(block: bytes, offset: int, name: str, size: int, fix: str, *, optional: bool) -> str:
    raw = block[offset:offset + size]
    end = raw.find(b"\0")
    if end < 0:
        raise _field_error(name, f"not NUL-terminated within {size} bytes", fix)
    if end == 0 and not optional:
        raise _field_error(name, "empty", fix)
    try:
        return raw[:end].decode("utf-8")
    except UnicodeDecodeError:
        raise _field_error(name, "not UTF-8", fix) from None


def block_version(data: bytes) -> int:
    """The version a valid block was written in (decode it first: this reads the field alone)."""
    return int(struct.unpack_from("<H", data, 4)[0])


def decode(data: bytes) -> ProvisioningRecord:
    """Read a record from a sector (or a record alone) as the firmware does; raise ProvisioningError.

    Checks in the firmware's order: empty, magic, length, CRC, version, fields.
    """
    block = bytes(data[:SECTOR_SIZE])
    addr = f"0x{PROVISIONING_ADDRESS:08X}"
    rewrite = ("write a new block: ProvisioningRecord(...).encode_sector() at 0x003FF000 "
               "(fixtures/firmware/PROVISIONING.md)")
    if len(block) < 12 or block[:12] == b"\xff" * 12:
        raise ProvisioningError("empty", f"block empty (erased flash at {addr})",
                                fix=f"provision the board: {rewrite}")
    if block[:12] == b"\0" * 12:
        raise ProvisioningError("empty", f"block empty (zeros at {addr}, never written)",
                                fix=f"provision the board: {rewrite}")
    (magic_value,) = struct.unpack_from("<I", block, 0)
    if block[:4] != MAGIC:
        expected = struct.unpack("<I", MAGIC)[0]
        raise ProvisioningError(
            "magic", f'no record at {addr} (magic 0x{magic_value:08X}, expected 0x{expected:08X} "HILP")',
            fix=f"the sector holds something else: {rewrite}")
    (length,) = struct.unpack_from("<H", block, 6)
    if length < 12 or length > len(block):
        raise ProvisioningError("length", f"bad record length {length} (expected 12..{len(block)})",
                                fix=rewrite)
    (stored,) = struct.unpack_from("<I", block, length - 4)
    computed = zlib.crc32(block[: length - 4])
    if stored != computed:
        raise ProvisioningError("crc", f"bad CRC (stored 0x{stored:08X}, computed 0x{computed:08X})",
                                fix=f"the block is corrupt or half-written: {rewrite}")
    version = block_version(block)
    if version not in VERSIONS:
        raise ProvisioningError("version", f"unsupported version {version} (this firmware reads 1 and 2)",
                                fix=f"write a version 1 or 2 block, or flash firmware that reads version {version}")
    if length != RECORD_LENGTHS[version]:
        raise ProvisioningError(
            "length", f"bad record length {length} for version {version} (expected {RECORD_LENGTHS[version]})",
            fix=rewrite)
    _, _, _, mode, reserved, port, *addrs = _HEADER.unpack_from(block, 0)
    v2_at = RECORD_LENGTHS[1] - 4
    transport, auth, reserved2 = _V2_HEADER.unpack_from(block, v2_at) if version == 2 else (0, 0, 0)
    # version 2's codes first: the text fields' rules depend on auth
    if transport not in _TRANSPORTS:
        raise _field_error("transport", f"{transport} (expected 0 tcp or 1 tls)", rewrite)
    if auth not in _AUTHS:
        raise _field_error("auth", f"{auth} (expected 0 password or 1 sas)", rewrite)
    if reserved2 != 0:
        raise _field_error("reserved2", "not 0", rewrite)
    texts: dict[str, str] = {}
    offset = _HEADER.size
    for name, size in TEXT_FIELDS:
        optional = auth == 1 and name in ("user_name", "secret")
        texts[name] = _text(block, offset, name, size, rewrite, optional=optional)
        offset += size
    if port == 0:
        raise _field_error("broker_port", "0", rewrite)
    if reserved != 0:
        raise _field_error("reserved", "not 0", rewrite)
    if mode not in _MODES:
        raise _field_error("address_mode", f"{mode} (expected 0 dhcp or 1 static)", rewrite)
    v2: dict[str, str] = {}
    if version == 2:
        offset = v2_at + _V2_HEADER.size
        for name, size in V2_TEXT_FIELDS:
            v2[name] = _text(block, offset, name, size, rewrite, optional=True)
            offset += size
        _v2_rules({**v2, "auth": _AUTHS[auth], "secret": texts["secret"]}, rewrite)
    record = ProvisioningRecord(
        broker_port=port, address_mode=_MODES[mode],
        **{n: str(ipaddress.IPv4Address(a)) for n, a in zip(_ADDR_FIELDS, addrs, strict=True)},
        transport=_TRANSPORTS[transport], auth=_AUTHS[auth],
        **texts, **v2,
    )
    record.validate()
    return record
