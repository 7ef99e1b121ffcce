"""The collector's streams and waits, fed through ``ingest`` (no broker, no network)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path

import pytest

from harness.broker.credentials import DeviceCredentials
from harness.errors import CheckFailed, WaitTimeout
from harness.telemetry import collector as collector_module
from harness.telemetry import waits as waits_module
from harness.telemetry.archive import ArchiveWriter, read_archive
from harness.telemetry.codec import encode
from harness.telemetry.collector import Collector
from harness.telemetry.flowmatch import FlowSpec
from harness.telemetry.model import (
    Event,
    Flow,
    Heartbeat,
    ModuleVersion,
    NetworkActivity,
    PayloadType,
    Protocol,
    SecurityMessage,
)
from harness.telemetry.streams import DeviceStream
from harness.telemetry.topic import compose_topic, security_topic

REPO = Path(__file__).resolve().parents[3]


def heartbeat(n: int, t: int = 1700000000) -> bytes:
    return encode(SecurityMessage("mod", ModuleVersion(3, 5, 4),
                                  (Event(n.to_bytes(16, "big"), t + n, 60, Heartbeat()),)))


def network(n: int, *flows: Flow) -> bytes:
    return encode(SecurityMessage("mod", ModuleVersion(3, 5, 4),
                                  (Event(n.to_bytes(16, "big"), 1700000000 + n, 10, NetworkActivity(ipv4=flows)),)))


def tcp(rport: int, bout: int, remote: str = "10.77.0.1") -> Flow:
    return Flow(ip_address("10.77.0.2"), ip_address(remote), 40000, rport, Protocol.TCP, 0, bout)


@pytest.fixture
def col(tmp_path: Path) -> Iterator[Collector]:
    c = Collector("mqtt://127.0.0.1:1", DeviceCredentials("hil-collector", "hil-collector", "x"),
                  tmp_path / "telemetry.bin")
    yield c


def later(delay: float, fn: object, *args: object) -> threading.Timer:
    t = threading.Timer(delay, fn, args)  # type: ignore[arg-type]
    t.start()
    return t


def test_redelivered_events_are_counted_once(col: Collector) -> None:
    col.ingest(security_topic("a"), heartbeat(1))
    col.ingest(security_topic("a"), heartbeat(1), dup=True)
    col.ingest(security_topic("a"), heartbeat(2))
    s = col.stream("a")
    assert len(s.messages) == 3 and len(s.events) == 2 and s.duplicate_events == 1
    assert [e.id[-1] for e in col.events("a")] == [1, 2]


def test_undecodable_is_kept_and_reported(col: Collector) -> None:
    item = col.ingest(security_topic("a"), b"\x01\x02 not flatbuffers")
    assert item.error is not None and item.message is None
    assert col.undecodable() == [item]
    assert "1 undecodable message(s)" in col.problems()


def test_real_device_vectors_decode(col: Collector) -> None:
    col.ingest(security_topic("a"), (REPO / "fixtures/vectors/network-flatcc.bin").read_bytes())
    kinds = [e.kind for e in col.events("a")]
    assert kinds == [PayloadType.NETWORK_ACTIVITY, PayloadType.SYSTEM_INFORMATION, PayloadType.HEARTBEAT]


def test_application_telemetry_and_odd_topics_are_kept_apart(col: Collector) -> None:
    col.ingest(compose_topic("a", {"temp": "1"}), b'{"t": 21}')
    col.ingest(security_topic("a", "mod1"), heartbeat(1))
    col.ingest("somewhere/else", b"x")
    s = col.stream("a")
    assert len(s.application) == 1 and len(s.messages) == 1 and s.messages[0].module_id == "mod1"
    assert len(col.unparsed) == 1


def test_wait_for_wakes_when_the_message_arrives(col: Collector) -> None:
    t0 = time.monotonic()
    later(0.05, col.ingest, security_topic("a"), heartbeat(7))
    ev = col.wait_for("a", lambda e: e.id[-1] == 7, timeout=5)
    assert ev.id[-1] == 7 and time.monotonic() - t0 < 1.0


def test_since_ignores_what_came_before_the_mark(col: Collector) -> None:
    col.ingest(security_topic("a"), heartbeat(1))
    mark = col.mark()
    with pytest.raises(WaitTimeout):
        col.expect_event("a", PayloadType.HEARTBEAT, within=0.05, since=mark)
    assert col.expect_event("a", PayloadType.HEARTBEAT, within=0.05).id[-1] == 1


def test_timeout_says_what_was_awaited_what_came_and_where_the_archive_is(col: Collector) -> None:
    col.ingest(security_topic("a"), heartbeat(3))
    col.ingest(security_topic("a"), b"junk!")
    col.ingest(security_topic("b"), heartbeat(4))
    with pytest.raises(WaitTimeout) as info:
        col.expect_event("a", PayloadType.NETWORK_ACTIVITY, within=0.1)
    text = str(info.value)
    assert "waiting for a NETWORK_ACTIVITY event from device 'a'" in text
    assert "2 security message(s) from 'a'" in text
    assert "HEARTBEAT id=00000000000000000000000000000003" in text and "UNDECODABLE (5 bytes)" in text
    assert str(col.archive_path) in text
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, CheckFailed)


def test_timeout_for_a_silent_device_names_the_others(col: Collector) -> None:
    col.ingest(security_topic("b"), heartbeat(4))
    with pytest.raises(WaitTimeout, match=r"no security message from 'a'.*other devices sent some: b"):
        col.expect_event("a", PayloadType.HEARTBEAT, within=0.05)


def test_expect_flows_sums_windows_and_reports_extras(col: Collector) -> None:
    mark = col.mark()
    col.ingest(security_topic("a"), network(1, tcp(5000, 600), tcp(1883, 90)))
    later(0.05, col.ingest, security_topic("a"), network(2, tcp(5000, 500), tcp(80, 1, "10.77.0.9")))
    m = col.expect_flows("a", [FlowSpec(Protocol.TCP, remote_port=5000, min_bytes_out=1000)], within=5,
                         since=mark)
    assert m.matched[0][1].bytes_out == 1100
    assert [f.remote_port for f in m.background] == [1883]


def test_expect_flows_timeout_shows_the_match(col: Collector) -> None:
    col.ingest(security_topic("a"), network(1, tcp(5000, 10)))
    with pytest.raises(WaitTimeout) as info:
        col.expect_flows("a", [FlowSpec(Protocol.UDP, remote_port=7, label="echo")], within=0.05)
    text = str(info.value)
    assert "missing: echo: UDP *:*->*:7" in text and "extra:   TCP 10.77.0.2:40000->10.77.0.1:5000" in text


def test_assert_none_fails_at_once_and_passes_on_silence(col: Collector) -> None:
    col.assert_none("a", lambda e: e.kind == PayloadType.HEARTBEAT, during=0.05)
    later(0.05, col.ingest, security_topic("a"), heartbeat(9))
    t0 = time.monotonic()
    with pytest.raises(CheckFailed, match="must not happen"):
        col.assert_none("a", lambda e: e.kind == PayloadType.HEARTBEAT, during=10, what="a heartbeat")
    assert time.monotonic() - t0 < 2


def test_cadence_measures_intervals(col: Collector) -> None:
    for n, at in ((1, 100.0), (2, 110.0), (3, 121.0)):
        col.ingest(security_topic("a"), heartbeat(n * 10), received=at)
    cad = col.cadence("a", PayloadType.HEARTBEAT)
    assert cad.received_intervals == (10.0, 11.0) and cad.reported_intervals == (10, 10)
    cad.check(10.5, 0.6)
    with pytest.raises(CheckFailed, match="cadence"):
        cad.check(10, 0.5)


def test_expect_cadence_waits_for_the_count(col: Collector) -> None:
    col.ingest(security_topic("a"), heartbeat(1))
    later(0.05, col.ingest, security_topic("a"), heartbeat(2))
    assert col.expect_cadence("a", PayloadType.HEARTBEAT, 2, within=5).count == 2


def test_a_predicate_may_read_the_collector_and_its_errors_reach_the_waiter(col: Collector) -> None:
    later(0.05, col.ingest, security_topic("a"), heartbeat(1))
    assert col.wait_for("a", lambda e: len(col.events("a")) == 1, timeout=5).id[-1] == 1

    def broken(e: Event) -> bool:
        raise ValueError("predicate bug")

    later(0.05, col.ingest, security_topic("a"), heartbeat(2))
    with pytest.raises(ValueError, match="predicate bug"):
        col.wait_for("a", broken, timeout=5, since=col.mark())


def test_expect_events_counts_all_or_one_kind(col: Collector) -> None:
    col.ingest(security_topic("a"), heartbeat(1))
    col.ingest(security_topic("a"), network(2, tcp(5000, 1)))
    assert len(col.expect_events("a", 2, within=1)) == 2
    assert len(col.expect_events("a", 1, within=1, kind=PayloadType.NETWORK_ACTIVITY)) == 1
    with pytest.raises(WaitTimeout, match="waiting for 2 HEARTBEAT events"):
        col.expect_events("a", 2, within=0.05, kind=PayloadType.HEARTBEAT)


def test_topics_are_parsed_once_and_the_cache_is_bounded(col: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collector_module, "TOPIC_CACHE", 2)
    for n in range(2):
        col.ingest(security_topic("a"), heartbeat(n))
        col.ingest("somewhere/else", b"x")
    assert col._topics == {security_topic("a"): ("a", None, True), "somewhere/else": ("", None, False)}
    for device in ("b", "c"):  # past the bound: parsed each time, still right
        col.ingest(security_topic(device, "m"), heartbeat(7))
    assert len(col._topics) == 2
    assert col.devices() == ["a", "b", "c"] and col.stream("c").messages[0].module_id == "m"
    assert len(col.unparsed) == 2 and len(col.events("a")) == 2


def test_repeated_event_ids_within_one_message_count_once(col: Collector) -> None:
    uid = bytes(16)
    twice = encode(SecurityMessage("mod", ModuleVersion(3, 5, 4),
                                   (Event(uid, 1, 60, Heartbeat()), Event(uid, 2, 60, Heartbeat()))))
    first = col.ingest(security_topic("a"), twice)
    again = col.ingest(security_topic("a"), heartbeat(0))  # the same id, alone
    assert len(first.new_events) == 1 and first.duplicate_events == 1
    assert again.new_events == () and again.duplicate_events == 1
    assert col.stream("a").duplicate_events == 2 and len(col.events("a")) == 1


def test_ingest_archives_each_message_before_storing_it(col: Collector) -> None:
    col._archive = ArchiveWriter(col.archive_path)  # what start() opens, without a broker
    items = [col.ingest(security_topic("a"), heartbeat(n)) for n in range(3)]
    col._archive.close()
    assert [i.record for i in items] == [0, 1, 2]
    assert [r.payload for r in read_archive(col.archive_path)] == [heartbeat(n) for n in range(3)]


def test_the_history_is_frozen_out_of_the_gc_only_in_a_burst(col: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    frozen: list[int] = []
    monkeypatch.setattr(collector_module.gc, "freeze", lambda: frozen.append(col.mark()))
    monkeypatch.setattr(collector_module, "GC_FREEZE_EVERY", 5)
    monkeypatch.setattr(collector_module, "GC_FREEZE_BURST", 0.0)  # no pace is a burst
    for n in range(20):
        col.ingest(security_topic("a"), heartbeat(n))
    assert frozen == [] and not col._froze
    monkeypatch.setattr(collector_module, "GC_FREEZE_BURST", 60.0)  # any pace is
    for n in range(20, 40):
        col.ingest(security_topic("a"), heartbeat(n))
    assert frozen == [25, 30, 35, 40] and col._froze


def test_a_wait_is_checked_only_when_new_events_could_satisfy_it(col: Collector,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[int] = []
    run = waits_module.Watch.run

    def counting(self: waits_module.Watch[object], stream: DeviceStream) -> bool:
        runs.append(len(stream.events))
        return run(self, stream)

    monkeypatch.setattr(waits_module.Watch, "run", counting)
    col.ingest(security_topic("a"), heartbeat(1))
    done = threading.Event()
    got: list[list[Event]] = []

    def waiter() -> None:
        got.append(col.expect_events("a", 4, within=5))
        done.set()

    t = threading.Thread(target=waiter)
    watches = col._watches
    t.start()
    while "a" not in watches and t.is_alive():  # registered (the check ran once, on 1 event)
        t.join(0.001)
    for n in (1, 2, 2, 3, 3, 4):  # redeliveries bring no new event
        col.ingest(security_topic("a"), heartbeat(n))
    assert done.wait(5) and len(got[0]) == 4
    assert runs == [1, 4]  # at registration, then only once 4 events were there


def test_an_archive_that_cannot_be_written_is_reported_and_collecting_goes_on(
        col: Collector, caplog: pytest.LogCaptureFixture) -> None:
    col._archive = writer = ArchiveWriter(col.archive_path)
    col.ingest(security_topic("a"), heartbeat(1))

    def full(*args: object) -> int:
        raise OSError(28, "No space left on device")

    writer.write = full  # type: ignore[method-assign]
    col.ingest(security_topic("a"), heartbeat(2))
    col.ingest(security_topic("a"), heartbeat(3))
    assert [e.id[-1] for e in col.events("a")] == [1, 2, 3]  # still decoded, the waits still work
    assert caplog.text.count("NOT ARCHIVED") == 1  # said once
    assert "2 message(s) NOT ARCHIVED (OSError: [Errno 28] No space left on device)" in col.problems()
    with pytest.raises(WaitTimeout, match=r"2 message\(s\) NOT ARCHIVED"):
        col.expect_events("a", 4, within=0.01)
    writer.close()
    assert len(list(read_archive(col.archive_path))) == 1


def test_pending_names_each_wait_under_way_and_its_time_left(col: Collector) -> None:
    """What `hil certify`'s status line shows: the event awaited and how long it may still take."""
    assert col.pending() == []
    seen: list[list[tuple[str, str, float]]] = []
    arrived = threading.Event()

    def look_then_send() -> None:
        seen.append(col.pending())
        col.ingest(security_topic("a"), heartbeat(1))
        arrived.set()

    later(0.2, look_then_send)
    col.expect_event("a", PayloadType.HEARTBEAT, within=30)
    assert arrived.wait(5)
    [(device, what, left)] = seen[0]
    assert device == "a" and "HEARTBEAT" in what and 25 < left <= 30
    assert col.pending() == []  # the wait ended: nothing awaited any more


def test_next_window_takes_a_fresh_collection_as_the_start_of_a_window(col: Collector) -> None:
    from harness.telemetry.device_view import DeviceTelemetry

    view = DeviceTelemetry(col, "a")
    col.ingest(security_topic("a"), heartbeat(1))
    collected = col.mark()
    assert view.next_window(within=0.05, fresh=5.0) == collected  # just arrived: its window has begun
    assert view.events() == []  # the collection itself is before the mark
    col.ingest(security_topic("a"), heartbeat(2))
    assert [e.id[-1] for e in view.events()] == [2]  # what arrives from now on counts
    with pytest.raises(WaitTimeout):  # older than fresh (or no fresh): the next collection is awaited
        view.next_window(within=0.05, fresh=1e-9)
    col.ingest(security_topic("a"), heartbeat(2), dup=True)  # a replay brings no new event: not a collection
    latest = col.latest_collection("a")
    assert latest is not None and latest.seq == collected + 1 and not latest.dup
