"""Fixed ports a broker must have, and who holds one when it is taken.

Stock Azure IoT images connect to port 8883 and nothing else, so on a lab network the broker's TLS
listener must take 8883 at the lab's bind address (:attr:`harness.broker.base.BrokerOptions.tls_ports`).
When something else holds it, the run cannot serve those boards: :func:`require_free` says so as an
infrastructure error naming the address, the port and, where this host lets us see it, the process
holding it (from ``/proc/net/tcp`` and the processes' open sockets), with the fix.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from pathlib import Path

from harness.errors import InfrastructureError

#: The port IoT Hub's MQTT over TLS is on, the only one stock images connect to.
IOT_HUB_TLS_PORT = 8883
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column


def _proc_address(text: str) -> tuple[str, int]:
    """``0100007F:22B3`` (/proc/net/tcp, IPv4 in host byte order) -> ("127.0.0.1", 8883)."""
    addr, port = text.split(":")
    packed = bytes.fromhex(addr)
    if len(packed) == 4:
        return str(ipaddress.IPv4Address(packed[::-1])), int(port, 16)
    words = b"".join(packed[i:i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words)), int(port, 16)


def _listening_inodes(address: str, port: int, proc: Path) -> set[str]:
    """Socket inodes listening on ``port`` at ``address`` or at a wildcard address."""
    found: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            local, local_port = _proc_address(fields[1])
            if local_port == port and local in (address, "0.0.0.0", "::", f"::ffff:{address}"):
                found.add(fields[9])
    return found


def holder(address: str, port: int, proc: Path = Path("/proc")) -> str | None:
    """``"mosquitto (pid 812)"``: a process listening on ``port`` at ``address`` (or on every address),
    when this host lets us see it; else None."""
    inodes = _listening_inodes(address, port, proc)
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
            if any(os.readlink(fd) in wanted for fd in fds):
                name = (entry / "comm").read_text().strip()
                return f"{name} (pid {entry.name})"
        except OSError:  # gone, or not ours to look at
            continue
    return "a process this user cannot see"


def require_free(address: str, port: int, why: str) -> None:
    """Raise :class:`InfrastructureError` when ``port`` cannot be listened on at ``address``."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the brokers listen: TIME_WAIT is no holder
        try:
            s.bind((address, port))
            return
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise InfrastructureError(f"cannot listen on {address}:{port} ({exc.strerror}), {why}",
                                          fix="is the address configured on this host?") from None
    who = holder(address, port)
    raise InfrastructureError(
        f"port {port} on {address} is already taken{f' by {who}' if who else ''}: the broker needs it, {why}",
        fix=f"stop {who or 'the process listening there'} (a system broker: `systemctl stop mosquitto`), or, if "
            "another run of the harness holds it, wait for that run to end; `ss -ltnp` shows who listens")
