"""The harness's probe path: pyOCD sessions that program, verify by read-back, compare, reset and
inspect, each under an outside deadline.

    with Flasher("emu:chip-stm32l475xg-0", "stm32l475xg", run_dir=run, state_dir=state.root) as f:
        result = f.program(Path("fw.elf"))             # one attempt; FlashOptions says how
        result.pages_written, result.pages_skipped, result.verified
        f.holds(Path("fw.elf"))                         # True when the flash reads back as the image
        f.reset("hardware"); f.inspect()                # the core's state: the probe answers

Every operation runs in a worker process of the Flasher (:mod:`harness.pyocd_worker`; reused by
later calls, each with its own session). A probe that stops answering is killed with its worker
the moment the deadline passes, rather than hanging the run. pyOCD has no verify, so the flash is
read back and compared. Recovery (retry, reconnect under reset, program without smart flash,
power-cycle, quarantine) is the board's recovery ladder (:mod:`harness.board.recovery`): one
call here is one attempt, made the way its :class:`FlashOptions` say.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import CheckFailed, ConfigError, InfrastructureError, UsageError
from harness.image import FORMATS, image_chunks, image_format, reaches_below
from harness.pyocd_worker import (
    RESET_TYPES,
    FlashFailed,
    MessageReader,
    ProbeNotFound,
    ProbeSpec,
    Progress,
    Request,
    VerifyFailed,
)

log = logging.getLogger(__name__)

ERASE_MODES = ("sector", "chip", "auto")
DEFAULT_TIMEOUT = 300.0
EXIT_GRACE = 2.0  # how long a worker whose pipes closed may take to exit by itself

__all__ = ["FORMATS", "FlashFailed", "FlashOptions", "FlashResult", "Flasher", "ProbeNotFound", "VerifyFailed",
           "image_chunks", "image_format"]


@dataclass(frozen=True)
class FlashOptions:
    """How one programming attempt is made (a rung of the recovery ladder picks these)."""

    connect_mode: str | None = None  # None: the board's own
    smart_flash: bool = True
    chip_erase: str | None = None  # None: the board's erase policy ("sector" | "chip" | "auto")


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
    options: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False  # the board already held the image (read back), nothing was programmed


class _Worker:
    """One worker process (own process group) and its two pipes."""

    def __init__(self, log_path: Path) -> None:
        read_fd, write_fd = os.pipe()
        self.log_path = log_path
        with log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from harness.pyocd_worker import worker_main; worker_main()",
                 str(write_fd)],
                stdin=subprocess.PIPE, stdout=log_file, stderr=subprocess.STDOUT, pass_fds=(write_fd,),
                start_new_session=True)
        os.close(write_fd)
        self.read_fd = read_fd
        self.messages = MessageReader(read_fd)

    def send(self, req: Request) -> None:
        assert self.proc.stdin is not None
        data = pickle.dumps(req)
        self.proc.stdin.write(struct.pack("<I", len(data)) + data)
        self.proc.stdin.flush()

    def _close_pipes(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        with contextlib.suppress(OSError):
            os.close(self.read_fd)

    def stop(self) -> None:
        """Close the pipes; the worker ends on EOF, or is killed (by its own pid) if it does not."""
        self._close_pipes()
        try:
            self.proc.wait(EXIT_GRACE)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """End a worker that stopped answering at once: its process group, by its own pid."""
        self._close_pipes()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)


class Flasher:
    """Programs images into one target through one probe, and resets and inspects it."""

    def __init__(self, probe_id: str, target: str, pack: Path | str | None = None,
                 frequency: int | None = None, connect_mode: str | None = None, erase: str = "sector", *,
                 run_dir: Path | None = None, state_dir: Path | None = None, timeout: float = DEFAULT_TIMEOUT,
                 smart_flash: bool = True, trust_crc: bool = False, keep_below: int | None = None,
                 plugins: tuple[str, ...] = ()) -> None:
        if erase not in ERASE_MODES:
            raise UsageError(f"bad erase mode {erase!r}", expected=" | ".join(ERASE_MODES), actual=erase)
        if keep_below is not None and erase != "sector":
            raise ConfigError(f"probe {probe_id}: erase {erase!r} would erase the bootloader below "
                              f"0x{keep_below:08x}", fix="use erase: sector on a board with keep_below")
        self.probe_id = probe_id
        self.target = target
        self.pack = str(pack) if pack else None
        self.frequency = frequency
        self.connect_mode = connect_mode
        self.erase = erase
        # Paths are resolved once, here: pyOCD changes the worker's working folder.
        self.run_dir = (run_dir or Path.cwd()).resolve()
        self.state_dir = state_dir.resolve() if state_dir is not None else None
        self.timeout = timeout
        self.smart_flash = smart_flash
        self.trust_crc = trust_crc
        self.keep_below = keep_below
        self.plugins = tuple(plugins)
        self._worker: _Worker | None = None

    # -- requests ------------------------------------------------------------------------------
    def _spec(self, connect_mode: str | None = None) -> ProbeSpec:
        return ProbeSpec(self.probe_id, self.target, self.pack, self.frequency, connect_mode or self.connect_mode,
                         str(self.run_dir), str(self.state_dir) if self.state_dir else None, self.plugins)

    def _image(self, path: Path | str, fmt: str | None, base: int | None) -> dict[str, Any]:
        """Check an image before any probe is touched; the worker's parameters for it."""
        path = Path(path).resolve()
        if path.is_dir():
            raise UsageError(f"image {path} is a folder, not a file", fix="give the image file of the build")
        if not path.is_file():
            raise UsageError(f"image {path} does not exist", fix="check the path (hil firmware verify BUILD)")
        fmt = image_format(path, fmt)
        chunks = image_chunks(path, fmt, base)
        if not any(data for _, data in chunks):
            raise UsageError(f"image {path} holds no data to program", fix="check the build's output")
        if self.keep_below is not None:
            low = reaches_below(chunks, self.keep_below)
            if low is not None:
                raise UsageError(
                    f"image {path} writes 0x{low[1]:x} bytes at 0x{low[0]:08x}, below 0x{self.keep_below:08x} "
                    f"where this board keeps its bootloader; nothing was erased",
                    fix="link the image above keep_below (the board's application start), or fix keep_below")
        return {"path": str(path), "fmt": fmt, "base": base}

    def program(self, path: Path | str, fmt: str | None = None, base: int | None = None, verify: bool = True,
                progress: Progress | None = None, options: FlashOptions | None = None) -> FlashResult:
        """One programming attempt (plus read-back verify), made the way ``options`` say."""
        options = options or FlashOptions()
        params = self._image(path, fmt, base)
        chip_erase = options.chip_erase or self.erase
        if self.keep_below is not None and chip_erase != "sector":
            raise UsageError(f"chip erase refused: {self.probe_id} keeps a bootloader below 0x{self.keep_below:08x}")
        params.update(chip_erase=chip_erase, smart_flash=self.smart_flash and options.smart_flash,
                      trust_crc=self.trust_crc, verify=verify)
        t0 = time.monotonic()
        raw = self._call(Request("program", self._spec(options.connect_mode), params), progress)
        return FlashResult(probe_id=self.probe_id, target=self.target, image=params["path"],
                           ranges=[tuple(r) for r in raw["ranges"]],  # type: ignore[misc]
                           bytes_total=raw["bytes_total"], sectors_erased=raw["sectors_erased"],
                           pages_written=raw["pages_written"], pages_skipped=raw["pages_skipped"],
                           duration=time.monotonic() - t0, verified=raw["verified"],
                           options={**asdict(options), "chip_erase": chip_erase})

    def holds(self, path: Path | str, fmt: str | None = None, base: int | None = None) -> bool:
        """True when every byte of the image reads back from the flash as it is in the file."""
        return bool(self._call(Request("compare", self._spec(), self._image(path, fmt, base)), None)["matches"])

    def reset(self, kind: str = "default", *, halt: bool = False, connect_mode: str | None = None) -> str:
        """A pyOCD reset; the core runs afterwards unless ``halt``. Returns the core's state."""
        if kind not in RESET_TYPES:
            raise UsageError(f"unknown reset type {kind!r}", expected=" | ".join(RESET_TYPES))
        return str(self._call(Request("reset", self._spec(connect_mode), {"type": kind, "halt": halt}), None)["state"])

    def inspect(self, timeout: float | None = None) -> dict[str, Any]:
        """Connect and read the core's state and CPUID: proof that probe and target answer."""
        return dict(self._call(Request("inspect", self._spec(), {}), None, timeout))

    # -- the worker ----------------------------------------------------------------------------
    def _call(self, req: Request, progress: Progress | None, timeout: float | None = None) -> dict[str, Any]:
        if self._worker is None or self._worker.proc.poll() is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            name = self.probe_id.replace(":", "_").replace("/", "_")
            self._worker = _Worker(self.run_dir / f"probe-{name}.log")
        worker = self._worker
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        last_progress = 0.0
        done = False
        try:
            worker.send(req)
            while True:
                message = worker.messages.next(deadline)
                if message is None:
                    if time.monotonic() >= deadline:
                        worker.kill()  # at once: a hung probe does not get a grace period
                        raise FlashFailed(
                            f"{req.op} through {req.probe.probe_id} did not finish in {limit:g}s",
                            expected="the probe to answer", actual=f"progress stopped at {last_progress:.0%}",
                            evidence=worker.log_path,
                            fix="the probe or target stopped answering: power-cycle it and check the cable")
                    raise FlashFailed(f"the probe worker for {req.probe.probe_id} died "
                                      f"(exit code {worker.proc.poll()})",
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
                if worker.proc.poll() is None:
                    worker.kill()
                self._worker = None

    def close(self) -> None:
        """End the worker process (it also ends by itself when this process exits)."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def __del__(self) -> None:  # a Flasher dropped without close() leaves no worker behind
        worker = getattr(self, "_worker", None)
        if worker is not None and worker.proc.poll() is None:
            worker.kill()

    def __enter__(self) -> Flasher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def result_summary(result: FlashResult) -> dict[str, Any]:
    """A JSON-ready record of a programming (for the run folder)."""
    return asdict(result)
