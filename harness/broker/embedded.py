"""The ``embedded`` broker kind: amqtt running on its own asyncio loop inside the harness process.

For machines without mosquitto. amqtt (already a dependency) is chosen over writing a broker:
it speaks MQTT 3.1.1 with QoS 1/2 and persistent sessions, accepts NetX's 4-byte Remaining
Length, and lets plugins decide authentication and per-topic access, so the same
:class:`~harness.broker.credentials.IdentityTable` enforces the policy with the same semantics as
the mosquitto kind's plugin. Every CONNECT is checked before amqtt sees it, and every packet's size
as it arrives (:mod:`harness.broker.amqtt_front`): a refused login touches no session, and a message
the archive could not hold is refused, not acknowledged.

amqtt's own log, and the loop's (a client that drops mid-packet, a TLS handshake cut short), go to
``<run dir>/embedded-broker.log`` (``log_path``), not to the console: a client dropping is not
news on a terminal. Several embedded brokers in one process share their log lines.

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

from harness.broker.base import BROKER_KINDS, MAX_PACKET, BrokerOptions, Connect, LocalBroker, all_binds, free_port
from harness.broker.tls import make_run_pki
from harness.errors import InfrastructureError

if TYPE_CHECKING:
    from harness.broker.amqtt_front import HubBroker

log = logging.getLogger(__name__)  # routed to the broker's log file too

START_TIMEOUT = 10.0
LOG_NAME = "embedded-broker.log"
_keys = itertools.count(1)
# loggers whose records go to the running embedded brokers' log files; amqtt's only there
_ROUTED = ("amqtt", "harness.broker.amqtt_front", "harness.broker.amqtt_plugins", "harness.broker.embedded")
# loggers of what clients do (amqtt's, and the door's refusals with their reasons): at INFO, only there
_CLIENT_NEWS = ("amqtt", "harness.broker.amqtt_front", "harness.broker.amqtt_plugins")
_routes: list[logging.Handler] = []
_routes_lock = threading.Lock()


def _route_logs(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    with _routes_lock:
        _routes.append(handler)
        for name in _ROUTED:
            logging.getLogger(name).addHandler(handler)
        for name in _CLIENT_NEWS:
            news = logging.getLogger(name)
            news.propagate = False
            if news.level == logging.NOTSET:
                news.setLevel(logging.INFO)
    return handler


def _unroute_logs(handler: logging.Handler) -> None:
    with _routes_lock:
        for name in _ROUTED:
            logging.getLogger(name).removeHandler(handler)
        if handler in _routes:
            _routes.remove(handler)
        if not _routes:
            for name in _CLIENT_NEWS:
                logging.getLogger(name).propagate = True
    handler.close()


@BROKER_KINDS.register("embedded")
class EmbeddedBroker(LocalBroker):
    kind = "embedded"

    def __init__(self, run_dir: Path, options: BrokerOptions) -> None:
        super().__init__(run_dir, options)
        self._key = f"t{next(_keys)}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: HubBroker | None = None
        self._log_handler: logging.Handler | None = None
        self._certificates: dict[str, bytes] = {}  # client id -> the TLS client certificate it was admitted with
        self._connects: list[Connect] = []  # every CONNECT admitted, across restarts (as mosquitto's log keeps them)

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG_NAME

    def _config(self) -> dict[str, Any]:
        listeners: dict[str, Any] = {}
        for i, bind in enumerate(all_binds(self.options)):
            listeners["default" if i == 0 else f"plain-{i}"] = {"type": "tcp", "bind": f"{bind}:{self._port}"}
            if self._tls is not None:
                listeners[f"tls-{i}"] = {"type": "tcp", "bind": f"{bind}:{self.tls_port_at(bind)}", "ssl": True,
                                         "certfile": str(self._tls.server_cert),
                                         "keyfile": str(self._tls.server_key)}
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
        loop.set_exception_handler(_loop_exception)
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    def _call(self, coro: Any, timeout: float) -> Any:
        assert self._loop is not None
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout)

    def _start(self) -> None:
        from harness.broker import amqtt_plugins
        from harness.broker.amqtt_front import HubBroker  # ~80 ms (amqtt): only when an embedded broker starts

        amqtt_plugins.register_table(self._key, self.identities, self._certificates)
        if self.options.tls and self._tls is None:
            self._tls = self.options.tls_files or make_run_pki(
                self.run_dir / "embedded-tls", [*all_binds(self.options), "localhost", self.options.hub])
        self.check_fixed_ports()
        if not self._port:
            self._port = free_port(self.options.bind)
        if self.options.tls and not self._tls_port:
            self._tls_port = free_port(self.options.bind)
        if self._log_handler is None:
            self._log_handler = _route_logs(self.log_path)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, args=(self._loop,),
                                        name="embedded-broker", daemon=True)
        self._thread.start()

        async def make_and_start() -> HubBroker:
            broker = HubBroker(self._config(), table=self.identities, max_packet=MAX_PACKET,
                               loop=asyncio.get_running_loop(), certificates=self._certificates,
                               connects=self._connects)
            await broker.start()
            return broker

        try:
            self._broker = self._call(make_and_start(), START_TIMEOUT)
        except Exception as exc:
            raise InfrastructureError(
                f"embedded broker did not start on {self.options.bind}:{self._port}: {exc}",
                evidence=self.log_path, fix="is the address configured on this host and the port free?") from exc

    def _stop(self, graceful: bool) -> None:
        broker, self._broker = self._broker, None
        loop, thread = self._loop, self._thread
        if loop is None:
            return
        timeout = 10.0 if graceful else 3.0
        try:
            if broker is not None:
                self._call(broker.stop_all(timeout), timeout + 5.0)
        except Exception as exc:  # the loop is stopped below in any case
            log.warning("embedded broker shutdown: %r", exc)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(5.0)
            self._loop = self._thread = None
            if self._log_handler is not None:
                _unroute_logs(self._log_handler)
                self._log_handler = None

    def connections(self) -> list[Connect]:
        """Every CONNECT the front door admitted (:mod:`harness.broker.amqtt_front`), oldest first."""
        return list(self._connects)

    def _alive(self, grace: float = 0.0) -> str | None:
        if self._thread is None or not self._thread.is_alive():
            return "broker loop thread not running"
        return None

    def _identities_changed(self) -> None:
        """Nothing to do: the plugins read the live table."""

    def __del__(self) -> None:
        if getattr(self, "_log_handler", None) is not None:
            _unroute_logs(self._log_handler)  # type: ignore[arg-type]
        plugins = sys.modules.get("harness.broker.amqtt_plugins")
        if plugins is not None:
            plugins.unregister_table(getattr(self, "_key", ""))


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """What the loop would print with a traceback (a client's connection dying under a task) goes to
    the broker's log, one line."""
    exc = context.get("exception")
    log.info("embedded broker loop: %s%s", context.get("message", "error"), f": {exc!r}" if exc else "")
