"""The ``tap`` test network (root): a bridge on the harness side, one namespace per board.

Layout, names and addresses: see :mod:`harness.emulation.network`. Usage::

    with TapNetwork(run_dir) as net:          # bridge, services namespace, dnsmasq, chronyd
        att = net.attach("b1")                # namespace hil-<tok>-1, veth, br0, tap0, fixed lease
        Machine("b1", flash_file=..., run_dir=run_dir, network=att).start(run=True)
        net.harness_address                   # 10.231.k.1: bind the broker / listeners here
        att.address                           # 10.231.k.101: ping it, send it traffic

Each network writes ``/run/hil/networks/<token>.json`` (``$HIL_NET_STATE`` overrides; host-wide,
like the namespaces and subnets it accounts for) (owner pid, namespaces, links) *before*
creating anything, and removes everything on :meth:`TapNetwork.stop` (also from ``atexit``).
:func:`reap_stale_networks` (run by every start) removes what a dead owner left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from harness.emulation import netns
from harness.emulation.network import mac_for
from harness.emulation.process import install_sigterm_exit, pid_alive
from harness.emulation.services import DOMAIN, Chrony, Dnsmasq, read_leases
from harness.errors import InfrastructureError, UsageError, WaitTimeout

log = logging.getLogger(__name__)

SUPERNET = ipaddress.IPv4Network("10.231.0.0/16")
HARNESS_HOST = 1
SERVICES_HOST = 2
BOARD_HOST_BASE = 100
POOL = (200, 250)
MAX_BOARDS = BOARD_HOST_BASE - 1 - SERVICES_HOST
ENV_NET_STATE = "HIL_NET_STATE"
DEFAULT_NET_STATE = "/run/hil/networks"


@dataclass
class TapAttachment:
    """One board's place on a tap network: its namespace, MAC and fixed address."""

    board: str
    namespace: str
    mac: str
    address: ipaddress.IPv4Address
    harness_address: ipaddress.IPv4Address
    services_address: ipaddress.IPv4Address
    mode: str = "tap"
    tap: str = "tap0"

    def command_prefix(self) -> list[str]:
        return netns.netns_exec(self.namespace)

    def netdev(self, netdev_id: str) -> str:
        return f"tap,id={netdev_id},ifname={self.tap},script=no,downscript=no"

    def record(self) -> dict[str, Any]:
        return {"mode": self.mode, "address": str(self.address), "mac": self.mac,
                "namespace": self.namespace, "harness_address": str(self.harness_address),
                "dns": str(self.services_address), "ntp": str(self.services_address),
                "hostname": f"{self.board}.{DOMAIN}"}


def networks_dir() -> Path:
    """Host-wide records of tap networks (namespaces and subnets are host-wide too)."""
    path = Path(os.environ.get(ENV_NET_STATE, DEFAULT_NET_STATE))
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


