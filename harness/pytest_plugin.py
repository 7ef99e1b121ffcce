"""The harness's pytest plugin: options, markers and requirement checks.

``@pytest.mark.needs("qemu", "root", "mosquitto", ...)`` declares what a test needs. A missing
need skips the test with the reason, except when ``HIL_STRICT=1`` (set by ``.ci/run``): then it
fails, because CI must never skip a test whose tool it was supposed to install.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.lab import Lab, load_lab
from harness.state import StateDir

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


@pytest.fixture(scope="session")
def hil_lab(pytestconfig: pytest.Config) -> Lab:
    """The lab the run uses, loaded and validated."""
    return load_lab(pytestconfig.getoption("hil_lab"))


@pytest.fixture(scope="session")
def hil_state(hil_lab: Lab) -> StateDir:
    """The lab state folder (leases, quarantine, machines, runs)."""
    return hil_lab.state


@pytest.fixture(scope="session")
def hil_run_dir(pytestconfig: pytest.Config, hil_state: StateDir) -> Path:
    """This run's folder: everything the run produces goes here."""
    explicit = pytestconfig.getoption("hil_report_dir")
    if explicit:
        path = Path(explicit)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return hil_state.new_run_dir()


def pytest_configure(config: pytest.Config) -> None:
    text = "needs(*names): tools or privileges the test needs: " + ", ".join(NEEDS)
    config.addinivalue_line("markers", text)


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
