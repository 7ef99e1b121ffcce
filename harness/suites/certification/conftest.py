"""The suite's shared fixtures: the board under certification comes from the harness's pytest
plugin (``hil_board``: online with its build, leased); clauses record through ``clause``."""

from __future__ import annotations

import pytest

from harness.board.board import Board
from harness.firmware import Behaviour, FirmwareManifest
from harness.report.provenance import record_provenance


@pytest.fixture(scope="module")
def manifest(hil_board: Board) -> FirmwareManifest:
    assert hil_board.build is not None
    return hil_board.build.manifest

@pytest.fixture(scope="module")
def behaviour(manifest: FirmwareManifest) -> Behaviour:
    return manifest.behaviour


# the order the suite runs in: the traffic clauses' windows while the events clauses' observation of
# the board's first collections accumulates (it counts from the boot), the outages last
ORDER = ("test_network_activity", "test_events", "test_transport", "test_security", "test_outage")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        module = getattr(item, "module", None)
        name = module.__name__.rsplit(".", 1)[-1] if module is not None else ""
        return ORDER.index(name) if name in ORDER else len(ORDER)

    items.sort(key=rank)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every clause on every board the run names (``--hil-board``, repeatable); under pytest-xdist
    with ``--hil-board-per-worker`` every clause of one board runs in the same worker."""
    boards = metafunc.config.getoption("hil_board") or []
    if "hil_board" in metafunc.fixturenames and len(boards) > 1:
        metafunc.parametrize("hil_board", boards, indirect=True, scope="module", ids=boards)


@pytest.fixture(scope="module", autouse=True)
def _provenance(request: pytest.FixtureRequest) -> None:
    """What was certified, how: written into the certificate once the board is up."""
    if "hil_board" not in request.fixturenames:
        return
    board: Board = request.getfixturevalue("hil_board")
    record_provenance(request.config, board)
