"""The harness's flashing path: pyOCD sessions that program, verify by read-back, and recover.

    result = Flasher("emu:chip-stm32l475xg-0", "stm32l475xg").program(Path("fw.elf"))
    result.pages_written, result.pages_skipped, result.verified

Programming runs in a worker process of the Flasher (pyOCD changes the working directory and keeps
process-wide state; the worker is reused by later calls, each with its own session), under an
outside deadline: a probe that stops answering is killed with its worker rather than hanging the
run. Sessions open with the safe options (``blocking=False``, ``return_first=False``,
``no_config=True``, ``project_dir`` = the run folder). pyOCD has no verify, so the flash is read
back and compared. On a failure the path recovers once: a fresh session (``recover_connect_mode``,
e.g. "under-reset", if given), programming without smart flash, verify.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import CheckFailed, InfrastructureError, UsageError

log = logging.getLogger(__name__)

FORMATS = ("elf", "hex", "bin")
ERASE_MODES = ("sector", "chip", "auto")
DEFAULT_TIMEOUT = 300.0
VERIFY_CHUNK = 0x10000

Progress = Callable[[float], None]


class FlashFailed(InfrastructureError):
    """Programming did not complete (also after the recovery attempt)."""


class VerifyFailed(CheckFailed):
    """The flash read back differs from the image."""


class ProbeNotFound(InfrastructureError):
    """No probe with that unique id (or more than one matched)."""


@dataclass(frozen=True)
class FlashResult:
    probe_id: str
    target: str
    image: str
    ranges: list[tuple[int, int]]  # (address, length) of image data inside flash
    bytes_total: int
    sectors_erased: int
    pages_written: int
    pages_skipped: int
    duration: float
    verified: bool
    recovered: bool = False
    attempts: list[str] = field(default_factory=list)  # what went wrong before success


@dataclass(frozen=True)
class _Request:
    probe_id: str
    target: str
    pack: str | None
    frequency: int | None
    connect_mode: str | None
    recover_connect_mode: str | None
    chip_erase: str
    smart_flash: bool
    trust_crc: bool
    path: str
    fmt: str
    base: int | None
    verify: bool
    run_dir: str
    plugins: tuple[str, ...]


# ----------------------------------------------------------------------------- image reading

def image_format(path: Path, fmt: str | None) -> str:
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    fmt = {"axf": "elf", "ihex": "hex", "bin": "bin"}.get(fmt, fmt)
    if fmt not in FORMATS:
        raise UsageError(f"cannot tell the format of {path}", expected=f"one of {FORMATS}", actual=fmt or "none",
                         fix="pass fmt='elf'|'hex'|'bin'")
    return fmt


def image_chunks(path: Path, fmt: str, base: int | None) -> list[tuple[int, bytes]]:
    """The (address, data) pieces pyOCD's FileProgrammer would load from the file."""
    if fmt == "bin":
        if base is None:
            raise UsageError(f"{path} is a raw binary: its base address is needed", fix="pass base=0x08000000")
        return [(base, path.read_bytes())]
    if fmt == "hex":
        from intelhex import IntelHex

        hexfile = IntelHex(str(path))
        out = []
        for start, end in hexfile.segments():
            out.append((start, bytes(hexfile.tobinarray(start=start, size=end - start))))
        return out
    from elftools.elf.elffile import ELFFile

    with path.open("rb") as f:
        elf = ELFFile(f)
        return [(seg["p_paddr"], bytes(seg.data())) for seg in elf.iter_segments()
                if seg.header.p_type == "PT_LOAD" and seg.header.p_filesz]


