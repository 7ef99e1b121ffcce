"""The harness's error hierarchy; the CLI maps each class to an exit code.

- ``ConfigError`` / ``UsageError``: the user gave something wrong (exit 2).
- ``CheckFailed``: a check or clause failed (exit 1).
- ``InfrastructureError``: something the harness itself could not bring up or keep up (exit 3).

Every error carries what was expected, what happened, and where the evidence is, so a message
read in a CI log is enough to act on.
"""

from __future__ import annotations

from pathlib import Path


class HarnessError(Exception):
    """Root of the harness's errors."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        expected: str | None = None,
        actual: str | None = None,
        evidence: Path | str | None = None,
        fix: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.expected = expected
        self.actual = actual
        self.evidence = evidence
        self.fix = fix

    def __str__(self) -> str:
        parts = [self.message]
        if self.expected is not None:
            parts.append(f"expected: {self.expected}")
        if self.actual is not None:
            parts.append(f"actual: {self.actual}")
        if self.fix is not None:
            parts.append(f"fix: {self.fix}")
        if self.evidence is not None:
            parts.append(f"evidence: {self.evidence}")
        return "\n  ".join(parts)


class ConfigError(HarnessError):
    """A configuration file or value is wrong; the message names file, field, value and fix."""

    exit_code = 2


class UsageError(HarnessError):
    """The command line or an API was used wrongly."""

    exit_code = 2


class CheckFailed(HarnessError):
    """A check, assertion or certification clause failed."""

    exit_code = 1


class InfrastructureError(HarnessError):
    """A broker, machine, probe or network the harness could not bring up or keep up."""

    exit_code = 3


class WaitTimeout(CheckFailed, TimeoutError):
    """A wait reached its deadline: says what was awaited, what was seen, where the log is."""


class ServiceTimeout(InfrastructureError, TimeoutError):
    """A process or service the harness runs itself (QEMU, dnsmasq, chronyd, a QMP socket) did not
    answer in time: the harness's failure, never the firmware's."""
