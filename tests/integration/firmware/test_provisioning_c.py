"""The firmware's C provisioning decoder, built for the host with gcc, against the shared vectors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .conftest import FIRMWARE, host_tool

VECTORS = FIRMWARE.parent / "vectors" / "provisioning"
ENTRIES = json.loads((VECTORS / "vectors.json").read_text())


@pytest.fixture(scope="module")
def prov_decode(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return host_tool(tmp_path_factory, "host-tools", "prov-decode")


def _run(tool: Path, arg: str) -> dict[str, str]:
    out = subprocess.run([str(tool), arg], capture_output=True, text=True, timeout=10)
    assert out.returncode in (0, 1), out.stderr
    return dict(line.split("=", 1) for line in out.stdout.splitlines())


@pytest.mark.timeout(90)
@pytest.mark.needs("gcc")
def test_c_crc_is_crc32_ieee(prov_decode: Path) -> None:
    assert _run(prov_decode, "--crc-check") == {"crc32": "0xCBF43926"}


@pytest.mark.timeout(90)
@pytest.mark.needs("gcc")
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e["file"])
def test_c_decoder_on_vectors(prov_decode: Path, entry: dict[str, object]) -> None:
    got = _run(prov_decode, str(VECTORS / str(entry["file"])))
    assert got["status"] == entry["status"]
    if entry["status"] == "ok":
        expected = {k: str(v) for k, v in dict(entry["record"]).items()}  # type: ignore[call-overload]
        assert {k: v for k, v in got.items() if k != "status"} == expected
    else:
        assert got["error"] == entry["error"]
