"""`hil capture` as a user runs it: a bench run with traffic recorded as a bundle that loads whole,
and a capture stopped by SIGTERM keeping what it recorded."""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.bundle.load import open_bundle
from harness.firmware_build import build_reference
from harness.traffic.capture import read_pcap
from harness.traffic.checksum import inet_checksum
from tests.processes import processes_mentioning

REPO = Path(__file__).resolve().parents[2]
NEEDS = ("root", "qemu", "arm-gcc", "mosquitto", "dnsmasq", "chrony", "ip")
BOARD = "qemu-an385"
RECORDING = re.compile(r"up at (\S+), device \S+; recording")


def hil(workspace: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "HIL_STATE": str(workspace / "state")}
    return subprocess.Popen([sys.executable, "-m", "harness", *args, "--lab", str(REPO / "boards")], cwd=workspace,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def reference_build(workspace: Path, name: str = "ref", **knobs: object) -> Path:
    """The fast reference firmware in the workspace's firmware-builds/ (where `hil reproduce` looks)."""
    return build_reference("mps2-an385", knobs, "fast", workspace / "firmware-builds" / name)


def drive_traffic(address: str) -> None:
    """What a peer does to the device: a TCP echo, a UDP echo of four datagrams, three pings; each
    waits for the board's answer."""
    with socket.create_connection((address, 7), timeout=10) as tcp:
        tcp.sendall(b"x" * 300)
        got = 0
        while got < 300:
            chunk = tcp.recv(4096)
            assert chunk, "the board closed its echo connection"
            got += len(chunk)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(5)
        for _ in range(4):
            udp.sendto(b"y" * 200, (address, 7))
            udp.recvfrom(4096)
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as icmp:
        icmp.settimeout(5)
        for seq in range(3):
            body = struct.pack("!BBHHH", 8, 0, 0, 0x4849, seq) + b"z" * 56
            icmp.sendto(body[:2] + struct.pack("!H", inet_checksum(body)) + body[4:], (address, 0))
            while True:  # the echo reply of this sequence number (the raw socket sees every ICMP message)
                reply, _ = icmp.recvfrom(4096)
                ihl = (reply[0] & 0x0F) * 4
                if reply[ihl] == 0 and struct.unpack_from("!HH", reply, ihl + 4) == (0x4849, seq):
                    break


def capture_with_traffic(workspace: Path, out: Path, build: Path, duration: float = 14,
                         *extra: str) -> subprocess.CompletedProcess[str]:
    """`hil capture` for ``duration`` s, the traffic driven once it says it records."""
    proc = hil(workspace, "capture", BOARD, "--out", str(out), "--duration", str(duration), "--firmware", str(build),
               "--report-dir", str(workspace / f"{out.name}.run"), "--notes", "bench capture", *extra)
    assert proc.stderr is not None
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if found := RECORDING.search(line):
                drive_traffic(found.group(1))
                break
        rest_out, rest_err = proc.communicate(timeout=duration + 120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, rest_out, "".join(lines) + rest_err)


@pytest.mark.needs(*NEEDS)
@pytest.mark.timeout(300)
def test_a_capture_is_a_bundle_with_the_runs_evidence_and_the_builds_identity(tmp_path: Path) -> None:
    build = reference_build(tmp_path)
    result = capture_with_traffic(tmp_path, tmp_path / "field.tar.gz", build)
    assert result.returncode == 0, result.stderr[-3000:]
    bundle = open_bundle(tmp_path / "field.tar.gz", tmp_path / "unpacked")
    manifest = yaml.safe_load((build / "manifest.yaml").read_text())
    fw = bundle.manifest.firmware
    assert (fw.version, fw.build_id, fw.sha256) == (manifest["version"], manifest["build"]["build_id"],
                                                    manifest["sha256"])
    assert bundle.manifest.board.type == "mps2_an385" and bundle.manifest.notes == "bench capture"
    assert bundle.messages.device_id == "hil-qemu-an385-01" and len(bundle.messages.messages) >= 5
    assert bundle.console is not None and bundle.console.read_text().startswith("HIL-REF")
    assert bundle.manifest.replay_from is not None
    frames = [t for t, _ in read_pcap(bundle.capture)]
    assert frames and frames[0] < bundle.manifest.replay_from < frames[-1]  # traffic recorded after the boot
    assert not processes_mentioning(str(tmp_path / "field.tar.gz.run")), "processes of the run still alive"


@pytest.mark.needs(*NEEDS)
@pytest.mark.timeout(300)
def test_sigterm_ends_a_capture_early_and_keeps_what_it_recorded(tmp_path: Path) -> None:
    build = reference_build(tmp_path)
    proc = hil(tmp_path, "capture", BOARD, "--out", str(tmp_path / "early"), "--duration", "600", "--firmware",
               str(build), "--report-dir", str(tmp_path / "run"))
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if RECORDING.search(line):
                proc.send_signal(signal.SIGTERM)
                break
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "stopped early" in err and "Traceback" not in err
    bundle = open_bundle(tmp_path / "early", tmp_path / "unpacked")
    assert bundle.messages.messages  # at least the first message, which came before the recording began
    assert not processes_mentioning(str(tmp_path / "run"))


def test_capture_refuses_an_out_that_exists_before_bringing_anything_up(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("mine")
    proc = hil(tmp_path, "capture", BOARD, "--out", str(tmp_path / "taken"), "--duration", "5")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "exists already" in err and "Traceback" not in err
    assert (tmp_path / "taken" / "x").read_text() == "mine"
    assert not (tmp_path / "state" / "runs").exists() or not any((tmp_path / "state" / "runs").iterdir())
