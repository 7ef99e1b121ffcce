"""Private labs for tests: emulated boards named and identified as a test wants, in a folder of
its own (its own state: leases, machines, flash), brought up through RunSession and Board."""

from __future__ import annotations

from pathlib import Path

import yaml

from harness.lab import Lab, load_lab

MACHINE_TARGETS = {"mps2-an385": "mps2_an385", "mps2-an386": "mps2_an386"}


def emulated_board(name: str, device: str, *, machine: str = "mps2-an385", network: str = "tap") -> dict[str, object]:
    return {
        "name": name, "kind": "qemu", "qemu": {"machine": machine, "network": network},
        "probe": {"id": f"emu:{name}", "target": MACHINE_TARGETS[machine]},
        "network": {"address_from": "lease", "test_network": "emulated"},
        "capabilities": {"icmp": True, "rst_closed_ports": True, "services": {"tcp_echo": 7, "udp_echo": 7}},
        "identity": {"device_id": device},
    }


def private_lab(folder: Path, boards: list[dict[str, object]], *, broker_kind: str = "mosquitto") -> Lab:
    """A lab folder holding ``boards`` (see :func:`emulated_board`); its state lives inside it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lab.yaml").write_text(yaml.safe_dump({"name": folder.name, "broker": {"kind": broker_kind}}))
    for board in boards:
        (folder / f"{board['name']}.yaml").write_text(yaml.safe_dump(board))
    return load_lab(folder)
