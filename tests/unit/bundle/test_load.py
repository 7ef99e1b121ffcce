"""Opening a bundle: everything checked on load, errors naming file, field and fix; a .tar.gz
unpacked without trusting it."""

from __future__ import annotations

import ipaddress
import shutil
import tarfile
from pathlib import Path

import pytest
import yaml

from harness.bundle.extract import extract_bundle
from harness.bundle.load import open_bundle
from harness.errors import ConfigError, UsageError
from harness.telemetry.archive_format import MAGIC
from tests.unit.bundle.fake import DEVICE, DEVICE_ID, GOOD_YAML, changed_yaml, make_bundle, tar_with


def test_a_good_folder_loads_with_the_device_found_in_its_capture(tmp_path: Path) -> None:
    bundle = open_bundle(make_bundle(tmp_path / "b"), tmp_path / "unpack")
    assert bundle.device_address == ipaddress.IPv4Address(DEVICE)  # the sender of the security PUBLISHes
    assert bundle.messages.device_id == DEVICE_ID and len(bundle.messages.messages) == 8
    assert bundle.manifest.notes == "seen in the field" and bundle.console is None


def test_a_tar_gz_loads_the_same(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path / "field-19")
    archive = tmp_path / "field-19.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="field-19")
    bundle = open_bundle(archive, tmp_path / "unpack")
    assert bundle.root == (tmp_path / "unpack" / "field-19").resolve() and len(bundle.messages.messages) == 8


@pytest.mark.parametrize(("change", "pattern"), [
    ({"capture": "missing.pcap"}, r"field capture: missing\.pcap is not in the bundle"),
    ({"capture": "../traffic.pcap"}, r"capture.*leaves the bundle"),
    ({"capture": "/etc/passwd"}, r"capture.*leaves the bundle"),
    ({"telemetry__format": "csv"}, r"telemetry\.format.*csv"),
    ({"firmware__build_id": None}, r"firmware\.build_id"),
    ({"colour": "red"}, r"colour"),
    ({"bundle": 2}, r"bundle"),
    ({"device__address": "10.9.0.300"}, r"not an IPv4 address"),
    ({"firmware__sha256": "abc"}, r"64 hexadecimal digits"),
])
def test_a_wrong_manifest_is_refused_naming_the_field(tmp_path: Path, change: dict[str, object],
                                                      pattern: str) -> None:
    folder = make_bundle(tmp_path / "b", changed_yaml(**change))
    with pytest.raises(ConfigError, match=pattern) as err:
        open_bundle(folder, tmp_path / "unpack")
    assert "bundle.yaml" in err.value.message


def test_a_capture_that_is_no_pcap_is_refused(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path / "b")
    (folder / "traffic.pcap").write_bytes(b"this is a text file, not a capture\n" * 3)
    with pytest.raises(ConfigError, match=r"field capture: .*traffic\.pcap is not a pcap capture") as err:
        open_bundle(folder, tmp_path / "unpack")
    assert err.value.fix


def test_a_truncated_archive_is_refused_not_half_read(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path / "b")
    data = (folder / "telemetry.bin").read_bytes()
    (folder / "telemetry.bin").write_bytes(data[:-30])
    with pytest.raises(ConfigError, match=r"telemetry\.path.*damaged or truncated"):
        open_bundle(folder, tmp_path / "unpack")


def test_an_archive_with_nothing_of_the_device_is_refused(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path / "b", messages=[])
    (folder / "telemetry.bin").write_bytes(MAGIC)
    with pytest.raises(ConfigError, match=r"telemetry.*(0 devices|no security message)"):
        open_bundle(folder, tmp_path / "unpack")


def test_a_link_out_of_the_bundle_is_refused(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path / "b")
    shutil.move(folder / "traffic.pcap", tmp_path / "elsewhere.pcap")
    (folder / "traffic.pcap").symlink_to(tmp_path / "elsewhere.pcap")
    with pytest.raises(ConfigError, match=r"capture: traffic\.pcap is a link out of the bundle"):
        open_bundle(folder, tmp_path / "unpack")


def test_a_missing_bundle_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no such file or folder"):
        open_bundle(tmp_path / "nowhere", tmp_path / "unpack")


