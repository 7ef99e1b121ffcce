"""The TLS build's SAS token code (src/sas.c over mbedTLS), built for the host, against
harness/broker/sas.py: the same token for the same key, resource and expiry, and the broker's
check accepts it."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.broker import sas

from .conftest import host_tool

pytestmark = [pytest.mark.needs("gcc"), pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def sas_token(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The token code on the host (fetches mbedTLS on first use)."""
    return host_tool(tmp_path_factory, "host-sas", "sas-token", timeout=150)


def _c_token(tool: Path, key: str, resource: str, expiry: int, key_name: str | None = None) -> str:
    out = subprocess.run([str(tool), key, resource, str(expiry), *([key_name] if key_name else [])],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode in (0, 1), out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize(("resource", "key_name"), [
    ("tls-lab.azure-devices.net/devices/hil-tls-1", None),
    ("0ne00TLS001/registrations/hil-tls-1", "registration"),
    ("hub.example/devices/odd id:~_.-+/&=%", None),
])
def test_the_device_token_is_the_one_iot_hub_checks(sas_token: Path, resource: str, key_name: str | None) -> None:
    key = bytes(range(40, 72))
    token = _c_token(sas_token, base64.b64encode(key).decode(), resource, 1_800_000_000, key_name)
    assert token == sas.make_token(key, resource, 1_800_000_000, key_name)
    sas.verify_token(token, key, resource, now=1_799_999_999, key_name=key_name)
    with pytest.raises(sas.SasRefused, match="expired"):
        sas.verify_token(token, key, resource, now=1_800_000_000, key_name=key_name)


@settings(max_examples=25, deadline=None)
@given(key=st.binary(min_size=16, max_size=47), device=st.text(
    st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=40), expiry=st.integers(0, 2**32 - 1))
def test_any_key_device_and_expiry(sas_token: Path, key: bytes, device: str, expiry: int) -> None:
    resource = sas.device_resource("hub.example", device)
    token = _c_token(sas_token, base64.b64encode(key).decode(), resource, expiry)
    assert token == sas.make_token(key, resource, expiry)


def test_a_key_that_is_not_base64_makes_no_token(sas_token: Path) -> None:
    assert _c_token(sas_token, "not base64!", "hub/devices/d", 1) == "refused"
