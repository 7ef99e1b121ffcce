"""`hil reproduce` as a user runs it: a bundle captured on an emulated board reproduces on a fresh
one with no difference; against a build that counts the IP header, exactly the windows holding the
replayed traffic differ, by 20 bytes a datagram."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_cli_capture import NEEDS, capture_with_traffic, hil, reference_build
from tests.processes import processes_mentioning

pytestmark = [pytest.mark.needs(*NEEDS)]


@pytest.fixture(scope="module")
def field(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with the reference build in firmware-builds/ and a bundle captured with it."""
    workspace = tmp_path_factory.mktemp("field")
    build = reference_build(workspace)
    result = capture_with_traffic(workspace, workspace / "field.tar.gz", build)
    assert result.returncode == 0, result.stderr[-3000:]
    return workspace


def reproduce(workspace: Path, report: Path, *args: str) -> tuple[int, str, dict[str, Any]]:
    proc = hil(workspace, "reproduce", str(workspace / "field.tar.gz"), "--report-dir", str(report), *args)
    _, err = proc.communicate(timeout=240)
    data = json.loads((report / "reproduction.json").read_text()) if (report / "reproduction.json").exists() else {}
    return proc.returncode, err, data


@pytest.mark.timeout(400)
def test_a_captured_bundle_reproduces_on_a_fresh_board(field: Path, tmp_path: Path) -> None:
    code, err, data = reproduce(field, tmp_path / "report")
    assert code == 0, err[-3000:]
    assert data["verdict"] == "reproduced" and data["complete"] and data["comparison"]["differences"] == []
    assert "the build of the bundle's version and build id" in data["bench"]["build_chosen"]  # found by identity
    groups = data["comparison"]["groups"]
    assert groups and all(g["verdict"] == "match" for g in groups)
    flows = {r["flow"] for g in groups for r in g["flows"]}
    assert {"TCP device:7 peer:*", "UDP device:7 peer:*", "ICMP"} <= flows  # all three kinds replayed
    html = (tmp_path / "report" / "reproduction.html").read_text()
    assert 'data-verdict="reproduced"' in html and "How the windows were aligned" in html
    assert all((tmp_path / "report" / f"timeline-{side}.svg").exists() for side in ("bundle", "bench"))
    assert not processes_mentioning(str(tmp_path / "report")), "processes of the run still alive"


@pytest.mark.timeout(400)
def test_a_build_counting_the_ip_header_differs_exactly_where_the_traffic_is(field: Path, tmp_path: Path) -> None:
    wrong = reference_build(tmp_path, "wrong", ASC_FAULT_BYTES_WITH_IP_HEADER=1)
    code, err, data = reproduce(field, tmp_path / "report", "--firmware", str(wrong))
    assert code == 1, err[-3000:]
    comparison = data["comparison"]
    assert data["verdict"] == "differs" and "given with --firmware" in data["bench"]["build_chosen"]
    groups = comparison["groups"]
    assert groups and all(g["verdict"] == "differs" for g in groups)  # every window holding replayed traffic
    assert all(g["bundle_windows"] and g["bench_windows"] for g in groups)  # aligned, none left alone
    for g in groups:
        for row in g["flows"]:
            assert row["bundle"] and row["bench"], row  # the same flows on both sides ...
            extra = [b - a for a, b in zip(row["bundle"], row["bench"], strict=True)]
            assert all(x > 0 and x % 20 == 0 for x in extra), row  # ... each datagram 20 bytes more
    assert comparison["events"]["same"] and comparison["gaps"]["same"]  # nothing else differs
    assert all(d.startswith("replayed traffic differs") for d in comparison["differences"])
    assert "differs:" in err and "Traceback" not in err


@pytest.mark.timeout(400)
def test_a_bundle_captured_through_a_broker_outage_reproduces_its_pending_gap(tmp_path: Path) -> None:
    """The broker gone 10 s (less than the fast preset's 20 s pending time): the field telemetry has a
    PENDING gap; the bench re-enacts the outage at its broker and shows the same gap."""
    build = reference_build(tmp_path)
    captured = capture_with_traffic(tmp_path, tmp_path / "field.tar.gz", build, 30, "--outage", "8+10")
    assert captured.returncode == 0, captured.stderr[-3000:]
    code, err, data = reproduce(tmp_path, tmp_path / "report")
    assert code == 0, err[-3000:]
    gaps = data["comparison"]["gaps"]
    assert [g["state"] for g in gaps["bundle"]] == ["PENDING"] == [g["state"] for g in gaps["bench"]]
    (outage,) = data["replay"]["outages"]  # re-enacted once, where the bundle's hub was gone
    assert 6 <= outage[0] <= 12 and outage[1] > outage[0]


@pytest.mark.timeout(600)
def test_bisect_over_three_builds_names_the_wrong_one(field: Path, tmp_path: Path) -> None:
    """ref (1.0.0, the bundle's), 1.1.0 as good, 1.2.0 counting the IP header: the first that differs."""
    reference_build(field, "bisect-1.1.0", VERSION="1.1.0")
    reference_build(field, "bisect-1.2.0", VERSION="1.2.0", ASC_FAULT_BYTES_WITH_IP_HEADER=1)
    proc = hil(field, "reproduce", str(field / "field.tar.gz"), "--report-dir", str(tmp_path / "report"),
               "--builds", "ref..bisect-1.2.0")
    _, err = proc.communicate(timeout=500)
    assert proc.returncode == 1, err[-3000:]
    found = json.loads((tmp_path / "report" / "bisect.json").read_text())
    assert found["builds"] == ["ref", "bisect-1.1.0", "bisect-1.2.0"] and found["complete"]
    assert found["first_differing"] == "bisect-1.2.0"
    assert found["verdicts"] == {"bisect-1.1.0": "reproduced", "bisect-1.2.0": "differs"}  # two runs, not three
    assert "first build that differs: bisect-1.2.0" in err
    assert (tmp_path / "report" / "bisect-1.2.0" / "reproduction.html").exists()


@pytest.mark.timeout(300)
def test_sigterm_ends_a_reproduction_with_a_report_of_what_ran_and_nothing_left_running(field: Path,
                                                                                        tmp_path: Path) -> None:
    proc = hil(field, "reproduce", str(field / "field.tar.gz"), "--report-dir", str(tmp_path / "report"))
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if line.startswith("replaying "):  # printed as the replay begins: the stop lands in the run
                proc.send_signal(signal.SIGTERM)
                break
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    data = json.loads((tmp_path / "report" / "reproduction.json").read_text())
    assert data["verdict"] == "incomplete" and not data["complete"] and "Traceback" not in err
    assert 'data-verdict="incomplete"' in (tmp_path / "report" / "reproduction.html").read_text()
    assert not processes_mentioning(str(tmp_path / "report")), "processes of the run still alive"
