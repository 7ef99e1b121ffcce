"""A board's console: capture to a file, and expect lines with deadlines.

The console is a pyserial URL (a device path, ``socket://``, ``rfc2217://``), the same for a real
board's USB serial port and an emulated board's UART. Everything read is appended to the log file
as it arrives; ``expect`` waits for a whole line that matches, and on timeout says what it waited
for, shows the last lines it saw and where the full log is.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from types import TracebackType

import serial

from harness.errors import InfrastructureError, WaitTimeout

log = logging.getLogger(__name__)

TAIL_CHARS = 2500


def _open_keeping_input(url: str, baudrate: int) -> serial.SerialBase:
    """Open a pyserial URL without the input flush pyserial does on open: what the board printed
    before the port opened (an emulated console replays it) is evidence, not noise."""
    port = serial.serial_for_url(url, baudrate=baudrate, timeout=0.2, do_not_open=True)
    flush = port.reset_input_buffer
    port.reset_input_buffer = lambda: None  # type: ignore[method-assign]
    try:
        port.open()
    finally:
        port.reset_input_buffer = flush  # type: ignore[method-assign]
    return port


class Console:
    """Reads a console in a background thread; ``expect`` waits on a condition, not a sleep."""

    def __init__(self, url: str, log_path: Path, *, baudrate: int = 115200, name: str = "console") -> None:
        self.url = url
        self.log_path = log_path
        self.name = name
        try:
            self._port = _open_keeping_input(url, baudrate)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise InfrastructureError(
                f"{name}: cannot open console {url}: {exc}",
                fix="check the console url, that the device exists and that nothing else holds it",
            ) from None
        self._text = ""
        self._pos = 0
        self._closed = False
        self._eof = False
        self._cond = threading.Condition()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("a", encoding="utf-8")
        self._thread = threading.Thread(target=self._reader, name=f"{name}-reader", daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        while not self._closed:
            try:
                chunk = self._port.read(4096)
            except (serial.SerialException, OSError):
                chunk = b""
                if not self._closed:
                    with self._cond:
                        self._eof = True
                        self._cond.notify_all()
                return
            if not chunk:
                continue
            text = chunk.decode("utf-8", "replace").replace("\r", "")
            self._log.write(text)
            self._log.flush()
            with self._cond:
                self._text += text
                self._cond.notify_all()

    @property
    def text(self) -> str:
        with self._cond:
            return self._text

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

    def close(self) -> None:
        """Stop reading (the reader notices within its 0.2 s read timeout), then close the port."""
        self._closed = True
        self._thread.join(timeout=2)
        try:
            self._port.close()
        finally:
            self._log.close()

    def __enter__(self) -> Console:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
