"""Collector vs a bare paho subscriber on the same broker, one publisher, QoS 1.

1. Latency: one message at a time, publish -> ``Collector.wait_for`` returning, side by side with
   publish -> the bare subscriber's ``on_message`` for the same message (both subscribed at once).
   Target: collector p99 no more than 2 ms above the bare subscriber's p99.
2. Sustained ingest: both subscribers hold persistent sessions and go offline; the publisher sends
   N messages, which the broker queues for both; then each, in its own process, reconnects and
   drains them alone (the order alternates between rounds). The collector archives and decodes
   every message and waits (``expect_events``) for N unique events; the bare subscriber's callback
   only counts (no timestamps or Event per message, which would slow the reference by ~2 us).
   Target: collector rate >= 0.8 x the bare rate, nothing lost (N unique events, N archive records).
   The collector's MQTT client is ``harness.broker.client.LeanClient`` (paho reading in blocks and
   delivering directly). So that the report separates what that client saves from what the
   collector's own work costs, a third subscriber, the same lean client only counting, drains
   too; "vs lean" is the collector's rate over its rate (information, no target).

Run: ``.venv/bin/python benchmarks/collector_ingest.py [--messages 20000] [--pings 1000]``
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from harness.broker import BrokerEndpoint, DeviceCredentials, open_broker, parse_mqtt_url
from harness.broker.client import lean_client
from harness.broker.credentials import COLLECTOR_SUBSCRIBE
from harness.telemetry.archive import read_archive
from harness.telemetry.codec import encode
from harness.telemetry.collector import Collector
from harness.telemetry.model import Event, Heartbeat, ModuleVersion, SecurityMessage
from harness.telemetry.topic import security_topic

DEVICE = "bench-dev"


def payload(n: int) -> bytes:
    return encode(SecurityMessage("bench", ModuleVersion(3, 5, 4),
                                  (Event(n.to_bytes(16, "big"), 1700000000 + n, 10, Heartbeat()),)))


def client(creds: DeviceCredentials, *, persistent: bool = False, lean: bool = False) -> mqtt.Client:
    make = lean_client if lean else mqtt.Client
    c = make(CallbackAPIVersion.VERSION2, client_id=creds.client_id, clean_session=not persistent)
    c.username_pw_set(creds.username, creds.password)
    return c


class Bare:
    """The bare subscriber: paho, QoS 1, persistent session, counts and timestamps messages.
    ``lean``: the collector's client instead of paho's, still only counting."""

    def __init__(self, url: str, creds: DeviceCredentials, *, lean: bool = False) -> None:
        self.host, self.port, _ = parse_mqtt_url(url)
        self.c = client(creds, persistent=True, lean=lean)
        self.c.max_inflight_messages_set(0)
        self.count = 0
        self.seen: dict[bytes, float] = {}
        self.want: int | None = None
        self.done = threading.Event()
        self.arrived = threading.Event()
        self.subscribed = threading.Event()
        self.c.on_connect = lambda cl, u, f, rc, p: cl.subscribe([(t, 1) for t in COLLECTOR_SUBSCRIBE])
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.on_message = self._on_message

    def _on_message(self, cl: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        self.count += 1
        self.seen[msg.payload] = time.perf_counter()
        self.arrived.set()
        if self.want is not None and self.count >= self.want:
            self.done.set()

    def _count(self, cl: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        """The draining callback: only counts (no timestamps, as the reference for ingest)."""
        self.count += 1
        if self.count == self.want:
            self.done.set()

    def start(self) -> None:
        self.subscribed.clear()
        self.c.connect(self.host, self.port)
        self.c.loop_start()
        assert self.subscribed.wait(10), "bare subscriber not subscribed"

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def publisher(url: str, creds: DeviceCredentials) -> mqtt.Client:
    host, port, _ = parse_mqtt_url(url)
    c = client(creds)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect(host, port)
    c.loop_start()
    return c


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] if len(values) > 1 else values[0]


def latency(ep: BrokerEndpoint, bare_creds: DeviceCredentials, run_dir: Path, pings: int) -> dict[str, float]:
    bare = Bare(ep.url, bare_creds)
    bare.start()
    pub = publisher(ep.url, ep.devices[DEVICE])
    col_ms, bare_ms = [], []
    with Collector.from_endpoint(ep, run_dir / "latency.bin") as col:
        for n in range(1_000_000, 1_000_000 + pings):
            data, want = payload(n), n.to_bytes(16, "big")
            bare.arrived.clear()
            t0 = time.perf_counter()
            pub.publish(security_topic(DEVICE), data, qos=1)
            col.wait_for(DEVICE, lambda e, want=want: e.id == want, 10)  # type: ignore[misc]
            t1 = time.perf_counter()
            assert bare.arrived.wait(10), "bare subscriber missed a message"
            col_ms.append((t1 - t0) * 1e3)
            bare_ms.append((bare.seen[data] - t0) * 1e3)
    pub.disconnect()
    pub.loop_stop()
    bare.stop()
    return {"collector_p50": pct(col_ms, 50), "collector_p99": pct(col_ms, 99),
            "bare_p50": pct(bare_ms, 50), "bare_p99": pct(bare_ms, 99)}


def drain_bare(url: str, creds: DeviceCredentials, n: int, go: Connection, lean: bool) -> None:
    """In its own process: hold a persistent session; on each "go", reconnect and drain n messages."""
    bare = Bare(url, creds, lean=lean)
    bare.start()
    bare.stop()
    bare.c.on_message = bare._count
    if lean:
        bare.c.deliver = lambda msg: bare._count(bare.c, None, msg)  # type: ignore[attr-defined]
    go.send("ready")
    while go.recv() == "go":
        bare.count, bare.want = 0, n
        bare.done.clear()
        t0 = time.perf_counter()
        bare.start()
        ok = bare.done.wait(300)
        t1 = time.perf_counter()
        bare.stop()
        go.send({"count": bare.count, "seconds": t1 - t0, "ok": ok})


def drain_collector(ep: BrokerEndpoint, archive: Path, n: int, go: Connection) -> None:
    """The same for the collector: archive, decode, and wait (expect_events) for n unique events."""
    col = Collector.from_endpoint(ep, archive)
    col.start()
    col.stop()
    go.send("ready")
    while go.recv() == "go":
        since = col.mark()
        t0 = time.perf_counter()
        col.start()
        events = col.expect_events(DEVICE, n, within=300, since=since)
        t1 = time.perf_counter()
        col.stop()
        go.send({"count": len(events), "unique": len({e.id for e in events}), "seconds": t1 - t0,
                 "undecodable": len(col.undecodable())})


def ingest(ep: BrokerEndpoint, bare_creds: DeviceCredentials, lean_creds: DeviceCredentials, run_dir: Path,
           n: int, rounds: int) -> list[dict[str, object]]:
    """Each round: every session offline, n messages queued for each, then each drains alone (the
    order rotates between rounds), so none competes with another for the CPU."""
    archive = run_dir / "ingest.bin"
    ctx = mp.get_context("fork")
    names = ("bare", "collector", "lean")
    pipes = {name: ctx.Pipe() for name in names}
    procs = [ctx.Process(target=drain_bare, args=(ep.url, bare_creds, n, pipes["bare"][1], False)),
             ctx.Process(target=drain_collector, args=(ep, archive, n, pipes["collector"][1])),
             ctx.Process(target=drain_bare, args=(ep.url, lean_creds, n, pipes["lean"][1], True))]
    for p in procs:
        p.start()
    for mine, _ in pipes.values():
        assert mine.recv() == "ready"
    results = []
    pub = publisher(ep.url, ep.devices[DEVICE])
    try:
        for r in range(rounds):
            base = 10_000_000 * (r + 1)
            infos = [pub.publish(security_topic(DEVICE), payload(base + i), qos=1) for i in range(n)]
            for info in infos:
                info.wait_for_publish(60)
            got: dict[str, object] = {}
            for name in names[r % 3:] + names[:r % 3]:
                pipes[name][0].send("go")
                got[name] = pipes[name][0].recv()
            results.append(got)
    finally:
        pub.disconnect()
        pub.loop_stop()
        for mine, _ in pipes.values():
            mine.send("stop")
        for p in procs:
            p.join(30)
    records = sum(1 for _ in read_archive(archive))
    for got in results:
        got["archive_records"] = records
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20000, help="messages per ingest round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pings", type=int, default=1000)
    ap.add_argument("--kind", default="mosquitto")
    args = ap.parse_args()
    n = args.messages
    with tempfile.TemporaryDirectory(prefix="hil-bench-") as tmp:
        run_dir = Path(tmp)
        with open_broker(args.kind, run_dir) as broker:
            broker.add_device(DEVICE)
            bare_creds = broker.add_service("bench-bare")
            lean_creds = broker.add_service("bench-lean")
            ep = broker.endpoint()
            lat = latency(ep, bare_creds, run_dir, args.pings)
            rounds = ingest(ep, bare_creds, lean_creds, run_dir, n, args.rounds)
    overhead = lat["collector_p99"] - lat["bare_p99"]
    print(f"broker: {args.kind}; latency over {args.pings} messages, one at a time, QoS 1")
    print(f"  publish -> Collector.wait_for return: p50 {lat['collector_p50']:.2f} ms, "
          f"p99 {lat['collector_p99']:.2f} ms")
    print(f"  publish -> bare paho on_message:      p50 {lat['bare_p50']:.2f} ms, p99 {lat['bare_p99']:.2f} ms")
    print(f"  overhead at p99: {overhead:.2f} ms (target < 2 ms): {'OK' if overhead < 2 else 'MISSED'}")
    print(f"sustained ingest: {args.rounds} rounds of {n} queued QoS 1 messages, each subscriber draining alone")
    ratios, vs_lean, lost = [], [], 0
    for i, got in enumerate(rounds):
        bare, col, lean = got["bare"], got["collector"], got["lean"]
        assert isinstance(bare, dict) and isinstance(col, dict) and isinstance(lean, dict)
        bare_rate, col_rate, lean_rate = n / bare["seconds"], n / col["seconds"], n / lean["seconds"]
        ratios.append(col_rate / bare_rate)
        vs_lean.append(col_rate / lean_rate)
        lost += n - col["unique"] + n - bare["count"] + n - lean["count"]
        print(f"  round {i + 1}: bare {bare_rate:,.0f} msg/s ({bare['count']} received); collector "
              f"{col_rate:,.0f} msg/s archived + decoded ({col['unique']} unique events, "
              f"{col['undecodable']} undecodable); ratio {col_rate / bare_rate:.2f}; "
              f"lean client counting {lean_rate:,.0f} msg/s ({lean['count']} received), collector vs lean "
              f"{col_rate / lean_rate:.2f}, {1e6 / col_rate - 1e6 / lean_rate:.1f} us a message over it")
    records = rounds[-1]["archive_records"]
    ratio = statistics.median(ratios)
    print(f"  median ratio {ratio:.2f} (target >= 0.8): {'OK' if ratio >= 0.8 else 'MISSED'}; "
          f"lost {lost}; archive records {records} of {n * args.rounds}")
    print(f"  collector vs the lean client counting, median {statistics.median(vs_lean):.2f} (information)")
    ok = overhead < 2 and ratio >= 0.8 and lost == 0 and records == n * args.rounds
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
