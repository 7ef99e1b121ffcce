"""What of a bundle's capture the bench replays, and what that traffic looks like to the module.

The replay (:func:`harness.traffic.replay.replay`) re-sends every datagram a peer sent the device
and re-enacts every TCP connection a peer opened. A capture also holds the device's own
exchanges, which the bench board makes again by itself; replaying their answers would add flows the
field device never had. So the plan keeps only the exchanges peers started, from ``replay_from``
(bundle.yaml; default: the device's first security PUBLISH, since before it the device booted and
was brought up, which the bench does again):

- TCP: connections a peer opened (its SYN), every segment of them;
- UDP: datagrams from a peer on a (peer, peer port, device port) the device had not sent on first
  (answers to the device's DNS, NTP, DHCP are its own exchanges);
- ICMP: messages from a peer other than answers and errors (echo reply, unreachable, time exceeded).

The replay sends a capture's UDP and ICMP first and then re-enacts its TCP connections, so the
plan cuts the frames into segments that keep the captured order: a segment is datagrams, then the
TCP connections peers opened after them (each connection whole, in the segment of its SYN); a
datagram after such a connection starts the next segment. Each segment is replayed at its own
time. The plan writes them as pcaps beside the report (the replay's input, kept as evidence), the
whole selection too, and says which (protocol, device port) pairs the replayed traffic has, so both sides' telemetry
can be split into the replayed traffic and the device's own background.

It also finds the hub's outages on the capture, to re-enact them at the bench's broker: from the
device's connection to its broker (where its security PUBLISHes go) closed by either side (a FIN
or RST) once established, until the broker was there again: just after the last connection attempt
it refused (an RST to the device's SYN), or, where none was refused (a silent path), when it next
accepted one (its SYN-ACK: the device's own back-off then counts in); as seconds after the
device's first security PUBLISH.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import ConfigError
from harness.traffic.capture import module_datagrams, read_pcap, write_pcap
from harness.traffic.tls_publish import TlsPublishMarks

IPv4 = ipaddress.IPv4Address
ICMP_ANSWERS = {0, 3, 11, 14, 16, 18}  # echo reply, unreachable, time exceeded, and the other replies
SERVICE_PORTS = {53, 67, 68, 123}  # DNS, DHCP, NTP: the device's own exchanges when a peer answers from them
REFUSED_SLACK = 0.5  # seconds after the last refused attempt the broker is taken to be back


@dataclass(frozen=True)
class Segment:
    pcap: Path
    first: float  # capture time of its first frame
    frames: int


@dataclass
class ReplayPlan:
    pcap: Path  # the frames to replay
    device: IPv4
    start: float  # capture time from which traffic is replayed
    first_publish: float | None  # capture time of the device's first security PUBLISH
    anchor: float = 0.0  # what replay times count from: the first PUBLISH, else (none found) the first frame
    frames: int = 0
    peers: set[IPv4] = field(default_factory=set)
    keys: set[tuple[str, int]] = field(default_factory=set)  # (protocol name, device port) of replayed traffic
    first: float | None = None  # capture time of the first replayed frame
    last: float | None = None
    boot_messages: int = 0  # security messages the device sent before the first replayed frame
    segments: list[Segment] = field(default_factory=list)
    outages: list[tuple[float, float]] = field(default_factory=list)  # the hub gone, s after the first PUBLISH

    @property
    def offset(self) -> float:
        """Seconds from the device's first security PUBLISH (or the capture's first frame, where none
        is found: MQTT over TLS with telemetry that keeps no topic, an IoT Hub export) to the first
        replayed frame."""
        return self.offset_of(self.first)

    def offset_of(self, t: float | None) -> float:
        """Seconds from the anchor to capture time ``t``."""
        return 0.0 if t is None else max(0.0, t - self.anchor)

    @property
    def duration(self) -> float:
        return 0.0 if self.first is None or self.last is None else self.last - self.first


def plan_replay(capture: Path, device: IPv4, replay_from: float | None, out: Path, *, where: str,
                tls: TlsPublishMarks | None = None) -> ReplayPlan:
    """``tls``: the sizes of the device's security messages, which find its PUBLISHes in a capture
    whose MQTT runs over TLS (:mod:`harness.traffic.tls_publish`)."""
    frames = list(read_pcap(capture))
    datagrams = module_datagrams(frames, device, tls=tls)
    publishes = [d.time for d in datagrams if d.security_publish and not _dup(frames[d.frame][1])]
    first_publish = publishes[0] if publishes else None
    start = replay_from if replay_from is not None else (first_publish if first_publish is not None else 0.0)
    plan = ReplayPlan(out, device, start, first_publish,
                      first_publish if first_publish is not None else frames[0][0] if frames else 0.0)
    hub = next(((d.key[1], d.key[3]) for d in datagrams if d.security_publish), None)
    if hub is not None and first_publish is not None:
        plan.outages = [(a - first_publish, b - first_publish) for a, b in hub_outages(frames, device, *hub)
                        if b > first_publish]
    kept: list[tuple[float, bytes]] = []
    segments: list[list[tuple[float, bytes]]] = [[]]
    tcp_in: dict[tuple[IPv4, int, int], int] = {}  # a peer's TCP connection -> its segment
    segment_has_tcp = False
    tcp_open: set[tuple[IPv4, int, int]] = set()
    udp_started: dict[tuple[IPv4, int, int], bool] = {}  # who sent first on it: True the peer
    for t, frame in frames:
        parsed = _ip(frame)
        if parsed is None:
            continue
        src, dst, proto, body = parsed
        if device not in (src, dst):
            continue
        from_peer = dst == device
        peer = src if from_peer else dst
        sport, dport = struct.unpack_from("!HH", body) if proto in (6, 17) and len(body) >= 4 else (0, 0)
        peer_port, device_port = (sport, dport) if from_peer else (dport, sport)
        conv = (peer, peer_port, device_port)
        keep = False
        if proto == 6 and len(body) >= 14:
            flags = body[13]
            if flags & 0x02 and not flags & 0x10 and from_peer and t >= start:
                tcp_open.add(conv)
            keep = conv in tcp_open
        elif proto == 17:
            by_peer = udp_started.setdefault(conv, from_peer)
            keep = from_peer and by_peer and peer_port not in SERVICE_PORTS and t >= start
        elif proto == 1 and from_peer and body and body[0] not in ICMP_ANSWERS and t >= start:
            keep = True
        if keep:
            kept.append((t, frame))
            if proto == 6:
                if conv not in tcp_in:  # its SYN: the connection belongs to the segment under way
                    tcp_in[conv] = len(segments) - 1
                    segment_has_tcp = True
                segments[tcp_in[conv]].append((t, frame))
            else:
                if segment_has_tcp:
                    segments.append([])
                    segment_has_tcp = False
                segments[-1].append((t, frame))
            plan.peers.add(peer)
            plan.keys.add(({6: "TCP", 17: "UDP", 1: "ICMP"}[proto], device_port))
    if not kept:
        raise ConfigError(f"{where}: the capture holds no traffic a peer started at the device {device} "
                          f"after {start:.3f} s (its boot and bring-up are not replayed): nothing to reproduce",
                          fix="capture while the traffic of interest reaches the device, or set replay_from "
                              "(bundle.yaml) earlier")
    plan.frames = len(kept)
    plan.first, plan.last = kept[0][0], kept[-1][0]
    plan.boot_messages = sum(1 for t in publishes if t < plan.first)
    write_pcap(out, kept)
    for i, segment in enumerate(s for s in segments if s):
        path = write_pcap(out.with_name(f"{out.stem}-{i + 1}{out.suffix}"), segment)
        plan.segments.append(Segment(path, segment[0][0], len(segment)))
    return plan


def hub_outages(frames: list[tuple[float, bytes]], device: IPv4, broker: IPv4, port: int) -> list[tuple[float, float]]:
    """(from, to) capture times when the device had no connection to its broker (see the module
    docstring); an outage still on when the capture ends lasts to its last frame."""
    outages, up, down_since, refused = [], False, None, None
    for t, frame in frames:
        parsed = _ip(frame)
        if parsed is None or parsed[2] != 6 or len(parsed[3]) < 14:
            continue
        src, dst, _, body = parsed
        sport, dport = struct.unpack_from("!HH", body)
        flags = body[13]
        from_broker = (src, sport, dst) == (broker, port, device)
        if not from_broker and (src, dst, dport) != (device, broker, port):
            continue
        if from_broker and flags & 0x12 == 0x12:  # SYN-ACK: the broker takes a connection
            if down_since is not None:
                outages.append((down_since, refused + REFUSED_SLACK if refused is not None else t))
            up, down_since, refused = True, None, None
        elif up and flags & 0x05:  # FIN or RST, either side: the connection is gone
            up, down_since = False, t
        elif not up and from_broker and flags & 0x04:  # a connection attempt refused: still gone
            refused = t
    if down_since is not None and frames:
        outages.append((down_since, frames[-1][0]))
    return outages


def _ip(frame: bytes) -> tuple[IPv4, IPv4, int, bytes] | None:
    """(source, destination, protocol, transport bytes) of an unfragmented IPv4 frame."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[14] >> 4 != 4:
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    total = struct.unpack_from("!H", ip, 2)[0]
    if struct.unpack_from("!H", ip, 6)[0] & 0x3FFF or ihl < 20:
        return None
    return IPv4(ip[12:16]), IPv4(ip[16:20]), ip[9], bytes(ip[ihl:total])


def _dup(frame: bytes) -> bool:
    """A PUBLISH sent again (DUP flag): the same message, not another window."""
    parsed = _ip(frame)
    if parsed is None or len(parsed[3]) < 20:
        return False
    body = parsed[3]
    data = body[(body[12] >> 4) * 4:]
    return bool(data) and bool(data[0] & 0x08)
