"""Where the harness may aim traffic: loopback, the lab's test networks, and networks it made.

Every traffic generator, scan and probe asks ``TargetPolicy.check`` before it sends. A lab's
test networks come from ``lab.yaml``; networks the harness creates itself (the namespaces of
emulated boards) join with ``allow_created`` while they exist. Anything else is refused with an
error that says which networks are allowed and how to add one.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterable

from harness.errors import UsageError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK: tuple[IPNetwork, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class TargetPolicy:
    """The set of networks traffic may be aimed at. Thread-safe."""

    def __init__(self, lab_networks: Iterable[IPNetwork] = ()) -> None:
        self._lab = tuple(lab_networks)
        self._created: dict[str, IPNetwork] = {}
        self._lock = threading.Lock()

    def allow_created(self, name: str, network: IPNetwork) -> None:
        """A network the harness has just created (e.g. an emulated board's namespace)."""
        with self._lock:
            self._created[name] = network

    def forget_created(self, name: str) -> None:
        with self._lock:
            self._created.pop(name, None)

    def allowed(self) -> tuple[IPNetwork, ...]:
        with self._lock:
            return LOOPBACK + self._lab + tuple(self._created.values())

    def permits(self, address: IPAddress | str) -> bool:
        addr = ipaddress.ip_address(address)
        return any(addr.version == net.version and addr in net for net in self.allowed())

    def check(self, address: IPAddress | str) -> IPAddress:
        """Return the address if traffic may go there; otherwise raise UsageError."""
        try:
            addr = ipaddress.ip_address(address)
        except ValueError:
            raise UsageError(f"{address!r} is not an IP address", fix="give an IPv4 or IPv6 address") from None
        if not self.permits(addr):
            nets = ", ".join(str(n) for n in self.allowed())
            raise UsageError(
                f"refusing to send traffic to {addr}: not on loopback, a lab test network or a harness network",
                expected=f"an address in one of: {nets}",
                fix="add the network under 'networks:' in lab.yaml if it is really a test network",
            )
        return addr
