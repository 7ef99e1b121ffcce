"""Files and folders the user named: opened so that nothing can hang, flood or crash the caller.

Every path a user gives (a lab folder, a board file, a manifest, an image, a message to decode)
goes through here. A FIFO cannot block the open (it is opened non-blocking), ``/dev/zero`` cannot
fill memory (reads are bounded), and every ``OSError`` becomes one clear ``ConfigError`` or
``UsageError`` that names the path and says what is wrong in the user's words: a folder is not
"no such file", a dangling link names where it points, "check permissions" is said only when
permissions are the problem.

    data = read_user_file(path, what="board file", limit=1 << 20, error=ConfigError)
    with open_user_file(path, what="image", limit=256 << 20, error=ConfigError) as fh: ...
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from harness.errors import ConfigError, HarnessError, UsageError

ErrorClass = type[ConfigError] | type[UsageError]

_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def file_kind(mode: int) -> str:
    """'a folder', 'a FIFO (named pipe)', ... for an ``st_mode``."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a file"
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def _blocking_part(path: Path) -> Path | None:
    """The first part of ``path`` that exists and is not a folder (why a path 'under' it fails)."""
    for parent in reversed(path.parents):
        if str(parent) in ("", "."):
            continue
        try:
            if not stat.S_ISDIR(os.stat(parent).st_mode):
                return parent
        except OSError:
            return None
    return None


def explain(path: Path | str, exc: OSError, *, what: str, action: str = "read") -> tuple[str, str]:
    """(what is wrong, the fix) for an ``OSError`` met on ``path``, in the user's words; ``action``
    is what the harness was doing ('read' or 'write'), for the permission fix."""
    path = Path(path)
    code = exc.errno
    if code == errno.ENOENT:
        try:
            if path.is_symlink():
                return (f"{path}: is a link to {os.readlink(path)}, which does not exist",
                        "point the link at an existing file, or remove it")
        except OSError:
            pass
        blocking = _blocking_part(path)
        if blocking is not None:
            return f"{path}: {blocking} is a file, not a folder", f"give the path of the {what}"
        return f"{path}: no such file", f"give the path of an existing {what}"
    if code == errno.ENOTDIR:
        blocking = _blocking_part(path)
        where = f"{blocking} is a file" if blocking is not None else "a part of the path is a file"
        return f"{path}: {where}, not a folder", f"give the path of the {what}"
    if code in (errno.EACCES, errno.EPERM):
        return (f"{path}: permission denied",
                f"check permissions: the user running hil must be able to {action} the {what} "
                "(and enter the folders above it)")
    if code == errno.ELOOP:
        return f"{path}: is a symbolic link loop", "point the link at a real file"
    if code == errno.ENAMETOOLONG:
        return f"{str(path)[:80]}...: name too long", "give a shorter path"
    if code == errno.EISDIR:
        return f"{path}: is a folder, not a file", f"give the path of the {what} inside it"
    if code == errno.ENXIO:
        return f"{path}: is a socket or a device with nothing behind it, not a file", f"give the path of the {what}"
    if code == errno.ENOSPC:
        return f"{path}: no space left on the device", "free some space"
    if code == errno.EROFS:
        return f"{path}: on a read-only file system", "choose a writable folder"
    return f"{path}: cannot use it ({exc.strerror or exc})", f"check the path of the {what}"


def user_error(path: Path | str, exc: OSError, *, what: str, error: ErrorClass) -> HarnessError:
    message, fix = explain(path, exc, what=what)
    return error(message, fix=fix)


