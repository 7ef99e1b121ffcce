"""Reading primitives shared by the codec's two readers (``codec._Reader`` and ``shapes``): table
specs of the schema, vtable checks (cached per distinct vtable), strings, and the small caches of
values devices repeat (addresses, versions). Nothing here raises: a check that fails returns None
and the diagnosing reader says why.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from typing import TypeVar

from harness.telemetry.model import (
    BaselineCheckResult,
    BaselineCheckSeverity,
    Heartbeat,
    LogLevel,
    ModuleVersion,
    ProcessEventType,
    Protocol,
)

_I8 = struct.Struct("<b").unpack_from
_U16 = struct.Struct("<H").unpack_from
_I32 = struct.Struct("<i").unpack_from
_U32 = struct.Struct("<I").unpack_from
_U64 = struct.Struct("<Q").unpack_from
_HH = struct.Struct("<HH").unpack_from
_VTABLE_ENTRIES = [struct.Struct(f"<{n}H").unpack_from for n in range(16)]


class _Spec:
    """A table's fields in id order: names (for messages) and inline sizes (for bounds checks)."""

    __slots__ = ("layouts", "name", "names", "sizes")

    def __init__(self, name: str, fields: str) -> None:
        pairs = [item.split(":") for item in fields.split()]
        self.name = name
        self.names = tuple(f"{name}.{field}" for field, _ in pairs)
        self.sizes = tuple(int(size) for _, size in pairs)
        self.layouts: dict[bytes, tuple[int, ...]] = {}  # vtable bytes -> checked field offsets


# Field ids and inline sizes of schema/AzureIoTSecurity.fbs ("name:size" in id order; offsets are 4
# bytes, a union is its type byte then its offset).
_MESSAGE = _Spec("Message", "security_module_id:4 security_module_version:4 timezone:1 events:4")
_EVENT = _Spec("Event", "id:16 time:4 collection_interval:4 payload_type:1 payload:4")
_NETWORK_ACTIVITY = _Spec("NetworkActivity", "ipv4_activity:4 ipv6_activity:4")
_NETWORK_V4 = _Spec("NetworkActivityV4", "addresses:8 common:4")
_NETWORK_V6 = _Spec("NetworkActivityV6", "addresses:32 common:4")
_COMMON = _Spec(
    "NetworkActivityCommon",
    "local_port:2 remote_port:2 bytes_in:4 bytes_out:4 protocol:1 process_id:2 user_id:2 executable:4 commandline:4",
)
_SYSTEM_INFORMATION = _Spec("SystemInformation", "os_info:4 kernel_info:4 hw_info:4")
_LISTENING_PORTS = _Spec("ListeningPorts", "ipv4_ports:4 ipv6_ports:4")
_HEARTBEAT = _Spec("Heartbeat", "")
_BASELINE = _Spec("Baseline", "baseline_checks:4")
_BASELINE_CHECK = _Spec("BaselineCheck", "id:4 result:1 error:4 description:4 severity:1 remediation:4")
_PROCESS = _Spec(
    "Process",
    "executable:4 process_id:4 parent_process_id:4 user_id:4 user_name:4 commandline:4 event_type:1 hit_count:4",
)
_LOG = _Spec("Log", "logs:4")
_RECORD = _Spec("Record", "message:4 level:1 timestamp:8 line:4 filename:4")


_ZEROS = tuple((0,) * n for n in range(16))
K = TypeVar("K")
V = TypeVar("V")

_CACHE_LIMIT = 4096  # entries per cache of layouts, addresses and versions


def _open(buf: bytes, size: int, pos: int, spec: _Spec) -> tuple[int, ...] | None:
    """Field offsets (relative to ``pos``, 0 where absent, one per field of ``spec``) of the table at
    ``pos``, or None if the table, its vtable or a field is out of bounds (``_Reader`` says which).
    What depends on the vtable's bytes alone is checked once per distinct vtable (``spec.layouts``)."""
    if pos + 4 > size:
        return None
    vt = pos - _I32(buf, pos)[0]
    if vt < 0 or vt + 4 > size:
        return None
    vt_size, tbl_size = _HH(buf, vt)
    if vt_size < 4 or vt + vt_size > size or pos + tbl_size > size:
        return None
    vtable = buf[vt : vt + vt_size]
    offsets = spec.layouts.get(vtable)
    if offsets is None:
        offsets = _layout(vtable, spec.sizes)
        if offsets is not None and len(spec.layouts) < _CACHE_LIMIT:
            spec.layouts[vtable] = offsets
    return offsets


def _layout(vtable: bytes, sizes: tuple[int, ...]) -> tuple[int, ...] | None:
    """The field offsets a vtable (at least 4 bytes) gives, or None if it is malformed or a field
    runs past the table's end."""
    vt_size, tbl_size = _HH(vtable, 0)
    if vt_size & 1 or tbl_size < 4:
        return None
    n, have = len(sizes), (vt_size - 4) >> 1
    offsets = _VTABLE_ENTRIES[n](vtable, 4) if have >= n else _VTABLE_ENTRIES[have](vtable, 4) + _ZEROS[n - have]
    for off, width in zip(offsets, sizes, strict=True):
        if off and off + width > tbl_size:
            return None
    return offsets


def _text(buf: bytes, size: int, target: int) -> str | None:
    """The NUL-terminated UTF-8 string at ``target``, or None if it is out of bounds or malformed."""
    if target + 4 > size:
        return None
    end = target + 4 + _U32(buf, target)[0]
    if end >= size or buf[end] != 0:
        return None
    try:
        return buf[target + 4 : end].decode("utf-8")
    except UnicodeDecodeError:
        return None


_HEARTBEAT_PAYLOAD = Heartbeat()


def _interned(make: Callable[[K], V]) -> Callable[[K], V]:
    """One object per distinct raw value (devices repeat their addresses in every flow and their
    version in every message); the cache (``.cache``) holds at most ``_CACHE_LIMIT`` entries."""
    cache: dict[K, V] = {}

    def get(key: K) -> V:
        value = cache.get(key)
        if value is None:
            value = make(key)
            if len(cache) < _CACHE_LIMIT:
                cache[key] = value
        return value

    get.cache = cache  # type: ignore[attr-defined]
    return get


_v4: Callable[[bytes], IPv4Address] = _interned(IPv4Address)
_v6: Callable[[bytes], IPv6Address] = _interned(IPv6Address)
_version: Callable[[int], ModuleVersion] = _interned(ModuleVersion.from_int)


_PROTOCOLS = {p.value: p for p in Protocol}
_RESULTS = {v.value: v for v in BaselineCheckResult}
_SEVERITIES = {v.value: v for v in BaselineCheckSeverity}
_PROCESS_EVENTS = {v.value: v for v in ProcessEventType}
_LEVELS = {v.value: v for v in LogLevel}
