"""The ``embedded`` broker kind: amqtt running on its own asyncio loop inside the harness process.

For machines without mosquitto. amqtt (already a dependency) is chosen over writing a broker:
it speaks MQTT 3.1.1 with QoS 1/2 and persistent sessions, accepts NetX's 4-byte Remaining
Length, and lets plugins decide authentication and per-topic access, so the same
:class:`~harness.broker.credentials.IdentityTable` enforces the policy with the same semantics as
mosquitto's files — stricter in two ways: device user names are parsed (any api-version and query
parameters), and the client id must be the device the user name names.

amqtt is imported when an embedded broker starts, not when the kind registers (it is slow to import).
Sessions live in memory: a restart loses queued messages (mosquitto's persistence does not).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.broker.base import BROKER_KINDS, BrokerOptions, LocalBroker, free_port
from harness.broker.tls import make_run_pki
from harness.errors import InfrastructureError

if TYPE_CHECKING:
    from amqtt.broker import Broker as AmqttBroker

log = logging.getLogger(__name__)

START_TIMEOUT = 10.0
_keys = itertools.count(1)


@BROKER_KINDS.register("embedded")
class EmbeddedBroker(LocalBroker):
    kind = "embedded"

    def __init__(self, run_dir: Path, options: BrokerOptions) -> None:
        super().__init__(run_dir, options)
        self._key = f"t{next(_keys)}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: AmqttBroker | None = None

    def _config(self) -> dict[str, Any]:
        bind = self.options.bind
        listeners: dict[str, Any] = {"default": {"type": "tcp", "bind": f"{bind}:{self._port}"}}
        if self._tls is not None:
            listeners["tls"] = {"type": "tcp", "bind": f"{bind}:{self._tls_port}", "ssl": True,
                                "certfile": str(self._tls.server_cert), "keyfile": str(self._tls.server_key)}
        return {
            "listeners": listeners,
            "timeout_disconnect_delay": 0,
            "plugins": {
                "harness.broker.amqtt_plugins.HubAuthPlugin": {"table": self._key},
                "harness.broker.amqtt_plugins.HubTopicPlugin": {"table": self._key},
            },
        }

    def _run_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()
        loop.close()

    def _call(self, coro: Any, timeout: float) -> Any:
        assert self._loop is not None
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout)

    def _start(self) -> None:
        from amqtt.broker import Broker as AmqttBroker  # ~80 ms: only when an embedded broker starts

        from harness.broker import amqtt_plugins

        amqtt_plugins.register_table(self._key, self.identities)
        if self.options.tls and self._tls is None:
            self._tls = make_run_pki(self.run_dir / "embedded-tls",
                                     [self.options.bind, "localhost", self.options.hub])
        if not self._port:
            self._port = free_port(self.options.bind)
        if self.options.tls and not self._tls_port:
            self._tls_port = free_port(self.options.bind)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, args=(self._loop,),
                                        name="embedded-broker", daemon=True)
        self._thread.start()

        async def make_and_start() -> AmqttBroker:
            broker = AmqttBroker(self._config(), loop=asyncio.get_running_loop())
            await broker.start()
            return broker

        try:
            self._broker = self._call(make_and_start(), START_TIMEOUT)
        except Exception as exc:
            raise InfrastructureError(
                f"embedded broker did not start on {self.options.bind}:{self._port}: {exc}",
                fix="is the address configured on this host and the port free?") from exc

    def _stop(self, graceful: bool) -> None:
        broker, self._broker = self._broker, None
        loop, thread = self._loop, self._thread
        if loop is None:
            return
        try:
            if broker is not None:
                self._call(broker.shutdown(), 10.0 if graceful else 3.0)
        except Exception as exc:  # the loop is stopped below in any case
            log.warning("embedded broker shutdown: %s", exc)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(5.0)
            self._loop = self._thread = None

    def _alive(self) -> str | None:
        if self._thread is None or not self._thread.is_alive():
            return "broker loop thread not running"
        return None

    def _identities_changed(self) -> None:
        """Nothing to do: the plugins read the live table."""

    def __del__(self) -> None:
        plugins = sys.modules.get("harness.broker.amqtt_plugins")
        if plugins is not None:
            plugins.unregister_table(getattr(self, "_key", ""))
