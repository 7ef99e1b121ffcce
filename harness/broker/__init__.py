"""The broker that stands in for IoT Hub: one per run, reachable by every test process.

Kinds (``BROKER_KINDS``, chosen by name): ``mosquitto`` (a process the harness owns; the default
where installed), ``embedded`` (amqtt inside this process, for machines without mosquitto),
``external`` (a lab's broker by URL, used as is).

Starting it, e.g. in the fixture or command that owns the run's broker (keep that thread alive
while the broker runs: a mosquitto process is told to die with the thread that started it)::

    from harness.broker import BrokerOptions, open_broker

    with open_broker(None, run_dir, BrokerOptions(bind="10.77.0.1")) as broker:   # or 127.0.0.1
        creds = broker.add_device("board-1")   # DeviceCredentials(client_id, username, password);
                                               # also while running: in force when it returns
        broker.url                             # mqtt://10.77.0.1:<a free port it verified>
        broker.health()                        # BrokerHealth(ok, detail)
        broker.restart(graceful=False)         # SIGKILL and start again on the same port
        broker.endpoint_path                   # run_dir/broker-endpoint.json, rewritten on changes

Any other process (pytest-xdist workers, a board's provisioning step) reads the endpoint::

    endpoint = BrokerEndpoint.read(run_dir / "broker-endpoint.json")
    endpoint.url, endpoint.tls_url, endpoint.ca_path, endpoint.collector, endpoint.devices["board-1"]

Devices are IoT Hub identities: client id = device id, user name
``{hub}/{device id}/?api-version=…``, a password generated for the run. A device may publish only
to its own ``devices/{id}/[modules/{m}/]messages/events/…`` and read only its own ``devicebound``
topics; unknown clients, wrong secrets and any identity's login under another client id are refused
at CONNECT, before a session is touched (mosquitto: the harness's plugin ``mosquitto_auth.c``;
embedded: :mod:`harness.broker.amqtt_front`). The collector identity reads every device's events;
``add_service`` makes another such reader. Every service identity also owns its canary topic
(:mod:`harness.broker.canary`). A packet over :data:`~harness.broker.base.MAX_PACKET` (a message the
archive could not hold) is refused, not acknowledged. ``BrokerOptions(tls=True)`` adds a TLS listener
(``tls_url``) with a CA and server certificate made for the run (``ca_path``).
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
