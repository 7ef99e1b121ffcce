"""A board's console: capture to a file, expect lines with deadlines, type at the board, and
survive the port going away and coming back.

The console is a pyserial URL (a device path, ``socket://``, ``rfc2217://``), the same for a real
board's USB serial port and an emulated board's UART. Everything read is appended to the log file
as it arrives; ``expect`` waits for a whole line that matches, and on timeout says what it waited
for, shows the last lines it saw and where the full log is.

When the port disappears (a USB adapter re-enumerating after a power-cycle, a dropped socket
console), the reader reopens it until it is back — a device path is resolved again each time, so
a ``/dev/serial/by-id/...`` link follows the adapter to its new ``ttyACM``/``ttyUSB`` name — and
carries on: waits keep waiting through the gap, and nothing the board prints after the port is
back is lost (reopening never flushes input). The gaps are recorded in :attr:`Console.outages`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import serial

from harness.errors import InfrastructureError, UsageError, WaitTimeout

log = logging.getLogger(__name__)

TAIL_CHARS = 2500
READ_TIMEOUT = 0.2
REOPEN_EVERY = 0.1  # how often a vanished port is tried again (no event tells when it returns)
WRITE_WAIT = 10.0  # how long a write waits for a vanished port to come back


def _open_keeping_input(url: str, baudrate: int) -> serial.SerialBase:
    """Open a pyserial URL without the input flush pyserial does on open: what the board printed
    before the port opened (an emulated console replays it) is evidence, not noise. A device path
    is resolved first, so a by-id link opens the device it points at now."""
    target = os.path.realpath(url) if url.startswith("/") else url
    port = serial.serial_for_url(target, baudrate=baudrate, timeout=READ_TIMEOUT, do_not_open=True)
    # socket:// flushes through reset_input_buffer, a device (serialposix) through _reset_input_buffer
    flushes = {name: getattr(port, name) for name in ("reset_input_buffer", "_reset_input_buffer")
               if hasattr(port, name)}
    for name in flushes:
        setattr(port, name, lambda: None)
    try:
        port.open()
    finally:
        for name, flush in flushes.items():
            setattr(port, name, flush)
    return port


def _read_available(port: serial.SerialBase) -> bytes:
    """What the port has now (waiting up to its read timeout for the first byte). pyserial's own
    ``read(n)`` gathers bytes until n or the timeout and raises on a disconnect *discarding what it
    gathered*: the last lines a board printed before its port went away would be lost. So read the
    port's descriptor directly where it has one (a device, a socket)."""
    fd = getattr(port, "fd", None)
    if fd is None:
        sock = getattr(port, "_socket", None)
        fd = sock.fileno() if sock is not None else None
    if fd is None:  # rfc2217 and friends buffer in a thread of their own: read what is there
        first = port.read(1)
        return first + port.read(port.in_waiting) if first else first
    ready, _, _ = select.select([fd], [], [], READ_TIMEOUT)
    if not ready:
        return b""
    chunk = os.read(fd, 65536)
    if not chunk:
        raise serial.SerialException("the port closed (end of file)")
    return chunk


@dataclass
class Outage:
    """A time the port was gone: when it went (monotonic), when it came back (None: still gone)."""

    lost: float
    back: float | None = None
    why: str = ""


