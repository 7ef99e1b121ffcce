"""`hil certify` as a user runs it: the reference firmware certified on an emulated board with
reports that agree with each other (the HTML checked in headless Chromium), builds made wrong on
purpose failing exactly their clause, and a run killed halfway leaving valid reports and nothing
running."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from harness.firmware_build import build_reference
from tests.processes import processes_mentioning

REPO = Path(__file__).resolve().parents[2]
NEEDS = ("root", "qemu", "arm-gcc", "mosquitto", "dnsmasq", "chrony", "ip")
pytestmark = [pytest.mark.needs(*NEEDS)]


def certify(tmp_path: Path, *args: str, timeout: float = 600) -> tuple[subprocess.CompletedProcess[str], Path]:
    report = tmp_path / "report"
    env = {**os.environ, "HIL_STATE": str(tmp_path / "state")}
    result = subprocess.run([sys.executable, "-m", "harness", "certify", "--report-dir", str(report), *args],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return result, report


def verdicts(report: Path) -> dict[str, str]:
    data = json.loads((report / "certificate.json").read_text())
    out: dict[str, str] = {}
    for c in data["clauses"]:  # a clause run twice (parametrized) keeps its worst verdict
        out[c["clause"]] = c["verdict"] if out.get(c["clause"], "passed") == "passed" else out[c["clause"]]
    return out


def junit_cases(report: Path) -> dict[str, str]:
    out = {}
    for case in ET.parse(report / "junit.xml").getroot().iter("testcase"):
        kind = "passed"
        for child, name in (("failure", "failed"), ("error", "infrastructure")):
            if case.find(child) is not None:
                kind = name
        skipped = case.find("skipped")
        if skipped is not None:
            kind = "known-defect" if "known-defect" in (skipped.get("message") or "") else "not-applicable"
        out[f"{case.get('name')}|{case.get('file')}"] = kind
    return out


@pytest.fixture(scope="module")
def certified(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    return certify(tmp_path_factory.mktemp("certify"))


@pytest.mark.timeout(900)
def test_the_reference_firmware_is_certified_with_its_reports(certified: tuple[subprocess.CompletedProcess[str],
                                                                                Path]) -> None:
    result, report = certified
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((report / "certificate.json").read_text())
    assert data["complete"] and data["verdict"] == "passed"
    clauses = {c["clause"] for c in data["clauses"]}
    for family in ("1.topic", "1.qos", "1.framing", "1.identity", "2.order", "2.ids", "2.time", "3.1.cadence",
                   "3.2.tcp", "3.2.udp", "3.2.icmp", "3.2.cap", "3.3.closed", "3.3.frozen", "3.3.link-cut",
                   "3.3.suspended", "security.impersonation"):
        assert family in clauses, f"clause {family} missing from the certificate"
    prov = data["provenance"]["qemu-an385"]
    assert prov["firmware_read_back"] == "verified" and re.fullmatch(r"[0-9a-f]{64}", prov["firmware_sha256"])
    assert prov["pyocd"] and prov["qemu"].startswith("QEMU") and prov["broker"].startswith("mosquitto")
    assert len(junit_cases(report)) == len(data["clauses"])
    assert all(k == "passed" for k in junit_cases(report).values())


@pytest.mark.timeout(300)
def test_the_html_certificate_agrees_with_junit_in_a_browser(certified: tuple[subprocess.CompletedProcess[str],
                                                                                Path], tmp_path: Path) -> None:
    _, report = certified
    browser = shutil.which("chromium")
    if browser is None:
        pytest.fail("chromium is not installed (.ci/apt-packages.txt installs it)") if os.environ.get(
            "HIL_STRICT") == "1" else pytest.skip("needs Debian's chromium")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    page = (report / "certificate.html").as_uri()
    dom = subprocess.run([browser, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
    shot = report / "certificate.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1400,2400", page],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 1000, "no screenshot of the certificate"
    rows = re.findall(r'<tr data-board="([^"]+)" data-clause="([^"]+)" data-verdict="([^"]+)"', dom)
    data = json.loads((report / "certificate.json").read_text())
    assert len(rows) == len(data["clauses"]) == len(junit_cases(report)), "the browser's table is not whole"
    in_junit = sorted(junit_cases(report).values())
    assert sorted(v for _, _, v in rows) == in_junit
    assert re.search(r'id="verdict" data-verdict="passed"', dom)


WRONG = {
    # name: (knobs, manifest changes, clauses run, the clause that must fail)
    "a knob the manifest misstates": ({}, {"behaviour": {"intervals_s": {"low": 60}}}, ["3.1.cadence"],
                                      "3.1.cadence"),
    "heartbeat left out": ({"ASC_FAULT_NO_HEARTBEAT": 1}, {}, ["3.1.cadence"], "3.1.cadence"),
    "bytes counted with the IP header": ({"ASC_FAULT_BYTES_WITH_IP_HEADER": 1}, {}, ["3.2.icmp"], "3.2.icmp"),
    "PUBLISH with the shortest Remaining Length": ({"MQTT_FAULT_SHORT_RL": 1}, {}, [], "1.framing"),
    "the suspension leak, undeclared": ({"UPSTREAM_SUSPEND_LEAK": 1}, {"behaviour": {"known_defects": []}},
                                        ["3.3.suspended"], "3.3.suspended"),
}


def wrong_build(folder: Path, knobs: dict[str, object], changes: dict[str, dict[str, object]]) -> Path:
    out = build_reference("mps2-an385", knobs, "fast", folder)
    manifest = yaml.safe_load((out / "manifest.yaml").read_text())
    for section, values in changes.items():
        for key, value in values.items():
            if isinstance(value, dict):
                manifest[section][key].update(value)
            else:
                manifest[section][key] = value
    (out / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    return out


@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", sorted(WRONG))
def test_a_build_made_wrong_on_purpose_fails_its_clause(case: str, tmp_path: Path) -> None:
    knobs, changes, clauses, failing = WRONG[case]
    build = wrong_build(tmp_path / "build", knobs, changes)
    args = ["--firmware", str(build), *(f"--clause={c}" for c in [*clauses, "1."])]
    result, report = certify(tmp_path, *args)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    seen = verdicts(report)
    assert seen[failing] == "failed", seen
    assert all(v == "passed" for c, v in seen.items() if c.startswith("1.") and c != failing), seen  # the rest holds


@pytest.mark.timeout(600)
def test_a_declared_defect_is_reported_as_known_not_hidden(tmp_path: Path) -> None:
    build = wrong_build(tmp_path / "build", {"UPSTREAM_SUSPEND_LEAK": 1}, {})
    assert "suspend-leak" in yaml.safe_load((build / "manifest.yaml").read_text())["behaviour"]["known_defects"]
    result, report = certify(tmp_path, "--firmware", str(build), "--clause=3.3.suspended")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert verdicts(report)["3.3.suspended"] == "known-defect"
    assert "known-defect" in (report / "certificate.html").read_text()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("boards", [["qemu-an385"], ["qemu-an385", "qemu-an386"]], ids=["one board", "two boards"])
def test_killed_halfway_it_leaves_valid_reports_and_nothing_running(boards: list[str], tmp_path: Path) -> None:
    """SIGTERM to `hil certify` (what a CI job's timeout sends): with two boards the boards, machines
    and brokers belong to xdist workers, which must stop them before they end."""
    report = tmp_path / "report"
    env = {**os.environ, "HIL_STATE": str(tmp_path / "state")}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "certify", "--report-dir", str(report),
                             *(f"--board={b}" for b in boards)], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            path = report / "certificate.json"
            done = json.loads(path.read_text())["clauses"] if path.exists() else []
            if len(done) >= 3:
                break
            assert proc.poll() is None and time.monotonic() < deadline, "certify ended or stalled before 3 clauses"
            time.sleep(0.5)  # the certificate is rewritten as clauses end: no event to wait on here
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, proc.stderr.read()[-3000:] if proc.stderr else proc.returncode
    data = json.loads((report / "certificate.json").read_text())
    assert not data["complete"] and len(data["clauses"]) >= 3
    assert len(junit_cases(report)) == len(data["clauses"])  # a valid JUnit file of what finished
    assert not processes_mentioning(str(tmp_path)), "processes of the killed run still alive"
    bridges = {json.loads(line).get("bridge") for log in report.rglob("run-log.jsonl")
               for line in log.read_text().splitlines() if '"network"' in line} - {None}
    assert len(bridges) == len(boards)  # each board's worker made a network of its own
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    assert not [n for n in namespaces if n.startswith(tuple(bridges))], "namespaces of the killed run left behind"


@pytest.mark.timeout(600)
def test_last_failed_runs_again_only_what_did_not_pass(tmp_path: Path) -> None:
    """A build without Heartbeat fails its cadence clause; the fixed build, run with --last-failed in
    the same report folder, runs that clause alone, and it passes."""
    broken = wrong_build(tmp_path / "broken", {"ASC_FAULT_NO_HEARTBEAT": 1}, {})
    first, report = certify(tmp_path, "--firmware", str(broken), "--clause=3.1.cadence", "--clause=2.order")
    assert first.returncode == 1 and verdicts(report)["3.1.cadence"] == "failed"
    fixed = wrong_build(tmp_path / "fixed", {}, {})
    again, report = certify(tmp_path, "--firmware", str(fixed), "--last-failed")
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert verdicts(report) == {"3.1.cadence": "passed"}  # 2.order passed before: not run again


@pytest.mark.timeout(600)
def test_two_boards_certified_in_parallel_into_one_certificate(tmp_path: Path) -> None:
    """Two emulated boards (Cortex-M3 and M4, each with its own reference build), one xdist worker
    each, at the same time: one certificate and one JUnit file with a test suite per board. A broker
    outage on one board (3.3.closed) is that board's alone: the other's clauses still pass."""
    clauses = ("1.topic", "3.1.cadence", "3.3.closed")
    result, report = certify(tmp_path, "--board=qemu-an385", "--board=qemu-an386", *(f"--clause={c}" for c in clauses))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    data = json.loads((report / "certificate.json").read_text())
    assert data["complete"] and set(data["provenance"]) == {"qemu-an385", "qemu-an386"}
    by_board: dict[str, list[dict[str, object]]] = {}
    for c in data["clauses"]:
        by_board.setdefault(str(c["board"]), []).append(c)
        assert c["verdict"] == "passed", c
    assert set(by_board) == {"qemu-an385", "qemu-an386"}
    for board, done in by_board.items():
        assert {c["clause"] for c in done} >= set(clauses), (board, done)
        assert data["provenance"][board]["firmware"].startswith(f"reference-mps2-{board.removeprefix('qemu-')}")
    timed = {b: [c for c in d if float(c["started"]) > 0] for b, d in by_board.items()}  # with a clause record
    spans = {b: (min(float(c["started"]) for c in d), max(float(c["started"]) + float(c["duration"]) for c in d))
             for b, d in timed.items()}
    (a0, a1), (b0, b1) = spans.values()
    assert a0 < b1 and b0 < a1, f"the boards' clauses did not overlap in time: {spans}"
    suites = {s.get("name"): int(s.get("tests") or 0)
              for s in ET.parse(report / "junit.xml").getroot().iter("testsuite")}
    assert suites == {f"certification {b}": len(d) for b, d in by_board.items()}, suites


@pytest.mark.timeout(300)
def test_a_board_named_twice_is_certified_once(tmp_path: Path) -> None:
    """A careless `--board A --board A` certifies A once (two workers would fight over its lease)."""
    result, report = certify(tmp_path, "--board=qemu-an385", "--board=qemu-an385", "--clause=1.topic")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    data = json.loads((report / "certificate.json").read_text())
    assert [(c["board"], c["clause"]) for c in data["clauses"]] == [("qemu-an385", "1.topic")]


def _tls_lab(folder: Path) -> Path:
    """The shipped board in a lab whose broker serves TLS with the lab CA and knows the board's
    device (with a key): the TLS build registers through DPS and signs in with SAS tokens."""
    folder.mkdir(parents=True)
    shutil.copy(REPO / "boards" / "qemu-an385.yaml", folder)
    device = yaml.safe_load((folder / "qemu-an385.yaml").read_text())["identity"]["device_id"]
    (folder / "lab.yaml").write_text(yaml.safe_dump({
        "name": "tls", "broker": {"kind": "mosquitto", "tls": True},
        "devices": [{"id": device, "symmetric_key": base64.b64encode(bytes(range(32))).decode()}]}))
    return folder


def build_cli(tmp_path: Path, lab: Path, name: str, *options: str) -> tuple[Path, str]:
    """``hil firmware build-reference OPTIONS --preset fast --lab LAB`` into ``tmp_path/name``: the
    folder and what the command printed."""
    env = {**os.environ, "HIL_STATE": str(tmp_path / "state")}
    built = subprocess.run([sys.executable, "-m", "harness", "firmware", "build-reference", *options, "--preset",
                            "fast", "--lab", str(lab), "--out", str(tmp_path / name)],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    return tmp_path / name, built.stdout


@pytest.mark.timeout(900)
def test_the_tls_build_is_certified_with_framing_and_windows_told_by_record_size(tmp_path: Path) -> None:
    """Over TLS the link capture holds no readable MQTT frame, but the size of each TLS record tells
    a security PUBLISH and its framing: 1.framing judges NetX's Remaining Length that way, and the
    cap's windows are predicted from the capture as in clear; the identity clause judges the hub
    connections (not the DPS registration under the same client id)."""
    lab = _tls_lab(tmp_path / "lab")
    _, printed = build_cli(tmp_path, lab, "tls-build", "--tls")
    assert "TLS: trusts only the lab CA sha256" in printed
    result, report = certify(tmp_path, "--lab", str(lab), "--firmware", str(tmp_path / "tls-build"),
                             "--clause=1.", "--clause=3.2.cap")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    seen = verdicts(report)
    assert seen and all(v == "passed" for v in seen.values()), seen
    data = json.loads((report / "certificate.json").read_text())
    # 1.framing judged by the size of the TLS records: every security PUBLISH in NetX's framing
    framing = json.loads(next(report.rglob("framing-over-tls.json")).read_text())
    assert framing["protection"] == "aead+24" and framing["netx_framed"] >= 3 and framing["shortest_framed"] == 0
    console = (report / "qemu-an385-console.log").read_text()
    assert "dps: assigned to hub" in console and "twin: status 200" in console
    # the cap's windows were predicted from the capture: the PUBLISHes found by their TLS record's size
    cap = next(c for c in data["clauses"] if c["clause"] == "3.2.cap")
    prediction = next(report.rglob("window-prediction.txt")).read_text()
    assert cap["verdict"] == "passed" and "windows predicted from" in prediction, prediction


@pytest.mark.timeout(900)
def test_a_tls_build_framing_its_publishes_with_the_shortest_remaining_length_fails_framing(tmp_path: Path) -> None:
    """The framing clause can fail over TLS: the size of each record gives the wrong framing away.
    The image also prints its TLS secrets (a bench image): certified all the same, and said so."""
    lab = _tls_lab(tmp_path / "lab")
    build_cli(tmp_path, lab, "bad", "--tls", "--set", "MQTT_FAULT_SHORT_RL=1", "--set", "TLS_KEYLOG=1")
    result, report = certify(tmp_path, "--lab", str(lab), "--firmware", str(tmp_path / "bad"), "--clause=1.")
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    said = " ".join(result.stderr.split())  # the terminal wraps its lines
    assert "is a bench image, not for release" in said and "TLS_KEYLOG=1" in said, said[-2000:]
    provenance = json.loads((report / "certificate.json").read_text())["provenance"]["qemu-an385"]
    assert "TLS session secrets" in provenance["not_for_release"], provenance
    seen = verdicts(report)
    assert seen.pop("1.framing") == "failed" and all(v == "passed" for v in seen.values()), seen
    framing = json.loads(next(report.rglob("framing-over-tls.json")).read_text())
    assert framing["netx_framed"] == 0 and framing["shortest_framed"] >= 3, framing


@pytest.mark.needs("azrtos-sources")
@pytest.mark.timeout(900)
def test_the_azure_rtos_image_is_certified_as_the_lwip_one(tmp_path: Path) -> None:
    """ThreadX, NetX Duo and the Azure IoT middleware (DPS, TLS, SAS) under the same suite: every
    clause passes as on the lwIP image, except 1.framing, which its TLS suite (CBC: the padding hides
    the Remaining Length's 2 bytes) leaves not applicable, saying why."""
    lab = _tls_lab(tmp_path / "lab")
    _, printed = build_cli(tmp_path, lab, "az", "--flavour", "azrtos")
    assert "stack netxduo" in printed
    result, report = certify(tmp_path, "--lab", str(lab), "--firmware", str(tmp_path / "az"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    seen = verdicts(report)
    assert seen.pop("1.framing") in ("passed", "not-applicable"), seen
    assert len(seen) >= 20 and all(v == "passed" for v in seen.values()), seen
    prediction = next(report.rglob("window-prediction.txt")).read_text()
    assert "windows predicted from" in prediction, prediction  # 3.2.cap judged its windows on the capture
    console = (report / "qemu-an385-console.log").read_text()
    assert "stack netxduo" in console


@pytest.mark.needs("azrtos-sources")
@pytest.mark.timeout(600)
def test_an_azure_rtos_image_in_a_lab_without_tls_is_the_labs_fault_not_the_firmwares(tmp_path: Path) -> None:
    """The middleware signs in only over TLS with a device key: in the shipped lab (no TLS, no
    registry) the board could never reach the hub. That is said before the board is provisioned,
    as the lab's doing (exit 3, infrastructure, the fix named), never as clauses the firmware failed."""
    lab = _tls_lab(tmp_path / "lab")
    build_cli(tmp_path, lab, "az", "--flavour", "azrtos")
    result, report = certify(tmp_path, "--firmware", str(tmp_path / "az"), "--clause=1.topic")  # the shipped lab
    assert result.returncode == 3, result.stdout[-2000:] + result.stderr[-2000:]
    assert verdicts(report) == {"1.topic": "infrastructure"}
    clause = json.loads((report / "certificate.json").read_text())["clauses"][0]
    assert "signs in only over TLS" in clause["message"] and "broker: {tls: true}" in clause["message"]
