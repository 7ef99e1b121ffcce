"""Small, real bundles made in a test: a pcap of a device's link (its security PUBLISHes and a peer's
traffic), an archive of the messages it sent, and a bundle.yaml naming them."""

from __future__ import annotations

import copy
import io
import ipaddress
import struct
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from harness.telemetry.archive import ArchiveWriter
from harness.telemetry.encoder import encode
from harness.telemetry.model import (
    Event,
    Flow,
    Heartbeat,
    ModuleVersion,
    NetworkActivity,
    Protocol,
    SecurityMessage,
    SystemInformation,
)
from harness.telemetry.topic import security_topic
from harness.traffic.capture import write_pcap

DEVICE, PEER, SERVICES = "10.9.0.101", "10.9.0.1", "10.9.0.2"
DEVICE_ID = "field-dev-01"
BOARD_TYPE = "mimxrt1060"
T0 = 1_800_000_000.0
IP = ipaddress.IPv4Address


def _ipv4(src: str, dst: str, proto: int, body: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 1, 0, 64, proto, 0, IP(src).packed, IP(dst).packed)
    total = sum(struct.unpack("!10H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    header = header[:10] + struct.pack("!H", ~total & 0xFFFF) + header[12:]
    return b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + header + body


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    return _ipv4(src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)


def tcp(src: str, dst: str, sport: int, dport: int, flags: int, payload: bytes = b"") -> bytes:
    return _ipv4(src, dst, 6, struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, flags, 65535, 0, 0) + payload)


def icmp_echo(src: str, dst: str, kind: int = 8, size: int = 56) -> bytes:
    return _ipv4(src, dst, 1, struct.pack("!BBHHH", kind, 0, 0, 1, 1) + bytes(size))


def publish(src: str = DEVICE, dst: str = PEER) -> bytes:
    """A TCP segment of the device's MQTT connection starting a security PUBLISH (QoS 1)."""
    topic = security_topic(DEVICE_ID).encode()
    body = struct.pack("!H", len(topic)) + topic + b"\x00\x01" + b"payload"
    return tcp(src, dst, 49152, 8883, 0x18, bytes([0x32, 0x80 | len(body), 0x80, 0x80, 0]) + body)


def flow(remote: str, lport: int, rport: int, proto: Protocol, b_in: int, b_out: int) -> Flow:
    return Flow(local_address=IP(DEVICE), remote_address=IP(remote), local_port=lport, remote_port=rport,
                protocol=proto, bytes_in=b_in, bytes_out=b_out)


MQTT = flow(PEER, 49152, 8883, Protocol.TCP, 24, 300)


def message(n: int, flows: Sequence[Flow] = (MQTT,), *, heartbeat: bool = False, interval: int = 2,
            low: int = 6) -> SecurityMessage:
    events = []
    t = int(T0) + 2 * n
    if flows:
        events.append(Event(bytes([n, 0]) + bytes(14), t, interval, NetworkActivity(ipv4=tuple(flows))))
    if heartbeat:
        events.append(Event(bytes([n, 1]) + bytes(14), t, low, SystemInformation(os_info="Azure RTOS 6.3")))
        events.append(Event(bytes([n, 2]) + bytes(14), t, low, Heartbeat()))
    return SecurityMessage("defender-iot-micro-agent", ModuleVersion(3, 5, 4), tuple(events))


def windows(traffic: dict[int, Sequence[Flow]], count: int = 8, skip: Sequence[int] = ()) -> list[SecurityMessage]:
    """``count`` messages 2 s apart (Heartbeat every third), window n holding ``traffic[n]`` too."""
    return [message(n, [MQTT, *traffic.get(n, ())], heartbeat=n % 3 == 0) for n in range(count) if n not in skip]


def write_archive(path: Path, messages: Sequence[SecurityMessage], times: Sequence[float] | None = None) -> Path:
    with ArchiveWriter(path) as w:
        for i, m in enumerate(messages):
            w.append(security_topic(DEVICE_ID), encode(m), qos=1, received=(times or [T0 + 2 * k for k in
                                                                                       range(len(messages))])[i])
    return path


def frames() -> list[tuple[float, bytes]]:
    """The device's link: boot (DNS), its PUBLISHes every 2 s, then a peer's UDP echo (4 x 200 bytes)
    and ping (3) at 4.5 s, and a TCP connection to port 7."""
    out = [(T0 - 1.0, udp(DEVICE, SERVICES, 40000, 53, b"q" * 20)), (T0 - 0.99, udp(SERVICES, DEVICE, 53, 40000,
                                                                                     b"a" * 40))]
    out += [(T0 + 2 * n, publish()) for n in range(8)]
    for k in range(4):
        out += [(T0 + 4.5 + 0.01 * k, udp(PEER, DEVICE, 50000, 7, b"y" * 200)),
                (T0 + 4.505 + 0.01 * k, udp(DEVICE, PEER, 7, 50000, b"y" * 200))]
    for k in range(3):
        out += [(T0 + 4.6 + 0.01 * k, icmp_echo(PEER, DEVICE)), (T0 + 4.605 + 0.01 * k, icmp_echo(DEVICE, PEER, 0))]
    out += [(T0 + 4.7, tcp(PEER, DEVICE, 51000, 7, 0x02)), (T0 + 4.701, tcp(DEVICE, PEER, 7, 51000, 0x12)),
            (T0 + 4.702, tcp(PEER, DEVICE, 51000, 7, 0x18, b"x" * 300)),
            (T0 + 4.703, tcp(DEVICE, PEER, 7, 51000, 0x18, b"x" * 300))]
    return sorted(out)


GOOD_YAML: dict[str, Any] = {
    "bundle": 1,
    "firmware": {"version": "2.1.0", "build_id": "field-7", "module_version": "3.5.4"},
    "board": {"type": BOARD_TYPE},
    "device": {"id": DEVICE_ID},
    "capture": "traffic.pcap",
    "telemetry": {"path": "telemetry.bin", "format": "archive"},
    "notes": "seen in the field",
}


def changed_yaml(**changes: object) -> dict[str, Any]:
    """GOOD_YAML with ``section__key=value`` set (None: removed)."""
    data = copy.deepcopy(GOOD_YAML)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = data
        for p in parents:
            node = node[p]
        if value is None:
            node.pop(last)
        else:
            node[last] = value
    return data


def make_bundle(folder: Path, yaml_data: dict[str, Any] | None = None, *,
                messages: Sequence[SecurityMessage] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_pcap(folder / "traffic.pcap", frames())
    write_archive(folder / "telemetry.bin", messages if messages is not None else windows({}))
    (folder / "bundle.yaml").write_text(yaml.safe_dump(yaml_data if yaml_data is not None else GOOD_YAML))
    return folder


def tar_with(path: Path, members: Sequence[tuple[tarfile.TarInfo, bytes]]) -> Path:
    """A .tar.gz holding exactly ``members`` (hand-made headers: links, traversal, sizes)."""
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path
