"""Unpacking a ``.tar.gz`` bundle without trusting it.

Only regular files and folders are taken, each under the destination (no absolute name, no ``..``,
no link of either kind, no device, FIFO or socket), at most :data:`MAX_MEMBERS` of them and
:data:`MAX_BYTES` in all, checked from each header before its bytes are read: a member that would
pass a limit stops the unpacking there, so a compression bomb costs no more than the limit. The
archive is read as a stream, once.
"""

from __future__ import annotations

import gzip
import os
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from harness.errors import ConfigError

MAX_MEMBERS = 10_000
MAX_BYTES = 2 << 30  # a bundle's files together: a pcap and an archive of a long run fit
FIX = "give the .tar.gz that hil capture wrote, or a bundle folder holding bundle.yaml"


def extract_bundle(archive: Path, dest: Path, *, max_bytes: int = MAX_BYTES, max_members: int = MAX_MEMBERS) -> Path:
    """Unpack ``archive`` into ``dest`` (made, must be empty); return the folder holding
    ``bundle.yaml`` (``dest`` or its one top folder)."""
    dest = dest.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    total = count = 0
    try:
        with tarfile.open(archive, mode="r|gz") as tar:
            for member in tar:
                count += 1
                if count > max_members:
                    raise ConfigError(f"{archive}: holds more than {max_members} files; a bundle holds a few",
                                      fix=FIX)
                target = _target(archive, dest, member)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                total += member.size
                if total > max_bytes:
                    raise ConfigError(f"{archive}: its files unpack to more than {max_bytes} bytes "
                                      f"(at {member.name!r})", fix=FIX)
                source = tar.extractfile(member)
                assert source is not None  # a regular file (checked in _target)
                target.parent.mkdir(parents=True, exist_ok=True)
                with source, open(target, "xb") as out:
                    while chunk := source.read(1 << 20):
                        out.write(chunk)
    except (tarfile.TarError, gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise ConfigError(f"{archive}: not a readable .tar.gz bundle ({exc or type(exc).__name__})",
                          fix=FIX) from None
    except FileExistsError as exc:
        raise ConfigError(f"{archive}: names {exc.filename} twice", fix=FIX) from None
    except OSError as exc:
        raise ConfigError(f"{archive}: cannot unpack it into {dest}: {exc.strerror}",
                          fix="check the archive and the report folder (space, permissions)") from None
    entries = [p for p in dest.iterdir()]
    if not (dest / "bundle.yaml").exists() and len(entries) == 1 and entries[0].is_dir() \
            and not entries[0].is_symlink():
        return entries[0]
    return dest


def _target(archive: Path, dest: Path, member: tarfile.TarInfo) -> Path:
    name = member.name
    kind = ("a symbolic link" if member.issym() else "a hard link" if member.islnk() else
            "a device" if member.isdev() else "a FIFO" if member.isfifo() else None)
    if kind is None and not (member.isfile() or member.isdir()):
        kind = "neither a file nor a folder"
    if kind is not None:
        raise ConfigError(f"{archive}: member {name!r} is {kind}; a bundle holds only files and folders",
                          fix=FIX)
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts or "\0" in name or not parts:
        raise ConfigError(f"{archive}: member {name!r} would be written outside the bundle's folder", fix=FIX)
    target = dest.joinpath(*[p for p in parts if p != "."])
    if os.path.commonpath([dest, target]) != str(dest):
        raise ConfigError(f"{archive}: member {name!r} would be written outside the bundle's folder", fix=FIX)
    return target
