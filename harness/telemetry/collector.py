"""The collector: subscribes to every device's telemetry, archives it raw, decodes it, and lets
tests wait on it.

A paho-mqtt client with a persistent session (fixed client id, ``clean_session=False``) at QoS 1
on ``devices/+/messages/events/#`` and ``devices/+/modules/+/messages/events/#``. Each message is
appended to the archive (:mod:`harness.telemetry.archive`) before anything else, then decoded into
a per-device :class:`~harness.telemetry.streams.DeviceStream`: events repeated by a QoS 1
redelivery are recognised by event id and counted once; undecodable messages are kept with their
``DecodeError``; application telemetry is kept apart. Disconnections are recorded as
:class:`~harness.telemetry.streams.Gap` s; paho reconnects by itself.

Integrity: a collector that cannot vouch for what it received makes every verdict suspect, so two
faults are watched and reported as infrastructure errors, never as a device's failure. Its session
lost (a reconnection's CONNACK without the session it had: whatever devices sent meanwhile is gone),
and receiving stopped while connected (its :class:`~harness.broker.canary.Canary`, a message it sends
itself every few seconds, did not come back and nothing else arrived). Either one is logged at once,
listed first by :meth:`Collector.problems`, ends every pending wait with
:class:`CollectorIntegrityError` (an :class:`~harness.errors.InfrastructureError`, exit 3), and
turns a later wait's timeout into one too: a wait that times out after evidence may have been lost
says so instead of blaming the device. :meth:`Collector.require_intact` raises it on demand.

Waits are event driven and all take a deadline: each registers a check that the network thread
runs as the device's messages arrive, and the waiting thread blocks on an Event until the check is
satisfied or the deadline passes (no polling, no wake-up per message). ``since`` is a
:meth:`Collector.mark` taken before the action under test (default: the whole history). A
timeout raises :class:`~harness.errors.WaitTimeout` naming what was awaited, what that device did
send in the window, and the archive path::

    with Collector.from_endpoint(endpoint, run_dir / "telemetry.bin") as col:
        mark = col.mark()
        ...drive traffic...
        col.expect_event("board-1", PayloadType.HEARTBEAT, within=90, since=mark)
        col.expect_flows("board-1", [FlowSpec(Protocol.TCP, remote_port=5000, min_bytes_out=1000)],
                         within=120, since=mark)
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from harness.broker.base import BrokerEndpoint, parse_mqtt_url
from harness.broker.canary import CANARY_INTERVAL, CANARY_TIMEOUT, Canary
from harness.broker.client import lean_client
from harness.broker.credentials import COLLECTOR_SUBSCRIBE, DeviceCredentials
from harness.errors import CheckFailed, HarnessError, InfrastructureError, WaitTimeout
from harness.telemetry.archive import DUP, RETAIN, ArchiveWriter
from harness.telemetry.codec import DecodeError, decode
from harness.telemetry.flowmatch import FlowMatch, FlowSpec, default_background, match_flows
from harness.telemetry.model import Event, NetworkActivity, PayloadType
from harness.telemetry.streams import Cadence, DeviceStream, Gap, Received
from harness.telemetry.topic import TopicError, parse_topic
from harness.telemetry.waits import Cursor, Watch

log = logging.getLogger(__name__)

T = TypeVar("T")
EventPredicate = Callable[[Event], bool]
CONNECT_TIMEOUT = 10.0
SHOWN_IN_TIMEOUT = 12
# The history is kept for the whole run, and in a burst the cyclic GC's rescans of it cost more than
# the decoding (measured: 10 -> 14 us a message over 60,000 messages; 1-2 us a message even when the
# history is frozen every 2,000). So during a burst (GC_FREEZE_EVERY messages within
# GC_FREEZE_BURST seconds) everything tracked so far is moved out of the GC's way (gc.freeze, which
# is process-wide: cyclic garbage frozen with it waits until stop() unfreezes). At a device's usual
# pace there is no burst and the GC is left alone.
GC_FREEZE_EVERY = 100
GC_FREEZE_BURST = 0.05  # 100 messages in 50 ms: 2,000 a second, a flood, not a device's pace
TOPIC_CACHE = 10_000


class CollectorIntegrityError(InfrastructureError):
    """The collector lost its session or stopped receiving: what it holds may be incomplete."""


class Collector:
    """Subscribes, archives, decodes, and answers waits. Use as a context manager.

    ``canary``: send itself a message every ``canary_interval`` s to prove it still receives (the
    identity must own its canary topic: every service identity of a local broker does)."""

    def __init__(self, url: str, credentials: DeviceCredentials, archive: Path, *,
                 ca_path: Path | str | None = None, keepalive: int = 30, canary: bool = True,
                 canary_interval: float = CANARY_INTERVAL, canary_timeout: float = CANARY_TIMEOUT) -> None:
        self.url = url
        self.host, self.port, tls = parse_mqtt_url(url)
        self.archive_path = Path(archive)
        self._writer: ArchiveWriter | None = None
        self._archive: ArchiveWriter | None = None  # the writer, while started
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._seq = 0
        self._streams: dict[str, DeviceStream] = {}
        self.unparsed: list[Received] = []  # topics that are not a device's events
        self.gaps: list[Gap] = []
        self.unarchived = 0  # messages that could not be written to the archive
        self.archive_error: str | None = None  # the first reason
        self.archive_found = ""  # damage or a torn record the archive held when opened (kept; appended after)
        self._connected = False
        self._subscribed = False
        self._stopping = False
        self._last_refusal: str | None = None
        self._keepalive = keepalive
        self._on_received: list[Callable[[Received], None]] = []
        self._topics: dict[str, tuple[str, str | None, bool]] = {}
        self._watches: dict[str, list[Watch[Any]]] = {}  # pending waits by device
        self._froze = False
        self._batch_start = -GC_FREEZE_BURST  # when the last GC_FREEZE_EVERY messages began
        self.faults: list[str] = []  # integrity lost: session lost, receiving stopped (with the time)
        self._had_session = False  # subscribed once: from then on the broker must keep the session
        self._expected: str | None = None  # an outage the harness makes on purpose, while it lasts

        c = lean_client(CallbackAPIVersion.VERSION2, client_id=credentials.client_id, clean_session=False,
                        protocol=mqtt.MQTTv311, deliver=self._on_message)
        c.username_pw_set(credentials.username, credentials.password)
        if tls:
            c.tls_set(ca_certs=str(ca_path) if ca_path else None)
        c.reconnect_delay_set(min_delay=1, max_delay=2)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        self._client = c
        self._canary = Canary(c, credentials.client_id, on_stall=self._fault, progress=self.mark,
                              interval=canary_interval, timeout=canary_timeout) if canary else None
        self._canary_topic = self._canary.topic if self._canary is not None else None
        self._subscriptions = [(t, 1) for t in COLLECTOR_SUBSCRIBE] + (
            [(self._canary_topic, 1)] if self._canary_topic else [])

    @classmethod
    def from_endpoint(cls, endpoint: BrokerEndpoint, archive: Path, *, tls: bool = False,
                      **options: Any) -> Collector:
        """A collector for the run's broker; no canary on an external broker (its accounts are the lab's)."""
        url = endpoint.tls_url if tls and endpoint.tls_url else endpoint.url
        options.setdefault("canary", endpoint.kind != "external")
        return cls(url, endpoint.collector, archive, ca_path=endpoint.ca_path, **options)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = CONNECT_TIMEOUT) -> Collector:
        """Connect, subscribe, and return once the broker granted the subscriptions."""
        if self._archive is not None:
            return self
        if self._writer is None:
            self._writer = ArchiveWriter(self.archive_path)
        self._archive = self._writer.open()  # again after stop(): appends without reading it back
        found = self._writer.found_summary()
        if found and found != self.archive_found:
            self.archive_found = found
            log.warning("collector: the archive %s held bytes that are not records, kept as they are; "
                        "appending after them: %s", self.archive_path, found)
        self._stopping = False
        self._last_refusal = None
        self._client.connect_async(self.host, self.port, keepalive=self._keepalive)
        self._client.loop_start()
        if self._canary is not None:
            self._canary.start()
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._subscribed:
                left = deadline - time.monotonic()
                if left <= 0 or self._last_refusal:
                    break
                self._cond.wait(left)
            ok, refusal = self._subscribed, self._last_refusal
        if not ok:
            self.stop()
            raise InfrastructureError(
                f"collector could not subscribe at {self.url}",
                expected=f"CONNACK and SUBACK within {timeout:g} s",
                actual=refusal or "no answer", fix="is the broker running and are these its credentials?")
        return self

    def stop(self) -> None:
        self._stopping = True
        if self._canary is not None:
            self._canary.stop()
        self._client.disconnect()
        self._client.loop_stop()
        if self._archive is not None:
            self._archive.close()
            self._archive = None
        if self._froze:  # hand the history (and any garbage frozen with it) back to the GC, and
            gc.unfreeze()  # rescan it now rather than in the middle of the next burst
            gc.collect()
            self._froze = False
        summary = self.problems()
        if summary:
            log.warning("collector: %s", summary)
        made = [g.describe() for g in self.gaps if g.expected and g.session_kept]
        if made:
            log.info("collector: outages made on purpose, session kept: %s", "; ".join(made))

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @contextmanager
    def expecting(self, outage: str) -> Iterator[None]:
        """An outage of the harness's own making (a clause stops or freezes the broker): a disconnection
        that begins inside it is recorded as expected and logged as information, not as a warning.
        A lost session stays a fault either way: the collector's evidence is gone all the same."""
        with self._cond:
            self._expected = outage
        try:
            yield
        finally:
            with self._cond:
                self._expected = None

    def on_received(self, callback: Callable[[Received], None]) -> None:
        """Call ``callback`` (in the network thread) for every message after it is stored."""
        self._on_received.append(callback)

    # -- paho callbacks (network thread) -------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            with self._cond:
                self._last_refusal = f"broker refused the connection: {rc}"
                self._cond.notify_all()
            log.error("collector: %s", self._last_refusal)
            return
        now = time.time()
        lost = self._had_session and not flags.session_present
        with self._cond:
            self._connected = True
            if self.gaps and self.gaps[-1].end is None:
                g = self.gaps[-1]
                self.gaps[-1] = Gap(g.start, now, g.reason, bool(flags.session_present), g.expected)
                log.log(logging.INFO if g.expected and flags.session_present else logging.WARNING,
                        "collector reconnected: %s", self.gaps[-1].describe())
            self._cond.notify_all()
        if lost:
            self._fault("lost its session: the broker no longer held it when the collector connected again, so "
                        "whatever devices sent while it was away was not kept for it")
        client.subscribe(self._subscriptions)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: list[Any], props: Any) -> None:
        with self._cond:
            failed = [f"{topic}: {c}" for (topic, _), c in zip(self._subscriptions, codes, strict=False)
                      if c.is_failure]
            if failed:
                self._last_refusal = f"broker refused the subscriptions: {failed}"
            else:
                self._subscribed = self._had_session = True
            self._cond.notify_all()
        if not failed and self._canary is not None:
            self._canary.resume()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if self._canary is not None:
            self._canary.pause()
        with self._cond:
            self._connected = self._subscribed = False
            if not self._stopping and (not self.gaps or self.gaps[-1].end is not None):
                self.gaps.append(Gap(time.time(), None, f"disconnected: {rc}", expected=self._expected))
                log.log(logging.INFO if self._expected else logging.WARNING, "collector lost the broker: %s%s", rc,
                        f" (expected: {self._expected})" if self._expected else "")
            self._cond.notify_all()

    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        topic = msg.topic  # paho decodes it at every access
        if topic == self._canary_topic:  # the collector's own: proof of receiving, not telemetry
            self._canary.received(msg.payload)  # type: ignore[union-attr]
            return
        self._ingest(topic, msg.payload, msg.qos, msg.retain, msg.dup, time.time())  # paho's flags are bools

    def _fault(self, what: str) -> None:
        """Integrity lost: record and log it, and end every pending wait (their evidence may be gone)."""
        stamp = time.strftime("%H:%M:%S", time.gmtime())
        text = f"collector {what} (at {stamp} UTC)"
        with self._cond:
            self.faults.append(text)
            pending = [w for ws in self._watches.values() for w in ws]
            self._watches.clear()
            self._cond.notify_all()
        log.error("%s; evidence may be missing: the run's verdicts cannot be trusted", text)
        for w in pending:
            w.abort(self._integrity_error(f"waiting for {w.what} from device {w.device!r}"))

    def _integrity_error(self, doing: str) -> CollectorIntegrityError:
        return CollectorIntegrityError(
            f"collector integrity lost while {doing}: an infrastructure fault, not the device's",
            expected="a collector that kept its session and kept receiving",
            actual="; ".join(self.faults), evidence=self.archive_path,
            fix="see the broker log; a second client under the collector's client id, a broker restart "
                "without persistence, or an overloaded machine can cause it")

    @property
    def canary(self) -> Canary | None:
        """The canary proving it receives (None when made without one)."""
        return self._canary

    @property
    def intact(self) -> bool:
        """No integrity fault so far (see the module docstring)."""
        return not self.faults

    def require_intact(self) -> None:
        """Raise :class:`CollectorIntegrityError` if the collector lost its session or stopped receiving."""
        with self._cond:
            if self.faults:
                raise self._integrity_error("collecting")

    # -- ingest --------------------------------------------------------------------------------
    def ingest(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, dup: bool = False,
               received: float | None = None) -> Received:
        """Archive, decode and store one message: the MQTT callback, or a replay (one thread at a time)."""
        return self._ingest(topic, payload, qos, retain, dup, time.time() if received is None else received)

    def _ingest(self, topic: str, payload: bytes, qos: int, retain: bool, dup: bool, received: float) -> Received:
        archive, record = self._archive, -1
        if archive is not None:
            try:
                record = archive.write(topic, payload, qos, (RETAIN if retain else 0) | (DUP if dup else 0), received)
            except (OSError, HarnessError, ValueError) as exc:  # e.g. the disk is full: keep collecting
                self._not_archived(exc)
        device, module, security = self._topics.get(topic) or self._where(topic)
        message, error = None, None
        if security:
            try:
                message = decode(payload)
            except DecodeError as exc:
                error = exc
                log.warning("undecodable message from %s (archive record %d): %s", device, record, exc)
        with self._lock:  # the condition's lock, without the Python-level Condition.__enter__
            self._seq = seq = self._seq + 1
            if not device:
                item = Received(seq, record, received, topic, "", None, payload, False, dup=dup, qos=qos, retain=retain)
                self.unparsed.append(item)
                watching = None
            else:
                stream = self._streams.get(device)
                if stream is None:
                    stream = self._streams[device] = DeviceStream(device)
                new, dups = stream.take_new(message.events) if message is not None else ((), 0)
                item = Received(seq, record, received, topic, device, module, payload, security,
                                message, error, new, dups, dup, qos, retain)
                stream.add(item)
                watching = self._watches.get(device)
                if watching:  # those that this message may satisfy, to run outside the lock
                    have = len(stream.events)
                    watching = [w for w in watching if w.need <= have]
        if watching:
            self._run_watches(watching, stream)
        if seq % GC_FREEZE_EVERY == 0:
            self._freeze_in_a_burst()
        if self._on_received:
            for callback in self._on_received:
                callback(item)
        return item

    def _not_archived(self, exc: BaseException) -> None:
        """A message could not be archived: say so once, count the rest, and carry on decoding (the
        waits still work; problems() and every timeout report it)."""
        self.unarchived += 1
        if self.archive_error is None:
            self.archive_error = f"{type(exc).__name__}: {exc}"
            log.error("collector: cannot write the archive %s (%s); still decoding, but messages are "
                      "NOT ARCHIVED until this is fixed", self.archive_path, self.archive_error)

    def _freeze_in_a_burst(self) -> None:
        now = time.monotonic()
        if now - self._batch_start < GC_FREEZE_BURST:
            gc.freeze()
            self._froze = True
        self._batch_start = now

    def _run_watches(self, watches: list[Watch[Any]], stream: DeviceStream) -> None:
        """In the network thread (the streams' only writer), outside the lock so that a predicate
        may call the collector: give each wait on this device a look at what just arrived."""
        for w in watches:
            if w.run(stream):
                self._unwatch(w)

    def _unwatch(self, watch: Watch[Any]) -> None:
        with self._lock:
            pending = self._watches.get(watch.device)
            if pending is not None and watch in pending:
                pending.remove(watch)
                if not pending:
                    del self._watches[watch.device]

    def _where(self, topic: str) -> tuple[str, str | None, bool]:
        """(device, module, is security) of a topic; cached, since each device repeats its topic."""
        where = self._topics.get(topic)
        if where is None:
            try:
                parsed = parse_topic(topic)
                where = (parsed.device_id, parsed.module_id, parsed.is_security)
            except TopicError:
                where = ("", None, False)
            if len(self._topics) < TOPIC_CACHE:
                self._topics[topic] = where
        return where

    # -- reading -------------------------------------------------------------------------------
    def mark(self) -> int:
        """A point in the arrival order; pass it as ``since`` to consider only what comes after."""
        with self._cond:
            return self._seq

    @property
    def connected(self) -> bool:
        return self._connected

    def wait_connected(self, timeout: float, *, gaps: int = 0) -> None:
        """Block until the collector is connected and subscribed (e.g. after a broker restart), and
        at least ``gaps`` disconnections have ended (so that a restart it has not noticed yet is
        waited for, not mistaken for a connection that never dropped)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self._connected and self._subscribed and len(self.gaps) >= gaps
                       and (not gaps or self.gaps[-1].end is not None)):
                left = deadline - time.monotonic()
                if left <= 0:
                    gaps = "; ".join(g.describe() for g in self.gaps) or "none"
                    raise CollectorIntegrityError(f"collector not reconnected to {self.url} within {timeout:g} s",
                                                  expected="CONNACK and SUBACK", actual=f"gaps: {gaps}",
                                                  evidence=self.archive_path)
                self._cond.wait(left)

    def devices(self) -> list[str]:
        with self._cond:
            return sorted(self._streams)

    def stream(self, device: str) -> DeviceStream:
        """The device's stream (empty if nothing arrived). Read it while no messages arrive, or copy."""
        with self._cond:
            return self._streams.get(device) or DeviceStream(device)

    def latest_collection(self, device: str) -> Received | None:
        """The device's last security message that brought new events (a collection, not a replay)."""
        with self._cond:
            s = self._streams.get(device)
            return next((m for m in reversed(s.messages) if m.new_events), None) if s is not None else None

    def events(self, device: str, *, since: int = 0, kind: PayloadType | None = None) -> list[Event]:
        with self._cond:
            s = self._streams.get(device)
            if s is None:
                return []
            got = [a.event for a in s.events[s.event_index(since):]]
        return [e for e in got if kind is None or e.kind == kind]

    def messages(self, device: str, *, since: int = 0) -> list[Received]:
        """The device's security messages that arrived after mark ``since``, in arrival order
        (redeliveries included: each as it came, with its QoS, DUP and retain flags)."""
        with self._cond:
            s = self._streams.get(device)
            return [m for m in s.messages if m.seq > since] if s is not None else []

    def undecodable(self) -> list[Received]:
        with self._cond:
            return [m for s in self._streams.values() for m in s.undecodable]

    def problems(self) -> str:
        """One line on integrity faults (first), undecodable messages, unparsed topics and connection
        gaps ('' if none); an outage the harness made on purpose is none, unless the session was lost."""
        with self._cond:
            parts = [f"INTEGRITY LOST: {f}" for f in self.faults]
            bad = sum(len(s.undecodable) for s in self._streams.values())
            if bad:
                parts.append(f"{bad} undecodable message(s)")
            if self.unparsed:
                parts.append(f"{len(self.unparsed)} message(s) on unexpected topics")
            parts += [g.describe() for g in self.gaps if not (g.expected and g.session_kept)]  # made on purpose
            if self.unarchived:
                parts.append(f"{self.unarchived} message(s) NOT ARCHIVED ({self.archive_error})")
            if self.archive_found:
                parts.append(f"the archive held damage when opened (kept, appended after): {self.archive_found}")
        if parts:
            parts.append(f"archive {self.archive_path}")
        return "; ".join(parts)

    # -- waits ---------------------------------------------------------------------------------
    def _wait(self, device: str, what: str, timeout: float, since: int,
              check: Callable[[DeviceStream], T | None], detail: Callable[[], str] | None = None,
              need: Callable[[DeviceStream], int] | None = None) -> T:
        """Register ``check``; the network thread runs it when a message from ``device`` brings a new
        event (or when ``need`` events are there, where the check says how many it needs), so a
        waiter wakes once, when satisfied, not per message; this thread blocks on an Event until then."""
        watch: Watch[T] = Watch(device, check, need, what)
        watch.deadline = time.monotonic() + timeout
        with self._cond:
            stream = self._streams.get(device)
            if stream is not None and watch.run(stream):
                return watch.outcome()
            self._watches.setdefault(device, []).append(watch)
        try:
            watch.done.wait(timeout)
            with self._cond:
                if not watch.done.is_set():
                    raise self._timeout(device, what, timeout, since, detail() if detail else None)
        finally:
            self._unwatch(watch)
        return watch.outcome()

    def pending(self) -> list[tuple[str, str, float]]:
        """The waits under way: (device, what is awaited, seconds left before the waiter gives up)."""
        now = time.monotonic()
        with self._cond:
            return [(w.device, w.what, max(0.0, w.deadline - now)) for ws in self._watches.values() for w in ws]

    def _timeout(self, device: str, what: str, timeout: float, since: int,
                 detail: str | None) -> WaitTimeout | CollectorIntegrityError:
        stream = self._streams.get(device)
        got = stream.messages_since(since) if stream is not None else []
        app = [m for m in stream.application if m.seq > since] if stream is not None else []
        window = "since the mark" if since else "since the collector started"
        if got:
            lines = [m.brief() for m in got[-SHOWN_IN_TIMEOUT:]]
            skipped = f" (last {SHOWN_IN_TIMEOUT} shown)" if len(got) > SHOWN_IN_TIMEOUT else ""
            actual = f"{len(got)} security message(s) from {device!r} {window}{skipped}:\n    " + \
                "\n    ".join(lines)
        else:
            others = sorted(d for d, s in self._streams.items() if s.messages and d != device)
            actual = f"no security message from {device!r} {window}" + (
                f"; other devices sent some: {', '.join(others)}" if others else "")
        if app:
            actual += f"\n    and {len(app)} application telemetry message(s)"
        if detail:
            actual += "\n    " + detail.replace("\n", "\n    ")
        state = "connected" if self._connected else "NOT CONNECTED to the broker"
        if self.unarchived:
            state += f"; {self.unarchived} message(s) NOT ARCHIVED ({self.archive_error})"
        gaps = "; ".join(g.describe() for g in self.gaps)
        actual += f"\n    collector {state}" + (f"; gaps: {gaps}" if gaps else "")
        if self.faults:
            error = self._integrity_error(f"waiting {timeout:g} s for {what} from device {device!r}")
            error.actual = "; ".join(self.faults) + "\n    " + actual
            return error
        return WaitTimeout(f"timed out after {timeout:g} s waiting for {what} from device {device!r}",
                           expected=what, actual=actual, evidence=self.archive_path)

    def wait_for(self, device: str, predicate: EventPredicate, timeout: float, *, since: int = 0,
                 what: str = "an event matching the predicate") -> Event:
        """The first unique event from ``device`` after ``since`` for which ``predicate`` is true.

        The predicate runs in the collector's network thread as each message arrives: keep it quick.
        If it raises, the wait ends and the exception is raised here."""
        cursor = Cursor(since)

        def check(stream: DeviceStream) -> Event | None:
            return next((a.event for a in cursor.new(stream) if predicate(a.event)), None)

        return self._wait(device, what, timeout, since, check)

    def expect_event(self, device: str, kind: PayloadType, within: float, *, since: int = 0) -> Event:
        return self.wait_for(device, lambda e: e.kind == kind, within, since=since,
                             what=f"a {kind.name} event")

    def expect_events(self, device: str, count: int, within: float, *, kind: PayloadType | None = None,
                      since: int = 0) -> list[Event]:
        """Wait until ``count`` unique events (of ``kind``, if given) arrived; return them all."""
        cursor, got = Cursor(since), []

        def check(stream: DeviceStream) -> list[Event] | None:
            if kind is None:
                start = cursor.start(stream)
                return [a.event for a in stream.events[start:]] if len(stream.events) - start >= count else None
            got.extend(a.event for a in cursor.new(stream) if a.event.kind == kind)
            return got if len(got) >= count else None

        def need(stream: DeviceStream) -> int:  # events the stream must hold before check can succeed
            return cursor.start(stream) + count if kind is None else len(stream.events) + count - len(got)

        what = f"{count} {kind.name if kind is not None else ''} events".replace("  ", " ")
        return self._wait(device, what, within, since, check, need=need)

    def expect_flows(self, device: str, flows: Sequence[FlowSpec], within: float, *, since: int = 0,
                     background: Sequence[FlowSpec] | None = None) -> FlowMatch:
        """Wait until every expected flow is matched by the device's flows summed over the windows
        since ``since``; return the match (with extra and background flows) for the test to report."""
        bg = tuple(background) if background is not None else default_background((self.port,))
        cursor, reported = Cursor(since), []
        last = [match_flows(flows, [], bg)]

        def check(stream: DeviceStream) -> FlowMatch | None:
            new = [f for a in cursor.new(stream) if isinstance(a.event.payload, NetworkActivity)
                   for f in a.event.payload.flows]
            if new:
                reported.extend(new)
                last[0] = match_flows(flows, reported, bg)
            return last[0] if last[0].ok else None

        what = f"{len(flows)} expected flow(s): " + "; ".join(s.describe() for s in flows)
        return self._wait(device, what, within, since, check, lambda: last[0].describe())

    def assert_none(self, device: str, predicate: EventPredicate, during: float, *, since: int | None = None,
                    what: str = "an event matching the predicate") -> None:
        """Watch for ``during`` seconds; fail at once if ``device`` sends a matching event."""
        start = self.mark() if since is None else since
        try:
            found = self.wait_for(device, predicate, during, since=start, what=what)
        except WaitTimeout:
            return
        raise CheckFailed(f"device {device!r} sent {what} within {during:g} s, which must not happen",
                          expected=f"no {what}", actual=found.to_json().__repr__()[:500],
                          evidence=self.archive_path)

    def cadence(self, device: str, kind: PayloadType, *, since: int = 0) -> Cadence:
        with self._cond:
            s = self._streams.get(device)
            arrivals = s.events[s.event_index(since):] if s is not None else []
        return Cadence.of(kind, arrivals)

    def expect_cadence(self, device: str, kind: PayloadType, count: int, within: float, *,
                       since: int = 0) -> Cadence:
        """Wait for ``count`` events of ``kind`` and return the measured intervals."""
        cursor, got = Cursor(since), []

        def check(stream: DeviceStream) -> Cadence | None:
            got.extend(a for a in cursor.new(stream) if a.event.kind == kind)
            return Cadence.of(kind, got) if len(got) >= count else None

        return self._wait(device, f"{count} {kind.name} events", within, since, check)
