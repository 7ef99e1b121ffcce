"""Clean build of the reference firmware, lwIP fetch included, against the 2-minute goal.

Run: .venv/bin/python benchmarks/firmware_clean_build.py [--board mps2-an385] [--jobs N]

Builds ``fixtures/firmware`` with make into an empty temporary folder (its own BUILD_DIR and
LWIP_DIR, so Debian's lwIP source package is fetched and unpacked afresh through the private apt
configuration), prints the wall time of the fetch and of the whole build, and exits 1 when the
whole build takes longer than the goal (120 s). Nothing under fixtures/firmware/build/ is touched.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIRMWARE = Path(__file__).resolve().parents[1] / "fixtures" / "firmware"
GOAL_S = 120.0


def _make(args: list[str]) -> tuple[float, str]:
    t0 = time.monotonic()
    proc = subprocess.run(["make", "--no-print-directory", "-C", str(FIRMWARE), *args],
                          capture_output=True, text=True, timeout=600, check=False)
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"make {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return elapsed, proc.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", default="mps2-an385")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hil-fw-bench-") as tmp:
        dirs = [f"BUILD_DIR={tmp}/{args.board}", f"LWIP_DIR={tmp}/lwip", f"BOARD={args.board}"]
        fetch_s, _ = _make(["lwip", *dirs])
        compile_s, out = _make(["all", f"-j{args.jobs}", *dirs])
    total = fetch_s + compile_s
    size = next((line for line in out.splitlines() if line.startswith("size:")), "size: ?")
    print(f"clean build {args.board} (-j{args.jobs}): lwIP fetch {fetch_s:.1f} s, compile and link "
          f"{compile_s:.1f} s, total {total:.1f} s (goal < {GOAL_S:.0f} s); {size}")
    return 0 if total < GOAL_S else 1


if __name__ == "__main__":
    sys.exit(main())
