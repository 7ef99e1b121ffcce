"""The pytest run's shared services: one :class:`~harness.session.RunSession` per run, owned by
the one process that runs the session.

Under pytest-xdist the controller owns it (started for every worker with ``--hil-broker``) and
hands each worker the run folder, the broker's endpoint file and a collector identity of its own
(``worker_input``); without xdist the only process owns it. Its broker starts on first use, with
every board of the lab registered as a device, so any process can use any board's credentials.
The boards the collected tests ask for (``hil_board``) are named when the session starts, so
their test networks exist before the broker that listens on them. Stopped when the run ends, on
every exit path.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.broker import Broker, BrokerEndpoint, DeviceCredentials
from harness.lab import Lab
from harness.session import RunSession

RUN_DIR_KEY = "hil_run_dir"
ENDPOINT_KEY = "hil_broker_endpoint"
COLLECTOR_KEY = "hil_collector"


class RunServices:
    def __init__(self, lab: Lab, report_dir: str | None, broker_kind: str | None = None, *,
                 with_collector: bool = True) -> None:
        self.lab = lab
        self._report_dir = report_dir
        self._broker_kind = broker_kind
        self._with_collector = with_collector
        self._run_dir: Path | None = None
        self._session: RunSession | None = None
        self.boards: list[str] = []  # boards the run's tests bring up (named before the session starts)
        self._lock = threading.Lock()

    def run_dir(self) -> Path:
        with self._lock:
            if self._run_dir is None:
                if self._report_dir:
                    self._run_dir = Path(self._report_dir).resolve()
                    self._run_dir.mkdir(parents=True, exist_ok=True)
                else:
                    self._run_dir = self.lab.state.new_run_dir()
            return self._run_dir

    def want_boards(self, names: Sequence[str]) -> None:
        self.boards = list(dict.fromkeys([*self.boards, *names]))

    def session(self) -> RunSession:
        run_dir = self.run_dir()
        with self._lock:
            if self._session is None:
                session = RunSession(self.lab, boards=self.boards, run_dir=run_dir, broker_kind=self._broker_kind,
                                     with_collector=self._with_collector, register_lab_devices=True)
                session.start()
                self._session = session
            return self._session

    def broker(self) -> Broker:
        broker = self.session().broker
        assert broker is not None
        return broker

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
            if self._session is not None:
                self._session.close()
                self._session = None


def endpoint_from_worker_input(data: dict[str, Any]) -> tuple[BrokerEndpoint, DeviceCredentials] | None:
    if ENDPOINT_KEY not in data:
        return None
    return BrokerEndpoint.read(Path(data[ENDPOINT_KEY])), DeviceCredentials.from_json(data[COLLECTOR_KEY])