class TapNetwork:
    """One private test subnet with its services; see the module docstring."""

    def __init__(self, run_dir: Path, aliases: Mapping[str, str] | None = None) -> None:
        self.run_dir = Path(run_dir).resolve()  # dnsmasq and chronyd run in other working folders
        # host names outside hil.test that the boards' images were built for (the IoT hub, DPS, a
        # time server), answered with the address of a service of ours: {name: "broker" | "time"}
        self.aliases = dict(aliases or {})
        unknown = {t for t in self.aliases.values()} - {"broker", "time"}
        if unknown:
            raise UsageError(f"aliases of the test network point at {sorted(unknown)}", fix="use broker or time")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_hex(3)
        self.bridge = f"{netns.PREFIX}{self.token}"
        self.services_ns = f"{self.bridge}-svc"
        self.subnet: ipaddress.IPv4Network | None = None
        self.attachments: dict[str, TapAttachment] = {}
        self.dnsmasq: Dnsmasq | None = None
        self.chrony: Chrony | None = None
        self._record = networks_dir() / f"{self.token}.json"
        self._started = False

    # ---------------------------------------------------------------- addresses

    def _host(self, n: int) -> ipaddress.IPv4Address:
        if self.subnet is None:
            raise UsageError("the test network is not started", fix="call start() first")
        return self.subnet.network_address + n

    @property
    def harness_address(self) -> ipaddress.IPv4Address:
        """The harness side (root namespace): bind the broker and listeners here."""
        return self._host(HARNESS_HOST)

    @property
    def services_address(self) -> ipaddress.IPv4Address:
        """dnsmasq (DHCP, DNS) and chronyd (NTP)."""
        return self._host(SERVICES_HOST)

    @property
    def names(self) -> dict[str, ipaddress.IPv4Address]:
        return {f"broker.{DOMAIN}": self.harness_address, f"time.{DOMAIN}": self.services_address,
                f"dns.{DOMAIN}": self.services_address}

    @property
    def alias_addresses(self) -> dict[str, ipaddress.IPv4Address]:
        return {name: self.names[f"{target}.{DOMAIN}"] for name, target in self.aliases.items()}

    # ---------------------------------------------------------------- life cycle

    def start(self) -> TapNetwork:
        if os.geteuid() != 0:
            raise UsageError("the tap test network needs root (namespaces, bridges, tap devices)",
                             fix="run as root, or use the 'user' network mode")
        install_sigterm_exit()
        reap_stale_networks()
        with FileLock(str(networks_dir() / "allocate.lock"), timeout=10):
            used = {rec.get("index") for rec in _live_records()}
            index = next((k for k in range(1, 255) if k not in used), None)
            if index is None:
                raise InfrastructureError("no free test subnet in 10.231.0.0/16 (254 live networks)")
            self.subnet = ipaddress.IPv4Network(f"10.231.{index}.0/24")
            self._write_record(index)
        self._started = True
        atexit.register(self.stop)
        try:
            self._build()
        except BaseException:
            self.stop()
            raise
        return self

    def _build(self) -> None:
        prefix = self.subnet.prefixlen if self.subnet else 24
        netns.create_bridge(self.bridge)
        netns.add_address(self.bridge, f"{self.harness_address}/{prefix}")
        netns.create_namespace(self.services_ns)
        netns.create_veth(f"{self.bridge}-s", self.services_ns, "eth0", self.bridge)
        netns.add_address("eth0", f"{self.services_address}/{prefix}", ns=self.services_ns)
        pool = (self._host(POOL[0]), self._host(POOL[1]))
        records = {name.removesuffix(f".{DOMAIN}"): addr for name, addr in self.names.items()}
        self.dnsmasq = Dnsmasq(self.run_dir, self.services_ns, "eth0",
                               ipaddress.IPv4Interface(f"{self.services_address}/{prefix}"), pool,
                               records, router=self.harness_address, ntp=self.services_address,
                               aliases=self.alias_addresses)
        self.dnsmasq.start()
        self.chrony = Chrony(self.run_dir, self.services_ns,
                             ipaddress.IPv4Interface(f"{self.services_address}/{prefix}"))
        self.chrony.start()
        log.info("test network %s up: harness %s, services %s", self.subnet, self.harness_address,
                 self.services_address)

    def attach(self, board: str, mac: str | None = None) -> TapAttachment:
        """Give a board a namespace, a link to the bridge, a tap for QEMU and a fixed lease."""
        if board in self.attachments:
            raise UsageError(f"board {board!r} is already attached to network {self.subnet}")
        if len(self.attachments) >= MAX_BOARDS:
            raise UsageError(f"network {self.subnet} is full ({MAX_BOARDS} boards)")
        i = len(self.attachments) + 1
        ns = f"{self.bridge}-{i}"
        att = TapAttachment(board=board, namespace=ns, mac=mac or mac_for(board),
                            address=self._host(BOARD_HOST_BASE + i), harness_address=self.harness_address,
                            services_address=self.services_address)
        self.attachments[board] = att
        self._write_record(self._index())
        netns.create_namespace(ns)
        netns.create_veth(ns, ns, "eth0", self.bridge)
        netns.create_bridge("br0", ns=ns)
        netns.ip("link", "set", "eth0", "master", "br0", ns=ns)
        netns.create_tap(att.tap, ns, "br0")
        if self.dnsmasq is not None:
            self.dnsmasq.add_host(att.mac, att.address, board)
        return att

    def wait_for_lease(self, mac: str, timeout: float = 10.0) -> ipaddress.IPv4Address:
        """The address dnsmasq leased to ``mac`` (from its lease file), waiting up to ``timeout``."""
        if self.dnsmasq is None:
            raise UsageError("the test network is not started", fix="call start() first")
        mac = mac.lower()
        deadline = time.monotonic() + timeout
        while True:
            leases = read_leases(self.dnsmasq.lease_file)
            for lease in leases:
                if lease.mac == mac:
                    return lease.address
            if time.monotonic() > deadline:
                raise WaitTimeout(f"no DHCP lease for {mac} within {timeout}s",
                                  expected=f"a lease for {mac}",
                                  actual=", ".join(f"{x.mac}={x.address}" for x in leases) or "no leases",
                                  evidence=self.run_dir / "dnsmasq.log")
            time.sleep(0.05)  # dnsmasq rewrites the lease file; no event to wait on

    def stop(self) -> None:
        """Stop the services and remove every namespace, link and the record; idempotent."""
        if not self._started:
            return
        self._started = False
        atexit.unregister(self.stop)
        for service in (self.chrony, self.dnsmasq):
            if service is not None:
                with contextlib.suppress(Exception):
                    service.stop()
        remove_network_objects(self.token, [a.namespace for a in self.attachments.values()])
        with contextlib.suppress(FileNotFoundError):
            self._record.unlink()

    def __enter__(self) -> TapNetwork:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- record

    def _index(self) -> int:
        return int(str(self.subnet).split(".")[2]) if self.subnet else 0

    def _write_record(self, index: int) -> None:
        data = {"token": self.token, "owner_pid": os.getpid(), "index": index,
                "subnet": str(self.subnet), "bridge": self.bridge, "services_ns": self.services_ns,
                "namespaces": [a.namespace for a in self.attachments.values()],
                "run_dir": str(self.run_dir)}
        tmp = self._record.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self._record)


