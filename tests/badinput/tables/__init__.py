"""One module per input surface, each with ``SURFACE`` (its name in the summary) and ``CASES``.

Adding a surface is adding a module here: it is found by listing this package.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import replace

from tests.badinput.case import Case


def all_cases() -> list[Case]:
    """Every row of every table, each tagged with its surface; names are unique per surface."""
    cases: list[Case] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        surface = module.SURFACE
        names = [c.name for c in module.CASES]
        repeated = {n for n in names if names.count(n) > 1}
        if repeated:
            raise ValueError(f"table {info.name}: repeated case names {sorted(repeated)}")
        cases += [replace(c, surface=surface) for c in module.CASES]
    return cases
