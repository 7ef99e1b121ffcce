"""Firmware manifests: validation and the sha256 check behind `hil firmware verify`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from harness.errors import CheckFailed, ConfigError
from harness.firmware import FirmwareManifest, load_build, write_manifest


def manifest_dict(content: bytes, **changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "name": "ref-fast",
        "version": "0.1.0",
        "image": "firmware.bin",
        "format": "bin",
        "base_address": 0,
        "sha256": hashlib.sha256(content).hexdigest(),
        "targets": ["mps2_an385"],
        "security_module": {"version": "3.5.4"},
        "behaviour": {"boot_marker": r"HIL-REF \S+", "first_collection_delay_s": 1,
                      "intervals_s": {"high": 2, "low": 6}, "pending_time_s": 20},
        "identity": {"provisioning": "block at 0x003FF000"},
    }
    data.update(changes)
    return data


def make_build(tmp_path: Path, content: bytes = b"\x00\x01firmware", **changes: object) -> Path:
    folder = tmp_path / "build"
    folder.mkdir(exist_ok=True)
    (folder / "firmware.bin").write_bytes(content)
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest_dict(content, **changes)))
    return folder


def test_good_manifest_verifies(tmp_path: Path) -> None:
    build = load_build(make_build(tmp_path))
    assert build.verify() == build.manifest.sha256
    assert build.manifest.behaviour.first_collection_window == (1, 1)
    assert build.manifest.behaviour.intervals_s.medium == 30  # default kept
    assert build.compatible_with("mps2_an385") and not build.compatible_with("stm32l475xg")


def test_changed_image_fails_the_check(tmp_path: Path) -> None:
    folder = make_build(tmp_path)
    (folder / "firmware.bin").write_bytes(b"tampered")
    with pytest.raises(CheckFailed) as info:
        load_build(folder).verify()
    assert "sha256 does not match" in str(info.value)
    assert info.value.expected is not None and info.value.actual == hashlib.sha256(b"tampered").hexdigest()


def test_missing_image(tmp_path: Path) -> None:
    folder = make_build(tmp_path)
    (folder / "firmware.bin").unlink()
    with pytest.raises(ConfigError, match="not found beside the manifest"):
        load_build(folder).verify()


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"base_address": None}, "format bin needs base_address"),
        ({"sha256": "abc"}, "field sha256"),
        ({"format": "srec"}, "field format"),
        ({"image": "../x.bin"}, "must be a file name"),
        ({"targets": []}, "field targets"),
        ({"security_module": {"version": "3.5"}}, "MAJOR.MINOR.PATCH"),
        ({"security_module": {"version": "3.5.4", "mti": "2.3"}}, "2.3-1-0-0"),
        ({"behaviour": {"boot_marker": "("}}, "not a valid regular expression"),
        ({"behaviour": {"boot_marker": "x", "known_defects": ["gremlins"]}}, "unknown defect"),
        ({"behaviour": {"boot_marker": "x", "intervals_s": {"high": 0}}}, "intervals_s.high"),
        ({"behaviour": {"boot_marker": "x", "flow_cp": 64}}, "did you mean 'flow_cap'"),
    ],
)
def test_manifest_rules(tmp_path: Path, changes: dict[str, object], needle: str) -> None:
    folder = make_build(tmp_path, **changes)
    with pytest.raises(ConfigError) as info:
        load_build(folder)
    assert needle in str(info.value)
    assert str(folder / "manifest.yaml") in str(info.value)


def test_write_then_load_round_trips(tmp_path: Path) -> None:
    image = b"abc"
    manifest = FirmwareManifest.model_validate(manifest_dict(image))
    (tmp_path / "firmware.bin").write_bytes(image)
    write_manifest(tmp_path, manifest)
    assert load_build(tmp_path).manifest == manifest


def test_no_manifest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no firmware manifest"):
        load_build(tmp_path)


@pytest.mark.parametrize(("knobs", "bench"), [({}, False), ({"TLS_KEYLOG": "0"}, False), ({"TLS_KEYLOG": 0}, False),
                                              ({"TLS_KEYLOG": "1"}, True), ({"TLS_KEYLOG": True}, True),
                                              ({"TLS_KEYLOG": 1, "MQTT_KEEPALIVE_S": 60}, True)])
def test_an_image_that_prints_its_tls_secrets_is_marked_not_for_release(tmp_path: Path, knobs: dict[str, object],
                                                                        bench: bool) -> None:
    build = load_build(make_build(tmp_path, build={"knobs": knobs}))
    reasons = build.manifest.build.bench_only()
    assert bool(reasons) is bench
    assert all("TLS_KEYLOG=1" in why and "secrets" in why for why in reasons)
