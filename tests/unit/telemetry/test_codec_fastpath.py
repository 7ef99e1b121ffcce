"""``decode``'s fast path (device shapes) agrees with the diagnosing reader on every buffer it takes."""

from __future__ import annotations

import random
import struct
from ipaddress import IPv4Address, IPv6Address

import pytest

from harness.telemetry import fbread
from harness.telemetry import shapes as shape_cache
from harness.telemetry.codec import DecodeError, _decode_checked, decode, encode
from harness.telemetry.model import (
    Event,
    Flow,
    Heartbeat,
    ModuleVersion,
    NetworkActivity,
    Protocol,
    SecurityMessage,
    SystemInformation,
)
from harness.telemetry.shapes import _fast_decode

SEED = 20_261_128
MUTATIONS = 4_000


def _device_shapes() -> list[bytes]:
    v4 = Flow(IPv4Address("10.0.0.2"), IPv4Address("10.0.0.1"), 40000, 8883, Protocol.UDP, 5, 6, 7, 8, "exe", "cmd")
    v6 = Flow(IPv6Address("2001:db8::2"), IPv6Address("2001:db8::1"), 1, 2, Protocol.ICMP)
    events = (
        Event(bytes(range(16)), 1_700_000_000, 10, NetworkActivity((v4, v4), (v6,))),
        Event(bytes(range(1, 17)), 0, 0, SystemInformation("os", None, "hw")),
        Event(bytes(16), 5, 60, Heartbeat()),
    )
    return [encode(SecurityMessage("agent", ModuleVersion(3, 5, 4), events, -2)),
            encode(SecurityMessage("agent", ModuleVersion(0, 0, 0), events[2:]))]


@pytest.fixture(scope="module")
def shapes(vectors: dict[str, bytes]) -> list[bytes]:
    return list(vectors.values()) + _device_shapes()


def test_fast_path_takes_the_device_shapes_and_agrees(shapes: list[bytes]) -> None:
    for buf in shapes:
        fast = _fast_decode(buf)
        assert fast is not None
        assert fast == _decode_checked(buf) == decode(bytearray(buf))


def test_other_payload_kinds_go_to_the_reader(full_message: SecurityMessage) -> None:
    buf = encode(full_message)
    assert _fast_decode(buf) is None
    assert decode(buf) == full_message


def _mutated(rng: random.Random, buf: bytes) -> bytes:
    data = bytearray(buf)
    how = rng.randrange(4)
    if how == 0:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif how == 1:
        del data[rng.randrange(len(data)) :]
    elif how == 2:  # a 16-bit vtable-sized value anywhere
        pos = rng.randrange(len(data) - 1)
        struct.pack_into("<H", data, pos, rng.choice((0, 1, 3, 4, 0xFFFF, rng.getrandbits(16))))
    else:  # a 32-bit offset-sized value anywhere
        pos = rng.randrange(len(data) - 3)
        struct.pack_into("<I", data, pos, rng.choice((0, 0xFFFF_FFFF, rng.randrange(len(data)), rng.getrandbits(32))))
    return bytes(data)


def test_fast_path_never_takes_what_the_reader_refuses(shapes: list[bytes]) -> None:
    """Every mutated buffer the fast path accepts, the reader decodes to the same message; the
    rest go to the reader, which decodes them or raises DecodeError (and nothing else)."""
    for buf in shapes * 2:  # each size seen twice: a shape is kept for it
        decode(buf)
    assert all(shape_cache._SHAPES[len(buf)] for buf in shapes)
    rng = random.Random(SEED)
    taken = refused = 0
    for _ in range(MUTATIONS):
        buf = _mutated(rng, rng.choice(shapes))
        fast = _fast_decode(buf)
        try:
            checked = _decode_checked(buf)
        except DecodeError:
            assert fast is None, buf.hex()
            refused += 1
            continue
        if fast is not None:
            assert fast == checked, buf.hex()
            taken += 1
    assert taken > MUTATIONS // 10 and refused > MUTATIONS // 10  # both sides were exercised


