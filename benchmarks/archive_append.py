"""Cost of one archive append (``ArchiveWriter.write``, the collector's hot path), and of reading back.

Run: ``.venv/bin/python benchmarks/archive_append.py [--records 200000] [--rounds 7] [--size 360]``

Each round appends ``--records`` records of ``--size`` payload bytes (the device's one-flow vector
is 360 bytes) on one topic to a fresh archive in a temporary folder, timing the loop alone; it prints
the median and the best round in nanoseconds per append, of the thread's CPU time (what the append
costs, whatever else the machine runs) and of wall time, then the reader's nanoseconds per record
over the last round's archive, and the CPU time per message of the collector's whole ingest (archive,
decode, store: ``Collector.ingest`` without a network), which the append is part of. Information only
(no target): the collector's ingest benchmark (``collector_ingest.py``) holds the target; on a busy
machine its ratio varies more from run to run than the append costs, and these CPU times do not.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from harness.broker.credentials import DeviceCredentials
from harness.telemetry.archive import ArchiveWriter, read_archive
from harness.telemetry.codec import encode
from harness.telemetry.collector import Collector
from harness.telemetry.model import Event, Heartbeat, ModuleVersion, SecurityMessage
from harness.telemetry.topic import security_topic

TOPIC = "devices/bench-dev/messages/events/"


def one_round(path: Path, records: int, payload: bytes) -> tuple[float, float]:
    """(CPU, wall) nanoseconds per append over ``records`` appends to a new archive at ``path``."""
    path.unlink(missing_ok=True)
    with ArchiveWriter(path) as w:
        write = w.write
        received = time.time()
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        for _ in range(records):
            write(TOPIC, payload, 1, 0, received)
        c1, t1 = time.thread_time_ns(), time.perf_counter_ns()
    return (c1 - c0) / records, (t1 - t0) / records


def ingest_round(path: Path, messages: int, first: int) -> float:
    """CPU nanoseconds per message of the collector's ingest of ``messages`` heartbeats."""
    path.unlink(missing_ok=True)
    col = Collector("mqtt://127.0.0.1:1", DeviceCredentials("hil-collector", "bench", "bench"), path)
    payloads = [encode(SecurityMessage("bench", ModuleVersion(3, 5, 4), (
        Event(n.to_bytes(16, "big"), 1_700_000_000 + n, 10, Heartbeat()),))) for n in range(first, first + messages)]
    with ArchiveWriter(path) as col._archive:  # what start() opens, without a broker
        c0 = time.thread_time_ns()
        topic = security_topic("bench-dev")  # decoded as security telemetry, as a device's
        for p in payloads:
            col.ingest(topic, p)
        return (time.thread_time_ns() - c0) / messages


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--size", type=int, default=360, help="payload bytes per record")
    args = ap.parse_args()
    payload = bytes(range(256)) * (args.size // 256) + bytes(args.size % 256)
    with tempfile.TemporaryDirectory(prefix="hil-bench-") as tmp:
        path = Path(tmp) / "append.bin"
        costs = [one_round(path, args.records, payload) for _ in range(args.rounds)]
        t0 = time.perf_counter_ns()
        count = sum(1 for _ in read_archive(path))
        read_ns = (time.perf_counter_ns() - t0) / max(count, 1)
        ingest = [ingest_round(path, args.records // 10, r * args.records) for r in range(args.rounds)]
    assert count == args.records, f"read back {count} of {args.records} records"
    cpu, wall = [c for c, _ in costs], [w for _, w in costs]
    print(f"append: CPU median {statistics.median(cpu):.0f} ns, best {min(cpu):.0f} ns; wall median "
          f"{statistics.median(wall):.0f} ns, best {min(wall):.0f} ns per record "
          f"({args.records} records of {args.size} bytes, {args.rounds} rounds)")
    print(f"read:   {read_ns:.0f} ns per record")
    print(f"collector ingest (archive + decode + store, no network): CPU median "
          f"{statistics.median(ingest) / 1000:.2f} us, best {min(ingest) / 1000:.2f} us per message")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
