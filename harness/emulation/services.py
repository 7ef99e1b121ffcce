"""The services a lab network gives a board: addresses and names (dnsmasq), time (chronyd).

Both run inside the services namespace of a tap test network (see :mod:`harness.emulation.network`
for the layout), bound to the services address only: the host's own DNS, DHCP and NTP (port 123)
are never touched, and chronyd runs with ``-x`` (it never steers the host clock).

:func:`dns_query` and :func:`sntp_query` are small clients used to health-check the services and
by tests probing them from a board's namespace.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import ipaddress
import logging
import os
import secrets
import signal
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from harness.emulation.netns import netns_exec
from harness.emulation.process import OwnedProcess
from harness.errors import InfrastructureError, WaitTimeout

log = logging.getLogger(__name__)

DOMAIN = "hil.test"
NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01


@dataclass(frozen=True)
class Lease:
    mac: str
    address: ipaddress.IPv4Address
    hostname: str
    expires: int


def read_leases(path: Path) -> list[Lease]:
    """Parse dnsmasq's lease file: ``<expiry> <mac> <ip> <hostname|*> <client-id|*>`` per line."""
    leases = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 4:
                with contextlib.suppress(ValueError):
                    leases.append(Lease(parts[1].lower(), ipaddress.IPv4Address(parts[2]), parts[3],
                                        int(parts[0])))
    return leases


class Dnsmasq:
    """DHCP with fixed leases per board MAC, and DNS for ``*.hil.test``; reloaded on SIGHUP."""

    def __init__(self, run_dir: Path, ns: str, interface: str, server: ipaddress.IPv4Interface,
                 pool: tuple[ipaddress.IPv4Address, ipaddress.IPv4Address],
                 records: dict[str, ipaddress.IPv4Address], router: ipaddress.IPv4Address,
                 ntp: ipaddress.IPv4Address, aliases: dict[str, ipaddress.IPv4Address] | None = None) -> None:
        self.run_dir = run_dir.resolve()
        self.ns = ns
        self.interface = interface
        self.server = server
        self.pool = pool
        self.records = dict(records)  # names in hil.test
        self.aliases = dict(aliases or {})  # full names outside it (the hub the images were built for)
        self.router = router
        self.ntp = ntp
        self.lease_file = run_dir / "dnsmasq.leases"
        self.hosts_file = run_dir / "dnsmasq.dhcp-hosts"
        self.names_file = run_dir / "dnsmasq.names"
        self._hosts: dict[str, tuple[ipaddress.IPv4Address, str]] = {}
        self.proc: OwnedProcess | None = None

    def argv(self) -> list[str]:
        netmask = self.server.network.netmask
        return [*netns_exec(self.ns), "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
                "--no-resolv", "--no-hosts", "--bind-interfaces", f"--interface={self.interface}",
                "--except-interface=lo", "--pid-file=", "--user=root", "--group=root",
                "--log-facility=-", "--log-dhcp", "--log-queries",
                f"--dhcp-range={self.pool[0]},{self.pool[1]},{netmask},1h",
                f"--dhcp-hostsfile={self.hosts_file}", f"--addn-hosts={self.names_file}",
                f"--dhcp-leasefile={self.lease_file}", "--dhcp-authoritative",
                f"--domain={DOMAIN}", f"--local=/{DOMAIN}/",
                f"--dhcp-option=option:router,{self.router}",
                f"--dhcp-option=option:dns-server,{self.server.ip}",
                f"--dhcp-option=option:ntp-server,{self.ntp}",
                *(f"--host-record={name}.{DOMAIN},{addr}" for name, addr in self.records.items()),
                *(f"--host-record={name},{addr}" for name, addr in self.aliases.items())]

    def start(self, timeout: float = 10.0) -> None:
        self._write_host_files()
        self.proc = OwnedProcess("dnsmasq", self.argv(), self.run_dir / "dnsmasq.log")
        name, want = next(iter(self.records.items()))
        fqdn = f"{name}.{DOMAIN}"

        def answers() -> bool:
            with contextlib.suppress(OSError, InfrastructureError):
                return dns_query(fqdn, self.server.ip, timeout=0.2) == want
            return False

        self.proc.wait_until(answers, timeout, f"a DNS answer {fqdn} → {want} from {self.server.ip}")

    def add_host(self, mac: str, address: ipaddress.IPv4Address, name: str) -> None:
        """A fixed lease and a DNS name for a board; dnsmasq rereads both files on SIGHUP."""
        self._hosts[mac] = (address, name)
        self._write_host_files()
        if self.proc is not None and self.proc.alive():
            os.kill(self.proc.pid, signal.SIGHUP)

    def _write_host_files(self) -> None:
        self.hosts_file.write_text("".join(f"{mac},{addr},{name}\n"
                                           for mac, (addr, name) in self._hosts.items()))
        self.names_file.write_text("".join(f"{addr} {name}.{DOMAIN} {name}\n"
                                           for addr, name in self._hosts.values()))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


