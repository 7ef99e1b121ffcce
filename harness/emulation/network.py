"""How an emulated board is wired to the test network, and the parts both network modes share.

Two modes (the tap mode lives in :mod:`harness.emulation.tap_network`):

``tap`` (root; what CI uses)
    Each run makes one test subnet ``10.231.<k>.0/24`` (``k`` allocated per live network):

    ==============================  =================  ==========================================
    where                           address            what
    ==============================  =================  ==========================================
    root namespace, bridge          ``10.231.k.1``     the harness side: broker, traffic
    ``hil-<tok>``                                      generators, UDP listeners bind here
    namespace ``hil-<tok>-svc``     ``10.231.k.2``     dnsmasq (DHCP, DNS) and chronyd (NTP)
    (veth ``hil-<tok>-s``)
    namespace ``hil-<tok>-<i>``     ``10.231.k.(100+i)``  board ``i``: QEMU with ``tap0`` bridged
    (veth ``hil-<tok>-<i>``)        (fixed DHCP lease)    (``br0``) to the veth end ``eth0``
    DHCP pool for other clients     ``10.231.k.200–250``  probes, unknown MACs
    ==============================  =================  ==========================================

    DNS names (domain ``hil.test``): ``broker.hil.test`` → ``.1``, ``time.hil.test`` and
    ``dns.hil.test`` → ``.2``, ``<board>.hil.test`` → the board's address. DHCP hands out the
    router ``.1``, DNS ``.2``, NTP ``.2`` and the domain. A board's MAC is derived from its name
    (:func:`mac_for`), so its lease is fixed by its identity.

``user`` (no root)
    QEMU user networking with ``restrict=on``: the board is ``10.0.2.15`` (QEMU's DHCP), the
    harness side is ``10.0.2.2`` from the board (QEMU's gateway); TCP services of the harness (the
    broker) are reached from the board at ``10.0.2.100:<port>`` (``guestfwd``, one
    :mod:`harness.emulation.tcp_pipe` per connection to ``127.0.0.1:<port>``; QEMU refuses a
    guestfwd on 10.0.2.2 itself), board services reach the harness through ``hostfwd`` on
    ``127.0.0.1:<ephemeral port>`` (TCP only: the restricted network drops the board's UDP
    replies). No inbound ICMP, no DNS records, no NTP: tests that need them declare the ``tap``
    mode and skip here with that reason.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import sys
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.errors import UsageError

USER_SUBNET = ipaddress.IPv4Network("10.0.2.0/24")
USER_HOST = ipaddress.IPv4Address("10.0.2.2")
USER_GUEST = ipaddress.IPv4Address("10.0.2.15")
USER_SERVICES = ipaddress.IPv4Address("10.0.2.100")  # guestfwd: QEMU refuses it on USER_HOST


def mac_for(identity: str) -> str:
    """A stable, locally administered unicast MAC for a board name or device id."""
    digest = hashlib.sha256(identity.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


class Attachment(Protocol):
    """What a :class:`~harness.emulation.qemu.Machine` needs from its network."""

    mode: str
    mac: str

    def command_prefix(self) -> list[str]:
        """Prepended to QEMU's command line (e.g. ``ip netns exec NS``)."""
        ...

    def netdev(self, netdev_id: str) -> str:
        """The ``-netdev`` value."""
        ...

    def record(self) -> dict[str, Any]:
        """The ``network`` part of the machine record: at least ``mode`` and ``address``."""
        ...


@dataclass
class NoNetwork:
    """A board with its Ethernet unplugged from the start (QEMU ``-netdev`` with no peer)."""

    mac: str
    mode: str = "none"

    def command_prefix(self) -> list[str]:
        return []

    def netdev(self, netdev_id: str) -> str:
        return f"user,id={netdev_id},restrict=on"

    def record(self) -> dict[str, Any]:
        return {"mode": self.mode, "address": None, "mac": self.mac}


@dataclass(frozen=True)
class Forward:
    """A harness-side port forwarded to a board port (``hostfwd``)."""

    proto: str  # "tcp"
    guest_port: int
    host_port: int


@dataclass
class UserAttachment:
    """QEMU user networking for one board (no root needed)."""

    mac: str
    forwards: list[Forward] = field(default_factory=list)
    guest_services: dict[int, int] = field(default_factory=dict)  # 10.0.2.100:port → 127.0.0.1:port
    mode: str = "user"

    @classmethod
    def create(cls, board: str, forward_ports: dict[str, list[int]] | None = None,
               guest_services: dict[int, int] | None = None) -> UserAttachment:
        """``forward_ports={"tcp": [80]}`` forwards each board port from a free port on 127.0.0.1.

        Only TCP: with ``restrict=on`` QEMU (libslirp) drops every UDP datagram from the board
        other than DHCP and TFTP, replies to forwarded ports included (checked with QEMU 7.2).
        """
        forwards = []
        for proto, ports in (forward_ports or {}).items():
            if proto != "tcp":
                raise UsageError(
                    f"cannot forward {proto!r} ports to a board in user network mode",
                    expected="tcp", actual=proto,
                    fix="QEMU's restricted user network drops the board's UDP replies; use the tap mode")
            forwards += [Forward(proto, port, free_port(proto)) for port in ports]
        return cls(mac_for(board), forwards, dict(guest_services or {}))

    def host_port(self, proto: str, guest_port: int) -> int:
        for fwd in self.forwards:
            if fwd.proto == proto and fwd.guest_port == guest_port:
                return fwd.host_port
        raise UsageError(f"board port {proto}/{guest_port} is not forwarded",
                         expected=str([(f.proto, f.guest_port) for f in self.forwards]))

    def command_prefix(self) -> list[str]:
        return []

    def netdev(self, netdev_id: str) -> str:
        parts = [f"user,id={netdev_id},restrict=on,net={USER_SUBNET},host={USER_HOST}",
                 f"dhcpstart={USER_GUEST}"]
        parts += [f"hostfwd={f.proto}:127.0.0.1:{f.host_port}-{USER_GUEST}:{f.guest_port}"
                  for f in self.forwards]
        pipe = f"{sys.executable} -m harness.emulation.tcp_pipe 127.0.0.1"
        parts += [f"guestfwd=tcp:{USER_SERVICES}:{guest}-cmd:{pipe} {host}"
                  for guest, host in self.guest_services.items()]
        return ",".join(parts)

    def record(self) -> dict[str, Any]:
        return {"mode": self.mode, "address": str(USER_GUEST), "harness_address": str(USER_HOST),
                "services_address": str(USER_SERVICES),
                "mac": self.mac,
                "forwards": [{"proto": f.proto, "guest_port": f.guest_port, "host": "127.0.0.1",
                              "host_port": f.host_port} for f in self.forwards],
                "guest_services": {str(k): v for k, v in self.guest_services.items()}}


def free_port(proto: str = "tcp") -> int:
    """An ephemeral port free on 127.0.0.1 right now (QEMU binds it moments later)."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