def _event_vtable(buf: bytes) -> tuple[int, int]:
    """(vtable position, table size) of the first event's table."""
    root = struct.unpack_from("<I", buf, 0)[0]
    vt = root - struct.unpack_from("<i", buf, root)[0]
    events_field = root + struct.unpack_from("<H", buf, vt + 4 + 2 * 3)[0]
    vector = events_field + struct.unpack_from("<I", buf, events_field)[0]
    event = vector + 4 + struct.unpack_from("<I", buf, vector + 4)[0]
    event_vt = event - struct.unpack_from("<i", buf, event)[0]
    return event_vt, struct.unpack_from("<H", buf, event_vt + 2)[0]


def test_a_checked_layout_does_not_pass_a_changed_vtable(vectors: dict[str, bytes]) -> None:
    buf = vectors["heartbeat-flatcc.bin"]
    decode(buf)
    decode(buf)  # the event's vtable is a checked layout, and the buffer a kept shape
    vt, table_size = _event_vtable(buf)
    bad = bytearray(buf)
    struct.pack_into("<H", bad, vt + 4, table_size - 8)  # Event.id (16 bytes) now runs past its table
    with pytest.raises(DecodeError, match=r"Event\.id: field at"):
        decode(bytes(bad))


def test_caches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fbread, "_CACHE_LIMIT", 2)
    fbread._v4.cache.clear()  # type: ignore[attr-defined]
    flows = tuple(Flow(IPv4Address(f"10.0.0.{i}"), IPv4Address("10.9.9.9"), i, 1, Protocol.TCP) for i in range(1, 6))
    msg = SecurityMessage("m", ModuleVersion(1, 2, 3), (Event(bytes(16), 1, 1, NetworkActivity(flows)),))
    assert decode(encode(msg)) == msg
    assert len(fbread._v4.cache) == 2  # type: ignore[attr-defined]


def _sysinfo(os_info: str, event_id: bytes) -> bytes:
    event = Event(event_id, 7, 60, SystemInformation(os_info, "kernel", None))
    return encode(SecurityMessage("agent", ModuleVersion(3, 5, 4), (event,)))


def test_a_kept_shape_reads_new_values_and_still_checks_utf8() -> None:
    first, second = _sysinfo("os-1", bytes(16)), _sysinfo("os-2", b"\x01" * 16)
    decode(first)
    decode(first)
    shape = next(s for s in shape_cache._SHAPES[len(first)] if int.from_bytes(first, "little") & s.mask == s.expect)
    assert int.from_bytes(second, "little") & shape.mask == shape.expect  # same shape, other values
    got = decode(second)
    assert got.events[0].id == b"\x01" * 16 and got.events[0].payload == SystemInformation("os-2", "kernel", None)
    bad = second.replace(b"os-2", b"os\xff2")
    assert int.from_bytes(bad, "little") & shape.mask == shape.expect  # string contents are values
    with pytest.raises(DecodeError, match=r"SystemInformation\.os_info: string is not UTF-8"):
        decode(bad)


def test_a_size_seen_once_keeps_no_shape(vectors: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shape_cache, "_SHAPES", {})
    buf = vectors["network-flatcc.bin"]
    decode(buf)
    assert shape_cache._SHAPES[len(buf)] == []
    decode(buf)
    assert len(shape_cache._SHAPES[len(buf)]) == 1


def test_shapes_are_kept_for_a_bounded_number_of_small_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shape_cache, "_SHAPES", {})
    monkeypatch.setattr(shape_cache, "_SHAPE_SIZES", 2)
    bufs = [_sysinfo("x" * n, bytes(16)) for n in (1, 5, 9)]  # three sizes
    for buf in bufs * 2:
        assert decode(buf) == _decode_checked(buf)
    assert sorted(shape_cache._SHAPES) == sorted(len(b) for b in bufs[:2])
    monkeypatch.setattr(shape_cache, "_SHAPES", {})
    monkeypatch.setattr(shape_cache, "_SHAPE_MAX_BYTES", len(bufs[0]) - 1)
    decode(bufs[0])
    assert shape_cache._SHAPES == {}
