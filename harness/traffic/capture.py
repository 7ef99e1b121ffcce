"""What the security module counts, read from a capture of the board's link.

The module counts at its capture points (spec 3.2), not on the wire, so a capture is reduced to
the datagrams it would have seen:

- outbound (from the board): every TCP, UDP and ICMP datagram, broadcast and multicast included,
  counted once and whole (the fragments of one datagram on the wire are one datagram at NetX's IP
  filter, which runs before fragmentation);
- inbound (to the board: its address, a broadcast, a joined multicast): after the IP layer's
  checks (header checksum, version), fragments dropped (stock images never enable reassembly) or,
  with ``reassembly=True``, counted once with the first fragment's length as NetX does;
- bytes = IPv4 total length − 20 (outbound: − IHL × 4; inbound NetX strips options but keeps the
  total length, so option bytes count); ICMP ports 0/0;
- boards whose Wi-Fi module runs the stack (``stack: offload``) report payload + 20 (TCP) or + 8
  (UDP) per send or receive, no handshake segments, no ICMP.

Capture times are the capture's own clock: QEMU's filter-dump stamps a frame with the whole Unix
second its dump began (``time(NULL)``) plus its virtual clock since then, which stops while the
machine is halted. They read as Unix times (a run's first frame lands on a whole second) but drift
from the wall clock by every halt, so a capture is compared with itself: frame numbers mark "from
here on", and the board's security PUBLISHes mark its windows.

Each :class:`Datagram` carries the module's flow key (local and remote from the board's side),
its direction, bytes, the capture time and, for the board's own MQTT traffic, whether it starts a
security PUBLISH (the end of a collection window, see :mod:`harness.traffic.windows`).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from harness.errors import UsageError
from harness.telemetry.model import Protocol
from harness.traffic.tls_publish import TlsPublishMarks, elect

ETH_IPV4 = 0x0800
ETH_VLAN = 0x8100
PROTOCOLS = {6: Protocol.TCP, 17: Protocol.UDP, 1: Protocol.ICMP}
IPv4 = ipaddress.IPv4Address
Key = tuple[IPv4, IPv4, int, int, Protocol]
SECURITY_MARK = b"mti=2."  # in the topic of every security message (spec 1)
_MQTT_PUBLISH_QOS1 = 0x32


@dataclass(frozen=True)
class Datagram:
    """One datagram as the module counts it."""

    time: float
    outbound: bool
    key: Key  # (local address, remote address, local port, remote port, protocol)
    nbytes: int
    security_publish: bool = False  # an outbound TCP segment that starts a security PUBLISH
    frame: int = 0  # its (first) frame's number in the capture: captures keep their own clock
    data: int = 0  # the transport's payload bytes (TCP data; UDP and ICMP: all but their header)

    @property
    def protocol(self) -> Protocol:
        return self.key[4]


@dataclass(frozen=True)
class _Packet:
    time: float
    src: IPv4
    dst: IPv4
    proto: int
    ident: int
    offset: int  # fragment offset in bytes
    more: bool
    total: int  # IPv4 total length
    ihl: int  # header bytes
    payload: bytes
    checksum_ok: bool
    src_mac: bytes


def read_pcap(path: Path) -> Iterator[tuple[float, bytes]]:
    """(time, frame) of each record of a classic pcap file (Ethernet); a torn last record (the
    capture is still being written) is left for the next read."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read capture {path}: {exc.strerror}", fix="check the path") from None
    if len(data) < 24:
        return
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian, nano = "<", magic == b"\x4d\x3c\xb2\xa1"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian, nano = ">", magic == b"\xa1\xb2\x3c\x4d"
    else:
        raise UsageError(f"{path} is not a pcap capture (magic {magic.hex()})", fix="give a .pcap file")
    pos = 24
    record = struct.Struct(endian + "IIII")
    while pos + 16 <= len(data):
        sec, frac, incl, _orig = record.unpack_from(data, pos)
        pos += 16
        if pos + incl > len(data):
            return
        yield sec + frac / (1e9 if nano else 1e6), data[pos: pos + incl]
        pos += incl


