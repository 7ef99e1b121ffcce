from __future__ import annotations

import pytest

from harness.errors import UsageError
from harness.netpolicy import TargetPolicy
from harness.traffic import icmp_echo_request, inet_checksum, ping


def test_rfc1071_example() -> None:
    # RFC 1071: the words 0001 f203 f4f5 f6f7 sum to ddf2; the checksum is its complement
    assert inet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


def test_odd_length_is_padded() -> None:
    assert inet_checksum(b"\x01") == inet_checksum(b"\x01\x00")


def test_echo_request_checks_out() -> None:
    packet = icmp_echo_request(0x4849, 7, b"payload!")
    assert packet[0] == 8 and packet[1] == 0 and packet[8:] == b"payload!"
    assert inet_checksum(packet) == 0  # a correct checksum makes the whole sum zero


def test_policy_refuses_before_anything_is_sent() -> None:
    with pytest.raises(UsageError, match=r"refusing to send traffic to 192\.0\.2\.1"):
        ping("192.0.2.1", policy=TargetPolicy())
