"""The harness's pytest plugin: options, markers, requirement checks and run-wide fixtures.

Fixtures: ``hil_lab``, ``hil_state``, ``hil_run_dir`` (one folder for the whole run, shared by
xdist workers), ``hil_broker`` (the run's broker endpoint: URL, CA, every lab board's device
credentials) and ``hil_collector`` (a collector of this process's own on that broker). Under
pytest-xdist pass ``--hil-broker`` so the controller starts one broker for every worker.

``@pytest.mark.needs("qemu", "root", "mosquitto", ...)`` declares what a test needs. A missing
need skips the test with the reason, except when ``HIL_STRICT=1`` (set by ``.ci/run``): then it
fails, because CI must never skip a test whose tool it was supposed to install.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.broker import BrokerEndpoint
from harness.errors import UsageError
from harness.lab import Lab, load_lab
from harness.run_services import RUN_DIR_KEY, RunServices, endpoint_from_worker_input
from harness.state import StateDir
from harness.telemetry.collector import Collector

STRICT_ENV = "HIL_STRICT"


def _have_root() -> str | None:
    return None if os.geteuid() == 0 else "needs root (network namespaces, tap devices)"


def _have_binary(name: str) -> Callable[[], str | None]:
    def check() -> str | None:
        return None if shutil.which(name) else f"needs {name!r} on PATH (not installed)"

    return check


NEEDS: dict[str, Callable[[], str | None]] = {
    "root": _have_root,
    "qemu": _have_binary("qemu-system-arm"),
    "arm-gcc": _have_binary("arm-none-eabi-gcc"),
    "mosquitto": _have_binary("mosquitto"),
    "dnsmasq": _have_binary("dnsmasq"),
    "chrony": _have_binary("chronyd"),
    "flatc": _have_binary("flatc"),
    "gcc": _have_binary("gcc"),
    "make": _have_binary("make"),
    "ip": _have_binary("ip"),
}


def missing_needs(names: tuple[str, ...]) -> list[str]:
    reasons = []
    for name in names:
        check = NEEDS.get(name)
        if check is None:
            raise pytest.UsageError(f"unknown need {name!r} in @pytest.mark.needs; known: {sorted(NEEDS)}")
        reason = check()
        if reason:
            reasons.append(reason)
    return reasons


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "hardware-in-the-loop harness")
    group.addoption("--lab", dest="hil_lab", metavar="DIR", default=None,
                    help="lab folder with boards/*.yaml (default: $HIL_LAB, else ./boards)")
    group.addoption("--report-dir", dest="hil_report_dir", metavar="DIR", default=None,
                    help="where this run's evidence goes (default: <state>/runs/<run id>)")
    group.addoption("--hil-broker", dest="hil_broker", action="store_true", default=False,
                    help="with pytest-xdist: start the run's broker in the controller for every worker")
    group.addoption("--broker-kind", dest="hil_broker_kind", metavar="KIND", default=None,
                    help="broker kind for the run (default: the lab's, see boards/lab.yaml)")


SERVICES_KEY = pytest.StashKey[RunServices]()


def _worker_input(config: pytest.Config) -> dict[str, Any] | None:
    return getattr(config, "workerinput", None)


def _services(config: pytest.Config) -> RunServices:
    services = config.stash.get(SERVICES_KEY, None)
    if services is None:
        services = RunServices(load_lab(config.getoption("hil_lab")), config.getoption("hil_report_dir"),
                               config.getoption("hil_broker_kind"))
        config.stash[SERVICES_KEY] = services
    return services


class _XdistController:
    """Hands every xdist worker the run folder (and, with --hil-broker, the broker)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput.update(
            _services(self.config).worker_input(node.gateway.id, self.config.getoption("hil_broker"))
        )


@pytest.fixture(scope="session")
def hil_lab(pytestconfig: pytest.Config) -> Lab:
    """The lab the run uses, loaded and validated."""
    return load_lab(pytestconfig.getoption("hil_lab"))


@pytest.fixture(scope="session")
def hil_state(hil_lab: Lab) -> StateDir:
    """The lab state folder (leases, quarantine, machines, runs)."""
    return hil_lab.state


@pytest.fixture(scope="session")
def hil_run_dir(pytestconfig: pytest.Config) -> Path:
    """This run's folder, the same for every process of the run: everything the run produces goes here."""
    worker = _worker_input(pytestconfig)
    if worker is not None and RUN_DIR_KEY in worker:
        return Path(worker[RUN_DIR_KEY])
    return _services(pytestconfig).run_dir()


@pytest.fixture(scope="session")
def hil_broker(pytestconfig: pytest.Config) -> BrokerEndpoint:
    """The run's broker (started on first use; one for the whole run)."""
    worker = _worker_input(pytestconfig)
    if worker is not None:
        found = endpoint_from_worker_input(worker)
        if found is None:
            raise UsageError("this xdist worker has no run broker",
                             fix="pass --hil-broker so the controller starts one broker for every worker")
        return found[0]
    return BrokerEndpoint.read(_services(pytestconfig).endpoint_path())


@pytest.fixture(scope="session")
def hil_collector(pytestconfig: pytest.Config, hil_broker: BrokerEndpoint, hil_run_dir: Path) -> Iterator[Collector]:
    """A collector of this process's own on the run's broker, archiving to the run folder."""
    worker = _worker_input(pytestconfig)
    found = endpoint_from_worker_input(worker) if worker is not None else None
    if found is None:
        collector = Collector.from_endpoint(hil_broker, hil_run_dir / "telemetry.bin")
    else:
        wid = worker["workerid"] if worker else "main"
        collector = Collector(hil_broker.url, found[1], hil_run_dir / f"telemetry-{wid}.bin",
                              ca_path=hil_broker.ca_path)
    with collector:
        yield collector


def pytest_configure(config: pytest.Config) -> None:
    text = "needs(*names): tools or privileges the test needs: " + ", ".join(NEEDS)
    config.addinivalue_line("markers", text)
    if _worker_input(config) is None and config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistController(config), "hil-xdist-controller")


def pytest_unconfigure(config: pytest.Config) -> None:
    services = config.stash.get(SERVICES_KEY, None)
    if services is not None:
        services.close()


def pytest_runtest_setup(item: pytest.Item) -> None:
    names: tuple[str, ...] = ()
    for mark in item.iter_markers("needs"):
        names += tuple(mark.args)
    if not names:
        return
    reasons = missing_needs(names)
    if not reasons:
        return
    text = "; ".join(reasons)
    if os.environ.get(STRICT_ENV) == "1":
        pytest.fail(f"{text} — and {STRICT_ENV}=1 forbids skipping (CI must install it)", pytrace=False)
    pytest.skip(text)
