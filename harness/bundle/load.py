"""Opening a field bundle: a folder holding ``bundle.yaml``, or a ``.tar.gz`` of one.

Everything is checked on load, before any board is brought up: the manifest (through the
project's YAML reader and model checks), every file it names (present, a regular file, inside the
bundle), the capture (a pcap holding frames), the telemetry (readable whole, the device's
security messages decoded). Errors name the bundle's file, the field and the fix.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from harness.bundle.extract import extract_bundle
from harness.bundle.manifest import BUNDLE_FILE, BundleManifest
from harness.bundle.telemetry import DeviceMessages, load_messages
from harness.config import load
from harness.errors import ConfigError, UsageError
from harness.traffic.capture import module_datagrams, read_pcap

MAX_CAPTURE = 1 << 30  # the replay reads the capture whole
FIX_CAPTURE = "give a classic pcap file (tcpdump -w, or the pcap of hil capture) in the bundle's capture field"


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: BundleManifest
    capture: Path
    telemetry: Path
    console: Path | None
    device_address: ipaddress.IPv4Address
    messages: DeviceMessages

    @property
    def yaml(self) -> Path:
        return self.root / BUNDLE_FILE


def open_bundle(path: Path | str, unpack_to: Path) -> Bundle:
    """The bundle at ``path`` (a folder, or a .tar.gz unpacked into ``unpack_to``), checked whole."""
    if str(path) == "":
        raise UsageError("an empty name was given for the bundle", fix="give a bundle folder or .tar.gz")
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UsageError(f"bundle {path}: no such file or folder",
                         fix="give a bundle folder (holding bundle.yaml) or its .tar.gz") from None
    except OSError as exc:
        raise UsageError(f"bundle {path}: cannot read it: {exc.strerror}", fix="check the path") from None
    if stat.S_ISDIR(mode):
        root = path.resolve()
    elif stat.S_ISREG(mode):
        root = extract_bundle(path, unpack_to)
    else:
        raise UsageError(f"bundle {path}: neither a folder nor a file",
                         fix="give a bundle folder (holding bundle.yaml) or its .tar.gz")
    yaml_path = root / BUNDLE_FILE
    if not yaml_path.is_file():
        raise ConfigError(f"{path}: no {BUNDLE_FILE} in it", fix="a bundle holds bundle.yaml (hil capture writes one)")
    manifest = load(BundleManifest, yaml_path)
    capture = _member(root, manifest.capture, "capture", "capture", limit=MAX_CAPTURE)
    telemetry = _member(root, manifest.telemetry.path, "telemetry.path", "telemetry file")
    console = _member(root, manifest.console, "console", "console log") if manifest.console else None
    address = _device_address(yaml_path, manifest, capture)
    messages = load_messages(telemetry, manifest.telemetry.format, manifest.device.id,
                             what=f"{yaml_path}: field telemetry.path: {manifest.telemetry.path}")
    if not messages.messages:
        raise ConfigError(f"{yaml_path}: field telemetry.path: {manifest.telemetry.path} holds no security message "
                          f"of device {messages.device_id}", fix="give the telemetry the device sent")
    return Bundle(root, manifest, capture, telemetry, console, address, messages)


def _member(root: Path, name: str, field: str, what: str, *, limit: int | None = None) -> Path:
    where = root / BUNDLE_FILE
    path = root / name
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        raise ConfigError(f"{where}: field {field}: {name} is not in the bundle",
                          fix=f"put the {what} beside bundle.yaml, or correct {field}") from None
    except (OSError, RuntimeError) as exc:
        raise ConfigError(f"{where}: field {field}: {name}: cannot be read ({exc})", fix=f"give the {what}") from None
    if os.path.commonpath([root.resolve(), real]) != str(root.resolve()):
        raise ConfigError(f"{where}: field {field}: {name} is a link out of the bundle (to {real})",
                          fix=f"copy the {what} into the bundle")
    if not real.is_file():
        raise ConfigError(f"{where}: field {field}: {name} is not a regular file", fix=f"give the {what}")
    if limit is not None and real.stat().st_size > limit:
        raise ConfigError(f"{where}: field {field}: {name} is {real.stat().st_size} bytes; a {what} is at most "
                          f"{limit} bytes here", fix=f"cut the {what} to the time of interest (editcap -A/-B)")
    return real


def _device_address(where: Path, manifest: BundleManifest, capture: Path) -> ipaddress.IPv4Address:
    """The device's address: bundle.yaml's, or the sender of the capture's security PUBLISHes;
    the capture is checked to be a pcap with frames on the way."""
    try:
        frames = list(read_pcap(capture))
    except UsageError as exc:
        raise ConfigError(f"{where}: field capture: {exc.message}", fix=FIX_CAPTURE) from None
    if not frames:
        raise ConfigError(f"{where}: field capture: {manifest.capture} holds no frame (a pcap header at most)",
                          fix=FIX_CAPTURE)
    if manifest.device.address is not None:
        return ipaddress.IPv4Address(manifest.device.address)
    senders: set[ipaddress.IPv4Address] = set()
    for t, frame in frames:  # the device's own view: count every sender, keep those that PUBLISH
        if len(frame) >= 34 and frame[12:14] == b"\x08\x00":
            src = ipaddress.IPv4Address(frame[26:30])
            if src not in senders and any(d.security_publish for d in module_datagrams([(t, frame)], src)):
                senders.add(src)
    if len(senders) != 1:
        raise ConfigError(f"{where}: field device.address: not given, and the capture shows "
                          f"{'no' if not senders else len(senders)} sender(s) of security messages",
                          fix="set device: {address: <the device's IPv4 address in the capture>}")
    return senders.pop()
