"""A bad-input case: one data row (how to set it up, what to run, what must come out).

A case runs in its own folder, which is also the working directory of the CLI: paths in ``argv``
and ``env`` are relative to it. Setup steps are small functions of that folder (``write``,
``board``, ``fifo``, ``link`` ...), so a row reads as data.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

Step = Callable[[Path], None]
Expect = Literal["error", "refused"]

#: A board every lab here can hold (a real board on the lab's network ``bench``).
GOOD_BOARD: dict[str, object] = {
    "name": "rt1060-a",
    "kind": "pyocd",
    "probe": {"id": "cmsisdap:0229000000000000", "target": "mimxrt1060"},
    "console": {"url": "/dev/serial/by-id/usb-ARM_DAPLink-if01"},
    "network": {"address_from": "static", "address": "192.168.50.20", "test_network": "bench"},
    "identity": {"device_id": "dev-01"},
}
GOOD_LAB: dict[str, object] = {
    "name": "bad-input",
    "networks": [{"name": "bench", "subnet": "192.168.50.0/24", "interface": "eth9"}],
}
#: An image the manifest below describes (a minimal 32-bit little-endian ARM ELF header).
ELF_IMAGE = b"\x7fELF\x01\x01\x01" + bytes(9) + b"\x02\x00\x28\x00" + bytes(36)
GOOD_MANIFEST: dict[str, object] = {
    "name": "t", "version": "1.0.0", "image": "fw.elf", "format": "elf",
    "sha256": hashlib.sha256(ELF_IMAGE).hexdigest(), "targets": ["mimxrt1060"],
    "security_module": {"version": "3.5.4"}, "behaviour": {"boot_marker": "HIL"},
    "identity": {"provisioning": "block at 0x003FF000"},
}
DELETE = object()  #: a change value meaning "remove this key"


@dataclass(frozen=True)
class Case:
    """One row: ``hil ARGV`` in a folder prepared by ``setup`` must end as ``expect`` says.

    ``expect``: "error" (the input cannot be used: a clear message and exit ``code``) or "refused"
    (the input is wrong and must be rejected, exit 2). ``message`` is a regular expression that
    standard error must match (searched, case-insensitive). ``unprivileged``: the CLI runs without
    the power to read past permissions (as root: without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH).
    ``closed_stdout``: standard output is a pipe nobody reads (``hil ... | head`` after head left).
    ``xfail``: the reason the present code fails the row (a strict expected failure).
    """

    name: str
    argv: tuple[str, ...]
    expect: Expect
    code: int
    message: str
    setup: tuple[Step, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    stdin: bytes = b""
    unprivileged: bool = False
    closed_stdout: bool = False
    xfail: str | None = None
    timeout: float = 10.0
    surface: str = ""


def error(name: str, argv: str | tuple[str, ...], message: str, *setup: Step, code: int = 2,
          **options: object) -> Case:
    """A row whose input cannot be used: a clear message, exit ``code``."""
    return Case(name, _argv(argv), "error", code, message, setup, **options)  # type: ignore[arg-type]


def refused(name: str, argv: str | tuple[str, ...], message: str, *setup: Step, **options: object) -> Case:
    """A row whose input is wrong and must be rejected (exit 2)."""
    return Case(name, _argv(argv), "refused", 2, message, setup, **options)  # type: ignore[arg-type]


def _argv(argv: str | tuple[str, ...]) -> tuple[str, ...]:
    return tuple(argv.split()) if isinstance(argv, str) else argv


# ------------------------------------------------------------------------------------ setup steps


def write(relpath: str, content: str | bytes | object) -> Step:
    """Write a file (text, bytes, or an object dumped as YAML); parent folders are made."""

    def step(root: Path) -> None:
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")

    return step


def changed(base: Mapping[str, object], changes: Mapping[str, object]) -> dict[str, object]:
    """A deep copy of ``base`` with dotted keys (``probe.id``) set, or removed with ``DELETE``."""
    data = copy.deepcopy(dict(base))
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node: dict[str, object] = data
        for key in parents:
            node = node.setdefault(key, {})  # type: ignore[assignment]
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return data


def lab(changes: Mapping[str, object] | None = None, *, folder: str = "lab") -> Step:
    """A lab folder with a good ``lab.yaml`` (changed as given)."""
    return write(f"{folder}/lab.yaml", changed(GOOD_LAB, changes or {}))


def board(changes: Mapping[str, object] | None = None, *, file: str = "lab/rt1060-a.yaml") -> Step:
    """A good board file (changed as given)."""
    return write(file, changed(GOOD_BOARD, changes or {}))


def good_lab(folder: str = "lab") -> Step:
    """A lab with one good board: the base most rows change one thing of."""
    return steps(lab(folder=folder), board(file=f"{folder}/rt1060-a.yaml"))


def build(changes: Mapping[str, object] | None = None, *, folder: str = "build",
          image: bytes | None = ELF_IMAGE, name: str = "fw.elf") -> Step:
    """A firmware build folder: manifest (changed as given) and image (None: no image file)."""
    manifest = changed(GOOD_MANIFEST, changes or {})
    parts = [write(f"{folder}/manifest.yaml", manifest)]
    if image is not None:
        parts.append(write(f"{folder}/{name}", image))
    return steps(*parts)


def build_with_image(image: bytes, fmt: str = "elf", name: str = "fw.elf", folder: str = "build") -> Step:
    """A build whose manifest matches ``image`` (the right sha256), whatever the image holds."""
    return build({"image": name, "format": fmt, "sha256": hashlib.sha256(image).hexdigest()},
                 folder=folder, image=image, name=name)


def fifo(relpath: str) -> Step:
    def step(root: Path) -> None:
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(root / relpath)

    return step


def folder(relpath: str) -> Step:
    return lambda root: (root / relpath).mkdir(parents=True, exist_ok=True)


def link(relpath: str, target: str) -> Step:
    """A symbolic link at ``relpath`` pointing at ``target`` (as written, maybe dangling)."""

    def step(root: Path) -> None:
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).symlink_to(target)

    return step


def mode(relpath: str, bits: int) -> Step:
    """chmod (use with ``unprivileged=True``: root reads past permissions)."""
    return lambda root: (root / relpath).chmod(bits)


def sparse(relpath: str, size: int) -> Step:
    """A file of ``size`` bytes that takes no disk space."""

    def step(root: Path) -> None:
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        with (root / relpath).open("wb") as fh:
            fh.truncate(size)

    return step


def steps(*parts: Step) -> Step:
    def step(root: Path) -> None:
        for part in parts:
            part(root)

    return step
