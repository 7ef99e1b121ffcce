"""The broker tests' helpers serve the hub's tests too (brokers proven gone after each test, paho
device clients), and the Azure IoT Python device SDK's own venv."""

import os
from pathlib import Path

import pytest

from harness.errors import InfrastructureError
from harness.hub.sdk_venv import ensure_sdk_python
from tests.integration.broker.conftest import DeviceClient, brokers, devices  # noqa: F401  (fixtures)


@pytest.fixture(scope="session")
def sdk_python() -> Path:
    """The SDK's venv (made once per machine; CI's bootstrap makes it). Where it cannot be made (no
    PyPI) the test is skipped, or fails under HIL_STRICT=1, as a missing need does."""
    try:
        return ensure_sdk_python()
    except InfrastructureError as exc:
        if os.environ.get("HIL_STRICT") == "1":
            pytest.fail(f"the Azure IoT SDK venv cannot be made ({exc.message}) — and HIL_STRICT=1 forbids skipping",
                        pytrace=False)
        pytest.skip(f"the Azure IoT SDK venv cannot be made: {exc.message}")
