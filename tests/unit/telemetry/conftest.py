"""Shared messages for the telemetry unit tests."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from harness.telemetry.model import (
    Baseline,
    BaselineCheck,
    BaselineCheckResult,
    BaselineCheckSeverity,
    Event,
    Flow,
    Heartbeat,
    ListeningPort,
    ListeningPorts,
    Log,
    LogLevel,
    LogRecord,
    ModuleVersion,
    NetworkActivity,
    Process,
    ProcessEventType,
    Protocol,
    SecurityMessage,
    SystemInformation,
)

VECTORS = Path(__file__).resolve().parents[3] / "fixtures" / "vectors"


@pytest.fixture(scope="session")
def vectors() -> dict[str, bytes]:
    """The device-built buffers, by file name."""
    return {p.name: p.read_bytes() for p in sorted(VECTORS.glob("*.bin"))}


def _flow(i: int, v6: bool) -> Flow:
    if v6:
        local: IPv4Address | IPv6Address = IPv6Address(f"2001:db8::{i + 1:x}")
        remote: IPv4Address | IPv6Address = IPv6Address(f"fe80::{i + 1:x}")
    else:
        local, remote = IPv4Address(f"192.168.1.{i + 1}"), IPv4Address(f"10.0.{i}.1")
    return Flow(local, remote, 49152 + i, 8883, Protocol(i % 3), i * 100, i * 7, i, i + 1, f"exe{i}", None)


@pytest.fixture(scope="session")
def full_message() -> SecurityMessage:
    """The flow caps (64 IPv4 + 64 IPv6) and every schema-only payload in one message."""
    uid = bytes(range(16))
    return SecurityMessage(
        "defender-iot-micro-agent",
        ModuleVersion(3, 5, 4),
        (
            Event(
                uid,
                1,
                10,
                NetworkActivity(tuple(_flow(i, False) for i in range(64)), tuple(_flow(i, True) for i in range(64))),
            ),
            Event(uid, 2, 60, SystemInformation("Azure RTOS 6.3", "ThreadX", "mps2-an385")),
            Event(
                uid,
                3,
                30,
                ListeningPorts(
                    (ListeningPort(IPv4Address("0.0.0.0"), 80, Protocol.TCP),),
                    (ListeningPort(IPv6Address("::"), 53, Protocol.UDP),),
                ),
            ),
            Event(uid, 4, 60, Heartbeat()),
            Event(
                uid,
                5,
                60,
                Baseline(
                    (
                        BaselineCheck(
                            "c1", BaselineCheckResult.FAIL, "e", "d", BaselineCheckSeverity.WARNING, "fix it"
                        ),
                        BaselineCheck("c2"),
                    )
                ),
            ),
            Event(uid, 6, 60, Process("/bin/sh", 1, 0, 1000, "root", "sh -c x", ProcessEventType.EXIT, 0)),
            Event(uid, 7, 60, Log((LogRecord("boot", "main.c", LogLevel.DEBUG, 2**63, 42),))),
        ),
        timezone=-5,
    )
