"""Decode throughput of the security-message codec, beside flatc's generated accessors.

Run: .venv/bin/python benchmarks/codec_decode.py [--seconds S]

For three messages (the device's Heartbeat-only and one-flow vectors, and a 64-flow message as the
flow cap allows) it prints messages per second on one core for
- ``codec.decode``: verifies every offset while it reads (the harness's decoder); a device's next
  message of a shape already seen is read from that shape's plan,
- ``first of shape``: the same with no plan kept, each buffer walked and checked in full,
- ``accessors``: the same model objects read through the bare flatc-generated accessors, which
  verify nothing,
and the ratio of the first to the last (> 1: the verifying decoder is faster). Target: >= 20,000
one-flow messages/s, first of their shape.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

from harness.telemetry import shapes
from harness.telemetry.codec import decode, encode
from harness.telemetry.model import Event, Flow, ModuleVersion, NetworkActivity, Protocol, SecurityMessage
from harness.telemetry.schema.accessors import decode_unchecked

VECTORS = Path(__file__).resolve().parents[1] / "fixtures" / "vectors"
TARGET_ONE_FLOW = 20_000


def _sixty_four_flows() -> bytes:
    flows = tuple(
        Flow(IPv4Address("192.168.1.10"), IPv4Address(f"10.0.{i}.1"), 49152 + i, 8883, Protocol(i % 3), 100 * i, 7 * i)
        for i in range(64)
    )
    event = Event(bytes(range(16)), 1_700_000_000, 10, NetworkActivity(ipv4=flows))
    return encode(SecurityMessage("defender-iot-micro-agent", ModuleVersion(3, 5, 4), (event,)))


def _first_of_shape(data: bytes) -> object:
    shapes._SHAPES.clear()  # no shape of this size seen yet: walk and check it all
    return decode(data)


def rate(func: Callable[[bytes], object], data: bytes, seconds: float) -> float:
    """Best messages/second over five timed rounds of about ``seconds / 5`` each."""
    func(data)
    batch = 1
    while True:  # size a batch to ~20 ms
        start = time.perf_counter()
        for _ in range(batch):
            func(data)
        elapsed = time.perf_counter() - start
        if elapsed > 0.02:
            break
        batch *= 2
    rounds = max(1, int(seconds / 5 / elapsed))
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(rounds):
            for _ in range(batch):
                func(data)
        best = max(best, rounds * batch / (time.perf_counter() - start))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement (default 2)")
    args = parser.parse_args()
    messages = {
        "heartbeat only (flatcc vector)": (VECTORS / "heartbeat-flatcc.bin").read_bytes(),
        "1 flow + sysinfo + heartbeat (flatcc vector)": (VECTORS / "network-flatcc.bin").read_bytes(),
        "64 IPv4 flows (Google layout)": _sixty_four_flows(),
    }
    print(f"{'message':46} {'bytes':>6} {'codec.decode/s':>15} {'first of shape/s':>17} {'accessors/s':>12} "
          f"{'ratio':>6}")
    ok = True
    for name, data in messages.items():
        assert decode(data) == decode_unchecked(data), name
        ours = rate(decode, data, args.seconds)
        first = rate(_first_of_shape, data, args.seconds)
        theirs = rate(decode_unchecked, data, args.seconds)
        print(f"{name:46} {len(data):6d} {ours:15,.0f} {first:17,.0f} {theirs:12,.0f} {ours / theirs:6.2f}")
        if name.startswith("1 flow") and first < TARGET_ONE_FLOW:
            ok = False
    print(f"target: >= {TARGET_ONE_FLOW:,} one-flow messages/s: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
