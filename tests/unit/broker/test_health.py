"""A broker's health names the cause: a killed mosquitto closes its sockets before it can be reaped,
so the port refuses first; the health then waits a moment for the exit, which is the cause (seen:
`hil broker` reporting "nothing accepts connections" for a mosquitto killed with SIGKILL)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness.broker.base import BrokerOptions, free_port
from harness.broker.mosquitto import MosquittoBroker


class Process:
    """A mosquitto process as ``health`` sees it: not reaped at the first look; ``exit`` is what a
    wait then finds (None: still running)."""

    def __init__(self, exit: int | None) -> None:
        self.exit = exit
        self.waits: list[float | None] = []

    def poll(self) -> int | None:
        return None

    def wait(self, timeout: float | None = None) -> int:
        self.waits.append(timeout)
        if self.exit is None:
            raise subprocess.TimeoutExpired("mosquitto", timeout or 0)
        return self.exit


def broker(tmp_path: Path, process: Process) -> MosquittoBroker:
    b = MosquittoBroker(tmp_path, BrokerOptions())
    b._running, b._port, b._proc = True, free_port("127.0.0.1"), process  # type: ignore[assignment]
    return b  # nothing listens on that port


def test_a_killed_broker_is_reported_by_its_exit_not_by_its_closed_port(tmp_path: Path) -> None:
    process = Process(exit=-9)
    health = broker(tmp_path, process).health()
    assert not health.ok and health.detail.startswith("mosquitto exited with -9"), health
    assert process.waits and all(t is not None and t <= 5 for t in process.waits)


def test_a_running_broker_whose_port_refuses_says_so(tmp_path: Path) -> None:
    health = broker(tmp_path, Process(exit=None)).health()
    assert not health.ok and "nothing accepts connections on 127.0.0.1:" in health.detail, health
