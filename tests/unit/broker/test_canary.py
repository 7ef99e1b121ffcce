"""The canary's decisions, tick by tick, with a client that only records what it would publish."""

from __future__ import annotations

from typing import Any

import pytest

from harness.broker.canary import Canary


class FakeClient:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.sent.append((topic, payload, qos))


class Clock:
    """The subscriber's progress count, which a test moves by hand."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count


@pytest.fixture
def parts() -> tuple[Canary, FakeClient, Clock, list[str]]:
    client, progress, stalls = FakeClient(), Clock(), []
    canary = Canary(client, "hil-collector", on_stall=stalls.append, progress=progress,  # type: ignore[arg-type]
                    interval=1.0, timeout=10.0)
    return canary, client, progress, stalls


def tick(canary: Canary, client: Any, now: float) -> str | None:
    """One tick as the thread runs it (publish outside the lock)."""
    send, stall = canary._tick(now)
    if send is not None:
        client.publish(canary.topic, str(send).encode(), qos=1)
    return stall


def test_nothing_is_sent_until_connected_and_subscribed(parts: tuple[Canary, FakeClient, Clock, list[str]]) -> None:
    canary, client, _, _ = parts
    assert tick(canary, client, 100.0) is None and client.sent == []
    canary.resume()
    tick(canary, client, 100.0)
    assert client.sent == [("hil/canary/hil-collector", b"1", 1)]


def test_one_canary_at_a_time_and_the_next_once_it_is_back(parts: tuple[Canary, FakeClient, Clock, list[str]]) -> None:
    canary, client, _, _ = parts
    canary.resume()
    tick(canary, client, 0.0)
    tick(canary, client, 1.0)
    assert len(client.sent) == 1
    canary.received(b"1")
    assert canary.returned == 1 and canary.last_round_trip is not None and canary.wait_returned(1, 0)
    tick(canary, client, 2.0)
    assert [p for _, p, _ in client.sent] == [b"1", b"2"]


def test_a_canary_that_does_not_come_back_while_nothing_arrives_is_a_stall_reported_once(
        parts: tuple[Canary, FakeClient, Clock, list[str]]) -> None:
    canary, client, _, _ = parts
    canary.resume()
    t0 = canary._seen[1]
    tick(canary, client, t0)
    assert tick(canary, client, t0 + 9.9) is None
    stall = tick(canary, client, t0 + 10.5)
    assert stall is not None and "stopped receiving" in stall and "canary 1" in stall
    assert tick(canary, client, t0 + 30.0) is None  # once
    canary.received(b"1")  # it came back late: receiving again, and the next one goes out
    tick(canary, client, t0 + 31.0)
    assert [p for _, p, _ in client.sent] == [b"1", b"2"]


def test_a_subscriber_draining_a_backlog_is_receiving(parts: tuple[Canary, FakeClient, Clock, list[str]]) -> None:
    canary, client, progress, _ = parts
    canary.resume()
    t0 = canary._seen[1]
    tick(canary, client, t0)
    for second in range(1, 60):  # the canary waits behind the backlog, but messages keep arriving
        progress.count += 1000
        assert tick(canary, client, t0 + second) is None
    # the backlog is drained (last progress at t0 + 59) and the canary still is not back: a stall
    assert tick(canary, client, t0 + 68.5) is None
    assert tick(canary, client, t0 + 69.5) is not None


def test_a_break_forgets_the_outstanding_canary(parts: tuple[Canary, FakeClient, Clock, list[str]]) -> None:
    canary, client, _, _ = parts
    canary.resume()
    t0 = canary._seen[1]
    tick(canary, client, t0)
    canary.pause()
    assert tick(canary, client, t0 + 100.0) is None and len(client.sent) == 1
    canary.resume()
    canary.received(b"1")  # the old one, delivered from the kept session: ignored
    assert canary.returned == 0
    tick(canary, client, t0 + 101.0)
    assert [p for _, p, _ in client.sent] == [b"1", b"2"]


@pytest.mark.parametrize("junk", [b"", b"x", b"1.5", b"\xff"])
def test_foreign_payloads_are_ignored(parts: tuple[Canary, FakeClient, Clock, list[str]], junk: bytes) -> None:
    canary, client, _, _ = parts
    canary.resume()
    tick(canary, client, 0.0)
    canary.received(junk)
    assert canary.returned == 0


def test_the_thread_stops_promptly(parts: tuple[Canary, FakeClient, Clock, list[str]]) -> None:
    canary, _, _, _ = parts
    canary.start()
    thread = canary._thread
    canary.stop()
    assert thread is not None and not thread.is_alive()
