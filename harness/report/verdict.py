"""What a clause's run came to, and why: the verdict kinds a certification distinguishes.

- ``passed``: the firmware did what the clause says;
- ``failed``: the firmware did not (a CheckFailed, an assertion): the clause fails the certification;
- ``infrastructure``: the harness or the lab could not do its part (a broker, a machine, a probe, a
  network: an InfrastructureError); never reported as the firmware's failure (exit 3);
- ``known-defect``: the firmware shows a defect its manifest declares (reported as such, never hidden;
  it does not fail the certification);
- ``not-applicable``: the clause needs a capability the board lacks (the reason says which).
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class Verdict(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    INFRASTRUCTURE = "infrastructure"
    KNOWN_DEFECT = "known-defect"
    NOT_APPLICABLE = "not-applicable"

    @property
    def fails(self) -> bool:
        return self is Verdict.FAILED


#: Worst first: the run's outcome is the worst of its clauses.
SEVERITY = (Verdict.INFRASTRUCTURE, Verdict.FAILED, Verdict.KNOWN_DEFECT, Verdict.PASSED, Verdict.NOT_APPLICABLE)


@dataclass
class ClauseResult:
    """One clause of the spec on one board."""

    clause: str  # e.g. "3.3.cadence"
    title: str
    board: str
    test: str  # the pytest node id
    verdict: Verdict
    message: str = ""
    duration: float = 0.0
    started: float = 0.0
    evidence: dict[str, str] = field(default_factory=dict)  # name -> path relative to the run folder
    timeline: dict[str, Any] = field(default_factory=dict)  # arrivals, due times, outages (for the plot)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClauseResult:
        return cls(**{**data, "verdict": Verdict(data["verdict"])})


def overall(results: list[ClauseResult]) -> Verdict:
    """The run's verdict: the most severe of its clauses (no clause: infrastructure)."""
    if not results:
        return Verdict.INFRASTRUCTURE
    return min((r.verdict for r in results), key=SEVERITY.index)


EXIT_CODES = {Verdict.PASSED: 0, Verdict.NOT_APPLICABLE: 0, Verdict.KNOWN_DEFECT: 0, Verdict.FAILED: 1,
              Verdict.INFRASTRUCTURE: 3}
