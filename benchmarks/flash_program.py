"""Programming a 256 KiB image into a chip model: harness.flash against ``pyocd load``.

    .venv/bin/python benchmarks/flash_program.py [--size-kib 256] [--repeat 3] [--target stm32l475xg]

Same probe (``emu:chip-<target>-0``), same image, one run. Each round starts from an erased chip:
- harness, first programming: a new Flasher (cold worker process: imports pyOCD), program + verify;
- harness, second programming of the same image with the same Flasher (smart flash skips every page;
  the worker process is warm), and once more with a new Flasher (cold worker) for comparison;
- ``pyocd load`` on an erased chip, then again (its own process each time, no verify).
Goals: harness first / pyocd load ≤ 1.1; harness second / harness first ≤ 0.2. Medians are reported.
Needs the ``pyocd.probe`` entry point installed (``pip install -e .``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.flash import Flasher

BASES = {"stm32l475xg": 0x08000000, "stm32f412xg": 0x08000000, "mimxrt1060": 0x60000000}


def erase_chip(state: Path, uid: str) -> None:
    (state / "simprobe" / "flash" / f"{uid.removeprefix('emu:')}.bin").unlink(missing_ok=True)


def pyocd_load(uid: str, target: str, image: Path, base: int, run_dir: Path) -> float:
    pyocd = str(Path(sys.executable).parent / "pyocd")
    t0 = time.perf_counter()
    subprocess.run([pyocd, "load", "--no-wait", "--uid", uid, "--target", target, "--format", "bin",
                    "--base-address", hex(base), str(image)], check=True, timeout=300, cwd=run_dir,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-kib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--target", default="stm32l475xg", choices=sorted(BASES))
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args()

    base = BASES[args.target]
    uid = f"emu:chip-{args.target}-0"
    with tempfile.TemporaryDirectory(prefix="hil-bench-") as tmp:
        root = Path(tmp)
        os.environ["HIL_STATE"] = str(root / "state")
        os.environ["HIL_SIMPROBE_CHIPS"] = args.target
        run_dir = root / "run"
        run_dir.mkdir()
        image = root / "image.bin"
        image.write_bytes(os.urandom(args.size_kib * 1024))
        rows: dict[str, list[float]] = {"harness_first": [], "harness_second": [], "harness_second_cold": [],
                                        "pyocd_first": [],
                                        "pyocd_second": []}
        for _ in range(args.repeat):
            erase_chip(root / "state", uid)
            with Flasher(uid, args.target, run_dir=run_dir, timeout=300) as flasher:
                t0 = time.perf_counter()
                first = flasher.program(image, base=base)
                rows["harness_first"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                second = flasher.program(image, base=base)
                rows["harness_second"].append(time.perf_counter() - t0)
            with Flasher(uid, args.target, run_dir=run_dir, timeout=300) as cold:
                t0 = time.perf_counter()
                cold.program(image, base=base)
                rows["harness_second_cold"].append(time.perf_counter() - t0)
            assert first.pages_written > 0 and second.pages_written == 0 and second.verified
            erase_chip(root / "state", uid)
            rows["pyocd_first"].append(pyocd_load(uid, args.target, image, base, run_dir))
            rows["pyocd_second"].append(pyocd_load(uid, args.target, image, base, run_dir))
    med = {k: statistics.median(v) for k, v in rows.items()}
    result = {
        "target": args.target, "size_kib": args.size_kib, "repeat": args.repeat,
        "median_seconds": {k: round(v, 3) for k, v in med.items()},
        "harness_first_over_pyocd_load": round(med["harness_first"] / med["pyocd_first"], 3),
        "harness_second_over_first": round(med["harness_second"] / med["harness_first"], 3),
        "pyocd_second_over_first": round(med["pyocd_second"] / med["pyocd_first"], 3),
        "harness_second_cold_over_first": round(med["harness_second_cold"] / med["harness_first"], 3),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result["median_seconds"].items():
            print(f"{key:>20}: {value:7.3f} s")
        print(f"harness first / pyocd load : {result['harness_first_over_pyocd_load']:.3f}  (goal <= 1.1)")
        print(f"harness second / first     : {result['harness_second_over_first']:.3f}  (goal <= 0.2)")
        print(f"pyocd load second / first  : {result['pyocd_second_over_first']:.3f}  (for comparison)")
        print(f"harness second, cold worker / first: {result['harness_second_cold_over_first']:.3f}")
    ok = result["harness_first_over_pyocd_load"] <= 1.1 and result["harness_second_over_first"] <= 0.2
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
