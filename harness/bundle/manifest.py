"""``bundle.yaml``: what a field bundle says about itself, validated like every other input.

    bundle: 1                       # the format of this file
    firmware:
      version: 0.1.0                # the firmware's version and build id: a lab build is matched on these
      build_id: 20261128-1
      module_version: 3.5.4         # the security module it carries
      sha256: 3f1c...               # optional: the field image's (production credentials make it differ
                                    #   from the lab build's; recorded, never required to match)
    board:
      type: mps2_an385              # the pyOCD target type of the device
    device:                         # optional
      id: hil-qemu-an385-01         #   its IoT Hub device id (default: the one device of the telemetry)
      address: 10.231.4.101         #   its IPv4 address in the capture (default: the sender of its
                                    #   security PUBLISHes)
    capture: traffic.pcap           # a pcap of the traffic the device saw
    telemetry:
      path: telemetry.bin
      format: archive               # archive (the collector's telemetry.bin) | iothub-jsonl (an IoT Hub
                                    #   export: one JSON object a line, Body in base64, EnqueuedTimeUtc)
    console: console.log            # optional
    replay_from: 12.5               # optional: seconds on the capture's clock before which the traffic is
                                    #   the device's boot and bring-up (the bench does its own), not
                                    #   replayed; default: the device's first security PUBLISH
    recorded: 2026-12-05T16:07:00Z  # optional, free text
    notes: free text                # optional

Paths are file names inside the bundle (relative, no ``..``): a bundle is self-contained.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import PurePosixPath
from typing import Literal

from pydantic import Field, field_validator

from harness.config import StrictModel
from harness.telemetry.model import ModuleVersion

BUNDLE_FILE = "bundle.yaml"
FORMAT = 1


def _inside(value: str) -> str:
    """A path relative to the bundle, staying inside it."""
    if not value or "\0" in value:
        raise ValueError(f"{value!r} is not a file name (empty, or holds a NUL)")
    p = PurePosixPath(value)
    if p.is_absolute() or "\\" in value or any(part == ".." for part in p.parts):
        raise ValueError(f"{value!r} leaves the bundle: give a path inside the bundle's folder, e.g. traffic.pcap")
    return value


class FirmwareIdentity(StrictModel):
    version: str = Field(min_length=1, max_length=100)
    build_id: str = Field(min_length=1, max_length=100)
    module_version: str
    sha256: str | None = None

    @field_validator("module_version")
    @classmethod
    def _module(cls, value: str) -> str:
        ModuleVersion.parse(value).to_int()  # as the wire carries it (8.8.16 bits), or a ValueError saying why
        return value

    @field_validator("sha256", mode="before")
    @classmethod
    def _sha(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.lower()
            if not re.fullmatch(r"[0-9a-f]{64}", value):
                raise ValueError(f"sha256 {value!r} must be 64 hexadecimal digits (sha256sum IMAGE)")
        return value


class BoardType(StrictModel):
    type: str = Field(min_length=1, max_length=100, description="pyOCD target type, e.g. mps2_an385")


class DeviceInfo(StrictModel):
    id: str | None = Field(default=None, min_length=1, max_length=128)
    address: str | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.IPv4Address(value)
            except ValueError:
                raise ValueError(f"{value!r} is not an IPv4 address (e.g. 192.168.1.10)") from None
        return value


class TelemetryFile(StrictModel):
    path: str
    format: Literal["archive", "iothub-jsonl"]

    _path = field_validator("path")(classmethod(lambda cls, v: _inside(v)))


class BundleManifest(StrictModel):
    bundle: Literal[1]
    firmware: FirmwareIdentity
    board: BoardType
    device: DeviceInfo = DeviceInfo()
    capture: str
    telemetry: TelemetryFile
    console: str | None = None
    replay_from: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    recorded: str | None = Field(default=None, max_length=100)
    notes: str | None = Field(default=None, max_length=100_000)

    @field_validator("capture", "console")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return None if value is None else _inside(value)