def _flash_ranges(target: Any, chunks: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """Clip the image to the target's flash regions (what pyOCD programs)."""
    from pyocd.core.memory_map import MemoryType

    out = []
    for region in target.memory_map.iter_matching_regions(type=MemoryType.FLASH):
        for addr, data in chunks:
            lo, hi = max(addr, region.start), min(addr + len(data), region.end + 1)
            if lo < hi:
                out.append((lo, data[lo - addr: hi - addr]))
    return sorted(out)


# ----------------------------------------------------------------------------- inside the worker

def _open_session(req: _Request, connect_mode: str | None) -> Any:
    from pyocd.core.helpers import ConnectHelper

    # A programmed core stays halted until the harness resets it: pyOCD would otherwise resume it
    # from wherever it stopped (before the new image was there) when the session closes.
    options: dict[str, Any] = {"resume_on_disconnect": False}
    if req.frequency:
        options["frequency"] = req.frequency
    if connect_mode:
        options["connect_mode"] = connect_mode
    if req.pack:
        options["pack"] = [req.pack]
    session = ConnectHelper.session_with_chosen_probe(
        blocking=False, return_first=False, unique_id=req.probe_id, target_override=req.target,
        no_config=True, project_dir=req.run_dir, options=options)
    if session is None:
        raise ProbeNotFound(f"no probe with unique id {req.probe_id!r} (or more than one matched)",
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


def _verify(session: Any, ranges: list[tuple[int, bytes]]) -> None:
    target = session.target
    for addr, data in ranges:
        region = target.memory_map.get_region_for_address(addr)
        flash = getattr(region, "flash", None)
        if flash is not None and not region.is_readable:
            flash.init(flash.Operation.VERIFY)  # e.g. QSPI not mapped until initialised
        for off in range(0, len(data), VERIFY_CHUNK):
            want = data[off: off + VERIFY_CHUNK]
            got = _read_back(target, addr + off, len(want))
            if got != want:
                i = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
                where = addr + off + i
                raise VerifyFailed(f"flash at 0x{where:08x} reads 0x{got[i]:02x} after programming",
                                   expected=f"0x{want[i]:02x} (from the image)", actual=f"0x{got[i]:02x}",
                                   fix="a flash cell does not take the value: quarantine the board")
        if flash is not None and not region.is_readable:
            flash.cleanup()


def _program_once(req: _Request, smart: bool, connect_mode: str | None, progress: Progress) -> dict[str, Any]:
    from pyocd.flash.file_programmer import FileProgrammer

    session = _open_session(req, connect_mode)
    t0 = time.monotonic()
    with session:
        perfs: list[Any] = []
        # With our own read-back verify, a page whose CRC matches need not be read twice: a CRC
        # collision is caught by the verify, and the recovery programs without smart flash.
        programmer = FileProgrammer(session, progress=progress, chip_erase=req.chip_erase,
                                    smart_flash=smart, trust_crc=req.trust_crc or req.verify)
        loader = programmer._loader  # pyOCD reports per-region statistics only to its log
        report = loader._log_performance
        loader._log_performance = lambda perf_list: (perfs.extend(perf_list), report(perf_list))
        kwargs = {"base_address": req.base} if req.fmt == "bin" and req.base is not None else {}
        programmer.program(req.path, file_format=req.fmt, **kwargs)
        ranges = _flash_ranges(session.target, image_chunks(Path(req.path), req.fmt, req.base))
        if req.verify:
            _verify(session, ranges)
    return {
        "ranges": [(a, len(d)) for a, d in ranges],
        "bytes_total": sum(len(d) for _, d in ranges),
        "sectors_erased": sum(p.erase_sector_count for p in perfs),
        "pages_written": sum(p.program_page_count for p in perfs),
        "pages_skipped": sum(p.skipped_page_count for p in perfs),
        "duration": time.monotonic() - t0,
        "verified": req.verify,
    }


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def program_in_process(req: _Request, progress: Progress) -> dict[str, Any]:
    """Program, verify and (once) recover, in this process; restores the working directory."""
    cwd = os.getcwd()
    try:
        for plugin in req.plugins:
            module, _, func = plugin.partition(":")
            getattr(importlib.import_module(module), func)()
        attempts: list[str] = []
        try:
            return {**_program_once(req, req.smart_flash, req.connect_mode, progress), "attempts": attempts}
        except ProbeNotFound:
            raise
        except Exception as exc:  # any pyOCD failure: a fresh session, full programming, verify
            log.warning("programming %s failed (%s); recovering", req.probe_id, _describe(exc))
            attempts.append(_describe(exc))
        try:
            result = _program_once(req, False, req.recover_connect_mode, progress)
        except VerifyFailed as exc:
            exc.message += f" (also after recovery; first attempt: {attempts[0]})"
            raise
        except Exception as exc:
            raise FlashFailed(f"programming {req.path} through {req.probe_id} failed, also after recovery",
                              expected="the image programmed", actual=f"{attempts[0]}; then {_describe(exc)}",
                              fix="check the probe connection and the target type") from exc
        return {**result, "attempts": attempts, "recovered": True}
    finally:
        os.chdir(cwd)


def _send(fd: int, message: object) -> None:
    data = pickle.dumps(message)
    os.write(fd, struct.pack("<I", len(data)) + data)


def worker_main() -> None:
    """Entry of the worker process: pickled requests on stdin, answers on the fd in argv[1].

    The worker serves requests until its stdin closes: pyOCD is imported once, and each request
    opens and closes its own session."""
    fd = int(sys.argv[1])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    requests = _MessageReader(sys.stdin.fileno())
    try:
        while (req := requests.next(None)) is not None:
            try:
                result = program_in_process(req, lambda fraction: _send(fd, ("progress", fraction)))
                _send(fd, ("result", result))
            except Exception as exc:  # report everything to the parent, which owns the error handling
                error = exc if isinstance(exc, InfrastructureError | CheckFailed | UsageError) \
                    else FlashFailed(_describe(exc), actual=_describe(exc))
                try:
                    _send(fd, ("error", error))
                except (pickle.PicklingError, TypeError, AttributeError):
                    _send(fd, ("error", FlashFailed(str(error))))
    finally:
        os.close(fd)


class _MessageReader:
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


class _Worker:
    """One worker process (own process group) and its two pipes."""

    def __init__(self, log_path: Path) -> None:
        read_fd, write_fd = os.pipe()
        self.log_path = log_path
        with log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from harness.flash import worker_main; worker_main()", str(write_fd)],
                stdin=subprocess.PIPE, stdout=log_file, stderr=subprocess.STDOUT, pass_fds=(write_fd,),
                start_new_session=True)
        os.close(write_fd)
        self.read_fd = read_fd
        self.messages = _MessageReader(read_fd)

    def send(self, req: _Request) -> None:
        assert self.proc.stdin is not None
        data = pickle.dumps(req)
        self.proc.stdin.write(struct.pack("<I", len(data)) + data)
        self.proc.stdin.flush()

    def stop(self) -> None:
        """Close the pipes; the worker ends on EOF, or is killed (by its own pid) if it does not."""
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        with contextlib.suppress(OSError):
            os.close(self.read_fd)
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


# ----------------------------------------------------------------------------- the API

class Flasher:
    """Programs images into one target through one probe."""

    def __init__(self, probe_id: str, target: str, pack: Path | str | None = None,
                 frequency: int | None = None, connect_mode: str | None = None, erase: str = "sector", *,
                 run_dir: Path | None = None, timeout: float = DEFAULT_TIMEOUT, smart_flash: bool = True,
                 trust_crc: bool = False, isolate: bool = True, plugins: Sequence[str] = (),
                 recover_connect_mode: str | None = None) -> None:
        if erase not in ERASE_MODES:
            raise UsageError(f"bad erase mode {erase!r}", expected=" | ".join(ERASE_MODES), actual=erase)
        self.probe_id = probe_id
        self.target = target
        self.pack = str(pack) if pack else None
        self.frequency = frequency
        self.connect_mode = connect_mode
        self.recover_connect_mode = recover_connect_mode or connect_mode
        self.erase = erase
        self.run_dir = run_dir
        self.timeout = timeout
        self.smart_flash = smart_flash
        self.trust_crc = trust_crc
        self.isolate = isolate
        self.plugins = tuple(plugins)
        self._worker: _Worker | None = None

    def program(self, path: Path | str, fmt: str | None = None, base: int | None = None, verify: bool = True,
                progress: Progress | None = None) -> FlashResult:
        path = Path(path).resolve()
        if not path.is_file():
            raise UsageError(f"image {path} does not exist")
        fmt = image_format(path, fmt)
        if fmt == "bin" and base is None:
            raise UsageError(f"{path} is a raw binary: its base address is needed", fix="pass base=0x...")
        run_dir = self.run_dir or Path.cwd()
        req = _Request(self.probe_id, self.target, self.pack, self.frequency, self.connect_mode,
                       self.recover_connect_mode, self.erase, self.smart_flash, self.trust_crc, str(path), fmt,
                       base, verify, str(run_dir), self.plugins)
        t0 = time.monotonic()
        raw = self._run_worker(req, progress) if self.isolate else program_in_process(req, progress or _ignore)
        return FlashResult(probe_id=self.probe_id, target=self.target, image=str(path),
                           ranges=[tuple(r) for r in raw["ranges"]],  # type: ignore[misc]
                           bytes_total=raw["bytes_total"], sectors_erased=raw["sectors_erased"],
                           pages_written=raw["pages_written"], pages_skipped=raw["pages_skipped"],
                           duration=time.monotonic() - t0, verified=raw["verified"],
                           recovered=raw.get("recovered", False), attempts=raw["attempts"])

    def _run_worker(self, req: _Request, progress: Progress | None) -> dict[str, Any]:
        if self._worker is None or self._worker.proc.poll() is not None:
            name = req.probe_id.replace(":", "_").replace("/", "_")
            self._worker = _Worker(Path(req.run_dir) / f"flash-{name}.log")
        worker = self._worker
        deadline = time.monotonic() + self.timeout
        last_progress = 0.0
        done = False
        try:
            worker.send(req)
            while True:
                message = worker.messages.next(deadline)
                if message is None:
                    if time.monotonic() >= deadline:
                        raise FlashFailed(
                            f"programming through {req.probe_id} did not finish in {self.timeout:.0f}s",
                            expected="the probe to answer", actual=f"progress stopped at {last_progress:.0%}",
                            evidence=worker.log_path,
                            fix="the probe or target stopped answering: power-cycle it and check the cable")
                    raise FlashFailed(f"the flash worker for {req.probe_id} died (exit code {worker.proc.poll()})",
                                      actual=f"progress stopped at {last_progress:.0%}", evidence=worker.log_path)
                kind, value = message
                if kind == "progress":
                    last_progress = value
                    if progress is not None:
                        progress(value)
                    continue
                done = True
                if kind == "result":
                    return dict(value)
                if isinstance(value, InfrastructureError | CheckFailed) and value.evidence is None:
                    value.evidence = worker.log_path
                raise value
        finally:
            if not done:  # a hung or dead worker is not reused
                worker.stop()
                self._worker = None

    def close(self) -> None:
        """End the worker process (it also ends by itself when this process exits)."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def __enter__(self) -> Flasher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ignore(_fraction: float) -> None:
    pass


def result_summary(result: FlashResult) -> dict[str, Any]:
    """A JSON-ready record of a programming (for the run folder)."""
    return asdict(result)

