"""amqtt plugins that make the embedded broker enforce the run's identity table.

amqtt builds plugins from dotted class paths and plain config, so the plugins find the live
:class:`~harness.broker.credentials.IdentityTable` by a key the embedded broker registers here.
Imported only when an embedded broker starts (amqtt takes ~80 ms to import).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from harness.broker.credentials import Access, IdentityTable, SignInRefused

log = logging.getLogger(__name__)

_TABLES: dict[str, IdentityTable] = {}


def register_table(key: str, table: IdentityTable) -> None:
    _TABLES[key] = table


def unregister_table(key: str) -> None:
    _TABLES.pop(key, None)


def _table(key: str) -> IdentityTable:
    return _TABLES[key]


def _as_str(value: str | bytes | None) -> str | None:
    return value.decode(errors="replace") if isinstance(value, bytes | bytearray) else value


class HubAuthPlugin(BaseAuthPlugin):
    """Accepts exactly the identities of the run (see ``IdentityTable.authenticate``)."""

    @dataclass
    class Config:
        table: str = ""

    async def authenticate(self, *, session: Session) -> bool:
        ident = _table(self.config.table).authenticate(session.client_id, session.username,
                                                       _as_str(session.password))
        if ident is None:
            log.info("refused client %r user %r", session.client_id, session.username)
        return ident is not None


class HubTopicPlugin(BaseTopicPlugin):
    """Publish / subscribe / receive allowed by the identity's topic filters only."""

    @dataclass
    class Config:
        table: str = ""

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool:
        if session is None or topic is None or session.client_id is None:
            return False
        table = _table(self.config.table)
        try:  # the identity this session signed in as (a token that expired since still counts)
            ident = table.sign_in(session.client_id, session.username, _as_str(session.password), expiry=False)
        except SignInRefused:
            return False
        access = Access.PUBLISH if action == Action.PUBLISH else Access.SUBSCRIBE
        ok = table.allowed(ident, topic, access)
        if not ok:
            log.info("denied %s %s on %r", session.client_id, access.value, topic)
        return ok
