"""A clause's timeline as an SVG: when each kind of telemetry arrived against when it was due,
outages shaded (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

KIND_ROWS = {"NETWORK_ACTIVITY": 2, "SYSTEM_INFORMATION": 1, "HEARTBEAT": 0}


def timeline_svg(path: Path, title: str, timeline: Mapping[str, Any], *,
                 xlabel: str = "seconds since the clause began") -> Path | None:
    """Plot ``timeline`` (``start``; ``arrivals``/``due``: [seconds since start, kind]; ``outages``:
    [from, to]) to ``path``; None when there is nothing to plot."""
    arrivals = timeline.get("arrivals") or []
    due = timeline.get("due") or []
    if not arrivals and not due:
        return None
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 2.2))
    try:
        for start, end in timeline.get("outages") or []:
            ax.axvspan(start, end, color="#f3c0c0", label="outage")
        if due:
            ax.scatter([t for t, _ in due], [KIND_ROWS.get(k, 3) for _, k in due], marker="|", s=200,
                       color="#888888", label="due")
        if arrivals:
            ax.scatter([t for t, _ in arrivals], [KIND_ROWS.get(k, 3) for _, k in arrivals], marker="o", s=18,
                       color="#1f5fa8", label="arrived")
        ax.set_yticks(list(KIND_ROWS.values()), [k.replace("_", " ").lower() for k in KIND_ROWS])
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=9)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        ax.legend(unique.values(), unique.keys(), fontsize=7, loc="upper right")
        fig.tight_layout()
        fig.savefig(path, format="svg")
    finally:
        plt.close(fig)
    return path
