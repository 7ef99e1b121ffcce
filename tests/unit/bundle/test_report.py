"""The reproduction report: matches and differences side by side, and a report even when the bench
run could not finish (its error and verdict kept apart: infrastructure is never a difference)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from harness.bundle.compare import Side, compare
from harness.bundle.load import open_bundle
from harness.bundle.plan import plan_replay
from harness.bundle.run import Reproduction, report_data
from harness.bundle.telemetry import Message
from harness.errors import CheckFailed, InfrastructureError
from harness.firmware import load_build
from harness.report.reproduction import write_reproduction
from harness.telemetry.model import Protocol
from tests.badinput.case import build
from tests.unit.bundle.fake import DEVICE, PEER, T0, flow, make_bundle, windows

IP = ipaddress.IPv4Address


def reproduction(tmp_path: Path) -> Reproduction:
    bundle = open_bundle(make_bundle(tmp_path / "b"), tmp_path / "unpack")
    build()(tmp_path)
    plan = plan_replay(bundle.capture, bundle.device_address, None, tmp_path / "replay.pcap", where="b")
    return Reproduction(bundle, load_build(tmp_path / "build"), "given", "rt1060-a", plan, tmp_path / "run", 1.0)


def test_differences_are_shown_side_by_side(tmp_path: Path) -> None:
    result = reproduction(tmp_path)
    side = Side("s", IP(DEVICE), frozenset({IP(PEER)}), frozenset({("UDP", 7)}), boot=1)
    field = [Message(T0 + 2 * n, m, "") for n, m in enumerate(windows({2: [flow(PEER, 7, 5000, Protocol.UDP, 8, 8)]}))]
    bench = [Message(T0 + 2 * n, m, "") for n, m in enumerate(windows({2: [flow(PEER, 7, 5000, Protocol.UDP, 28,
                                                                                 28)]}))]
    result.comparison = compare(field, bench, side, side, pending_time_s=20)
    result.complete = True
    page = write_reproduction(tmp_path / "report", report_data(result))
    data = json.loads((tmp_path / "report" / "reproduction.json").read_text())
    assert data["verdict"] == "differs" and data["error"] is None
    assert data["comparison"]["groups"][0]["flows"][0] == {
        "flow": "UDP device:7 peer:*", "bundle": [8, 8], "bench": [28, 28], "bundle_records": 1, "bench_records": 1,
        "same": False}
    html = page.read_text()
    assert 'data-verdict="differs"' in html and "<td>in 8 / out 8</td><td>in 28 / out 28</td>" in html
    assert (tmp_path / "report" / "timeline-bench.svg").exists()


@pytest.mark.parametrize(("error", "verdict"), [
    (InfrastructureError("the broker did not start"), "infrastructure"),
    (CheckFailed("board rt1060-a sent no security message on the bench"), "differs"),
])
def test_a_bench_run_that_failed_still_leaves_a_report(tmp_path: Path, error: Exception, verdict: str) -> None:
    result = reproduction(tmp_path)
    result.error = error  # type: ignore[assignment]
    page = write_reproduction(tmp_path / "report", report_data(result))
    data = json.loads((tmp_path / "report" / "reproduction.json").read_text())
    assert data["verdict"] == verdict and str(error) in data["error"] and "comparison" not in data
    assert f'data-verdict="{verdict}"' in page.read_text() and str(error) in page.read_text()
