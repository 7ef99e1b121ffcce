"""``python -m tests.badinput [--summary] [SURFACE ...]``: run the cases without pytest.

Prints each case that did not end as its row says (with what the CLI printed), then with
``--summary`` the count by surface and outcome. Exits 1 if any case failed (an expected failure
of the present code, a row with ``xfail``, counts as failed only if it unexpectedly passes).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.badinput import summary
from tests.badinput.runner import run_case
from tests.badinput.tables import all_cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.badinput", description=__doc__.splitlines()[0])
    parser.add_argument("surfaces", nargs="*", metavar="SURFACE", help="only these surfaces")
    parser.add_argument("--summary", action="store_true", help="print the count by surface and outcome")
    args = parser.parse_args(argv)
    cases = [c for c in all_cases() if not args.surfaces or c.surface in args.surfaces]
    seen: list[tuple[str, str]] = []
    failed = 0
    with tempfile.TemporaryDirectory(prefix="hil-badinput-") as work:
        for case in cases:
            result = run_case(case, Path(work) / case.surface)
            seen.append((case.surface, result.outcome(case)))
            problem = result.problem(case)
            if (problem is None) == (case.xfail is None):
                continue
            failed += 1
            print(problem or f"{case.surface}:{case.name}: passes but is marked xfail ({case.xfail})",
                  file=sys.stderr)
    if args.summary:
        print(summary.table(seen))
    print(f"{len(cases)} case(s), {failed} failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
