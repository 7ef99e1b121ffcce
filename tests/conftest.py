"""The harness's own tests: settings shared by every folder."""

from __future__ import annotations

import os

from hypothesis import settings

from tests.badinput.tally import pytest_runtest_logreport, pytest_terminal_summary  # noqa: F401  (hooks)

# CI (HIL_STRICT=1) runs the property tests on the same examples every time: a clean clone has no
# example database, and a verdict must not depend on the draw. Runs on developers' machines keep
# drawing new examples, and keep what fails in .hypothesis/ (found that way: a cut record whose
# missing bytes equal the sync marker; see tests/unit/broker/test_archive_damage.py).
settings.register_profile("ci", derandomize=True)
if os.environ.get("HIL_STRICT") == "1":
    settings.load_profile("ci")
