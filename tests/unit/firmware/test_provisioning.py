"""harness.provisioning: the record's encoding, its validation, and the shared vectors."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import struct
import zlib
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.provisioning import (
    PROVISIONING_ADDRESS,
    RECORD_LENGTH,
    SECTOR_SIZE,
    ProvisioningError,
    ProvisioningRecord,
    block_version,
    decode,
)

VECTORS = Path(__file__).resolve().parents[3] / "fixtures" / "vectors" / "provisioning"

RECORD = ProvisioningRecord(device_id="dev-1", broker_host="broker.hil.test", broker_port=1883,
                            user_name="hub/dev-1/?api-version=2021-04-12", secret="pw",
                            time_server="time.hil.test")


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("provisioning_vectors", VECTORS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_constants_match_the_flash_layout() -> None:
    assert PROVISIONING_ADDRESS == 0x003FF000
    assert SECTOR_SIZE == 4096
    assert PROVISIONING_ADDRESS + SECTOR_SIZE == 4 * 1024 * 1024


def test_crc_is_crc32_ieee() -> None:
    # the catalogue check value of CRC-32/IEEE (ISO-HDLC); the C side uses the same in its test
    assert zlib.crc32(b"123456789") == 0xCBF43926


def test_encode_layout() -> None:
    raw = RECORD.encode()
    assert len(raw) == RECORD_LENGTH
    assert raw[:4] == b"HILP"
    assert struct.unpack_from("<HHBBH", raw, 4) == (1, RECORD_LENGTH, 0, 0, 1883)
    assert raw[0x1C:0x1C + 6] == b"dev-1\0"
    assert struct.unpack_from("<I", raw, RECORD_LENGTH - 4)[0] == zlib.crc32(raw[:-4])
    sector = RECORD.encode_sector()
    assert len(sector) == SECTOR_SIZE and sector[RECORD_LENGTH:] == b"\xff" * (SECTOR_SIZE - RECORD_LENGTH)


def test_roundtrip_static() -> None:
    rec = dataclasses.replace(RECORD, address_mode="static", address="192.168.7.20",
                              netmask="255.255.255.0", gateway="192.168.7.1", dns="192.168.7.1")
    assert decode(rec.encode_sector()) == rec
    assert decode(rec.encode()) == rec


# at most 15 characters: 60 bytes of UTF-8 at worst, within the smallest field (63 bytes)
texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1,
                max_size=15)


@given(device_id=texts, host=texts, user=texts, secret=texts, time_server=texts,
       port=st.integers(1, 65535))
def test_roundtrip_any_text(device_id: str, host: str, user: str, secret: str, time_server: str,
                            port: int) -> None:
    rec = ProvisioningRecord(device_id=device_id, broker_host=host, broker_port=port, user_name=user,
                             secret=secret, time_server=time_server)
    assert decode(rec.encode_sector()) == rec


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"device_id": ""}, "device_id", "empty"),
        ({"device_id": "x" * 128}, "device_id", "more than the 127"),
        ({"secret": "a\0b"}, "secret", "NUL"),
        ({"broker_port": 0}, "broker_port", "0"),
        ({"broker_port": 70000}, "broker_port", "70000"),
        ({"address_mode": "auto"}, "address_mode", "auto"),
        ({"address_mode": "static"}, "address", "0.0.0.0 with address_mode static"),
        ({"address_mode": "static", "address": "10.0.0.2"}, "netmask", "0.0.0.0"),
        ({"address_mode": "static", "address": "10.0.0.2", "netmask": "255.0.255.0"}, "netmask",
         "contiguous"),
        ({"gateway": "10.0.0.1"}, "address_mode", "dhcp with a static"),
        ({"dns": "not-an-ip"}, "dns", "not an IPv4 address"),
    ],
)
def test_validate_names_field_and_fix(change: dict[str, object], field: str, words: str) -> None:
    rec = dataclasses.replace(RECORD, **change)  # type: ignore[arg-type]
    with pytest.raises(ProvisioningError) as info:
        rec.encode()
    assert info.value.field == field
    assert info.value.kind == "field"
    assert words in info.value.reason
    assert info.value.fix, "every error says how to fix it"
    assert f"field {field}" in str(info.value)


def test_committed_vectors_are_current() -> None:
    gen = _generator()
    data = gen.vectors()
    for name, (blob, _) in data.items():
        assert (VECTORS / name).read_bytes() == blob, f"{name} differs: rerun {VECTORS / 'generate.py'}"
    assert json.loads((VECTORS / "vectors.json").read_text()) == json.loads(json.dumps(gen.table()))


@pytest.mark.parametrize("entry", json.loads((VECTORS / "vectors.json").read_text()),
                         ids=lambda e: e["file"])
def test_python_decoder_on_vectors(entry: dict[str, object]) -> None:
    blob = (VECTORS / str(entry["file"])).read_bytes()
    if entry["status"] == "ok":
        record = dict(entry["record"])  # type: ignore[call-overload]
        record.pop("version")
        assert decode(blob) == ProvisioningRecord(**record)
    else:
        with pytest.raises(ProvisioningError) as info:
            decode(blob)
        assert info.value.kind == entry["status"]
        assert info.value.console_line == f"provisioning: {entry['error']}"


def test_short_input_reads_as_empty() -> None:
    with pytest.raises(ProvisioningError) as info:
        decode(b"\xff\xff")
    assert info.value.kind == "empty"


V2 = dataclasses.replace(RECORD, user_name="", secret="", transport="tls", auth="sas", device_key="a2V5MQ==",
                         dps_host="dps.hil.test", id_scope="0ne0001", registration_id="dev-1")


def test_a_record_is_encoded_in_the_lowest_version_that_carries_it() -> None:
    assert RECORD.min_version == 1 and len(RECORD.encode()) == 864
    assert RECORD.encode((1, 2)) == RECORD.encode((1,))
    v2_of_plain = RECORD.encode((2,))
    assert len(v2_of_plain) == 1252 and v2_of_plain[864 - 4:864 + 4] == b"\0" * 8
    assert decode(v2_of_plain) == RECORD and block_version(v2_of_plain) == 2
    assert V2.min_version == 2 and V2.features == {"tls", "sas", "dps"}
    raw = V2.encode()
    assert struct.unpack_from("<HH", raw, 4) == (2, 1252)
    assert raw[0x35C:0x360] == b"\x01\x01\0\0" and raw[0x360:0x369] == b"a2V5MQ==\0"
    assert struct.unpack_from("<I", raw, 0x4E0)[0] == zlib.crc32(raw[:0x4E0])
    assert decode(V2.encode_sector()) == V2


def test_a_version_2_record_for_a_version_1_image_is_refused() -> None:
    with pytest.raises(ProvisioningError) as info:
        V2.encode((1,))
    assert info.value.kind == "version" and "needs version 2" in info.value.reason
    assert "--tls" in info.value.fix


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"transport": "udp"}, "transport", "'udp'"),
        ({"auth": "x509", "user_name": "u", "secret": "p"}, "auth", "'x509'"),
        ({"secret": "sig"}, "secret", "set with auth sas"),
        ({"device_key": ""}, "device_key", "empty with auth sas"),
        ({"device_key": "k" * 64}, "device_key", "more than the 63"),
        ({"device_key": "not base64!"}, "device_key", "not base64"),
        ({"device_key": "abc"}, "device_key", "not base64"),
        ({"id_scope": ""}, "id_scope", "empty with dps_host set"),
        ({"registration_id": ""}, "registration_id", "empty with dps_host set"),
        ({"dps_host": ""}, "id_scope", "set without dps_host"),
        ({"auth": "password", "device_key": "", "user_name": "u", "secret": "p"}, "auth",
         "password with dps_host set"),
        ({"auth": "password", "user_name": "u", "secret": "p"}, "device_key", "set with auth password"),
        ({"auth": "password", "device_key": "", "dps_host": "", "id_scope": "", "registration_id": ""},
         "user_name", "empty"),
    ],
)
def test_version_2_rules_name_field_and_fix(change: dict[str, object], field: str, words: str) -> None:
    rec = dataclasses.replace(V2, **change)  # type: ignore[arg-type]
    with pytest.raises(ProvisioningError) as info:
        rec.encode()
    assert (info.value.field, info.value.kind) == (field, "field")
    assert words in info.value.reason and info.value.fix
