from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

GOOD_BOARD = {
    "name": "rt1060-a",
    "kind": "pyocd",
    "probe": {"id": "cmsisdap:0229000000000000", "target": "mimxrt1060"},
    "console": {"url": "/dev/serial/by-id/usb-ARM_DAPLink-if01", "baudrate": 115200},
    "network": {"address_from": "static", "address": "192.168.50.20", "test_network": "bench"},
    "capabilities": {"icmp": True, "services": {"tcp_echo": 7}},
    "identity": {"device_id": "dev-01"},
}
GOOD_LAB = {"networks": [{"name": "bench", "subnet": "192.168.50.0/24", "interface": "eth9"}]}


#: A change value meaning "remove this key".
DELETE = "<delete>"


class LabFactory:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.write("lab.yaml", GOOD_LAB)

    def write(self, name: str, data: object) -> Path:
        path = self.root / name
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
        return path

    def board(self, filename: str = "rt1060-a.yaml", **changes: object) -> Path:
        data = copy.deepcopy(GOOD_BOARD)
        for dotted, value in changes.items():
            keys = dotted.split("__")
            node = data
            for k in keys[:-1]:
                node = node.setdefault(k, {})
            if value == DELETE:
                node.pop(keys[-1], None)
            else:
                node[keys[-1]] = value
        return self.write(filename, data)




@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LabFactory:
    monkeypatch.delenv("HIL_STATE", raising=False)
    monkeypatch.delenv("HIL_LAB", raising=False)
    return LabFactory(tmp_path / "lab")
