"""Firmware builds: ``firmware-builds/<build>/manifest.yaml`` beside the image.

A manifest says what the image is (file, format, base address, sha256, compatible targets), which
security module it carries, what behaviour the build promises (collector intervals, first
collection, flow cap, pending time, boot marker, services, known defects) and which identity it
expects. Tests and the certification suite read their expectations from here, never from
constants.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from harness.config import StrictModel, load
from harness.errors import CheckFailed, ConfigError
from harness.userfiles import open_user_file

MANIFEST_FILE = "manifest.yaml"
#: No flash a harness programs is this big: a bigger "image" is the wrong file.
MAX_IMAGE_BYTES = 256 << 20

#: Known defects by name, with the module versions that carry them (spec section 3).
KNOWN_DEFECTS = {
    "suspend-leak": "NetX Duo 6.1.8-6.3.0: suspension leaks flow objects; NetworkActivity never returns",
}

Seconds = Annotated[int, Field(ge=0)]


class SecurityModuleInfo(StrictModel):
    version: str = Field(description="module version, e.g. 3.5.4")
    id: str = "defender-iot-micro-agent"
    mti: str = "2.3-1-0-0"

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not re.fullmatch(r"\d{1,3}\.\d{1,3}\.\d{1,5}", value):
            raise ValueError(f"module version {value!r} must be MAJOR.MINOR.PATCH, e.g. 3.5.4")
        return value

    @field_validator("mti")
    @classmethod
    def _mti(cls, value: str) -> str:
        if not re.fullmatch(r"\d+\.\d+-\d+-\d+-\d+", value):
            raise ValueError(f"mti {value!r} must look like 2.3-1-0-0 (schema-encoding-source-type)")
        return value


class Intervals(StrictModel):
    high: Annotated[int, Field(gt=0)] = 10
    medium: Annotated[int, Field(gt=0)] = 30
    low: Annotated[int, Field(gt=0)] = 60


class ServicesPromise(StrictModel):
    tcp_echo: Annotated[int, Field(ge=1, le=65535)] | None = None
    udp_echo: Annotated[int, Field(ge=1, le=65535)] | None = None
    icmp: bool = False


class Behaviour(StrictModel):
    boot_marker: str = Field(description="regular expression the console prints once booted")
    first_collection_delay_s: Seconds | tuple[Seconds, Seconds] = (30, 89)
    intervals_s: Intervals = Intervals()
    flow_cap: Annotated[int, Field(gt=0)] = 64
    pending_time_s: Seconds = 300
    services: ServicesPromise = ServicesPromise()
    known_defects: tuple[str, ...] = ()
    os_info: str | None = Field(
        default=None, description="what SystemInformation.os_info must say, e.g. 'Azure RTOS 6.3' (the linked ThreadX)")
    console_echo: str | None = Field(
        default=None, description="a console command that makes the board print {text} back on a line of its own")

    @field_validator("boot_marker")
    @classmethod
    def _marker(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"boot_marker is not a valid regular expression: {exc}") from None
        return value

    @field_validator("console_echo")
    @classmethod
    def _echo(cls, value: str | None) -> str | None:
        if value is not None and "{text}" not in value:
            raise ValueError(f"console_echo {value!r} must contain {{text}} where the echoed text goes")
        return value

    @field_validator("known_defects")
    @classmethod
    def _defects(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [d for d in value if d not in KNOWN_DEFECTS]
        if unknown:
            raise ValueError(f"unknown defect(s) {unknown}; known: {', '.join(KNOWN_DEFECTS)}")
        return value

    @model_validator(mode="after")
    def _window(self) -> Behaviour:
        d = self.first_collection_delay_s
        if not isinstance(d, int) and d[0] > d[1]:
            raise ValueError(f"first_collection_delay_s [{d[0]}, {d[1]}]: the first number is the earliest delay, "
                             f"the second the latest; write [{d[1]}, {d[0]}]")
        return self

    @property
    def first_collection_window(self) -> tuple[int, int]:
        d = self.first_collection_delay_s
        return (d, d) if isinstance(d, int) else d


class IdentityExpectation(StrictModel):
    provisioning: str = Field(description="where the image reads its identity, e.g. 'block at 0x003FF000'")
    device_id: str | None = None
    provisioning_versions: tuple[Literal[1, 2], ...] = Field(
        default=(1,), min_length=1,
        description="the provisioning block versions the image reads (fixtures/firmware/PROVISIONING.md); "
                    "the harness writes the lowest one that carries the record")
    provisioning_features: tuple[Literal["tls", "sas", "dps"], ...] = Field(
        default=(), description="what of a version 2 block the image acts on: tls (MQTT over TLS), "
                                "sas (a SAS token from the device key), dps (registration through DPS)")
    trusted_ca_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        default=None, description="sha256 of the DER of the one CA a TLS image trusts (the lab CA it was "
                                  "built with: hil lab ca)")


#: the network stack an image runs (the reference firmware's two flavours)
Stack = Literal["lwip", "netxduo"]


#: knobs that make an image for the bench, never for a release: what each does when set
BENCH_ONLY_KNOBS = {
    "TLS_KEYLOG": "prints its TLS session secrets on its console (TLS_KEYLOG=1): anyone with the console log "
                  "and a capture of its link reads its traffic",
}


class BuildInfo(StrictModel):
    build_id: str | None = None
    stack: Stack | None = Field(
        default=None, description="the network stack the image runs (the reference firmware's flavours)")
    knobs: dict[str, str | int | bool] = Field(default_factory=dict)
    code_bytes: int | None = None
    ram_bytes: int | None = None

    def bench_only(self) -> list[str]:
        """Why this image must not be released (:data:`BENCH_ONLY_KNOBS` it was built with); empty
        when none is set."""
        return [why for knob, why in BENCH_ONLY_KNOBS.items()
                if str(self.knobs.get(knob, "0")).strip().lower() not in ("0", "false", "no", "")]


class FirmwareManifest(StrictModel):
    name: str
    version: str
    image: str = Field(description="image file name, beside the manifest")
    format: Literal["elf", "hex", "bin"]
    base_address: Annotated[int, Field(ge=0)] | None = None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="64 hexadecimal digits (sha256sum IMAGE)")]
    targets: tuple[str, ...] = Field(min_length=1)
    security_module: SecurityModuleInfo
    behaviour: Behaviour
    identity: IdentityExpectation
    build: BuildInfo = BuildInfo()

    @field_validator("sha256", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("image")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if "/" in value or "\\" in value or value in ("", ".", ".."):
            raise ValueError(f"image {value!r} must be a file name beside the manifest, not a path")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError(f"image {value!r} holds a control character; give the image's file name")
        return value

    @model_validator(mode="after")
    def _bin_base(self) -> FirmwareManifest:
        if self.format == "bin" and self.base_address is None:
            raise ValueError("format bin needs base_address (where the image starts in flash)")
        return self


@dataclass(frozen=True)
class FirmwareBuild:
    """A manifest with the folder it lives in."""

    folder: Path
    manifest: FirmwareManifest

    @property
    def image_path(self) -> Path:
        return self.folder / self.manifest.image

    def compatible_with(self, target: str) -> bool:
        return target in self.manifest.targets

    def verify(self) -> str:
        """Check the image against the manifest's sha256, then that it is in the manifest's format;
        return the digest, or raise CheckFailed (another image) or ConfigError (a wrong or unusable
        file: not the format the manifest says, empty, unreadable, not a regular file)."""
        path = self.image_path
        if not os.path.lexists(path):
            raise ConfigError(
                f"{self.folder / MANIFEST_FILE}: field image: {path.name} not found beside the manifest",
                fix="copy the image next to manifest.yaml or correct 'image'",
            )
        with open_user_file(path, what="firmware image", limit=MAX_IMAGE_BYTES, error=ConfigError) as fh:
            head = fh.read(4096)
            h = hashlib.sha256(head)
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
        if digest != self.manifest.sha256:
            raise CheckFailed(
                f"{path}: sha256 does not match the manifest",
                expected=self.manifest.sha256,
                actual=digest,
                evidence=self.folder / MANIFEST_FILE,
            )
        check_image_format(path, head, self.manifest.format)
        return digest


def _looks_like(head: bytes) -> str:
    if head.startswith(b"\x7fELF"):
        return "an ELF file"
    if head.lstrip().startswith(b":") and head.isascii():
        return "an Intel HEX file"
    if head.isascii():
        return "text"
    return ""


def check_image_format(path: Path, head: bytes, fmt: str) -> None:
    """Refuse an image whose first bytes are not what its manifest's ``format`` says."""
    if not head:
        raise ConfigError(f"{path}: the image is empty (0 bytes)", fix="rebuild it, or point 'image' at the real one")
    looks = _looks_like(head)
    names = {"elf": "an ELF file", "hex": "an Intel HEX file"}
    wrong = (fmt in names and looks != names[fmt]) or (fmt == "bin" and looks in names.values())
    if wrong:
        seen = f" — it looks like {looks}" if looks else ""
        want = names.get(fmt, "a raw binary")
        raise ConfigError(
            f"{path}: not {want} as the manifest's format '{fmt}' says{seen}",
            fix="set 'format' to what the file is (elf, hex or bin), or point 'image' at the right file",
        )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_build(path: str | Path) -> FirmwareBuild:
    """Load a build from its folder or its manifest file."""
    p = Path(path)
    fix = "give a folder under firmware-builds/ that holds manifest.yaml"
    if str(path) == "":
        raise ConfigError("an empty name was given for the firmware build", fix=fix)
    manifest_path = p / MANIFEST_FILE if p.is_dir() else p
    if not os.path.lexists(manifest_path):
        if p.is_dir():
            other = [n for n in ("manifest.yml", "Manifest.yaml") if (p / n).exists()]
            hint = f" (found {other[0]}: rename it {MANIFEST_FILE})" if other else f" (no {MANIFEST_FILE} in it)"
            raise ConfigError(f"{p}: no firmware manifest here{hint}", fix=fix)
        raise ConfigError(f"{manifest_path}: no firmware manifest here (no such file or folder)", fix=fix)
    return FirmwareBuild(folder=manifest_path.parent, manifest=load(FirmwareManifest, manifest_path))


def write_manifest(folder: Path, manifest: FirmwareManifest) -> Path:
    """Write ``manifest.yaml`` into ``folder`` (used by build tools)."""
    import yaml

    data = manifest.model_dump(mode="json", exclude_none=True)
    path = folder / MANIFEST_FILE
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path
