"""The board's serial adapter: a TCP console that stays put while the machine power-cycles.

QEMU's UART is a unix socket that exists only while one QEMU process runs. The relay listens on
``127.0.0.1:<port>`` for the whole life of the :class:`~harness.emulation.qemu.Machine` (the
``socket://`` URL pyserial opens), connects to each new QEMU's UART socket, copies bytes both
ways, writes everything the board prints to a log file, and keeps what the board printed while no
client was connected (up to ``backlog`` bytes) for the next client, so nothing from boot is lost.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from pathlib import Path

from harness.errors import InfrastructureError

log = logging.getLogger(__name__)


class ConsoleRelay:
    def __init__(self, log_path: Path, host: str = "127.0.0.1", port: int = 0,
                 backlog: int = 1 << 20) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab", buffering=0)  # noqa: SIM115 - closed in close()
        self._listener = socket.create_server((host, port))
        self.host, self.port = self._listener.getsockname()[:2]
        self._backlog_limit = backlog
        self._pending = bytearray()
        self._clients: list[socket.socket] = []
        self._upstream: socket.socket | None = None
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._lock = threading.Lock()
        self._closing = False
        self._pending_ops: list[tuple[str, socket.socket]] = []
        self._sel.register(self._listener, selectors.EVENT_READ, "accept")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._run, name=f"console-relay-{self.port}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"socket://{self.host}:{self.port}"

    def attach(self, unix_path: Path, timeout: float = 5.0) -> None:
        """Connect to a (new) QEMU's UART socket, retrying until it appears."""
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(unix_path))
                break
            except OSError as exc:
                sock.close()
                if time.monotonic() > deadline:
                    raise InfrastructureError(f"could not connect to the UART socket {unix_path}",
                                              actual=str(exc), evidence=self.log_path) from exc
                time.sleep(0.02)  # QEMU creates the socket file while parsing its options
        sock.setblocking(False)
        with self._lock:
            self._pending_ops.append(("attach", sock))
        self._wake_w.send(b"x")

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._wake_w.send(b"x")
        self._thread.join(5.0)
        for sock in [*self._clients, self._upstream, self._listener, self._wake_r, self._wake_w]:
            if sock is not None:
                sock.close()
        self._sel.close()
        self._log.close()

    # ---------------------------------------------------------------- the relay thread

    def _run(self) -> None:
        while not self._closing:
            for key, _ in self._sel.select(timeout=1.0):
                try:
                    self._handle(key.data, key.fileobj)  # type: ignore[arg-type]
                except OSError as exc:
                    log.debug("console relay %d: %s", self.port, exc)

    def _handle(self, what: str, sock: socket.socket) -> None:
        if what == "wake":
            sock.recv(64)
            with self._lock:
                ops, self._pending_ops = self._pending_ops, []
            for _, upstream in ops:
                self._drop_upstream()
                self._upstream = upstream
                self._sel.register(upstream, selectors.EVENT_READ, "upstream")
        elif what == "accept":
            client, _ = sock.accept()
            client.setblocking(True)
            if self._pending:
                client.sendall(self._pending)
                self._pending.clear()
            client.setblocking(False)
            self._clients.append(client)
            self._sel.register(client, selectors.EVENT_READ, "client")
        elif what == "upstream":
            data = sock.recv(65536)
            if not data:
                self._drop_upstream()
                return
            self._log.write(data)
            if not self._clients:
                self._pending += data
                del self._pending[:-self._backlog_limit]
            for client in list(self._clients):
                try:
                    client.setblocking(True)
                    client.sendall(data)
                    client.setblocking(False)
                except OSError:
                    self._drop_client(client)
        elif what == "client":
            data = sock.recv(65536)
            if not data:
                self._drop_client(sock)
            elif self._upstream is not None:
                self._upstream.setblocking(True)
                self._upstream.sendall(data)
                self._upstream.setblocking(False)

    def _drop_upstream(self) -> None:
        if self._upstream is not None:
            self._sel.unregister(self._upstream)
            self._upstream.close()
            self._upstream = None

    def _drop_client(self, client: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(client)
            self._clients.remove(client)
        client.close()