class Chrony:
    """chronyd as an NTP server on one address (``local stratum 8``), never steering the host clock."""

    def __init__(self, run_dir: Path, ns: str | None, address: ipaddress.IPv4Interface) -> None:
        """``ns``: the namespace to run in; None runs in this host's (bound to ``address`` only,
        for a lab network's boards)."""
        self.run_dir = run_dir.resolve()
        self.ns = ns
        self.address = address
        self.conf = run_dir / "chrony.conf"
        self.proc: OwnedProcess | None = None

    def config(self) -> str:
        return "\n".join([
            "local stratum 8",
            "allow" if self.address.network.prefixlen == 32 else f"allow {self.address.network}",
            f"bindaddress {self.address.ip}",
            "port 123",
            "cmdport 0",
            f"pidfile {self.run_dir / 'chronyd.pid'}",
            f"driftfile {self.run_dir / 'chrony.drift'}",
            "",
        ])

    def start(self, timeout: float = 10.0) -> None:
        self.conf.write_text(self.config())
        prefix = netns_exec(self.ns) if self.ns is not None else []
        argv = [*prefix, "chronyd", "-d", "-x", "-u", "root", "-f", str(self.conf)]
        self.proc = OwnedProcess("chronyd", argv, self.run_dir / "chronyd.log")

        def answers() -> bool:
            with contextlib.suppress(OSError, InfrastructureError):
                sntp_query(self.address.ip, timeout=0.2)
                return True
            return False

        self.proc.wait_until(answers, timeout, f"an NTP answer from {self.address.ip}:123")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


# ---------------------------------------------------------------- small clients


def _exchange(payload: bytes, server: ipaddress.IPv4Address, port: int, timeout: float,
              what: str) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(payload, (str(server), port))
        deadline = time.monotonic() + timeout
        while True:
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError as exc:
                raise WaitTimeout(f"no {what} from {server}:{port} within {timeout}s",
                                  expected=f"a {what}", actual="no reply") from exc
            if peer[0] == str(server):
                return data
            if time.monotonic() > deadline:
                raise WaitTimeout(f"no {what} from {server}:{port} within {timeout}s",
                                  expected=f"a {what} from {server}", actual=f"only packets from {peer[0]}")


def dns_query(name: str, server: ipaddress.IPv4Address, timeout: float = 2.0,
              port: int = 53) -> ipaddress.IPv4Address | None:
    """Ask ``server`` for the A record of ``name``; None for NXDOMAIN or no A record."""
    qid = secrets.randbits(16)
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    query = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", 1, 1)
    reply = _exchange(query, server, port, timeout, f"DNS answer for {name}")
    rid, flags, _qd, an = struct.unpack("!HHHH", reply[:8])
    if rid != qid or flags & 0x000F:
        return None
    pos = 12 + len(question) + 4
    for _ in range(an):
        while reply[pos] != 0 and reply[pos] & 0xC0 != 0xC0:  # skip the owner name
            pos += reply[pos] + 1
        pos += 2 if reply[pos] & 0xC0 == 0xC0 else 1
        rtype, _rclass, _ttl, rdlen = struct.unpack("!HHIH", reply[pos:pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            return ipaddress.IPv4Address(reply[pos:pos + 4])
        pos += rdlen
    return None


@dataclass(frozen=True)
class NtpAnswer:
    stratum: int
    time: _dt.datetime


def sntp_query(server: ipaddress.IPv4Address, timeout: float = 2.0, port: int = 123) -> NtpAnswer:
    """One SNTP (RFC 4330) client request; returns the server's stratum and transmit time."""
    reply = _exchange(b"\x23" + b"\0" * 47, server, port, timeout, "NTP answer")
    if len(reply) < 48:
        raise InfrastructureError(f"short NTP reply from {server}", actual=f"{len(reply)} bytes")
    secs, frac = struct.unpack("!II", reply[40:48])
    when = _dt.datetime.fromtimestamp(secs - NTP_EPOCH_OFFSET + frac / 2**32, _dt.UTC)
    return NtpAnswer(stratum=reply[1], time=when)
