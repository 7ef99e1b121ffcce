"""Errors of board control."""

from __future__ import annotations

from harness.errors import InfrastructureError


class BoardBroken(InfrastructureError):
    """The board failed (after the recovery ladder) and is out for the rest of the run."""
