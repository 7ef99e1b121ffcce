"""A minimal QMP (QEMU Machine Protocol) client: JSON commands over a socket, with deadlines.

    with QmpClient.connect("unix:/run/m.qmp") as qmp:
        qmp.execute("stop")
        qmp.execute("set_link", {"name": "n0", "up": False})

Asynchronous events arriving between replies are kept in :attr:`QmpClient.events`.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from typing import Any

from harness.emulation.gdbremote import connect_retrying
from harness.errors import InfrastructureError, ServiceTimeout

log = logging.getLogger(__name__)


class QmpError(InfrastructureError):
    """QEMU refused a command or the QMP socket failed."""


class QmpCommandError(QmpError):
    """QEMU answered a command with an error (QEMU itself is fine)."""


class QmpClient:
    """One QMP session; thread-safe (one command at a time)."""

    def __init__(self, sock: socket.socket, address: str, timeout: float) -> None:
        self._sock = sock
        self.address = address
        self.timeout = timeout
        self._buf = b""
        self._lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self.greeting: dict[str, Any] = {}

    @classmethod
    def connect(cls, address: str, timeout: float = 5.0) -> QmpClient:
        """Connect (retrying until ``timeout`` while QEMU creates the socket) and negotiate."""
        deadline = time.monotonic() + timeout
        try:
            sock, _ = connect_retrying(address, timeout, interval=0.02)
        except OSError as exc:
            raise QmpError(f"could not connect to QMP at {address}", actual=str(exc)) from exc
        client = cls(sock, address, timeout)
        client.greeting = client._read_message(deadline, "the QMP greeting")
        client.execute("qmp_capabilities")
        return client

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> QmpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_message(self, deadline: float, what: str) -> dict[str, Any]:
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServiceTimeout(f"QMP at {self.address}: no answer for {what}",
                                  expected=what, actual=self._buf.decode(errors="replace") or "nothing")
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                raise QmpError(f"QMP at {self.address} failed while waiting for {what}",
                               actual=str(exc)) from exc
            if not chunk:
                raise QmpError(f"QMP at {self.address} closed while waiting for {what}",
                               actual="connection closed (QEMU exited?)")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def execute(self, command: str, arguments: dict[str, Any] | None = None,
                timeout: float | None = None) -> Any:
        """Run one command and return its ``return`` value; raise QmpError on an ``error``."""
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        with self._lock:
            try:
                self._sock.sendall(json.dumps(request).encode() + b"\n")
            except OSError as exc:
                raise QmpError(f"QMP at {self.address}: could not send {command}", actual=str(exc)) from exc
            while True:
                message = self._read_message(deadline, f"the reply to {command}")
                if "event" in message:
                    self.events.append(message)
                    continue
                if "error" in message:
                    err = message["error"]
                    raise QmpCommandError(f"QEMU refused {command} {arguments or ''}".strip(),
                                   actual=f"{err.get('class')}: {err.get('desc')}")
                return message.get("return")

    def status(self) -> str:
        """The VM run state: ``running``, ``paused``, ``prelaunch``..."""
        return str(self.execute("query-status")["status"])
