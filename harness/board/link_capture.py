"""A capture of a real board's link: tcpdump on the lab network's interface (or bridge).

An emulated board's machine captures its own link; a board on a lab test network is captured by
tcpdump on the host's interface to that network, in the run folder, each packet delivered and
written at once (``--immediate-mode -U``) so the file can be read while it grows. The reduction
to what the module counts picks the board's own frames by its address
(:mod:`harness.traffic.capture`). Where tcpdump cannot run (no root, not installed) there is no
capture, and traffic predictions fall back to their formula, saying so.
"""

from __future__ import annotations

import logging
from pathlib import Path

from harness.emulation.process import OwnedProcess
from harness.errors import InfrastructureError

log = logging.getLogger(__name__)

START_TIMEOUT = 5.0


class LinkCapture:
    def __init__(self, interface: str, path: Path) -> None:
        self.interface = interface
        self.path = path
        self._proc: OwnedProcess | None = None

    def start(self) -> LinkCapture | None:
        """Start tcpdump; None (logged) when it cannot capture here."""
        try:
            self._proc = OwnedProcess(f"tcpdump {self.interface}", [
                "tcpdump", "-i", self.interface, "--immediate-mode", "-U", "-n", "-s", "0", "-w", str(self.path)],
                self.path.with_suffix(".log"))
            # the file's pcap header is written once the capture is open on the interface
            self._proc.wait_until(lambda: self.path.exists() and self.path.stat().st_size >= 24, START_TIMEOUT,
                                  f"tcpdump to open {self.interface}")
        except InfrastructureError as exc:
            log.warning("no capture of %s (%s): traffic predictions use their formula", self.interface, exc.message)
            self.stop()
            return None
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None
