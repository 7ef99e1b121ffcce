"""Cost of one archive append (``ArchiveWriter.write``, the collector's hot path), and of reading back.

Run: ``.venv/bin/python benchmarks/archive_append.py [--records 200000] [--rounds 7] [--size 360]``

Each round appends ``--records`` records of ``--size`` payload bytes (the device's one-flow vector
is 360 bytes) on one topic to a fresh archive in a temporary folder, timing the loop alone; it prints
the median and the best round in nanoseconds per append, of the thread's CPU time (what the append
costs, whatever else the machine runs) and of wall time, then the reader's nanoseconds per record
over the last round's archive. Information only (no target): the collector's ingest benchmark
(``collector_ingest.py``) holds the target.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from harness.telemetry.archive import ArchiveWriter, read_archive

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
    assert count == args.records, f"read back {count} of {args.records} records"
    cpu, wall = [c for c, _ in costs], [w for _, w in costs]
    print(f"append: CPU median {statistics.median(cpu):.0f} ns, best {min(cpu):.0f} ns; wall median "
          f"{statistics.median(wall):.0f} ns, best {min(wall):.0f} ns per record "
          f"({args.records} records of {args.size} bytes, {args.rounds} rounds)")
    print(f"read:   {read_ns:.0f} ns per record")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
