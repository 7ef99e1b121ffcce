"""The broker that stands in for IoT Hub: one per run, reachable by every test process.

Kinds (``BROKER_KINDS``): ``mosquitto`` (a process we own; default where installed),
``embedded`` (amqtt inside this process), ``external`` (a lab broker by URL, used as is).

Typical use, e.g. from a fixture that owns the run's broker::

    from harness.broker import BrokerOptions, open_broker

    with open_broker(None, run_dir, BrokerOptions(bind="10.77.0.1")) as broker:
        creds = broker.add_device("board-1")      # also while running: the broker reloads
        broker.url                                # mqtt://10.77.0.1:<free port it verified>
        broker.endpoint_path                      # run_dir/broker-endpoint.json, rewritten on changes

Other processes (pytest-xdist workers, a board's provisioning) read that file::

    endpoint = BrokerEndpoint.read(run_dir / "broker-endpoint.json")
    endpoint.url, endpoint.ca_path, endpoint.collector, endpoint.devices["board-1"]

Devices are IoT Hub identities: client id = device id, user name
``{hub}/{device id}/?api-version=…``, a password generated for the run. A device may publish only
under ``devices/{its id}/…/messages/events/`` and read only its own ``devicebound`` topics; the
collector identity reads every device's events. ``BrokerOptions(tls=True)`` adds a TLS listener
(``broker.tls_url``) with a CA made for the run (``broker.ca_path``).
"""

from harness.broker import embedded, external, mosquitto  # noqa: F401  (kinds register themselves)
from harness.broker.base import (
    BROKER_KINDS,
    Broker,
    BrokerEndpoint,
    BrokerHealth,
    BrokerOptions,
    default_kind,
    open_broker,
    parse_mqtt_url,
)
from harness.broker.credentials import DeviceCredentials

__all__ = [
    "BROKER_KINDS",
    "Broker",
    "BrokerEndpoint",
    "BrokerHealth",
    "BrokerOptions",
    "DeviceCredentials",
    "default_kind",
    "open_broker",
    "parse_mqtt_url",
]
