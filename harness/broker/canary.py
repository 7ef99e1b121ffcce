"""Proof that a subscriber still receives: a message it sends itself now and then.

A connected subscriber can stop receiving without losing its connection: a broker that dropped its
session's subscriptions (as amqtt 0.12 did when another client logged in under its client id)
still acknowledges every device's message and delivers none. Nothing in MQTT tells the subscriber.
So while connected and subscribed, the :class:`Canary` publishes a numbered message at QoS 1 to
the subscriber's own canary topic (:func:`~harness.broker.credentials.canary_topic`, which only
that identity may publish to and read) every ``interval`` seconds, one at a time, and expects it
back. It reports a stall (``on_stall``, once) when one has not come back within ``timeout``
seconds *and* nothing else arrived in that time either: a subscriber busy draining a backlog is
receiving, even if its canary waits in the queue behind the backlog.

The canary costs one small message every ``interval`` seconds each way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from harness.broker.credentials import canary_topic

log = logging.getLogger(__name__)

CANARY_INTERVAL = 2.0
CANARY_TIMEOUT = 10.0


class Canary:
    """Sends a subscriber's canaries and notices when they stop coming back (see the module docstring).

    ``progress`` returns a count that grows with everything else the subscriber receives."""

    def __init__(self, client: mqtt.Client, client_id: str, *, on_stall: Callable[[str], None],
                 progress: Callable[[], int], interval: float = CANARY_INTERVAL,
                 timeout: float = CANARY_TIMEOUT) -> None:
        self.topic = canary_topic(client_id)
        self.interval = interval
        self.timeout = timeout
        self._client = client
        self._on_stall = on_stall
        self._progress = progress
        self._lock = threading.Lock()
        self._returns = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._running = False
        self._thread: threading.Thread | None = None
        self._live = False  # connected and subscribed: canaries may go out
        self._seq = 0
        self._sent_at: float | None = None  # the outstanding canary's send time (monotonic)
        self._seen = (0, time.monotonic())  # (progress count, when it last changed)
        self._stalled = False
        self.returned = 0  # canaries that came back
        self.last_round_trip: float | None = None
        self.longest_round_trip = 0.0

    # -- the subscriber's events ----------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._running:
                return
            self._running = True
        self._wake.clear()
        self._thread = threading.Thread(target=self._run, name=f"canary-{self.topic}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._running = False
            self._live = False
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def resume(self) -> None:
        """Connected and subscribed: send at once (a canary from before the break is forgotten)."""
        with self._lock:
            self._live, self._sent_at = True, None
            self._seen = (self._progress(), time.monotonic())
        self._wake.set()

    def pause(self) -> None:
        """Disconnected: the collector's gap says so; no canary is expected meanwhile."""
        with self._lock:
            self._live, self._sent_at = False, None

    def received(self, payload: bytes) -> None:
        """A message on the canary topic arrived (network thread)."""
        try:
            seq = int(payload)
        except ValueError:
            return
        with self._lock:
            if self._sent_at is None or seq != self._seq:
                return  # one from before a reconnection
            self.last_round_trip = time.monotonic() - self._sent_at
            self.longest_round_trip = max(self.longest_round_trip, self.last_round_trip)
            self.returned += 1
            self._sent_at = None
            self._returns.notify_all()
            if self._stalled:
                self._stalled = False
                log.warning("%s: the canary came back: receiving again", self.topic)

    def wait_returned(self, count: int, timeout: float) -> bool:
        """Block until ``count`` canaries in all have come back (True) or the deadline passed (False)."""
        with self._returns:
            return self._returns.wait_for(lambda: self.returned >= count, timeout)

    # -- the thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            with self._lock:
                if not self._running:
                    return
                send, stall = self._tick(time.monotonic())
            if send is not None:  # outside the lock: the network thread takes it to clear a canary
                self._client.publish(self.topic, str(send).encode(), qos=1)
            if stall:
                self._on_stall(stall)

    def _tick(self, now: float) -> tuple[int | None, str | None]:
        """Under the lock: the canary to send if none is out, or why the outstanding one means a stall."""
        if not self._live:
            return None, None
        count = self._progress()
        if count != self._seen[0]:
            self._seen = (count, now)
        if self._sent_at is None:
            self._seq += 1
            self._sent_at = now
            return self._seq, None
        waited, quiet = now - self._sent_at, now - self._seen[1]
        if self._stalled or waited < self.timeout or quiet < self.timeout:
            return None, None
        self._stalled = True
        return None, (f"stopped receiving: its canary {self._seq} on {self.topic} has not come back in {waited:.1f} s "
                f"and nothing else arrived for {quiet:.1f} s, although it is connected; the broker may be "
                "acknowledging devices' messages that never reach the collector")
