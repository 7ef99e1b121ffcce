"""Thin wrappers over ``ip`` for network namespaces, veth pairs, bridges and taps (root only).

Every name the harness creates starts with ``hil-`` followed by a short token unique to the
network that owns it, so stale objects of a dead owner can be found and removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path

from harness.emulation.process import run

log = logging.getLogger(__name__)

PREFIX = "hil-"
IFNAMSIZ = 15


def ip(*args: str, ns: str | None = None, check: bool = True) -> str:
    argv = ["ip", *(["-n", ns] if ns else []), *args]
    return run(argv, what="ip " + " ".join(args[:2]), check=check)


def netns_exec(ns: str) -> list[str]:
    """The command prefix that runs a program inside namespace ``ns``."""
    return ["ip", "netns", "exec", ns]


def check_ifname(name: str) -> str:
    if len(name) > IFNAMSIZ:
        raise ValueError(f"interface name {name!r} is longer than {IFNAMSIZ} characters")
    return name


def list_namespaces(prefix: str = PREFIX) -> list[str]:
    return sorted(n.name for n in Path("/run/netns").glob(f"{prefix}*")) if Path("/run/netns").is_dir() else []


def create_namespace(ns: str) -> None:
    ip("netns", "add", ns)
    ip("link", "set", "lo", "up", ns=ns)


def namespace_pids(ns: str) -> list[int]:
    out = run(["ip", "netns", "pids", ns], what="ip netns pids", check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def delete_namespace(ns: str) -> None:
    """Kill what still runs inside (only harness processes run there), then delete it."""
    for pid in namespace_pids(ns):
        log.warning("killing pid %d left in namespace %s", pid, ns)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    ip("netns", "delete", ns, check=False)


def link_exists(name: str, ns: str | None = None) -> bool:
    return bool(ip("-o", "link", "show", "dev", name, ns=ns, check=False).strip())


def list_links(prefix: str = PREFIX, ns: str | None = None) -> list[str]:
    """Interface names starting with ``prefix`` (``ip -o link`` prints ``N: name@peer: ...``)."""
    names = []
    for line in ip("-o", "link", "show", ns=ns, check=False).splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            name = parts[1].strip().split("@")[0]
            if name.startswith(prefix):
                names.append(name)
    return names


def delete_link(name: str, ns: str | None = None) -> None:
    if link_exists(name, ns):
        ip("link", "delete", name, ns=ns, check=False)


def create_bridge(name: str, ns: str | None = None) -> None:
    ip("link", "add", check_ifname(name), "type", "bridge", ns=ns)
    # a bridge forwards at once (no STP listening delay): boards send at boot
    ip("link", "set", name, "type", "bridge", "forward_delay", "0", "stp_state", "0", ns=ns)
    ip("link", "set", name, "up", ns=ns)


def create_veth(outer: str, inner_ns: str, inner: str, bridge: str) -> None:
    """A veth pair: ``outer`` in the root namespace on ``bridge``, ``inner`` inside ``inner_ns``."""
    ip("link", "add", check_ifname(outer), "type", "veth", "peer", "name", check_ifname(inner),
       "netns", inner_ns)
    ip("link", "set", outer, "master", bridge)
    ip("link", "set", outer, "up")
    ip("link", "set", inner, "up", ns=inner_ns)


def create_tap(name: str, ns: str, bridge: str) -> None:
    ip("tuntap", "add", "dev", check_ifname(name), "mode", "tap", ns=ns)
    ip("link", "set", name, "master", bridge, ns=ns)
    ip("link", "set", name, "up", ns=ns)


def add_address(dev: str, cidr: str, ns: str | None = None) -> None:
    ip("addr", "add", cidr, "dev", dev, ns=ns)
