"""harness.firmware_build without running make: knob checks and the manifest it writes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.errors import UsageError
from harness.firmware import load_build, write_manifest
from harness.firmware_build import (
    IMAGE_STEM,
    _knob_str,
    _mti,
    parse_assignments,
    reference_manifest,
    resolve_knobs,
)


@pytest.mark.parametrize(("name", "value", "text"), [
    ("TEST_PUBLISH", True, "1"), ("TEST_PUBLISH", False, "0"), ("ECHO_PORT", 7, "7"),
    ("VERSION", "1.2.3-rc1", "1.2.3-rc1"), ("ASC_MODULE_VERSION", "3.5.4", "3.5.4"),
])
def test_knob_values_become_make_text(name: str, value: object, text: str) -> None:
    assert _knob_str(name, value) == text


@pytest.mark.parametrize(("name", "value", "words"), [
    ("test_publish", 1, "bad knob name"),
    ("BOARD", "mps2-an386", "--board"),
    ("BUILD_DIR", "/tmp/x", "bad knob name"),
    ("VERSION", "1.0 beta", "characters"),
    ("ASC_MODULE_ID", 'x"; rm -rf', "characters"),
])
def test_bad_knobs_are_refused_with_a_fix(name: str, value: object, words: str) -> None:
    with pytest.raises(UsageError) as info:
        _knob_str(name, value)
    assert words in str(info.value)


def test_mti_follows_the_module_version() -> None:
    assert _mti("2.0.3") == "2.0-1-0-0"
    assert _mti("3.2.1") == "2.0-1-0-0"
    assert _mti("3.3.1") == "2.3-1-0-0"
    assert _mti("3.5.4") == "2.3-1-0-0"


def _fake_build(tmp_path: Path) -> Path:
    out = tmp_path / "ref-fast"
    out.mkdir()
    (out / f"{IMAGE_STEM}.elf").write_bytes(b"\x7fELF fake image")
    return out


def test_manifest_from_knobs(tmp_path: Path) -> None:
    out = _fake_build(tmp_path)
    knobs = {"BOARD": "mps2-an386", "VERSION": "2.0.1", "BUILD_ID": "b42", "ECHO_PORT": "7007",
             "ASC_MODULE_VERSION": "3.2.1", "ASC_FIRST_COLLECTION_S": "1", "ASC_HIGH_INTERVAL_S": "2",
             "ASC_LOW_INTERVAL_S": "6", "ASC_PENDING_TIME_S": "20", "ASC_FLOW_CAP": "16",
             "UPSTREAM_SUSPEND_LEAK": "1"}
    m = reference_manifest(out, "mps2-an386", knobs, 1000, 200)
    assert (m.name, m.version, m.image, m.format, m.base_address) == ("ref-fast", "2.0.1",
                                                                      "hil-ref.elf", "elf", 0)
    assert m.targets == ("mps2_an386",)
    assert (m.security_module.version, m.security_module.mti) == ("3.2.1", "2.0-1-0-0")
    b = m.behaviour
    assert b.first_collection_delay_s == 1
    assert (b.intervals_s.high, b.intervals_s.low) == (2, 6)
    assert (b.flow_cap, b.pending_time_s) == (16, 20)
    assert b.known_defects == ("suspend-leak",)
    assert (b.services.tcp_echo, b.services.udp_echo, b.services.icmp) == (7007, 7007, True)
    assert re.match(b.boot_marker, "HIL-REF 2.0.1 build b42 board mps2-an386")
    assert not re.match(b.boot_marker, "HIL-REF 2.0.1 build b43 board mps2-an386")
    assert m.identity.provisioning == "block at 0x003FF000"
    assert m.build.build_id == "b42" and m.build.code_bytes == 1000 and m.build.ram_bytes == 200
    assert "BOARD" not in m.build.knobs and m.build.knobs["ASC_FLOW_CAP"] == "16"
    write_manifest(out, m)
    loaded = load_build(out)
    assert loaded.manifest == m
    assert loaded.verify() == m.sha256


def test_manifest_defaults_without_agent_knobs(tmp_path: Path) -> None:
    m = reference_manifest(_fake_build(tmp_path), "mps2-an385", {"VERSION": "1.0.0"}, None, None)
    assert m.security_module.version == "3.5.4" and m.security_module.mti == "2.3-1-0-0"
    assert m.behaviour.first_collection_window == (30, 89)
    assert (m.behaviour.intervals_s.high, m.behaviour.intervals_s.low) == (10, 60)
    assert m.behaviour.known_defects == ()


def test_the_manifest_says_which_block_versions_and_features_a_build_reads(tmp_path: Path) -> None:
    plain = reference_manifest(_fake_build(tmp_path), "mps2-an385", {"VERSION": "1.0.0"}, None, None)
    assert plain.identity.provisioning_versions == (1, 2) and plain.identity.provisioning_features == ()
    assert plain.identity.trusted_ca_sha256 is None
    tls = reference_manifest(tmp_path / "ref-fast", "mps2-an385", {"VERSION": "1.0.0", "TLS": "1"}, None, None,
                             ca_sha256="ab" * 32)
    assert tls.identity.provisioning_features == ("tls", "sas", "dps")
    assert tls.identity.trusted_ca_sha256 == "ab" * 32 and tls.build.knobs["TLS"] == "1"


def test_the_tls_knob_is_chosen_with_the_option_not_set() -> None:
    with pytest.raises(UsageError, match="--tls") as info:
        resolve_knobs("mps2-an385", {"TLS": "1"}, None)
    assert info.value.fix and "lab CA" in info.value.fix


def test_parse_assignments() -> None:
    assert parse_assignments(["TEST_PUBLISH=1", "VERSION=2.0.0", "ASC_FIRST_COLLECTION_S="]) == {
        "TEST_PUBLISH": "1", "VERSION": "2.0.0", "ASC_FIRST_COLLECTION_S": ""}
    assert parse_assignments(None) == {}
    for bad in ("TEST_PUBLISH", "=1"):
        with pytest.raises(UsageError, match="NAME=VALUE"):
            parse_assignments([bad])
