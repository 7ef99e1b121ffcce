"""The pytest run's shared services: one :class:`~harness.session.RunSession` per process that
brings boards up, and one run folder for the whole run.

Without xdist the only process owns the session. Under pytest-xdist every worker that brings a
board up has a session of its own (its networks, broker and collector) in a folder of its own under
the run folder (``<run>/gw0``), with the run's id: a certification's outage clauses stop or freeze
the broker, and a broker shared by the boards of a parallel run would be an outage for every board.
With ``--hil-broker`` the controller also starts one broker for tests that only need an endpoint
(``hil_broker``, ``hil_collector``): it hands each worker the run folder, the broker's endpoint
file and a collector identity of its own (``worker_input``). A session's broker starts on first
use, with every board of the lab registered as a device. The boards the collected tests ask for
(``hil_board``) are named when the session starts, so their test networks exist before the broker
that listens on them. Stopped when the run ends, on every exit path.
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
                 with_collector: bool = True, worker: dict[str, Any] | None = None) -> None:
        self.lab = lab
        self._worker = worker  # an xdist worker's input: the run folder is the controller's
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
                if self._worker is not None and RUN_DIR_KEY in self._worker:
                    self._run_dir = Path(self._worker[RUN_DIR_KEY])
                elif self._report_dir:
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
                folder = run_dir
                if self._worker is not None:  # a session of the worker's own, in a folder of its own
                    folder = run_dir / str(self._worker.get("workerid", "worker"))
                session = RunSession(self.lab, boards=self.boards, run_dir=folder, broker_kind=self._broker_kind,
                                     with_collector=self._with_collector, register_lab_devices=True,
                                     run_id=run_dir.name)
                session.start()
                self._session = session
            return self._session

    def started(self) -> RunSession | None:
        """This process's session if it has started (never starts one)."""
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
