"""The provisioning block: the board's identity and network settings, at 0x003FF000.

One 4 KiB flash sector, outside the firmware image, that the harness writes (through pyOCD) and the
reference firmware reads at boot. Version 1 is a fixed 864-byte little-endian record protected by a
CRC-32/IEEE; the rest of the sector stays erased (0xFF). The format is described field by field in
``fixtures/firmware/PROVISIONING.md``; the firmware's C decoder (``fixtures/firmware/src/
provisioning.c``) and this module are tested against the same vectors
(``fixtures/vectors/provisioning/``), and refuse a bad block with the same words.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from dataclasses import dataclass
from typing import Literal

from harness.errors import ConfigError

PROVISIONING_ADDRESS = 0x003FF000
SECTOR_SIZE = 4096
MAGIC = b"HILP"
VERSION = 1
RECORD_LENGTH = 864
ERASED = 0xFF

AddressMode = Literal["dhcp", "static"]

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

assert _HEADER.size + sum(size for _, size in TEXT_FIELDS) + 4 == RECORD_LENGTH


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


@dataclass(frozen=True)
class ProvisioningRecord:
    """What one board is told at boot: who it is, where its hub and time server are, its address."""

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

    def validate(self) -> None:
        """Raise ProvisioningError naming the first wrong field and how to fix it."""
        for name, size in TEXT_FIELDS:
            value = getattr(self, name)
            data = value.encode("utf-8")
            if not data:
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

    def encode(self) -> bytes:
        """The 864-byte version 1 record (validated first)."""
        self.validate()
        head = _HEADER.pack(MAGIC, VERSION, RECORD_LENGTH, _MODE_CODES[self.address_mode], 0,
                            self.broker_port,
                            *(ipaddress.IPv4Address(getattr(self, n)).packed for n in _ADDR_FIELDS))
        body = b"".join(getattr(self, name).encode("utf-8").ljust(size, b"\0")
                        for name, size in TEXT_FIELDS)
        record = head + body
        return record + struct.pack("<I", zlib.crc32(record))

    def encode_sector(self) -> bytes:
        """The whole 4 KiB sector as written to flash: the record, then erased bytes."""
        return self.encode().ljust(SECTOR_SIZE, bytes([ERASED]))


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
    (version,) = struct.unpack_from("<H", block, 4)
    if version != VERSION:
        raise ProvisioningError("version", f"unsupported version {version} (this firmware reads {VERSION})",
                                fix=f"write a version {VERSION} block, or flash firmware that reads version {version}")
    if length != RECORD_LENGTH:
        raise ProvisioningError("length",
                                f"bad record length {length} for version 1 (expected {RECORD_LENGTH})",
                                fix=rewrite)
    _, _, _, mode, reserved, port, *addrs = _HEADER.unpack_from(block, 0)
    texts: dict[str, str] = {}
    offset = _HEADER.size
    for name, size in TEXT_FIELDS:
        raw = block[offset:offset + size]
        offset += size
        end = raw.find(b"\0")
        if end < 0:
            raise _field_error(name, f"not NUL-terminated within {size} bytes", rewrite)
        if end == 0:
            raise _field_error(name, "empty", rewrite)
        try:
            texts[name] = raw[:end].decode("utf-8")
        except UnicodeDecodeError:
            raise _field_error(name, "not UTF-8", rewrite) from None
    if port == 0:
        raise _field_error("broker_port", "0", rewrite)
    if reserved != 0:
        raise _field_error("reserved", "not 0", rewrite)
    if mode not in _MODES:
        raise _field_error("address_mode", f"{mode} (expected 0 dhcp or 1 static)", rewrite)
    record = ProvisioningRecord(
        broker_port=port, address_mode=_MODES[mode],
        **{n: str(ipaddress.IPv4Address(a)) for n, a in zip(_ADDR_FIELDS, addrs, strict=True)},
        **texts,
    )
    record.validate()
    return record
