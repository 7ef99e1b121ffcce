"""Run-wide services: the run folder and the broker, owned by the one process that runs the session.

Under pytest-xdist the controller owns them and hands each worker the run folder, the broker's
endpoint file and a collector identity of its own (``worker_input``); without xdist the only
process owns them. The broker starts on first use (or at once for xdist with ``--hil-broker``),
with every board of the lab registered as a device, so any process can bring up any board with
credentials the run made. It is stopped when the session ends, on every exit path.
"""

from __future__ import annotations

import atexit
import threading
from pathlib import Path
from typing import Any

from harness.broker import Broker, BrokerEndpoint, BrokerOptions, DeviceCredentials, open_broker
from harness.lab import Lab

RUN_DIR_KEY = "hil_run_dir"
ENDPOINT_KEY = "hil_broker_endpoint"
COLLECTOR_KEY = "hil_collector"


class RunServices:
    def __init__(self, lab: Lab, report_dir: str | None, broker_kind: str | None = None) -> None:
        self.lab = lab
        self._report_dir = report_dir
        self._broker_kind = broker_kind
        self._run_dir: Path | None = None
        self._broker: Broker | None = None
        self._lock = threading.Lock()

    def run_dir(self) -> Path:
        with self._lock:
            if self._run_dir is None:
                if self._report_dir:
                    self._run_dir = Path(self._report_dir)
                    self._run_dir.mkdir(parents=True, exist_ok=True)
                else:
                    self._run_dir = self.lab.state.new_run_dir()
            return self._run_dir

    def broker(self) -> Broker:
        run_dir = self.run_dir()
        with self._lock:
            if self._broker is None:
                settings = self.lab.settings.broker
                options = BrokerOptions(hub=settings.hub, tls=settings.tls,
                                        bind=str(settings.bind) if settings.bind else "127.0.0.1",
                                        url=settings.url)
                broker = open_broker(self._broker_kind or settings.kind, run_dir / "broker", options)
                atexit.register(broker.stop)
                broker.start()
                for board in self.lab.boards.values():
                    broker.add_device(board.identity.device_id)
                self._broker = broker
            return self._broker

    def endpoint_path(self) -> Path:
        broker = self.broker()
        broker.write_endpoint()
        return broker.endpoint_path

    def worker_input(self, worker_id: str, with_broker: bool) -> dict[str, Any]:
        """What one xdist worker is handed: the run folder and, with the broker, its endpoint and
        a collector identity of the worker's own (a persistent session per client id)."""
        data: dict[str, Any] = {RUN_DIR_KEY: str(self.run_dir())}
        if with_broker:
            data[ENDPOINT_KEY] = str(self.endpoint_path())
            data[COLLECTOR_KEY] = self.broker().add_service(f"hil-collector-{worker_id}").to_json()
        return data

    def close(self) -> None:
        with self._lock:
            if self._broker is not None:
                self._broker.stop()
                self._broker = None


def endpoint_from_worker_input(data: dict[str, Any]) -> tuple[BrokerEndpoint, DeviceCredentials] | None:
    if ENDPOINT_KEY not in data:
        return None
    return BrokerEndpoint.read(Path(data[ENDPOINT_KEY])), DeviceCredentials.from_json(data[COLLECTOR_KEY])
