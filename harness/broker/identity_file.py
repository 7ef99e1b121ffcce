"""The identity table as the file the harness's mosquitto plugin reads (``mosquitto_auth.c``).

The plugin reads the file again at every CONNECT; :func:`write_identities` replaces it atomically
(a temporary file renamed over it), so once it returns, the next CONNECT meets the new table: an
identity change needs no reload and no signal. Format (documented with the parser in
``mosquitto_auth_table.c``): a ``hil-identities 3`` line, then ``key value`` lines, values
percent-encoded::

    hil-identities 3
    hub lab-hub.azure-devices.net
    identity dev-a
    device dev-a
    password 8f3k...
    publish devices/dev-a/messages/events/#
    subscribe devices/dev-a/messages/devicebound/#
    identity dev-k
    device dev-k
    key q0Jx...=                 a keyed device: SAS tokens signed with this key (base64), no password
    ...
    identity dev-x
    device dev-x
    thumbprint 0A1B...           an X.509 device: a client certificate of this SHA-1 or SHA-256 digest (hex)
    ...
    identity dev-k               a DPS registration (here with the device's id as registration id):
    registration dev-k           the device DPS assigns it; it signs in with the scope's user name
    key q0Jx...=
    ...
    end

with ``scope <DPS ID scope>`` after the hub line.

Version 2 added ``key``, ``scope`` and ``registration``, version 3 ``thumbprint`` (a device or a
registration has one of password, key or thumbprint); the plugin still reads versions 1 and 2,
which older harnesses write. New keys are added here and to the parser together, with a
new version; the parser refuses keys it does not know, and a file without its ``end`` line.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from harness.broker.credentials import Identity, IdentityTable

FORMAT_LINE = "hil-identities 3"
_PLAIN = frozenset(range(0x21, 0x7F)) - {ord("%")}


def encode_value(value: str) -> str:
    """Percent-encode everything but printable ASCII other than ``%`` (UTF-8 bytes as %XX)."""
    return "".join(chr(b) if b in _PLAIN else f"%{b:02X}" for b in value.encode())


def render_identities(table: IdentityTable) -> str:
    lines = [FORMAT_LINE, f"hub {encode_value(table.hub)}", f"scope {encode_value(table.id_scope)}"]
    for ident in table.identities():
        creds = ident.credentials
        lines.append(f"identity {encode_value(creds.client_id)}")
        if ident.device_id is not None:
            lines.append(f"device {encode_value(ident.device_id)}")
        else:
            lines.append(f"username {encode_value(creds.username)}")
        lines.append(_secret(ident))
        lines += [f"publish {encode_value(t)}" for t in ident.publish]
        lines += [f"subscribe {encode_value(t)}" for t in ident.subscribe]
    for reg in table.registrations():
        assert reg.registration_id is not None and reg.device_id is not None
        lines += [f"identity {encode_value(reg.registration_id)}", f"registration {encode_value(reg.device_id)}",
                  _secret(reg)]
        lines += [f"publish {encode_value(t)}" for t in reg.publish]
        lines += [f"subscribe {encode_value(t)}" for t in reg.subscribe]
    lines.append("end")
    return "\n".join(lines) + "\n"


def _secret(ident: Identity) -> str:
    """How the identity proves itself: its key, its certificate's thumbprint or its password."""
    if ident.key is not None:
        return f"key {base64.b64encode(ident.key).decode()}"
    if ident.thumbprint is not None:
        return f"thumbprint {ident.thumbprint.hex()}"
    return f"password {encode_value(ident.credentials.password)}"


def write_identities(path: Path, table: IdentityTable) -> Path:
    """Replace ``path`` atomically with the table (mode 0600: it holds the run's secrets)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(render_identities(table))
    tmp.replace(path)
    return path