def write_pcap(path: Path, frames: Iterable[tuple[float, bytes]]) -> Path:
    """Write Ethernet ``frames`` as a classic pcap file (microseconds, little-endian)."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for t, frame in frames:
        sec = int(t)
        out += struct.pack("<IIII", sec, round((t - sec) * 1e6) % 1_000_000, len(frame), len(frame)) + frame
    path.write_bytes(bytes(out))
    return path


def _checksum_ok(header: bytes) -> bool:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def parse_frame(time: float, frame: bytes) -> _Packet | None:
    """An Ethernet frame's IPv4 datagram (a VLAN tag allowed), or None."""
    if len(frame) < 14:
        return None
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    start = 14
    if ethertype == ETH_VLAN and len(frame) >= 18:
        ethertype = struct.unpack_from("!H", frame, 16)[0]
        start = 18
    if ethertype != ETH_IPV4 or len(frame) < start + 20:
        return None
    ip = frame[start:]
    if ip[0] >> 4 != 4:
        return None
    ihl = (ip[0] & 0x0F) * 4
    total = struct.unpack_from("!H", ip, 2)[0]
    if ihl < 20 or total < ihl or len(ip) < ihl:
        return None
    ident, flags_frag = struct.unpack_from("!HH", ip, 4)
    return _Packet(
        time=time, src=IPv4(ip[12:16]), dst=IPv4(ip[16:20]), proto=ip[9], ident=ident,
        offset=(flags_frag & 0x1FFF) * 8, more=bool(flags_frag & 0x2000), total=total, ihl=ihl,
        payload=bytes(ip[ihl:total]), checksum_ok=_checksum_ok(bytes(ip[:ihl])), src_mac=bytes(frame[6:12]))


def _ports(proto: Protocol, payload: bytes) -> tuple[int, int]:
    if proto is Protocol.ICMP or len(payload) < 4:
        return 0, 0
    src, dst = struct.unpack_from("!HH", payload, 0)
    return src, dst


def _tcp_data(payload: bytes) -> bytes:
    return payload[(payload[12] >> 4) * 4:] if len(payload) >= 20 else b""


def _starts_security_publish(payload: bytes) -> bool:
    """A TCP segment whose data starts an MQTT PUBLISH (QoS 1) of a security message."""
    if len(payload) < 20:
        return False
    data = _tcp_data(payload)
    if not data or data[0] & 0xF6 != _MQTT_PUBLISH_QOS1 & 0xF6:  # 0x32, DUP flag allowed
        return False
    i = 1
    while i < len(data) and i <= 4 and data[i] & 0x80:
        i += 1
    head = data[i + 1: i + 3]
    if len(head) < 2:
        return False
    topic_len = struct.unpack("!H", head)[0]
    return SECURITY_MARK in data[i + 3: i + 3 + topic_len]


def module_datagrams(frames: Iterable[tuple[float, bytes]], board: IPv4 | str, *, mac: str | None = None,
                     stack: str = "native", reassembly: bool = False,
                     subnet: ipaddress.IPv4Network | None = None,
                     tls: TlsPublishMarks | None = None) -> list[Datagram]:
    """The datagrams of ``frames`` that the module of the board at ``board`` counts, in order.
    With the board's ``mac``, what it sends before it has its address (DHCP from 0.0.0.0) counts too.
    With ``tls``, a TLS record of a security PUBLISH's size marks one too (MQTT over TLS)."""
    board = IPv4(board)
    own = bytes.fromhex(mac.replace(":", "")) if mac else None
    out: list[Datagram] = []
    sealed: list[tuple[int, Key, frozenset[str]]] = []  # (position, connection, protections) of TLS data
    outbound_fragments: dict[tuple[IPv4, IPv4, int, int], list[_Packet]] = {}
    for number, (time, frame) in enumerate(frames):
        pkt = parse_frame(time, frame)
        if pkt is None or pkt.proto not in PROTOCOLS:
            continue
        proto = PROTOCOLS[pkt.proto]
        if pkt.src_mac == own if own is not None else pkt.src == board:
            datagram = _outbound(pkt, proto, outbound_fragments)
        elif _accepted(pkt, board, subnet):
            datagram = _inbound(pkt, proto, board, reassembly)
        else:
            continue
        if datagram is not None:
            counted = _as_stack(datagram, pkt, proto, stack)
            if tls is not None and datagram.outbound and proto is Protocol.TCP and not datagram.security_publish \
                    and len(counted) == 1 and (found := tls.protections(_tcp_data(pkt.payload))):
                sealed.append((len(out), datagram.key, found))
            out.extend(replace(d, frame=number) for d in counted)
    if sealed:  # over TLS: the records of a security PUBLISH's size, under the connection's protection
        elected = elect((key, found) for _, key, found in sealed)
        for i, (at, _, _) in enumerate(sealed):
            if i in elected:
                out[at] = replace(out[at], security_publish=True)
    return out


