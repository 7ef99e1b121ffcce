"""A broker restart in the middle of a 5,000-message QoS 1 stream from one publisher.

Graceful: mosquitto saves the collector's session and queue; the collector reconnects by itself,
every message the broker acknowledged is in the archive and decoded exactly once (QoS 1 may deliver
a message twice around the restart: the broker flags the second copy DUP; both are archived, raw,
and the event is counted once). SIGKILL: the session is lost;
the collector reconnects, the gap is reported with its time window, and the loss is counted.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from harness.broker import Broker, DeviceCredentials, parse_mqtt_url
from harness.telemetry.archive import ArchiveScan, read_archive
from harness.telemetry.codec import decode
from harness.telemetry.collector import Collector
from harness.telemetry.topic import security_topic

from .conftest import heartbeat_payload, process_gone

TOTAL = 5000
RESTART_AFTER = 1500


class Publisher:
    """One paho publisher at QoS 1 that records which messages the broker acknowledged."""

    def __init__(self, url: str, creds: DeviceCredentials) -> None:
        host, port, _ = parse_mqtt_url(url)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=creds.client_id, clean_session=False)
        self.client.username_pw_set(creds.username, creds.password)
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 1)
        self._acked_mids: set[int] = set()
        self._seq_of_mid: dict[int, int] = {}  # mids do not wrap: TOTAL < 65535
        self._lock = threading.Lock()
        self.reached = threading.Event()
        self.all_acked = threading.Event()
        self.client.on_publish = self._on_publish
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, rc: object, props: object) -> None:
        with self._lock:
            self._acked_mids.add(mid)
            n = len(self._acked_mids)
        if n >= RESTART_AFTER:
            self.reached.set()
        if n == TOTAL:
            self.all_acked.set()

    @property
    def acked(self) -> set[int]:
        """Sequence numbers of the messages the broker acknowledged."""
        with self._lock:
            return {self._seq_of_mid[m] for m in self._acked_mids if m in self._seq_of_mid}

    def publish_all(self, device: str) -> None:
        for seq in range(TOTAL):
            info = self.client.publish(security_topic(device), heartbeat_payload(seq), qos=1)
            with self._lock:
                self._seq_of_mid[info.mid] = seq

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def archived_ids(path: Path) -> tuple[collections.Counter[int], int, ArchiveScan]:
    """How often each message id is in the archive, and how many records carry the DUP flag."""
    scan = ArchiveScan()
    counts: collections.Counter[int] = collections.Counter()
    flagged = 0
    for rec in read_archive(path, scan):
        flagged += rec.dup
        for ev in decode(rec.payload).events:
            counts[int.from_bytes(ev.id, "big")] += 1
    return counts, flagged, scan


def run_stream(broker: Broker, col: Collector, graceful: bool) -> Publisher:
    creds = broker.add_device("dev-pub")
    pub = Publisher(broker.url, creds)
    sender = threading.Thread(target=pub.publish_all, args=("dev-pub",))
    sender.start()
    assert pub.reached.wait(30), "publisher never got going"
    old_pid = broker.pid  # type: ignore[attr-defined]
    broker.restart(graceful=graceful)
    assert process_gone(old_pid)
    sender.join(60)
    col.wait_connected(30, gaps=1)
    return pub


@pytest.mark.timeout(120)
@pytest.mark.needs("mosquitto")
def test_graceful_restart_loses_nothing(brokers: Callable[..., Broker], tmp_path: Path) -> None:
    b = brokers("mosquitto")
    with Collector.from_endpoint(b.endpoint(), tmp_path / "telemetry.bin") as col:
        pub = run_stream(b, col, graceful=True)
        try:
            assert pub.all_acked.wait(60), f"broker acknowledged only {len(pub.acked)} of {TOTAL}"
            events = col.expect_events("dev-pub", TOTAL, within=60)
        finally:
            pub.close()
        ids = [int.from_bytes(e.id, "big") for e in events]
        assert sorted(ids) == list(range(TOTAL))  # each acknowledged message decoded exactly once
        stream = col.stream("dev-pub")
        gap = col.gaps[0]
        assert len(col.gaps) == 1 and gap.end is not None and gap.session_kept is True
    counts, flagged, scan = archived_ids(tmp_path / "telemetry.bin")
    extra = sum(n - 1 for n in counts.values())
    print(f"\ngraceful restart: {len(pub.acked)} acknowledged, {len(set(ids))} decoded exactly once; archive "
          f"holds {sum(counts.values())} records: every id, plus {extra} QoS 1 redeliveries of messages whose "
          f"PUBACK the stopping broker never read ({flagged} records flagged DUP; {stream.duplicate_events} "
          f"duplicate events recognised); {gap.describe()}")
    assert set(counts) == set(range(TOTAL)) and scan.torn_tail == 0 and not scan.corrupt
    # a second copy is only ever the broker's flagged redelivery, and it is counted once when decoded
    assert extra <= flagged and extra == stream.duplicate_events


@pytest.mark.timeout(120)
@pytest.mark.needs("mosquitto")
def test_sigkilled_broker_gap_is_reported_and_loss_counted(brokers: Callable[..., Broker],
                                                           tmp_path: Path) -> None:
    b = brokers("mosquitto")
    with Collector.from_endpoint(b.endpoint(), tmp_path / "telemetry.bin") as col:
        pub = run_stream(b, col, graceful=False)
        try:
            assert pub.all_acked.wait(60), f"broker acknowledged only {len(pub.acked)} of {TOTAL}"
            # a marker after the collector is back proves the stream flows again
            mark = col.mark()
            pub.client.publish(security_topic("dev-pub"), heartbeat_payload(TOTAL), qos=1).wait_for_publish(10)
            col.wait_for("dev-pub", lambda e: int.from_bytes(e.id, "big") == TOTAL, 30, since=mark)
        finally:
            pub.close()
        got = {int.from_bytes(e.id, "big") for e in col.events("dev-pub")} - {TOTAL}
        gap = col.gaps[0]
        problems = col.problems()
    lost = pub.acked - got
    print(f"\nSIGKILL: {len(pub.acked)} acknowledged, {len(got)} received, LOST {len(lost)}"
          f" (ids {min(lost) if lost else '-'}..{max(lost) if lost else '-'}); {gap.describe()}")
    assert gap.end is not None and gap.end > gap.start and gap.session_kept is False
    assert "SESSION LOST" in problems and str(tmp_path / "telemetry.bin") in problems
    assert got <= pub.acked and len(got) + len(lost) == TOTAL
    counts, _, _ = archived_ids(tmp_path / "telemetry.bin")
    assert set(counts) - {TOTAL} == got  # the archive holds exactly what arrived