def member(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple[tarfile.TarInfo,
                                                                                                     bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, len(data) if kind == tarfile.REGTYPE else 0, link
    return info, data


@pytest.mark.parametrize(("members", "pattern"), [
    ([member("../escape.txt")], r"outside the bundle's folder"),
    ([member("/abs.txt")], r"outside the bundle's folder"),
    ([member("b/link", kind=tarfile.SYMTYPE, link="/etc/passwd")], r"symbolic link"),
    ([member("b/hard", kind=tarfile.LNKTYPE, link="/etc/passwd")], r"hard link"),
    ([member("b/dev", kind=tarfile.CHRTYPE)], r"a device"),
    ([member("b/a"), member("b/a")], r"names .* twice"),
])
def test_a_hostile_tar_is_refused_and_writes_nothing_outside(tmp_path: Path, members: list[tuple[tarfile.TarInfo,
                                                                                                 bytes]],
                                                             pattern: str) -> None:
    archive = tar_with(tmp_path / "evil.tar.gz", members)
    dest = tmp_path / "deep" / "unpack"
    with pytest.raises(ConfigError, match=pattern):
        extract_bundle(archive, dest)
    assert not (tmp_path / "deep" / "escape.txt").exists() and not (tmp_path / "escape.txt").exists()


def test_a_tar_bigger_than_the_limit_stops_at_the_member_that_passes_it(tmp_path: Path) -> None:
    archive = tar_with(tmp_path / "big.tar.gz", [member("b/one", bytes(600)), member("b/two", bytes(600))])
    with pytest.raises(ConfigError, match=r"more than 1000 bytes.*b/two"):
        extract_bundle(archive, tmp_path / "unpack", max_bytes=1000)
    assert not (tmp_path / "unpack" / "b" / "two").exists()


def test_a_tar_of_too_many_files_is_refused(tmp_path: Path) -> None:
    archive = tar_with(tmp_path / "many.tar.gz", [member(f"b/{i}") for i in range(6)])
    with pytest.raises(ConfigError, match=r"more than 5 files"):
        extract_bundle(archive, tmp_path / "unpack", max_members=5)


@pytest.mark.parametrize("content", [b"", b"\x1f\x8b" + bytes(20), b"plain text\n", bytes(4096)])
def test_a_file_that_is_no_tar_gz_is_refused(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "b.tar.gz").write_bytes(content)
    with pytest.raises(ConfigError, match=r"not a readable \.tar\.gz bundle"):
        open_bundle(tmp_path / "b.tar.gz", tmp_path / "unpack")


def test_an_iothub_export_reads_like_the_archive(tmp_path: Path) -> None:
    import base64
    import json

    from harness.telemetry.archive import read_archive

    folder = make_bundle(tmp_path / "b", changed_yaml(telemetry__path="export.jsonl", telemetry__format="iothub-jsonl"))
    lines = [json.dumps({"EnqueuedTimeUtc": "2027-01-15T08:00:00.1234567Z", "Properties": {"$.ifid": "urn:x:app"},
                         "SystemProperties": {"connectionDeviceId": DEVICE_ID},
                         "Body": base64.b64encode(b"application telemetry").decode()})]  # skipped: not security
    for k, record in enumerate(read_archive(folder / "telemetry.bin")):
        lines.append(json.dumps({"EnqueuedTimeUtc": f"2027-01-15T08:00:{k:02d}.1234567Z",
                                 "SystemProperties": {"connectionDeviceId": DEVICE_ID},
                                 "Body": base64.b64encode(record.payload).decode()}))
    (folder / "export.jsonl").write_text("\n".join(lines) + "\n")
    bundle = open_bundle(folder, tmp_path / "unpack")
    assert len(bundle.messages.messages) == 8
    (folder / "export.jsonl").write_text(lines[1] + "\n{not json\n")
    with pytest.raises(ConfigError, match=r"line 2: not an IoT Hub export record"):
        open_bundle(folder, tmp_path / "unpack")


def test_yaml_tricks_are_refused(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path / "b")
    (folder / "bundle.yaml").write_text(yaml.safe_dump(GOOD_YAML) + "capture: other.pcap\n")
    with pytest.raises(ConfigError, match=r"capture"):
        open_bundle(folder, tmp_path / "unpack")
    (folder / "bundle.yaml").write_text("!!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError):
        open_bundle(folder, tmp_path / "unpack")



def test_a_capture_too_big_to_replay_is_refused_before_it_is_read(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path / "b")
    with (folder / "traffic.pcap").open("r+b") as fh:
        fh.truncate((1 << 30) + 1)  # sparse: no disk used
    with pytest.raises(ConfigError, match=r"capture: traffic\.pcap is 1073741825 bytes.*at most"):
        open_bundle(folder, tmp_path / "unpack")
