"""User networking: a board's TCP connection to 10.0.2.100:<port> reaches a harness service.

The test plays the board itself: QEMU's user network is joined by a hub to a UDP socket netdev,
and scapy frames from the test (ARP, then a TCP handshake and data) stand in for firmware.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import ARP, Ether

from harness.emulation.network import USER_GUEST, USER_HOST, USER_SERVICES, UserAttachment
from harness.emulation.process import OwnedProcess

pytestmark = [pytest.mark.needs("qemu")]

GUEST_MAC = "02:00:00:00:00:15"


@pytest.fixture
def upper_echo() -> Iterator[int]:
    """A harness-side TCP service on loopback that answers each chunk in upper case."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(20)

    def serve() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            while chunk := conn.recv(100):
                conn.sendall(chunk.upper())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.close()
    thread.join(5)


class FrameLink:
    """Raw Ethernet frames to and from QEMU's hub over a UDP socket netdev."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        self.qemu_port = probe.getsockname()[1]
        probe.close()

    def send(self, frame: Ether) -> None:
        self.sock.sendto(bytes(frame), ("127.0.0.1", self.qemu_port))

    def expect(self, want: type, timeout: float = 5.0) -> Ether:
        deadline = time.monotonic() + timeout
        seen = []
        while (remaining := deadline - time.monotonic()) > 0:
            self.sock.settimeout(remaining)
            try:
                data, _ = self.sock.recvfrom(2048)
            except TimeoutError:
                break
            frame = Ether(data)
            if frame.haslayer(want) and frame[Ether].dst == GUEST_MAC:
                return frame
            seen.append(frame.summary())
        raise AssertionError(f"no {want.__name__} frame for the board within {timeout}s; saw {seen}")


@pytest.mark.timeout(60)
def test_a_board_connection_to_the_services_address_reaches_a_loopback_service(
        tmp_path: Path, upper_echo: int) -> None:
    att = UserAttachment.create("u1", guest_services={1883: upper_echo})
    link = FrameLink()
    # QEMU moves no packets while the VM is stopped: run a core that only sleeps (SP, PC, wfi; b .)
    idle = tmp_path / "idle.bin"
    idle.write_bytes(struct.pack("<IIHH", 0x20001000, 0x09, 0xBF30, 0xE7FD))
    argv = ["qemu-system-arm", "-M", "mps2-an385", "-nodefaults", "-display", "none",
            "-device", f"loader,file={idle},addr=0",
            "-netdev", att.netdev("u0"),
            "-netdev", f"socket,id=s0,udp=127.0.0.1:{link.port},localaddr=127.0.0.1:{link.qemu_port}",
            "-netdev", "hubport,id=h0,hubid=0,netdev=u0", "-netdev", "hubport,id=h1,hubid=0,netdev=s0"]
    with OwnedProcess("qemu user-net", argv, tmp_path / "qemu.log") as qemu:
        arp = (Ether(src=GUEST_MAC, dst="ff:ff:ff:ff:ff:ff")
               / ARP(op=1, hwsrc=GUEST_MAC, psrc=str(USER_GUEST), pdst=str(USER_HOST)))
        deadline = time.monotonic() + 10
        while True:  # QEMU drops frames until its netdevs are up: ask again until the gateway answers
            qemu.check_alive()
            link.send(arp)
            try:
                gateway = link.expect(ARP, timeout=0.3)[ARP].hwsrc
                break
            except AssertionError:
                assert time.monotonic() < deadline, "QEMU's user network gateway never answered ARP"
        to_gw = Ether(src=GUEST_MAC, dst=gateway) / IP(src=str(USER_GUEST), dst=str(USER_SERVICES))

        link.send(to_gw / TCP(sport=40000, dport=1883, flags="S", seq=1000))
        synack = link.expect(TCP)[TCP]
        assert synack.flags == "SA", synack.summary()
        ack = synack.seq + 1
        link.send(to_gw / TCP(sport=40000, dport=1883, flags="PA", seq=1001, ack=ack) / b"hello broker")
        reply = b""
        deadline = time.monotonic() + 10
        while reply != b"HELLO BROKER" and time.monotonic() < deadline:
            frame = link.expect(TCP)
            segment = frame[TCP]
            length = frame[IP].len - frame[IP].ihl * 4 - segment.dataofs * 4  # frames are padded to 60
            data = bytes(segment.payload)[:length]
            if data:
                reply += data
                ack = segment.seq + len(data)
                link.send(to_gw / TCP(sport=40000, dport=1883, flags="A", seq=1013, ack=ack))
        assert reply == b"HELLO BROKER"
        pipes = [int(p) for p in subprocess.run(["pgrep", "-f", f"tcp_pipe 127.0.0.1 {upper_echo}"],
                                                capture_output=True, text=True).stdout.split()]
        assert pipes, "no per-connection pipe process was found while the connection was open"
    assert not qemu.alive()
    # the per-connection pipe ran in QEMU's process group and went with it: each one's exit is
    # waited for on a pidfd (readable once the process has ended), not read from a process list at
    # one instant, when a pipe killed with its group may still be on its way out
    for pid in pipes:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            assert select.select([fd], [], [], 10)[0], f"pipe process {pid} still running 10 s after QEMU ended"
        finally:
            os.close(fd)
