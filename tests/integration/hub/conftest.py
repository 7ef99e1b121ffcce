"""The broker tests' helpers serve the hub's tests too: brokers proven gone after each test, and
paho device clients."""

from tests.integration.broker.conftest import DeviceClient, brokers, devices  # noqa: F401  (fixtures)