class Console:
    """Reads a console in a background thread; ``expect`` waits on a condition, not a sleep."""

    def __init__(self, url: str | object, log_path: Path, *, baudrate: int = 115200, name: str = "console",
                 reconnect: bool = True) -> None:
        # ``url`` may be a callable giving the URL at each (re)open: an emulated board's console
        self._url_source = url
        self.log_path = log_path
        self.name = name
        self.baudrate = baudrate
        self.reconnect = reconnect
        self.outages: list[Outage] = []
        self._text = ""
        self._pos = 0
        self._closed = False
        self._eof = False
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        try:
            self._port: serial.SerialBase | None = _open_keeping_input(self.url, baudrate)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise InfrastructureError(
                f"{name}: cannot open console {self.url}: {exc}",
                fix="check the console url, that the device exists and that nothing else holds it",
            ) from None
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("a", encoding="utf-8")
        self._thread = threading.Thread(target=self._reader, name=f"{name}-reader", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        source = self._url_source
        return str(source() if callable(source) else source)

    # -- reading -------------------------------------------------------------------------------
    def _reader(self) -> None:
        while not self._closed:
            port = self._port
            try:
                if port is None:
                    raise serial.SerialException("not open")
                chunk = _read_available(port)
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                if self._closed:
                    return
                if not self._lost(f"{type(exc).__name__}: {exc}"):
                    return
                continue
            if chunk:
                self._append(chunk.decode("utf-8", "replace").replace("\r", ""))

    def _append(self, text: str) -> None:
        self._log.write(text)
        self._log.flush()
        with self._cond:
            self._text += text
            self._cond.notify_all()

    def _lost(self, why: str) -> bool:
        """The port went away: reopen it until it is back (True) or the console closes (False)."""
        with self._cond:
            old, self._port = self._port, None
            if not self.reconnect:
                self._eof = True
                self._cond.notify_all()
        if old is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                old.close()
        if not self.reconnect:
            return False
        outage = Outage(time.monotonic(), why=why)
        self.outages.append(outage)
        log.warning("%s: port %s gone (%s); reopening", self.name, self.url, why)
        while not self._stop.wait(REOPEN_EVERY):
            try:
                port = _open_keeping_input(self.url, self.baudrate)
            except (serial.SerialException, OSError, ValueError):
                continue
            with self._cond:
                self._port = port
                outage.back = time.monotonic()
                self._cond.notify_all()
            log.warning("%s: port %s back after %.1f s", self.name, self.url, outage.back - outage.lost)
            return True
        return False

    @property
    def alive(self) -> bool:
        """Open and reading (not closed, not gone)."""
        with self._cond:
            return not self._closed and not self._eof and self._port is not None

    @property
    def text(self) -> str:
        with self._cond:
            return self._text

    def skip_to_end(self) -> None:
        """Later expects match only what arrives from now on (e.g. after a reset)."""
        with self._cond:
            self._pos = len(self._text)

    def expect(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait for a whole line matching ``pattern`` (``^``/``$`` anchor at line ends) after the
        previous match; raise WaitTimeout with the last lines and the log path."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                complete = self._text[: self._text.rfind("\n") + 1]
                match = regex.search(complete, self._pos)
                if match:
                    self._pos = match.end()
                    return match
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    why = "the console closed" if self._eof else f"no such line within {timeout:g} s"
                    if self._port is None and not self._eof:
                        why += f" (the port has been gone since {time.monotonic() - self.outages[-1].lost:.1f} s ago)"
                    raise WaitTimeout(
                        f"{self.name}: waited for a line matching {pattern!r}: {why}",
                        actual="last lines:\n" + self._text[-TAIL_CHARS:],
                        evidence=self.log_path,
                    )
                self._cond.wait(left)

    def observe(self, seconds: float) -> str:
        """Watch the console for ``seconds`` (an observation window, for checks that something does
        *not* happen, not a wait for an event) and return everything read so far."""
        deadline = time.monotonic() + seconds
        with self._cond:
            while (left := deadline - time.monotonic()) > 0 and not self._eof:
                self._cond.wait(left)
            return self._text

    # -- writing -------------------------------------------------------------------------------
    def write(self, data: bytes, *, timeout: float = WRITE_WAIT) -> None:
        """Send bytes to the board; a port that is gone is waited for up to ``timeout``."""
        if self._closed:
            raise UsageError(f"{self.name}: write after close")
        deadline = time.monotonic() + timeout
        with self._write_lock:
            while True:
                with self._cond:
                    while self._port is None and not self._eof and (left := deadline - time.monotonic()) > 0:
                        self._cond.wait(left)
                    port = self._port
                if port is None:
                    raise InfrastructureError(f"{self.name}: cannot write: the port {self.url} is gone",
                                              evidence=self.log_path, fix="check the cable or the adapter")
                try:
                    port.write(data)
                    port.flush()
                    return
                except (serial.SerialException, OSError) as exc:
                    if time.monotonic() >= deadline:
                        raise InfrastructureError(f"{self.name}: write failed: {exc}", evidence=self.log_path) from None
                    with self._cond:  # the reader notices the loss and reopens; wait for that
                        self._cond.wait(REOPEN_EVERY)

    def send_line(self, text: str, *, end: str = "\r\n", timeout: float = WRITE_WAIT) -> None:
        """Type a line at the board (``end`` is what its console takes as Enter)."""
        self.write((text + end).encode("utf-8"), timeout=timeout)

    # -- life ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop reading (the reader notices within its read timeout), then close the port."""
        self._closed = True
        self._stop.set()
        self._thread.join(timeout=2)
        with self._cond:
            port, self._port = self._port, None
            self._cond.notify_all()
        try:
            if port is not None:
                port.close()
        finally:
            self._log.close()

    def __enter__(self) -> Console:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
