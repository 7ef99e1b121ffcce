"""Is the board well? Console, probe and network each asked to answer within a deadline.

- probe: a pyOCD session connects and reads the core's state (the probe, the debug port and the
  core answer);
- console: the port is open and reading; where the build names a console echo command
  (``behaviour.console_echo``), a line typed at the board comes back;
- network: the board answers an ICMP echo (capability ``icmp``) or accepts a TCP connection on its
  echo service (``services.tcp_echo``); a board with neither is reported as not checkable.

The three are asked in parallel so the whole check takes one deadline, not three.
"""

from __future__ import annotations

import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from harness.board.state import BoardState, HealthReport
from harness.errors import HarnessError, WaitTimeout
from harness.traffic import ping

if TYPE_CHECKING:
    from harness.board.board import Board


def _probe(board: Board, deadline: float) -> str | None:
    try:
        board.parts.probe.inspect(timeout=deadline)
    except HarnessError as exc:
        return exc.message
    return None


def _console(board: Board, deadline: float) -> str | None:
    console = board.console
    if not console.alive:
        return f"the console {console.url} is closed"
    command = board.build.manifest.behaviour.console_echo if board.build is not None else None
    if not command:
        return None
    nonce = secrets.token_hex(4)
    try:
        console.send_line(command.format(text=nonce))
        console.expect(rf"^{nonce}$", timeout=deadline)
    except HarnessError:
        return f"no echo of a typed line within {deadline:g} s"
    return None


def _network(board: Board, deadline: float) -> str | None:
    if board.state < BoardState.ONLINE:
        return "the board has no address yet"
    return _answers(board, str(board.address), deadline)


def wait_reachable(board: Board, deadline: float) -> str:
    """Ask the board's address until it answers or ``deadline`` (monotonic) passes; say how it
    answered. Each question is itself a wait for the board's reply (no sleep between them)."""
    address = str(board.address)
    caps = board.config.capabilities
    if not (caps.icmp or caps.services.tcp_echo):
        return "not checkable (no icmp, no tcp_echo capability)"
    while True:
        left = deadline - time.monotonic()
        why = _answers(board, address, max(0.2, min(1.0, left)))
        if why is None:
            return "icmp" if caps.icmp else f"tcp {caps.services.tcp_echo}"
        if left <= 0:
            raise WaitTimeout(f"board {board.name} has address {address} but does not answer there", actual=why,
                              evidence=board.log.path)


def _answers(board: Board, address: str, deadline: float) -> str | None:
    caps = board.config.capabilities
    try:
        if caps.icmp:
            if ping(address, 1, timeout=deadline, policy=board.policy).replies:
                return None
            return f"no ICMP echo reply from {address} within {deadline:g} s"
        port = caps.services.tcp_echo
        if port:
            board.policy.check(address)
            with socket.create_connection((address, port), timeout=deadline):
                return None
    except OSError as exc:
        return f"{address}: {exc.strerror or exc}"
    except HarnessError as exc:
        return exc.message
    return None if not (caps.icmp or caps.services.tcp_echo) else "no answer"


def check_health(board: Board, deadline: float) -> HealthReport:
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix=f"{board.name}-health") as pool:
        probe = pool.submit(_probe, board, deadline)
        console = pool.submit(_console, board, deadline)
        network = pool.submit(_network, board, deadline)
        checked = board.config.capabilities.icmp or bool(board.config.capabilities.services.tcp_echo)
        return HealthReport(console=console.result(), probe=probe.result(), network=network.result(),
                            details={"network_checked": checked, **board.parts.details})
