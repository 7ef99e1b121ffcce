from __future__ import annotations

import ipaddress

import pytest

from harness.errors import UsageError
from harness.netpolicy import TargetPolicy


def test_loopback_lab_and_created_networks() -> None:
    policy = TargetPolicy([ipaddress.ip_network("192.168.50.0/24")])
    assert policy.check("127.0.0.1") == ipaddress.ip_address("127.0.0.1")
    assert policy.permits("::1")
    assert policy.permits("192.168.50.20")
    assert not policy.permits("10.77.0.2")
    policy.allow_created("hil-ab12", ipaddress.ip_network("10.77.0.0/30"))
    assert policy.permits("10.77.0.2")
    policy.forget_created("hil-ab12")
    assert not policy.permits("10.77.0.2")


@pytest.mark.parametrize("address", ["8.8.8.8", "192.168.1.1", "10.0.0.1", "2001:db8::1"])
def test_anything_else_is_refused(address: str) -> None:
    policy = TargetPolicy([ipaddress.ip_network("192.168.50.0/24")])
    with pytest.raises(UsageError) as info:
        policy.check(address)
    assert "refusing to send traffic" in str(info.value) and "192.168.50.0/24" in str(info.value)


def test_not_an_address() -> None:
    with pytest.raises(UsageError, match="not an IP address"):
        TargetPolicy().check("board.local")
