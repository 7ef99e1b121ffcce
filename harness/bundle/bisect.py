"""``--builds A..B``: the lab builds from A to B for one board type, and a bisection for the first
that does not reproduce the bundle.

Builds are ordered by version (numerically, part by part), then build id, then folder name; the
range holds A, B and every build of the board's type between them. The search assumes what a
bisection assumes: once a build differs, every later one does. It reproduces the bundle on the
middle build of what is left, and keeps the half that holds the first difference, until one build
is left: about log2(n) + 1 reproductions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.bundle.builds import describe, lab_builds
from harness.errors import UsageError
from harness.firmware import FirmwareBuild


def _order(build: FirmwareBuild) -> tuple[Any, ...]:
    version = tuple(int(p) if p.isdigit() else p for p in re.split(r"[.\-+]", build.manifest.version))
    return (tuple((0, p) if isinstance(p, int) else (1, p) for p in version), build.manifest.build.build_id or "",
            build.folder.name)


def build_range(spec: str, folder: Path, target: str) -> list[FirmwareBuild]:
    """The builds ``A..B`` names (folder names under ``folder``) for ``target``, in order."""
    first, dots, last = spec.partition("..")
    if not dots or not first or not last:
        raise UsageError(f"--builds {spec!r} is not A..B", fix="name the first and the last build folder, e.g. "
                                                               "--builds fw-2.0.0..fw-2.3.1")
    builds = sorted((b for b in lab_builds(folder)[0] if b.compatible_with(target)), key=_order)
    names = [b.folder.name for b in builds]
    for name in (first, last):
        if name not in names:
            raise UsageError(f"--builds {spec}: {name!r} is not a build for {target} in {folder}: the builds there "
                             f"are {'; '.join(describe(b) for b in builds) or 'none'}",
                             fix=f"name build folders under {folder}/")
    i, j = names.index(first), names.index(last)
    if i > j:
        raise UsageError(f"--builds {spec}: {first} comes after {last} (builds are ordered by version, then "
                         "build id)", fix=f"write --builds {last}..{first}")
    return builds[i:j + 1]


@dataclass
class Bisection:
    builds: list[FirmwareBuild]
    verdicts: dict[str, str] = field(default_factory=dict)  # folder name -> reproduced | differs | incomplete
    first_differing: str | None = None
    stopped: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"builds": [b.folder.name for b in self.builds], "verdicts": self.verdicts,
                "first_differing": self.first_differing, "complete": not self.stopped}


def bisect(builds: Sequence[FirmwareBuild], reproduce: Callable[[FirmwareBuild], str]) -> Bisection:
    """Find the first build for which ``reproduce`` (a verdict) is not 'reproduced'."""
    result = Bisection(list(builds))
    lo, hi = 0, len(builds)  # the first differing build is in builds[lo:hi], or there is none (hi == len)
    while lo < hi:
        mid = (lo + hi) // 2
        verdict = reproduce(builds[mid])
        result.verdicts[builds[mid].folder.name] = verdict
        if verdict == "incomplete":
            result.stopped = True
            return result
        if verdict == "reproduced":
            lo = mid + 1
        else:
            hi = mid
    result.first_differing = builds[lo].folder.name if lo < len(builds) else None
    return result
