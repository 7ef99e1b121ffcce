"""The harness's pytest plugin: options, markers, requirement checks and run-wide fixtures.

Fixtures: ``hil_lab``, ``hil_state``, ``hil_run_dir`` (one folder for the whole run, shared by
xdist workers), ``hil_session`` (the run's :class:`~harness.session.RunSession`), ``hil_broker``
(the run's broker endpoint: URL, CA, every lab board's device credentials), ``hil_collector`` (a
collector of this process's own on that broker) and ``hil_board`` (module scope: a board of the
lab brought up online with a build, leased, with its own telemetry view marked at each test's
start). Under pytest-xdist each worker that brings boards up has a session of its own (its own
broker: one board's outage is not another's); pass ``--hil-broker`` so the controller also starts
one broker that every worker's ``hil_broker``/``hil_collector`` share.

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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import pytest_interrupt
from harness.board.board import Board
from harness.board.kinds import default_build_for
from harness.broker import BrokerEndpoint
from harness.errors import HarnessError, UsageError
from harness.firmware import load_build
from harness.firmware_build import azrtos_sources_missing
from harness.lab import Lab, load_lab
from harness.run_services import RunServices, endpoint_from_worker_input
from harness.session import RunSession
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
    "azrtos-sources": azrtos_sources_missing,
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
    group.addoption("--hil-board-per-worker", dest="hil_board_per_worker", action="store_true", default=False,
                    help="with pytest-xdist (-n N): every test of one board in the same worker, one board per worker")
    group.addoption("--broker-kind", dest="hil_broker_kind", metavar="KIND", default=None,
                    help="broker kind for the run (default: the lab's, see boards/lab.yaml)")
    group.addoption("--hil-board", dest="hil_board", metavar="NAME", action="append", default=None,
                    help="the board hil_board gives when a test does not parametrize it (repeat it: suites that "
                         "run on every board, such as the certification, run on each)")
    group.addoption("--hil-firmware", dest="hil_firmware", metavar="[BOARD=]BUILD", action="append", default=None,
                    help="the build hil_board flashes when a test does not name one, for every board or, as "
                         "BOARD=BUILD, for one (repeatable; default: the board kind's own, e.g. the reference "
                         "firmware for emulated boards)")


SERVICES_KEY = pytest.StashKey[RunServices]()


def _worker_input(config: pytest.Config) -> dict[str, Any] | None:
    return getattr(config, "workerinput", None)


def _services(config: pytest.Config) -> RunServices:
    services = config.stash.get(SERVICES_KEY, None)
    if services is None:
        controller = _worker_input(config) is None and config.pluginmanager.hasplugin("xdist") \
            and getattr(config.option, "numprocesses", None)
        services = RunServices(load_lab(config.getoption("hil_lab")), config.getoption("hil_report_dir"),
                               config.getoption("hil_broker_kind"), with_collector=not controller,
                               worker=_worker_input(config))
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
        return name, _firmware_option(config, name)
    if isinstance(param, str):
        return param, _firmware_option(config, param)
    if isinstance(param, tuple | list) and len(param) == 2:
        return str(param[0]), None if param[1] is None else str(param[1])
    if isinstance(param, dict) and "board" in param:
        return str(param["board"]), param.get("build")
    raise UsageError(f"hil_board parameter {param!r}", fix="give a board name, (board, build) or {'board': ...}")


def _firmware_option(config: pytest.Config, board: str) -> str | None:
    """The build ``--hil-firmware`` names for ``board``: its own (BOARD=BUILD), else the one for every board."""
    own, for_all = None, None
    for value in config.getoption("hil_firmware") or []:
        name, sep, build = str(value).partition("=")
        if sep and "/" not in name and not Path(value).exists():
            own = build if name == board else own
        else:
            for_all = str(value)
    return own or for_all


def pending_waits(config: pytest.Config) -> list[tuple[str, str, float]]:
    """What this process's boards are awaited for now: (device, what, seconds left); empty where
    the boards run in other processes (xdist workers)."""
    services = config.stash.get(SERVICES_KEY, None)
    session = services.started() if services is not None else None
    collector = session.collector if session is not None else None
    return collector.pending() if collector is not None else []


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if not config.getoption("hil_board_per_worker"):
        return None
    from harness.board_scheduling import BoardScheduling

    return BoardScheduling(config, log)


class _XdistController:
    """Hands every xdist worker the run folder (and, with --hil-broker, the broker)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_configure_node(self, node: Any) -> None:
        try:
            data = _services(self.config).worker_input(node.gateway.id, self.config.getoption("hil_broker"))
        except HarnessError:
            if self.config.getoption("hil_broker"):
                raise
            return  # no lab here: a run without the harness's fixtures; a worker that uses one says why
        node.workerinput.update(data)

    def pytest_testnodeready(self, node: Any) -> None:
        pytest_interrupt.worker_up(self.config, node)

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        pytest_interrupt.worker_down(self.config, node)


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


def pytest_configure(config: pytest.Config) -> None:
    text = "needs(*names): tools or privileges the test needs: " + ", ".join(NEEDS)
    config.addinivalue_line("markers", text)
    pytest_interrupt.install(config)
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
    pytest_interrupt.restore(config)


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
