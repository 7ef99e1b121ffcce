"""Seeded fuzzing: random buffers and mutated valid messages raise only DecodeError, never hang.

Every buffer either decodes (and then re-encodes to the same objects) or raises DecodeError; any
other exception (struct.error, IndexError, ValueError from ipaddress, ...) is a missing check.
"""

from __future__ import annotations

import random
import struct
from collections import Counter
from ipaddress import IPv4Address, IPv6Address

import pytest

from harness.telemetry.codec import DecodeError, decode, encode
from harness.telemetry.model import (
    Event,
    Flow,
    ModuleVersion,
    NetworkActivity,
    Protocol,
    SecurityMessage,
    SystemInformation,
)

SEED = 20_261_128
RANDOM_BUFFERS = 6_000
MUTATIONS = 16_000


def _vtable_positions(buf: bytes) -> list[int]:
    """Plausible vtables: reached from a 4-aligned soffset, with sane sizes."""
    found = set()
    for pos in range(0, len(buf) - 3, 4):
        vt = pos - struct.unpack_from("<i", buf, pos)[0]
        if 0 <= vt <= len(buf) - 4 and vt != pos:
            vt_size, tbl_size = struct.unpack_from("<HH", buf, vt)
            if 4 <= vt_size <= 40 and not vt_size & 1 and vt + vt_size <= len(buf) and 4 <= tbl_size <= 64:
                found.add(vt)
    return sorted(found)


def _mutate(rng: random.Random, buf: bytes, vtables: list[int], others: list[bytes]) -> tuple[str, bytes]:
    data = bytearray(buf)
    kind = rng.choice(("flip", "truncate", "offset", "vtable", "word", "splice", "insert", "delete"))
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del data[rng.randrange(len(data)) :]
    elif kind == "offset":  # shift an existing 32-bit word (uoffset/soffset) by a small or huge delta
        pos = rng.randrange(0, len(data) - 3, 4)
        delta = rng.choice((rng.randint(-16, 16), rng.randint(-(2**31), 2**31)))
        value = (struct.unpack_from("<I", data, pos)[0] + delta) & 0xFFFF_FFFF
        struct.pack_into("<I", data, pos, value)
    elif kind == "vtable" and vtables:  # change one vtable entry (size, table size or field offset)
        vt = rng.choice(vtables)
        entries = struct.unpack_from("<H", data, vt)[0] // 2
        pos = vt + 2 * rng.randrange(max(1, min(entries, (len(data) - vt) // 2)))
        value = rng.choice((0, 1, 3, 4, rng.randint(0, 64), rng.randint(0, 0xFFFF)))
        struct.pack_into("<H", data, pos, value)
    elif kind == "word":
        pos = rng.randrange(0, len(data) - 3)
        struct.pack_into("<I", data, pos, rng.choice((0, 0xFFFF_FFFF, 0x7FFF_FFFF, rng.getrandbits(32))))
    elif kind == "splice":
        other = rng.choice(others)
        start = rng.randrange(len(other))
        chunk = other[start : start + rng.randint(1, 32)]
        at = rng.randrange(len(data))
        data[at : at + len(chunk)] = chunk
    elif kind == "insert":
        at = rng.randrange(len(data))
        data[at:at] = rng.randbytes(rng.randint(1, 8))
    else:
        at = rng.randrange(len(data))
        del data[at : at + rng.randint(1, 8)]
    return kind, bytes(data)


def _random_buffer(rng: random.Random) -> bytes:
    data = bytearray(rng.randbytes(rng.choice((rng.randint(0, 16), rng.randint(16, 128), rng.randint(128, 600)))))
    if len(data) >= 8 and rng.random() < 0.7:  # a plausible root offset, so the walk gets somewhere
        struct.pack_into("<I", data, 0, rng.randrange(4, len(data) - 3))
    return bytes(data)


def _check(data: bytes, outcomes: Counter[str], label: str) -> None:
    try:
        msg = decode(data)
    except DecodeError as exc:
        assert isinstance(exc.offset, int)
        outcomes[f"{label}:error"] += 1
        return
    except Exception as exc:  # the test's point: name the buffer that escaped the checks
        pytest.fail(f"{label}: {type(exc).__name__}: {exc} for buffer {data.hex()}")
    outcomes[f"{label}:ok"] += 1
    assert decode(encode(msg)) == msg
    msg.to_json()


@pytest.mark.timeout(120)
def test_fuzz_only_decode_errors(vectors: dict[str, bytes], full_message: SecurityMessage) -> None:
    rng = random.Random(SEED)
    v4 = Flow(IPv4Address("10.0.0.2"), IPv4Address("10.0.0.1"), 1883, 50000, Protocol.UDP, 9, 0, 3, 4, "e", "c")
    v6 = Flow(IPv6Address("fe80::1"), IPv6Address("fe80::2"), 1, 2, Protocol.ICMP, 64, 64)
    small = SecurityMessage(
        "x",
        ModuleVersion(3, 5, 4),
        (
            Event(bytes(16), 5, 10, NetworkActivity((v4, v4), (v6,))),
            Event(bytes(range(16)), 5, 60, SystemInformation("os", None, "hw")),
        ),
        3,
    )
    seeds = [*vectors.values(), encode(small), encode(full_message)]
    weights = [5, 5, 5, 1]
    vtables = [_vtable_positions(s) for s in seeds]
    outcomes: Counter[str] = Counter()
    for _ in range(RANDOM_BUFFERS):
        _check(_random_buffer(rng), outcomes, "random")
    for _ in range(MUTATIONS):
        i = rng.choices(range(len(seeds)), weights)[0]
        kind, data = _mutate(rng, seeds[i], vtables[i], seeds)
        _check(data, outcomes, kind)
    total = sum(outcomes.values())
    assert total >= 20_000
    errors = sum(n for k, n in outcomes.items() if k.endswith(":error"))
    assert errors > total // 2, outcomes  # most damage is detected ...
    assert sum(n for k, n in outcomes.items() if k.endswith(":ok") and not k.startswith("random")) > 100, outcomes
