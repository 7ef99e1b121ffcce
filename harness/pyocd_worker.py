"""pyOCD in a worker process: the operations a probe performs for the harness, run where a hung
probe can be killed without taking the run with it.

pyOCD changes the working directory, keeps process-wide state and can block forever on a probe
that stops answering, so every probe operation runs in a worker process owned by a
:class:`~harness.flash.Flasher`. The parent sends pickled :class:`Request` s on the worker's stdin
and reads length-prefixed pickled answers (``("progress", f)``, ``("result", dict)``,
``("error", HarnessError)``) from a pipe, under its own deadline.

Operations (``Request.op``): ``program`` (FileProgrammer + read-back verify: pyOCD has none),
``compare`` (read back the image's flash ranges: does the board already hold it?), ``reset``
(a pyOCD reset of the given type, leaving the core running or halted) and ``inspect`` (connect and
read the core's state: does the probe answer?). Each opens its own session with the safe options
(``blocking=False``, ``return_first=False``, ``no_config=True``, ``project_dir`` = the run folder).
The lab state folder travels in the request (the ``emu:`` probe plugin finds machines and chip
models there), never through the process environment.
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import select
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import CheckFailed, HarnessError, InfrastructureError, UsageError
from harness.image import flash_pieces, image_chunks
from harness.state import use_state_root

log = logging.getLogger(__name__)

VERIFY_CHUNK = 0x10000
RESET_TYPES = ("default", "hardware", "system", "core", "nsrst", "sysresetreq", "vectreset", "emulated")

Progress = Callable[[float], None]


class FlashFailed(InfrastructureError):
    """A probe operation did not complete."""


class VerifyFailed(CheckFailed):
    """The flash read back differs from the image."""


class ProbeNotFound(InfrastructureError):
    """No probe with that unique id (or more than one matched)."""


@dataclass(frozen=True)
class ProbeSpec:
    """Which probe and target a session opens, and how."""

    probe_id: str
    target: str
    pack: str | None = None
    frequency: int | None = None
    connect_mode: str | None = None
    run_dir: str = "."
    state_dir: str | None = None
    plugins: tuple[str, ...] = ()


@dataclass(frozen=True)
class Request:
    op: str  # program | compare | reset | inspect
    probe: ProbeSpec
    params: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- inside the worker

def _open_session(spec: ProbeSpec, *, attach: bool = False) -> Any:
    """A session on the probe. By default the core is halted (the board's connect mode) and stays
    halted when the session closes: a programmed core must not run on from wherever it stopped
    (before the new image was there) until the harness resets it. ``attach`` looks without
    stopping the core, and leaves it as it found it (health checks of a running board)."""
    from pyocd.core.helpers import ConnectHelper

    options: dict[str, Any] = {"resume_on_disconnect": False}
    if spec.frequency:
        options["frequency"] = spec.frequency
    if attach:
        options["connect_mode"] = "attach"
    elif spec.connect_mode:
        options["connect_mode"] = spec.connect_mode
    if spec.pack:
        options["pack"] = [spec.pack]
    session = ConnectHelper.session_with_chosen_probe(
        blocking=False, return_first=False, unique_id=spec.probe_id, target_override=spec.target,
        no_config=True, project_dir=spec.run_dir, options=options)
    if session is None:
        raise ProbeNotFound(f"no probe with unique id {spec.probe_id!r} (or more than one matched)",
                            fix="run 'pyocd list' and use the exact unique id")
    return session


def _read_back(target: Any, addr: int, size: int) -> bytes:
    """Read memory in words where aligned (pyOCD filters breakpoints per access unit: words are 4x
    cheaper than bytes), bytes at the unaligned edges."""
    head = min(size, -addr % 4)
    body = (size - head) // 4 * 4
    out = bytes(target.read_memory_block8(addr, head)) if head else b""
    if body:
        out += struct.pack(f"<{body // 4}I", *target.read_memory_block32(addr + head, body // 4))
    tail = size - head - body
    if tail:
        out += bytes(target.read_memory_block8(addr + head + body, tail))
    return out


def _first_difference(session: Any, ranges: list[tuple[int, bytes]]) -> tuple[int, int, int] | None:
    """(address, read, wanted) of the first byte of ``ranges`` that the flash does not hold."""
    target = session.target
    for addr, data in ranges:
        region = target.memory_map.get_region_for_address(addr)
        flash = getattr(region, "flash", None)
        mapped = flash is None or region.is_readable
        if not mapped:
            flash.init(flash.Operation.VERIFY)  # e.g. QSPI not mapped until initialised
        try:
            for off in range(0, len(data), VERIFY_CHUNK):
                want = data[off: off + VERIFY_CHUNK]
                got = _read_back(target, addr + off, len(want))
                if got != want:
                    i = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
                    return addr + off + i, got[i], want[i]
        finally:
            if not mapped:
                flash.cleanup()
    return None


def _ranges(session: Any, params: dict[str, Any]) -> list[tuple[int, bytes]]:
    from pyocd.core.memory_map import MemoryType

    regions = [(r.start, r.end + 1) for r in session.target.memory_map.iter_matching_regions(type=MemoryType.FLASH)]
    return flash_pieces(regions, image_chunks(Path(params["path"]), params["fmt"], params.get("base")))


def _program(spec: ProbeSpec, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
    from pyocd.flash.file_programmer import FileProgrammer

    session = _open_session(spec)
    t0 = time.monotonic()
    with session:
        perfs: list[Any] = []
        # With our own read-back verify, a page whose CRC matches need not be read twice: a CRC
        # collision is caught by the verify.
        programmer = FileProgrammer(session, progress=progress, chip_erase=params["chip_erase"],
                                    smart_flash=params["smart_flash"],
                                    trust_crc=params["trust_crc"] or params["verify"])
        loader = programmer._loader  # pyOCD reports per-region statistics only to its log
        report = loader._log_performance
        loader._log_performance = lambda perf_list: (perfs.extend(perf_list), report(perf_list))
        base = params.get("base")
        kwargs = {"base_address": base} if params["fmt"] == "bin" and base is not None else {}
        programmer.program(params["path"], file_format=params["fmt"], **kwargs)
        ranges = _ranges(session, params)
        if params["verify"]:
            diff = _first_difference(session, ranges)
            if diff is not None:
                where, got, want = diff
                raise VerifyFailed(f"flash at 0x{where:08x} reads 0x{got:02x} after programming",
                                   expected=f"0x{want:02x} (from the image)", actual=f"0x{got:02x}",
                                   fix="a flash cell does not take the value: quarantine the board")
    return {
        "ranges": [(a, len(d)) for a, d in ranges],
        "bytes_total": sum(len(d) for _, d in ranges),
        "sectors_erased": sum(p.erase_sector_count for p in perfs),
        "pages_written": sum(p.program_page_count for p in perfs),
        "pages_skipped": sum(p.skipped_page_count for p in perfs),
        "duration": time.monotonic() - t0,
        "verified": params["verify"],
    }


def _compare(spec: ProbeSpec, params: dict[str, Any], _progress: Progress) -> dict[str, Any]:
    with _open_session(spec) as session:
        ranges = _ranges(session, params)
        diff = _first_difference(session, ranges)
    return {"matches": diff is None and bool(ranges), "first_difference": diff[0] if diff else None,
            "bytes_total": sum(len(d) for _, d in ranges)}


def _reset(spec: ProbeSpec, params: dict[str, Any], _progress: Progress) -> dict[str, Any]:
    from pyocd.core.target import Target

    kind = getattr(Target.ResetType, params.get("type", "default").upper())
    with _open_session(spec) as session:
        target = session.target
        if params.get("halt"):
            target.reset_and_halt(kind)
        else:
            target.reset(kind)
        state = target.get_state().name
    return {"state": state}


def _inspect(spec: ProbeSpec, _params: dict[str, Any], _progress: Progress) -> dict[str, Any]:
    with _open_session(spec, attach=True) as session:
        target = session.target
        return {"state": target.get_state().name, "cpuid": target.read32(0xE000ED00),
                "probe": session.probe.description}


OPERATIONS: dict[str, Callable[[ProbeSpec, dict[str, Any], Progress], dict[str, Any]]] = {
    "program": _program, "compare": _compare, "reset": _reset, "inspect": _inspect,
}


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _load_plugins(spec: ProbeSpec) -> None:
    if spec.state_dir is not None:
        use_state_root(Path(spec.state_dir))
    for plugin in spec.plugins:
        module, _, func = plugin.partition(":")
        getattr(importlib.import_module(module), func)()


def perform(req: Request, progress: Progress) -> dict[str, Any]:
    """Run one request in this process; restores the working directory pyOCD changes."""
    cwd = os.getcwd()
    try:
        _load_plugins(req.probe)
        return OPERATIONS[req.op](req.probe, req.params, progress)
    finally:
        os.chdir(cwd)


def send(fd: int, message: object) -> None:
    data = pickle.dumps(message)
    os.write(fd, struct.pack("<I", len(data)) + data)


def worker_main() -> None:
    """Entry of the worker process: requests on stdin, answers on the fd in argv[1], until stdin
    closes (pyOCD is imported once; each request opens and closes its own session)."""
    fd = int(sys.argv[1])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    requests = MessageReader(sys.stdin.fileno())
    try:
        while (req := requests.next(None)) is not None:
            try:
                result = perform(req, lambda fraction: send(fd, ("progress", fraction)))
                send(fd, ("result", result))
            except Exception as exc:  # report everything to the parent, which owns the error handling
                error = exc if isinstance(exc, HarnessError) else FlashFailed(describe(exc), actual=describe(exc))
                try:
                    send(fd, ("error", error))
                except (pickle.PicklingError, TypeError, AttributeError):
                    send(fd, ("error", FlashFailed(str(error))))
    finally:
        os.close(fd)


class MessageReader:
    """Length-prefixed pickled messages from a pipe, read with a deadline (None: wait)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()

    def next(self, deadline: float | None) -> Any:
        """The next message; None on the deadline or when the other side closed the pipe."""
        while True:
            if len(self.buf) >= 4:
                (size,) = struct.unpack_from("<I", self.buf)
                if len(self.buf) >= 4 + size:
                    data = bytes(self.buf[4: 4 + size])
                    del self.buf[: 4 + size]
                    return pickle.loads(data)  # between our own two processes
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            readable, _, _ = select.select([self.fd], [], [], remaining)
            if not readable:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self.buf += chunk


__all__ = ["RESET_TYPES", "FlashFailed", "ProbeNotFound", "ProbeSpec", "Request", "UsageError", "VerifyFailed"]
