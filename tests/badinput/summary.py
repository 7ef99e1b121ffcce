"""The closing count: cases by surface and by how they ended (clear error / refused / accepted ...)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tests.badinput.runner import OUTCOMES


def table(rows: Iterable[tuple[str, str]]) -> str:
    """``rows``: (surface, outcome) pairs. A fixed-width table with a total line."""
    counts: Counter[tuple[str, str]] = Counter(rows)
    surfaces = sorted({s for s, _ in counts})
    shown = [o for o in OUTCOMES if any(counts[s, o] for s in surfaces) or o in OUTCOMES[:3]]
    width = max([len("surface"), len("total"), *map(len, surfaces)])
    header = f"{'surface':<{width}}  " + "  ".join(f"{o:>{max(len(o), 5)}}" for o in shown) + "  cases"
    lines = [header, "-" * len(header)]
    for surface in [*surfaces, "total"]:
        cells = [sum(counts[s, o] for s in surfaces) if surface == "total" else counts[surface, o] for o in shown]
        total = sum(cells)
        if surface == "total":
            lines.append("-" * len(header))
        row = "  ".join(f"{c:>{max(len(o), 5)}}" for o, c in zip(shown, cells, strict=True))
        lines.append(f"{surface:<{width}}  {row}  {total:>5}")
    return "\n".join(lines)
