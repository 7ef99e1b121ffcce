"""An outage the harness makes on purpose (a certification clause stops the broker) is recorded as
expected and logged as information; any other is a warning. The session is judged the same way."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.broker import Broker
from harness.telemetry.collector import Collector


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and r.name == "harness.telemetry.collector"]


@pytest.mark.timeout(60)
@pytest.mark.needs("mosquitto")
def test_a_broker_restart_the_harness_makes_is_expected_and_any_other_is_a_warning(
        brokers: Callable[..., Broker], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="harness.telemetry.collector")
    b = brokers("mosquitto")
    with Collector.from_endpoint(b.endpoint(), tmp_path / "telemetry.bin") as col:
        with col.expecting("clause 9.9 stops the broker"):
            b.restart(graceful=True)
        col.wait_connected(30, gaps=1)
        assert _warnings(caplog) == []
        assert [(g.expected, g.session_kept) for g in col.gaps] == [("clause 9.9 stops the broker", True)]
        assert "(expected: clause 9.9 stops the broker)" in col.gaps[0].describe()
        assert col.problems() == ""  # made on purpose, session kept: not a problem
        b.restart(graceful=True)  # nobody said so: a warning, and a gap that is not expected
        col.wait_connected(30, gaps=2)
        assert [g.expected for g in col.gaps] == ["clause 9.9 stops the broker", None]
        assert any("collector lost the broker" in w for w in _warnings(caplog))
        assert any("collector reconnected" in w for w in _warnings(caplog))
        assert "expected" not in col.problems() and "disconnected" in col.problems()
