"""A device's security messages from a bundle's telemetry file (or a bench run's archive).

Two formats: the collector's archive (:mod:`harness.telemetry.archive`), or an IoT Hub export as
JSON lines (what routing to storage writes with JSON encoding: one object a line with ``Body``, the
payload in base64, ``EnqueuedTimeUtc`` and ``SystemProperties.connectionDeviceId``; lines that are
not the device's security messages are skipped, as application telemetry is).

Nothing damaged is used in silence: an archive with damaged or torn bytes, a line that is not
JSON, a security message that does not decode, is refused naming the file and where.
Each message is kept once: a QoS 1 copy sent again (its events seen before) is counted, not kept.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError
from harness.telemetry.archive import ArchiveScan, read_archive
from harness.telemetry.codec import DecodeError, decode
from harness.telemetry.model import SecurityMessage
from harness.telemetry.topic import SECURITY_IFID, TopicError, parse_topic
from harness.userfiles import open_user_file

MAX_LINE = 96 << 20  # a 64 MiB message in base64, with its JSON around it
MAX_FILE = 4 << 30


@dataclass(frozen=True)
class Message:
    """One security message of the device, as it arrived."""

    received: float  # Unix seconds (the broker's, or IoT Hub's enqueued time)
    message: SecurityMessage
    where: str  # record number or line, for the report
    wire: tuple[str, int] | None = None  # (topic, payload bytes) as published, where known (an archive)


@dataclass
class DeviceMessages:
    device_id: str
    messages: list[Message]
    duplicates: int = 0  # messages whose events had all arrived before (QoS 1 copies)


def load_messages(path: Path, fmt: str, device_id: str | None, *, what: str) -> DeviceMessages:
    """The device's security messages in ``path`` (``fmt``: archive | iothub-jsonl), in arrival
    order. ``device_id`` None: the file must hold one device's. ``what`` names the file in errors."""
    raw = _archive(path, what) if fmt == "archive" else _jsonl(path, what)
    devices = sorted({d for d, _, _, _, _ in raw})
    if device_id is None:
        if len(devices) != 1:
            raise ConfigError(f"{what}: holds security messages of {len(devices)} devices "
                              f"({', '.join(devices[:5]) or 'none'})",
                              fix="name the device in bundle.yaml (device: {id: ...})")
        device_id = devices[0]
    out = DeviceMessages(device_id, [])
    seen: set[bytes] = set()
    for device, received, payload, where, topic in raw:
        if device != device_id:
            continue
        try:
            message = decode(payload)
        except DecodeError as exc:
            raise ConfigError(f"{what}: {where}: a security message that does not decode: {exc}",
                              fix="the telemetry file is damaged: take it again from its source") from None
        ids = {e.id for e in message.events}
        if ids and ids <= seen:
            out.duplicates += 1
            continue
        seen |= ids
        out.messages.append(Message(received, message, where, None if topic is None else (topic, len(payload))))
    out.messages.sort(key=lambda m: m.received)
    return out


def _archive(path: Path, what: str) -> list[tuple[str, float, bytes, str, str | None]]:
    scan = ArchiveScan()
    out = []
    for record in read_archive(path, scan):
        if record.problem:
            raise ConfigError(f"{what}: record {record.index} (byte {record.offset}): {record.problem}",
                              fix="the archive is damaged: take it again from its source")
        try:
            topic = parse_topic(record.topic)
        except TopicError:
            continue  # the collector's canary and other topics
        if topic.is_security:
            out.append((topic.device_id, record.received, record.payload, f"record {record.index}", record.topic))
    if scan.damaged or scan.torn_tail:
        described = "; ".join(d.describe() for d in scan.damaged[:3]) or f"a torn last record ({scan.torn_tail} bytes)"
        raise ConfigError(f"{what}: the archive is damaged or truncated: {described}",
                          fix="take the telemetry again from its source (hil telemetry show names every "
                              "good record, if only part of it can be had)")
    return out


def _time(text: object) -> float:
    if not isinstance(text, str):
        raise ValueError("no EnqueuedTimeUtc")
    t = text.strip().replace("Z", "+00:00")
    if "." in t:  # IoT Hub writes 7 fractional digits; Python takes at most 6
        head, _, rest = t.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits):]
        t = f"{head}.{digits[:6]}{zone}"
    moment = _dt.datetime.fromisoformat(t)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    return moment.timestamp()


def _jsonl(path: Path, what: str) -> list[tuple[str, float, bytes, str, str | None]]:
    out = []
    with open_user_file(path, what="telemetry export", limit=MAX_FILE, error=ConfigError) as fh:
        for number, line in enumerate(iter(lambda: fh.readline(MAX_LINE + 1), b""), start=1):
            if len(line) > MAX_LINE:
                raise ConfigError(f"{what}: line {number} is longer than {MAX_LINE} bytes",
                                  fix="give the IoT Hub export (one JSON object a line)")
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                props = item.get("Properties") or {}
                system = item.get("SystemProperties") or {}
                if "$.ifid" in props and props["$.ifid"] != SECURITY_IFID:
                    continue  # the device's application telemetry
                device = system.get("connectionDeviceId")
                body = base64.b64decode(item["Body"], validate=True)
                received = _time(item.get("EnqueuedTimeUtc") or system.get("enqueuedTime"))
            except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
                raise ConfigError(f"{what}: line {number}: not an IoT Hub export record ({exc})",
                                  fix="each line: {\"EnqueuedTimeUtc\": ..., \"SystemProperties\": "
                                      "{\"connectionDeviceId\": ...}, \"Body\": \"<base64>\"}") from None
            if not isinstance(device, str) or not device:
                raise ConfigError(f"{what}: line {number}: no SystemProperties.connectionDeviceId",
                                  fix="export with the system properties")
            out.append((device, received, body, f"line {number}", None))  # an export keeps no topic
    return out
