"""A message the archive cannot hold is refused by the broker (the connection closes, no PUBACK), on
both kinds; the largest one the broker takes is archived whole."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from harness.broker import Broker
from harness.broker.base import MAX_PACKET
from harness.telemetry.archive import read_archive
from harness.telemetry.collector import Collector
from harness.telemetry.model import PayloadType
from harness.telemetry.topic import compose_topic, security_topic

from .conftest import heartbeat_payload, publish_outcome, publish_size, raw_publish

KINDS = [pytest.param("mosquitto", marks=pytest.mark.needs("mosquitto")), "embedded"]
MIB = 1024 * 1024


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", KINDS)
def test_a_70_mib_message_is_refused_not_acknowledged(kind: str, brokers: Callable[..., Broker],
                                                      tmp_path: Path) -> None:
    b = brokers(kind)
    a = b.add_device("dev-a")
    archive = tmp_path / "telemetry.bin"
    with Collector.from_endpoint(b.endpoint(), archive) as col:
        assert publish_outcome(b.url, a, security_topic("dev-a"), bytes(70 * MIB)) == "closed"
        raw_publish(b.url, a, security_topic("dev-a"), heartbeat_payload(1))  # the device is welcome again
        col.expect_event("dev-a", PayloadType.HEARTBEAT, within=30)
        assert col.problems() == ""
    assert [len(r.payload) for r in read_archive(archive)] == [len(heartbeat_payload(1))]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", KINDS)
def test_the_largest_message_taken_is_archived_and_one_byte_more_is_refused(
        kind: str, brokers: Callable[..., Broker], tmp_path: Path) -> None:
    b = brokers(kind)
    a = b.add_device("dev-a")
    topic = compose_topic("dev-a", {"k": "v"})  # application telemetry: archived, not decoded
    largest = publish_size(topic, MAX_PACKET)
    archive = tmp_path / "telemetry.bin"
    with Collector.from_endpoint(b.endpoint(), archive) as col:
        assert publish_outcome(b.url, a, topic, bytes(largest + 1)) == "closed"
        got = []
        col.on_received(lambda item: got.append(len(item.payload)))
        assert publish_outcome(b.url, a, topic, bytes(largest)) == "acknowledged"
        raw_publish(b.url, a, security_topic("dev-a"), heartbeat_payload(1))
        col.expect_event("dev-a", PayloadType.HEARTBEAT, within=60)
        assert got[0] == largest and col.problems() == ""
    assert [len(r.payload) for r in read_archive(archive)] == [largest, len(heartbeat_payload(1))]
