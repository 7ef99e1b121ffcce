"""The Azure RTOS reference image (ThreadX, NetX Duo, Azure IoT middleware): its clean build and
cached rebuild against the goals, and boot to the first security message on an emulated board.

Run: .venv/bin/python benchmarks/azrtos_image.py build [--board mps2-an385] [--jobs N]
     .venv/bin/python benchmarks/azrtos_image.py boot      (as root: tap network, mosquitto, QEMU)

``build``: into an empty temporary folder (its own AZRTOS_DIR and BUILD_DIR), the upstream archives
checked against SHA256SUMS and unpacked, then compiled and linked (goal < 60 s together); then
the same build again with a new build id (the cached rebuild of every certification: goal < 5 s).
Exit 1 when a goal is missed. Nothing under fixtures/firmware/build/ is touched.

``boot``: a lab with a device registry and TLS, the image built with its CA and the fast preset
(first collection 1 s), one emulated board provisioned for DPS with a SAS key; prints the time
from the board's reset to each milestone its console and the collector show: address, time,
DPS assignment, hub connection, first security message. A report, not a goal.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FIRMWARE = REPO / "fixtures" / "firmware"
CLEAN_GOAL_S, CACHED_GOAL_S = 60.0, 5.0


def _make(args: list[str]) -> tuple[float, str]:
    t0 = time.monotonic()
    proc = subprocess.run(["make", "--no-print-directory", "-C", str(FIRMWARE), "-f", "azrtos/Makefile", *args],
                          capture_output=True, text=True, timeout=900, check=False)
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"make {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return elapsed, proc.stdout


def build(board: str, jobs: int) -> int:
    with tempfile.TemporaryDirectory(prefix="hil-azrtos-bench-") as tmp:
        dirs = [f"BUILD_DIR={tmp}/{board}", f"AZRTOS_DIR={tmp}/src", f"BOARD={board}"]
        extract_s, _ = _make(["sources", *dirs])
        compile_s, out = _make(["all", f"-j{jobs}", "BUILD_ID=bench-1", *dirs])
        cached_s, _ = _make(["all", f"-j{jobs}", "BUILD_ID=bench-2", *dirs])
    clean = extract_s + compile_s
    size = next((line for line in out.splitlines() if line.startswith("size:")), "size: ?")
    print(f"clean build {board} (-j{jobs}): check and unpack {extract_s:.1f} s, compile and link {compile_s:.1f} s, "
          f"total {clean:.1f} s (goal < {CLEAN_GOAL_S:.0f} s); {size}")
    print(f"cached rebuild (new build id): {cached_s:.1f} s (goal < {CACHED_GOAL_S:.0f} s)")
    return 0 if clean < CLEAN_GOAL_S and cached_s < CACHED_GOAL_S else 1


def boot() -> int:
    import yaml
    from cryptography.hazmat.primitives import serialization

    from harness.broker import parse_mqtt_url
    from harness.firmware import load_build
    from harness.firmware_build import build_reference
    from harness.hub.ca import lab_ca
    from harness.lab import load_lab
    from harness.provisioning import PROVISIONING_ADDRESS
    from harness.session import RunSession
    from harness.telemetry.model import PayloadType

    device, key = "hil-azrtos-bench", base64.b64encode(bytes(range(32))).decode()
    with tempfile.TemporaryDirectory(prefix="hil-azrtos-boot-") as tmp:
        root = Path(tmp) / "lab"
        root.mkdir()
        (root / "lab.yaml").write_text(yaml.safe_dump({"broker": {"kind": "mosquitto", "tls": True},
                                                       "devices": [{"id": device, "symmetric_key": key}]}))
        (root / "bench-1.yaml").write_text(yaml.safe_dump({
            "name": "bench-1", "kind": "qemu", "qemu": {"machine": "mps2-an385", "network": "tap"},
            "probe": {"id": "emu:bench-1", "target": "mps2_an385"},
            "network": {"address_from": "lease", "test_network": "emulated"},
            "capabilities": {"icmp": True}, "identity": {"device_id": device}}))
        lab = load_lab(root)
        der = lab_ca(lab).ca_certificate().public_bytes(serialization.Encoding.DER)
        folder = build_reference("mps2-an385", {}, "fast", Path(tmp) / "build", flavour="azrtos", root_ca=der)
        with RunSession(lab, boards=["bench-1"], run_dir=Path(tmp) / "run") as session:
            assert session.broker is not None and session.broker.tls_url is not None
            assert session.collector is not None
            board = session.board("bench-1")
            s = lab.settings.broker
            record = dataclasses.replace(
                session.provisioning_for(board), transport="tls", auth="sas", device_key=key, user_name="",
                secret="", broker_host=s.hub, broker_port=parse_mqtt_url(session.broker.tls_url)[1],
                dps_host=s.dps, id_scope=s.id_scope, registration_id=device)
            board.flash(load_build(folder))
            board.write_block(record.encode_sector((1, 2)), PROVISIONING_ADDRESS, what="provision")
            t0 = time.monotonic()
            board.reset()
            marks = []
            for name, pattern in (("banner", r"^HIL-REF "), ("address", r"^net: address "), ("time", r"^time: unix "),
                                  ("dps assigned", r"^dps: assigned "), ("hub connected", r"^mqtt: connected ")):
                board.console.expect(pattern, timeout=120)
                marks.append((name, time.monotonic() - t0))
            session.collector.expect_event(device, PayloadType.SYSTEM_INFORMATION, within=120)
            marks.append(("first security message", time.monotonic() - t0))
            board.close()
    print("boot to first security message (azrtos, fast preset, DPS + TLS + SAS): "
          + ", ".join(f"{name} {t:.1f} s" for name, t in marks))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("build", "boot"))
    parser.add_argument("--board", default="mps2-an385")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    return build(args.board, args.jobs) if args.what == "build" else boot()


if __name__ == "__main__":
    sys.exit(main())