def _read_records() -> list[dict[str, Any]]:
    records = []
    for path in networks_dir().glob("*.json"):
        with contextlib.suppress(OSError, json.JSONDecodeError):
            data = json.loads(path.read_text())
            data["_path"] = path
            records.append(data)
    return records


def _live_records() -> list[dict[str, Any]]:
    return [r for r in _read_records() if pid_alive(int(r.get("owner_pid", 0)))]


def remove_network_objects(token: str, namespaces: list[str]) -> None:
    """Delete a network's namespaces (killing what runs inside), its veths and its bridge."""
    bridge = f"{netns.PREFIX}{token}"
    known = set(namespaces) | {f"{bridge}-svc"}
    known |= {ns for ns in netns.list_namespaces() if ns.startswith(f"{bridge}-")}
    for ns in sorted(known):
        netns.delete_namespace(ns)
    # the kernel removes a namespace's veths asynchronously: delete the outer ends now
    for link in netns.list_links(f"{bridge}-"):
        netns.delete_link(link)
    netns.delete_link(bridge)


def reap_stale_networks() -> list[str]:
    """Remove networks whose owner died, and ``hil-`` namespaces that no live network claims."""
    reaped = []
    live_tokens = set()
    for rec in _read_records():
        if pid_alive(int(rec.get("owner_pid", 0))):
            live_tokens.add(rec["token"])
            continue
        log.warning("removing test network %s left by dead process %s", rec.get("subnet"),
                    rec.get("owner_pid"))
        remove_network_objects(rec["token"], list(rec.get("namespaces", [])))
        with contextlib.suppress(FileNotFoundError):
            rec["_path"].unlink()
        reaped.append(rec["token"])
    for ns in netns.list_namespaces():
        token = ns[len(netns.PREFIX):].split("-")[0]
        if token not in live_tokens:
            log.warning("removing orphaned namespace %s", ns)
            netns.delete_namespace(ns)
            netns.delete_link(f"{netns.PREFIX}{token}")
            reaped.append(token)
    return reaped