@contextmanager
def open_user_file(path: Path | str, *, what: str, limit: int | None, error: ErrorClass,
                   streams: bool = False) -> Iterator[BinaryIO]:
    """Open a file the user named, for reading.

    A folder, a FIFO, a device or a socket is refused (``streams=True`` lets pipes and character
    devices through, e.g. ``/dev/stdin``: then the reader must bound what it reads). A regular file
    over ``limit`` bytes is refused before reading.
    """
    if str(path) == "":
        raise error(f"an empty name was given for the {what}", fix=f"give the path of the {what}")
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise user_error(path, exc, what=what, error=error) from None
    except ValueError:  # an embedded NUL
        raise error(f"{path!r}: a path cannot hold a NUL character", fix=f"give the path of the {what}") from None
    try:
        mode = os.fstat(fd).st_mode
        regular = stat.S_ISREG(mode)
        if not regular and not (streams and (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode))):
            raise error(f"{path}: is {file_kind(mode)}, not a file", fix=f"give the path of the {what}")
        if regular and limit is not None:
            size = os.fstat(fd).st_size
            if size > limit:
                raise error(f"{path}: is {size} bytes; a {what} is at most {limit} bytes",
                            fix=f"check this is the {what} meant")
        os.set_blocking(fd, True)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh


def read_bounded(fh: BinaryIO, name: Path | str, *, what: str, limit: int, error: ErrorClass) -> bytes:
    """All of ``fh``, refusing (without reading on) a stream longer than ``limit`` bytes."""
    try:
        data = fh.read(limit + 1)
    except OSError as exc:
        raise user_error(name, exc, what=what, error=error) from None
    if len(data) > limit:
        raise error(f"{name}: holds more than {limit} bytes; a {what} is at most {limit} bytes",
                    fix=f"check this is the {what} meant")
    return data


def read_user_file(path: Path | str, *, what: str, limit: int, error: ErrorClass, streams: bool = False) -> bytes:
    """The bytes of a file the user named (see ``open_user_file``), at most ``limit`` of them."""
    with open_user_file(path, what=what, limit=limit, error=error, streams=streams) as fh:
        return read_bounded(fh, path, what=what, limit=limit, error=error)


def list_user_folder(path: Path | str, *, what: str, error: ErrorClass, source: str = "",
                     fix: str | None = None) -> list[Path]:
    """The entries of a folder the user named, sorted; a missing, unreadable or non-folder path is
    an ``error`` (``source`` says where the path came from, e.g. ' (from HIL_LAB)'; ``fix`` replaces
    the generic fix for a folder that is missing or not a folder)."""
    if str(path) == "":
        raise error(f"an empty name was given for the {what}", fix=fix or f"give the {what}")
    path = Path(path)
    label = f"{what} {path}{source}"
    try:
        with os.scandir(path) as entries:
            return sorted(path / entry.name for entry in entries)
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            blocking = _blocking_part(path / "x")
            if blocking == path:
                raise error(f"{label} is a file, not a folder", fix=fix or f"give the {what}") from None
        if exc.errno == errno.ENOENT and not path.is_symlink() and _blocking_part(path) is None:
            raise error(f"{label} does not exist", fix=fix or f"give an existing {what}") from None
        message, fix = explain(path, exc, what=what)
        raise error(f"{label}: {message.removeprefix(f'{path}: ')}", fix=fix) from None


def check_folder_path(path: Path | str, *, what: str, error: ErrorClass, source: str = "") -> Path:
    """A folder the harness will write into: it exists as a folder, or it can be made (nothing on
    its path is a file). Returns the path; makes nothing."""
    if str(path) == "":
        raise error(f"an empty name was given for the {what}", fix=f"give the path of the {what}")
    path = Path(path)
    label = f"{what} {path}{source}"
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        blocking = _blocking_part(path)
        if blocking is not None:
            raise error(f"{label}: {blocking} is a file, not a folder", fix=f"give a folder as the {what}, "
                        "or a path where one can be made") from None
        return path
    except OSError as exc:
        message, fix = explain(path, exc, what=what)
        raise error(f"{label}: {message.removeprefix(f'{path}: ')}", fix=fix) from None
    except ValueError:
        raise error(f"{what} {path!r}: a path cannot hold a NUL character", fix=f"choose another {what}") from None
    if not stat.S_ISDIR(mode):
        raise error(f"{label} is {file_kind(mode)}, not a folder", fix=f"give a folder as the {what}, "
                    "or a path where one can be made")
    return path
