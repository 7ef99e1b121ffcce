"""NetX writes every packet's Remaining Length as 4 bytes: every broker kind must accept it and the
collector must decode what arrives (the device's own flatcc-built vector)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from harness.broker import Broker, BrokerOptions, open_broker
from harness.telemetry.collector import Collector
from harness.telemetry.model import PayloadType
from harness.telemetry.topic import security_topic

from .conftest import REPO, raw_publish, remaining_length_4

VECTOR = (REPO / "fixtures" / "vectors" / "network-flatcc.bin").read_bytes()


def test_remaining_length_is_written_as_netx_does() -> None:
    assert remaining_length_4(312) == bytes([0x80 | (312 & 0x7F), 0x80 | 2, 0x80, 0x00])
    assert remaining_length_4(0) == b"\x80\x80\x80\x00"


def _check(publish_to: Broker, collect_from: Collector, device: str) -> None:
    creds = publish_to.endpoint().devices[device]
    raw_publish(publish_to.url, creds, security_topic(device), VECTOR)
    ev = collect_from.expect_event(device, PayloadType.NETWORK_ACTIVITY, within=10)
    flows = ev.payload.flows  # type: ignore[union-attr]
    assert [(str(f.remote_address), f.remote_port, f.bytes_in, f.bytes_out) for f in flows] == [
        ("10.0.0.1", 8883, 100, 200)]
    assert [e.kind for e in collect_from.events(device)] == [
        PayloadType.NETWORK_ACTIVITY, PayloadType.SYSTEM_INFORMATION, PayloadType.HEARTBEAT]
    assert collect_from.undecodable() == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", [pytest.param("mosquitto", marks=pytest.mark.needs("mosquitto")), "embedded"])
def test_broker_accepts_4_byte_remaining_length(kind: str, brokers: Callable[..., Broker], tmp_path: Path) -> None:
    b = brokers(kind)
    b.add_device("netx-1")
    with Collector.from_endpoint(b.endpoint(), tmp_path / "t.bin") as col:
        _check(b, col, "netx-1")


@pytest.mark.timeout(60)
def test_external_kind_uses_a_running_broker_as_is(brokers: Callable[..., Broker], tmp_path: Path) -> None:
    lab = brokers("embedded")  # stands in for the lab's broker
    lab.add_device("netx-2")
    c = lab.collector_credentials
    ext = open_broker("external", tmp_path / "ext",
                      BrokerOptions(url=f"mqtt://{c.username}:{c.password}@{lab.url.split('//')[1]}"))
    with ext, Collector.from_endpoint(ext.endpoint(), tmp_path / "t.bin") as col:
        assert ext.url == lab.url and ext.health().ok
        _check(lab, col, "netx-2")
