"""The Azure RTOS flavour's build: upstream archives are checked before they are unpacked (a damaged
or missing one stops the build and says which), an unknown flavour or a CA for the lwIP flavour is a
usage error, and the manifest names the stack each flavour runs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness.errors import UsageError
from harness.firmware_build import AZRTOS_FILES, FIRMWARE_DIR, azrtos_sources, build_reference

pytestmark = [pytest.mark.needs("make", "azrtos-sources")]


def _sources(tmp_path: Path) -> Path:
    copy = tmp_path / "third_party"
    copy.mkdir()
    for name in AZRTOS_FILES:
        shutil.copyfile(azrtos_sources() / name, copy / name)
    return copy


def _make_sources(sources: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", "-C", str(FIRMWARE_DIR), "-f", "azrtos/Makefile",
                           "sources", f"AZRTOS_SOURCES={sources}", f"AZRTOS_DIR={dest}"],
                          capture_output=True, text=True, timeout=120, check=False)


def test_good_archives_are_unpacked_where_the_middleware_expects_the_sdk(tmp_path: Path) -> None:
    dest = tmp_path / "src"
    proc = _make_sources(_sources(tmp_path), dest)
    assert proc.returncode == 0, proc.stderr
    assert (dest / "threadx" / "ports" / "cortex_m3" / "gnu" / "src" / "tx_thread_schedule.S").is_file()
    assert (dest / "netxduo" / "addons" / "azure_iot" / "azure-sdk-for-c" / "sdk" / "inc" / "azure").is_dir()


def test_a_damaged_archive_stops_the_build_and_is_named(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    damaged = sources / "netxduo-6.4.2.tar.xz"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    dest = tmp_path / "src"
    proc = _make_sources(sources, dest)
    assert proc.returncode != 0
    assert f"{damaged}: sha256 " in proc.stderr and "SHA256SUMS says" in proc.stderr, proc.stderr
    assert not dest.exists(), "a damaged archive was unpacked"


def test_a_missing_archive_or_folder_is_named(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    (sources / "threadx-6.4.2.tar.xz").unlink()
    proc = _make_sources(sources, tmp_path / "src")
    assert proc.returncode != 0 and f"{sources}/threadx-6.4.2.tar.xz is missing" in proc.stderr, proc.stderr
    proc = _make_sources(tmp_path / "nowhere", tmp_path / "src")
    assert proc.returncode != 0 and "is not a folder: point AZRTOS_SOURCES" in proc.stderr, proc.stderr


def test_a_bad_flavour_and_a_tls_knob_without_tls_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown flavour 'netx'"):
        build_reference("mps2-an385", {}, None, tmp_path / "a", flavour="netx")
    with pytest.raises(UsageError, match="knob SAS_LIFETIME_S belongs to the TLS build"):
        build_reference("mps2-an385", {"SAS_LIFETIME_S": 60}, None, tmp_path / "b", flavour="lwip")


@pytest.mark.needs("arm-gcc")
@pytest.mark.timeout(300)
def test_both_boards_build_and_the_manifest_names_the_stack(tmp_path: Path) -> None:
    from harness.firmware import load_build

    for board in ("mps2-an385", "mps2-an386"):
        m = load_build(build_reference(board, {}, None, tmp_path / board, flavour="azrtos")).manifest
        assert m.build.stack == "netxduo" and m.targets == (board.replace("-", "_"),)
        assert m.identity.provisioning_features == ("tls", "sas", "dps")
        assert m.behaviour.os_info == "Azure RTOS 6.4"
        assert "THREADX_VERSION" in m.build.knobs and "STACK" not in m.build.knobs
