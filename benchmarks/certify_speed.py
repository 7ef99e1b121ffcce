"""`hil certify` speed: the suite's wall time against the floor the device's intervals impose, and
two boards certified in parallel against one after the other.

Run (as root, like the certification itself):
    .venv/bin/python benchmarks/certify_speed.py floor      # one board: wall time / floor, goal < 1.25
    .venv/bin/python benchmarks/certify_speed.py parallel   # qemu-an385 and qemu-an386: alone, then together

``floor``: certifies the reference firmware (fast preset) on qemu-an385 and divides the run's wall
time by the floor of :mod:`harness.suites.certification.floor` (the waits no implementation of the
suite could avoid), printing each clause's time. ``parallel``: certifies each board alone, then
both at once (one xdist worker each); the throughput gain is the sum of the two lone wall times
over the parallel one (goal >= 1.6 on a 2-core machine). The builds are made before the timing
starts; each run has a state folder of its own. Exit 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.firmware import load_build  # noqa: E402
from harness.firmware_build import build_reference  # noqa: E402
from harness.suites.certification.floor import floor_parts, floor_s  # noqa: E402

FLOOR_GOAL, PARALLEL_GOAL = 1.25, 1.6
BOARDS = {"qemu-an385": "mps2-an385", "qemu-an386": "mps2-an386"}


def certify(tmp: Path, name: str, boards: list[str]) -> tuple[float, dict[str, object]]:
    report = tmp / name
    env = {**os.environ, "HIL_STATE": str(tmp / f"state-{name}")}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "harness", "certify", "--report-dir", str(report),
                           *(f"--board={b}" for b in boards)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=1800, check=False)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"hil certify {' '.join(boards)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return wall, json.loads((report / "certificate.json").read_text())


def built(board: str) -> Path:
    """The build `hil certify` uses by default for ``board`` (made now, before any timing)."""
    machine = BOARDS[board]
    return build_reference(machine, {}, "fast", REPO / "firmware-builds" / f"reference-{machine}-fast")


def floor(tmp: Path) -> int:
    build = load_build(built("qemu-an385"))
    parts = floor_parts(build.manifest.behaviour)
    wall, cert = certify(tmp, "floor", ["qemu-an385"])
    for c in cert["clauses"]:  # type: ignore[attr-defined]
        print(f"  {c['clause']:<34} {c['duration']:6.1f} s  {c['verdict']}")
    print("floor:")
    for what, seconds in parts:
        print(f"  {seconds:5.1f} s  {what}")
    total = floor_s(build.manifest.behaviour)
    ratio = wall / total
    print(f"certify qemu-an385 (fast preset): wall {wall:.1f} s, floor {total:.1f} s, ratio {ratio:.2f} "
          f"(goal < {FLOOR_GOAL})")
    return 0 if ratio < FLOOR_GOAL else 1


def parallel(tmp: Path) -> int:
    for board in BOARDS:
        built(board)
    alone = {b: certify(tmp, b, [b])[0] for b in BOARDS}
    together, cert = certify(tmp, "both", list(BOARDS))
    gain = sum(alone.values()) / together
    print(f"alone: {', '.join(f'{b} {t:.1f} s' for b, t in alone.items())}; together {together:.1f} s "
          f"({len(cert['clauses'])} clause results); throughput {gain:.2f}x (goal >= {PARALLEL_GOAL}x)")  # type: ignore[arg-type]
    return 0 if gain >= PARALLEL_GOAL else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("floor", "parallel"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hil-certify-bench-") as tmp:
        return floor(Path(tmp)) if args.what == "floor" else parallel(Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
