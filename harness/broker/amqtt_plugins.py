"""amqtt plugins that make the embedded broker enforce the run's identity table.

amqtt builds plugins from dotted class paths and plain config, so the plugins find the live
:class:`~harness.broker.credentials.IdentityTable` by a key the embedded broker registers here, with
the TLS client certificates its front door admitted (by client id: amqtt's sessions do not carry
them), so that X.509 identities are checked here as there.
Imported only when an embedded broker starts (amqtt takes ~80 ms to import).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from harness.broker.credentials import Access, Identity, IdentityTable, SignInRefused

log = logging.getLogger(__name__)

_TABLES: dict[str, tuple[IdentityTable, Mapping[str, bytes]]] = {}


def register_table(key: str, table: IdentityTable, certificates: Mapping[str, bytes]) -> None:
    """``certificates``: the client certificate (DER) each client id was last admitted with."""
    _TABLES[key] = (table, certificates)


def unregister_table(key: str) -> None:
    _TABLES.pop(key, None)


def _sign_in(key: str, session: Session, *, expiry: bool = True) -> Identity:
    table, certificates = _TABLES[key]
    client_id = session.client_id
    return table.sign_in(client_id, session.username, _as_str(session.password), expiry=expiry,
                         certificate=certificates.get(client_id) if client_id else None)


def _as_str(value: str | bytes | None) -> str | None:
    return value.decode(errors="replace") if isinstance(value, bytes | bytearray) else value


class HubAuthPlugin(BaseAuthPlugin):
    """Accepts exactly the identities of the run (see ``IdentityTable.authenticate``)."""

    @dataclass
    class Config:
        table: str = ""

    async def authenticate(self, *, session: Session) -> bool:
        try:
            _sign_in(self.config.table, session)
        except SignInRefused:
            log.info("refused client %r user %r", session.client_id, session.username)
            return False
        return True


class HubTopicPlugin(BaseTopicPlugin):
    """Publish / subscribe / receive allowed by the identity's topic filters only."""

    @dataclass
    class Config:
        table: str = ""

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool:
        if session is None or topic is None or session.client_id is None:
            return False
        try:  # the identity this session signed in as (a token that expired since still counts)
            ident = _sign_in(self.config.table, session, expiry=False)
        except SignInRefused:
            return False
        access = Access.PUBLISH if action == Action.PUBLISH else Access.SUBSCRIBE
        ok = IdentityTable.allowed(ident, topic, access)
        if not ok:
            log.info("denied %s %s on %r", session.client_id, access.value, topic)
        return ok
