"""Who holds a port: read from /proc as this host shows it (here a /proc tree the test writes)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from harness.broker import ports
from harness.errors import InfrastructureError

_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


def _proc(tmp_path: Path, tcp: str, tcp6: str, pid: str, comm: str, inode: str) -> Path:
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    (proc / "net" / "tcp").write_text(_HEADER + tcp)
    (proc / "net" / "tcp6").write_text(_HEADER + tcp6)
    (proc / pid / "fd").mkdir(parents=True)
    (proc / pid / "comm").write_text(comm + "\n")
    os.symlink(f"socket:[{inode}]", proc / pid / "fd" / "3")
    (proc / "self").mkdir()  # not a pid: skipped
    return proc


def test_a_listener_at_the_address_is_found_with_its_process(tmp_path: Path) -> None:
    # 127.1.2.3:8883 (0x22B3) listening (st 0A), inode 4711; a connected socket on the same port is not it
    tcp = ("   0: 0302017F:22B3 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4711\n"
           "   1: 0302017F:22B3 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4712\n")
    proc = _proc(tmp_path, tcp, "", "812", "mosquitto", "4711")
    assert ports.holder("127.1.2.3", 8883, proc) == "mosquitto (pid 812)"
    assert ports.holder("127.1.2.4", 8883, proc) is None
    assert ports.holder("127.1.2.3", 8884, proc) is None


def test_a_wildcard_listener_holds_every_address(tmp_path: Path) -> None:
    tcp6 = ("   0: 00000000000000000000000000000000:22B3 00000000000000000000000000000000:0000 0A 00000000:00000000 "
            "00:00000000 00000000     0        0 99\n")
    proc = _proc(tmp_path, "", tcp6, "77", "other-broker", "99")
    assert ports.holder("192.168.50.1", 8883, proc) == "other-broker (pid 77)"


def test_a_listener_of_a_process_not_visible_is_said_so(tmp_path: Path) -> None:
    tcp = "   0: 00000000:22B3 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5\n"
    proc = _proc(tmp_path, tcp, "", "9", "x", "6")  # the process shown holds another socket
    assert ports.holder("10.0.0.1", 8883, proc) == "a process this user cannot see"


def test_require_free_names_a_taken_port_and_its_holder() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        taken = f"port {port} on 127.0.0.1 is already taken by .*pid {os.getpid()}"
        with pytest.raises(InfrastructureError, match=taken):
            ports.require_free("127.0.0.1", port, "for the test")
