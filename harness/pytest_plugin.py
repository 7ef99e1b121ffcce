"""The harness's pytest plugin: options, markers, requirement checks and run-wide fixtures.

Fixtures: ``hil_lab``, ``hil_state``, ``hil_run_dir`` (one folder for the whole run, shared by
xdist workers), ``hil_session`` (the run's :class:`~harness.session.RunSession`), ``hil_broker``
(the run's broker endpoint: URL, CA, every lab board's device credentials), ``hil_collector`` (a
collector of this process's own on that broker) and ``hil_board`` (module scope: a board of the
lab brought up online with a build, leased, with its own telemetry view marked at each test's
start). Under pytest-xdist pass ``--hil-broker`` so the controller starts one broker for every
worker.

``hil_board`` takes its board and build from indirect parametrization, or from ``--hil-board`` /
``--hil-firmware``::

    @pytest.mark.parametrize("hil_board", ["qemu-an385", ("qemu-an386", "firmware-builds/x")],
                             indirect=True)
    def test_heartbeat(hil_board):
        hil_board.telemetry.expect_event(PayloadType.HEARTBEAT, within=70)

``@pytest.mark.needs("qemu", "root", "mosquitto", ...)`` declares what a test needs. A missing
need skips the test with the reason, except when ``HIL_STRICT=1`` (set by ``.ci/run``): then it
fails, because CI must never skip a test whose tool it was supposed to install.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.board.board import Board
from harness.board.kinds import default_build_for
from harness.broker import BrokerEndpoint
from harness.errors import UsageError
from harness.firmware import load_build
from harness.lab import Lab, load_lab
from harness.run_services import RUN_DIR_KEY, RunServices, endpoint_from_worker_input
from harness.session import RunSession
from harness.state import StateDir
from harness.telemetry.collector import Collector

STRICT_ENV = "HIL_STRICT"
SIGTERM_KEY = pytest.StashKey[Any]()


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
    group.addoption("--hil-board", dest="hil_board", metavar="NAME", action="append", default=None,
                    help="the board hil_board gives when a test does not parametrize it (repeat it: suites that "
                         "run on every board, such as the certification, run on each)")
    group.addoption("--hil-firmware", dest="hil_firmware", metavar="BUILD", default=None,
                    help="the build hil_board flashes when a test does not name one (default: the "
                         "board kind's own, e.g. the reference firmware for emulated boards)")


SERVICES_KEY = pytest.StashKey[RunServices]()


def _worker_input(config: pytest.Config) -> dict[str, Any] | None:
    return getattr(config, "workerinput", None)


def _services(config: pytest.Config) -> RunServices:
    services = config.stash.get(SERVICES_KEY, None)
    if services is None:
        controller = _worker_input(config) is None and config.pluginmanager.hasplugin("xdist") \
            and getattr(config.option, "numprocesses", None)
        services = RunServices(load_lab(config.getoption("hil_lab")), config.getoption("hil_report_dir"),
                               config.getoption("hil_broker_kind"), with_collector=not controller)
        config.stash[SERVICES_KEY] = services
    return services


def _board_param(config: pytest.Config, param: object) -> tuple[str, str | None]:
    """(board, build) from a hil_board parameter: a name, (name, build) or {"board":, "build":}."""
    if param is None:
        names = config.getoption("hil_board")
        name = names[0] if names else None
        if name is None:
            lab = load_lab(config.getoption("hil_lab"))
            candidates = [n for n, b in sorted(lab.boards.items()) if default_build_for(b.kind) is not None]
            if not candidates:
                raise UsageError("hil_board: no board given", fix="pass --hil-board NAME or parametrize hil_board")
            name = candidates[0]
        return name, config.getoption("hil_firmware")
    if isinstance(param, str):
        return param, config.getoption("hil_firmware")
    if isinstance(param, tuple | list) and len(param) == 2:
        return str(param[0]), None if param[1] is None else str(param[1])
    if isinstance(param, dict) and "board" in param:
        return str(param["board"]), param.get("build")
    raise UsageError(f"hil_board parameter {param!r}", fix="give a board name, (board, build) or {'board': ...}")


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
def hil_session(pytestconfig: pytest.Config) -> RunSession:
    """The run's session (this process's): networks, broker, collector, boards."""
    return _services(pytestconfig).session()


@pytest.fixture(scope="module")
def hil_board(request: pytest.FixtureRequest, hil_session: RunSession) -> Iterator[Board]:
    """A board of the lab, online with its build, leased for the module; ``hil_board.telemetry``
    is the collector's view of its device from the start of the current test."""
    name, build_ref = _board_param(request.config, getattr(request, "param", None))
    board = hil_session.board(name)
    if build_ref is not None:
        build = load_build(build_ref)
    else:
        make = default_build_for(board.config.kind)
        if make is None:
            raise UsageError(f"hil_board: board {name} needs a build", fix="pass --hil-firmware BUILD")
        build = load_build(make(board.config, Path("firmware-builds")))
    hil_session.bring_up(board, build)
    yield board


@pytest.fixture(autouse=True)
def _hil_board_mark(request: pytest.FixtureRequest) -> None:
    """Each test that uses hil_board sees the telemetry that arrives during it."""
    if "hil_board" in request.fixturenames:
        board = request.getfixturevalue("hil_board")
        if board.telemetry is not None:
            board.telemetry.restart()


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
    if found is None:  # the run's own session (this process owns it) has the collector
        session_collector = _services(pytestconfig).session().collector
        assert session_collector is not None
        yield session_collector
        return
    wid = worker["workerid"] if worker else "main"
    with Collector(hil_broker.url, found[1], hil_run_dir / f"telemetry-{wid}.bin",
                   ca_path=hil_broker.ca_path) as collector:
        yield collector


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _stop_on_sigterm(config: pytest.Config) -> None:
    """SIGTERM (a CI job's timeout, ``kill``) interrupts the run as Ctrl-C does: the test under way
    is neither passed nor failed, fixtures are torn down (boards, QEMU, brokers stopped) and the
    reports say the run is incomplete. Without this a SIGTERM either killed pytest with everything
    it started left running or, turned into SystemExit, failed one test and let the run go on."""
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        config.stash[SIGTERM_KEY] = signal.signal(signal.SIGTERM, _interrupt)


def pytest_configure(config: pytest.Config) -> None:
    text = "needs(*names): tools or privileges the test needs: " + ", ".join(NEEDS)
    config.addinivalue_line("markers", text)
    _stop_on_sigterm(config)
    if _worker_input(config) is None and config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistController(config), "hil-xdist-controller")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Name the boards the collected tests bring up, so the run's session makes their networks
    before its broker starts listening on them."""
    names = []
    for item in items:
        if "hil_board" in getattr(item, "fixturenames", ()):
            callspec = getattr(item, "callspec", None)
            param = callspec.params.get("hil_board") if callspec is not None else None
            names.append(_board_param(config, param)[0])
    if names:
        _services(config).want_boards(names)


def pytest_unconfigure(config: pytest.Config) -> None:
    services = config.stash.get(SERVICES_KEY, None)
    if services is not None:
        services.close()
    previous = config.stash.get(SIGTERM_KEY, None)
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


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
