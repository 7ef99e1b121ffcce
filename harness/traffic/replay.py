"""Replay a capture at a board: the peers' side re-sent from the harness, the device's side played
by the board itself.

The device of the capture (``device``) becomes the board, every peer becomes the harness:

- UDP: each datagram a peer sent the device is sent again from a UDP socket of the harness (bound
  to the captured peer port where it is free, so replies have somewhere to go) to the board, on
  the captured device port (or ``ports[p]``);
- ICMP: each message a peer sent is sent again through a raw socket with its checksum recomputed;
- TCP: a blind replay of segments only draws resets, so each connection a peer opened is
  re-enacted live: connect to the board, then, in captured order, send what the peer sent and
  read as many bytes as the device sent back; closed with a FIN, or an RST where the peer reset.
  Connections the device opened are left out (listed in the exchange's details).

Timing: the captured gaps scaled by ``speed`` (1: original; 0: as fast as possible).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import UsageError
from harness.telemetry.model import Protocol
from harness.traffic.capture import Key, read_pcap
from harness.traffic.checksum import inet_checksum
from harness.traffic.exchange import Exchange, Target, begin, finish, key
from harness.traffic.scan import _source_for, drain

IPv4 = ipaddress.IPv4Address


@dataclass
class _Conversation:
    """One TCP connection a peer opened: its segments' payloads in order, by side."""

    peer_port: int
    device_port: int
    steps: list[tuple[float, bool, bytes]] = field(default_factory=list)  # (time, from peer, payload)
    reset: bool = False


@dataclass(frozen=True)
class _Datagram:
    time: float
    proto: int
    peer_port: int
    device_port: int
    payload: bytes  # UDP payload, or the whole ICMP message


def _read(capture: Path, device: IPv4) -> tuple[list[_Datagram], dict[tuple[IPv4, int, int], _Conversation], int]:
    datagrams: list[_Datagram] = []
    conversations: dict[tuple[IPv4, int, int], _Conversation] = {}
    device_opened = 0
    for t, frame in read_pcap(capture):
        if len(frame) < 34 or struct.unpack_from("!H", frame, 12)[0] != 0x0800:
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack_from("!H", ip, 2)[0]
        src, dst, proto = IPv4(ip[12:16]), IPv4(ip[16:20]), ip[9]
        body = ip[ihl:total]
        if device not in (src, dst) or struct.unpack_from("!H", ip, 6)[0] & 0x3FFF:
            continue  # not the device's, or a fragment
        from_peer = dst == device
        peer = src if from_peer else dst
        if proto == 17 and len(body) >= 8 and from_peer:
            sport, dport = struct.unpack_from("!HH", body)
            datagrams.append(_Datagram(t, 17, sport, dport, bytes(body[8:])))
        elif proto == 1 and from_peer:
            datagrams.append(_Datagram(t, 1, 0, 0, bytes(body)))
        elif proto == 6 and len(body) >= 20:
            sport, dport = struct.unpack_from("!HH", body)
            flags = body[13]
            peer_port, device_port = (sport, dport) if from_peer else (dport, sport)
            conv_key = (peer, peer_port, device_port)
            if flags & 0x02 and not flags & 0x10:  # SYN without ACK: who opens
                if from_peer:
                    conversations[conv_key] = _Conversation(peer_port, device_port)
                else:
                    device_opened += 1
                continue
            conv = conversations.get(conv_key)
            if conv is None:
                continue
            data = bytes(body[(body[12] >> 4) * 4:])
            if data:
                conv.steps.append((t, from_peer, data))
            if flags & 0x04 and from_peer:
                conv.reset = True
    return datagrams, conversations, device_opened


def replay(target: Target, capture: Path, device: str, *, speed: float = 1.0,
           ports: dict[int, int] | None = None, timeout: float = 5.0) -> Exchange:
    """Re-send ``capture`` (a pcap) at the board as described in the module docstring."""
    try:
        device_address = IPv4(device)
    except ValueError:
        raise UsageError(f"replay: device {device!r} is not an IPv4 address",
                         fix="give the address the device had in the capture") from None
    datagrams, conversations, device_opened = _read(Path(capture), device_address)
    if not datagrams and not conversations:
        raise UsageError(f"replay: {capture} holds no UDP, ICMP or TCP traffic from a peer to {device}",
                         fix="check the device address the capture uses")
    ports = ports or {}
    exchange = begin("replay", target)
    board = target.check()
    source = _source_for(target)
    keys: list[Key] = []
    first = min([d.time for d in datagrams] + [c.steps[0][0] for c in conversations.values() if c.steps],
                default=0.0)
    start = time.monotonic()

    def wait_until(t: float) -> None:
        if speed > 0 and (left := start + (t - first) * speed - time.monotonic()) > 0:
            time.sleep(left)  # the capture's own pacing, not a wait for an event

    udp: dict[int, socket.socket] = {}
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as icmp:
            for d in datagrams:
                wait_until(d.time)
                if d.proto == 17:
                    sock = udp.get(d.peer_port) or _udp_socket(udp, d.peer_port)
                    dport = ports.get(d.device_port, d.device_port)
                    sock.sendto(d.payload, (board, dport))
                    keys.append(key(target.address, source, dport, sock.getsockname()[1], Protocol.UDP))
                else:
                    message = bytearray(d.payload)
                    if len(message) >= 4:
                        message[2:4] = b"\0\0"
                        message[2:4] = struct.pack("!H", inet_checksum(bytes(message)))
                    icmp.sendto(bytes(message), (board, 0))
                    keys.append(key(target.address, source, 0, 0, Protocol.ICMP))
            drain(udp.values())
    finally:
        for sock in udp.values():
            sock.close()
    for conv in conversations.values():
        keys.append(_reenact(target, board, source, conv, ports.get(conv.device_port, conv.device_port), timeout))
    exchange.details.update(capture=str(capture), device=device, speed=speed, udp_icmp=len(datagrams),
                            tcp_reenacted=len(conversations), tcp_left_out_device_opened=device_opened)
    return finish(exchange, keys)


def _udp_socket(socks: dict[int, socket.socket], port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("", port))
    except OSError:
        sock.bind(("", 0))
    socks[port] = sock
    return sock


def _reenact(target: Target, board: str, source: str, conv: _Conversation, port: int, timeout: float) -> Key:
    with socket.create_connection((board, port), timeout=timeout) as sock:
        local_port = sock.getsockname()[1]
        for _, from_peer, data in conv.steps:
            if from_peer:
                sock.sendall(data)
            else:
                need = len(data)
                while need > 0:
                    chunk = sock.recv(need)
                    if not chunk:
                        break
                    need -= len(chunk)
        if conv.reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return key(target.address, source, port, local_port, Protocol.TCP)