def _outbound(pkt: _Packet, proto: Protocol, pending: dict[tuple[IPv4, IPv4, int, int], list[_Packet]]
              ) -> Datagram | None:
    """Counted before fragmentation: one datagram, whole, at its first fragment's time."""
    if pkt.offset or pkt.more:
        key = (pkt.src, pkt.dst, pkt.proto, pkt.ident)
        parts = pending.setdefault(key, [])
        parts.append(pkt)
        if not any(not p.more for p in parts) or not any(p.offset == 0 for p in parts):
            return None
        del pending[key]
        first = min(parts, key=lambda p: p.offset)
        last = max(parts, key=lambda p: p.offset)
        nbytes = last.offset + len(last.payload)
        lport, rport = _ports(proto, first.payload)
        return Datagram(first.time, True, (pkt.src, pkt.dst, lport, rport, proto), nbytes)
    lport, rport = _ports(proto, pkt.payload)
    publish = proto is Protocol.TCP and _starts_security_publish(pkt.payload)
    return Datagram(pkt.time, True, (pkt.src, pkt.dst, lport, rport, proto), pkt.total - pkt.ihl, publish,
                    data=_data(proto, pkt.payload))


def _accepted(pkt: _Packet, board: IPv4, subnet: ipaddress.IPv4Network | None) -> bool:
    """The IP layer keeps datagrams for the board's address, the limited broadcast, its subnet's
    broadcast and multicast (joined groups: the board answers none we send, so any counts), and
    only with a good header checksum."""
    if not pkt.checksum_ok:
        return False
    dst = pkt.dst
    return (dst == board or dst == IPv4("255.255.255.255") or dst.is_multicast
            or (subnet is not None and dst == subnet.broadcast_address))


def _inbound(pkt: _Packet, proto: Protocol, board: IPv4, reassembly: bool) -> Datagram | None:
    if (pkt.offset or pkt.more) and (not reassembly or pkt.offset):
        return None  # dropped by the IP layer (or, reassembled, counted at the first fragment)
    rport, lport = _ports(proto, pkt.payload)
    # NetX strips the options and rewrites IHL to 5, but the total length stays: options count
    return Datagram(pkt.time, False, (board, pkt.src, lport, rport, proto), pkt.total - 20,
                    data=_data(proto, pkt.payload))


def _data(proto: Protocol, payload: bytes) -> int:
    if proto is Protocol.TCP:
        return max(0, len(payload) - (payload[12] >> 4) * 4) if len(payload) >= 20 else 0
    return max(0, len(payload) - 8)


def _as_stack(datagram: Datagram, pkt: _Packet, proto: Protocol, stack: str) -> list[Datagram]:
    """An offload (Wi-Fi module) stack reports what its socket calls moved, with synthesized
    headers: TCP data + 20 per segment carrying data, UDP + 8, nothing else."""
    if stack == "native":
        return [datagram]
    if proto is Protocol.ICMP:
        return []
    if proto is Protocol.TCP:
        data = len(pkt.payload) - (pkt.payload[12] >> 4) * 4 if len(pkt.payload) >= 20 else 0
        return [] if data <= 0 else [Datagram(datagram.time, datagram.outbound, datagram.key, data + 20,
                                              datagram.security_publish)]
    return [Datagram(datagram.time, datagram.outbound, datagram.key, max(0, len(pkt.payload) - 8) + 8)]
