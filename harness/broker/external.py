"""The ``external`` broker kind: a lab's existing broker, reached by URL and used as is.

The harness neither starts nor configures it: ``start``/``stop`` only check it is reachable, and
identities are the lab's. The URL's user and password (``mqtt://user:secret@host:1883``) are used by
the collector and handed to every device added (a lab broker commonly has one test account).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from harness.broker.base import BROKER_KINDS, Broker, BrokerOptions, make_url, parse_mqtt_url, port_accepts
from harness.broker.credentials import DeviceCredentials
from harness.errors import ConfigError, InfrastructureError


@BROKER_KINDS.register("external")
class ExternalBroker(Broker):
    kind = "external"

    def __init__(self, run_dir: Path, options: BrokerOptions) -> None:
        if not options.url:
            raise ConfigError("the external broker kind needs a URL",
                              fix="give --url mqtt://[user:password@]host:port")
        super().__init__(run_dir, options)
        self._host, self._port, self._is_tls = parse_mqtt_url(options.url)
        parts = urlsplit(options.url)
        self._user = unquote(parts.username or "")
        self._password = unquote(parts.password or "")

    @property
    def url(self) -> str:
        return make_url(self._host, self._port, tls=self._is_tls)

    @property
    def tls_url(self) -> str | None:
        return self.url if self._is_tls else None

    @property
    def ca_path(self) -> Path | None:
        return self.options.ca_path

    @property
    def collector_credentials(self) -> DeviceCredentials:
        return DeviceCredentials(self.options.collector_id, self._user, self._password)

    def add_device(self, device_id: str, *, password: str | None = None, **username_params: str) -> DeviceCredentials:
        """The lab's account (the URL's password), unless the device has a secret of its own."""
        super().add_device(device_id, password=password, **username_params)
        ident = self.identities.get(device_id)
        assert ident is not None
        return DeviceCredentials(device_id, ident.credentials.username, password or self._password)

    def _start(self) -> None:
        if not port_accepts(self._host, self._port, timeout=3.0):
            raise InfrastructureError(f"external broker {self.url} does not accept connections",
                                      fix="check the URL and that the lab broker runs")

    def _stop(self, graceful: bool) -> None:
        """Not ours to stop."""

    def _alive(self, grace: float = 0.0) -> str | None:
        return None

    def _identities_changed(self) -> None:
        """The lab manages the external broker's accounts."""
