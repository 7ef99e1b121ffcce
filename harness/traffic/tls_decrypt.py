"""Reading a board's TLS connection in a link capture, with the session secret a test image prints.

A stock image never gives its TLS secrets away, and then :mod:`harness.traffic.tls_publish` tells
what it can from record sizes. A test image may print them (the Azure RTOS reference image with
``TLS_KEYLOG=1``): a line in the NSS key log format, ``CLIENT_RANDOM <client random> <master
secret>``, the format Wireshark reads. With it the client's records of a TLS 1.2 connection are
decrypted, each checked against its MAC or tag, and what the board sent over TLS is read as it was
written: NetX Duo's MQTT frames, to the byte.

Suites read: the AES-128 CBC SHA-256 suites NetX Secure's Azure IoT samples offer (ECDHE-RSA, RSA)
and the AES-GCM suites mbedTLS offers (ECDHE-RSA, ECDHE-ECDSA, RSA); TLS 1.3 is not (its secrets
are per traffic direction and the key log lines differ).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from harness.errors import HarnessError
from harness.traffic.capture import parse_frame

KEYLOG = re.compile(r"CLIENT_RANDOM ([0-9a-fA-F]{64}) ([0-9a-fA-F]{96})")
CHANGE_CIPHER_SPEC, HANDSHAKE, APPLICATION_DATA = 20, 22, 23
CBC_SHA256 = {0xC027: "ECDHE-RSA-AES128-CBC-SHA256", 0x003C: "RSA-AES128-CBC-SHA256"}
GCM_SHA256 = {0xC02F: "ECDHE-RSA-AES128-GCM-SHA256", 0xC02B: "ECDHE-ECDSA-AES128-GCM-SHA256",
              0x009C: "RSA-AES128-GCM-SHA256"}
IPv4 = ipaddress.IPv4Address


class TlsReadError(HarnessError):
    """The capture's TLS connection could not be read with the secrets given."""


def keylog_secrets(text: str) -> dict[bytes, bytes]:
    """Client random -> master secret, from every NSS key log line in ``text`` (a console log)."""
    return {bytes.fromhex(m.group(1)): bytes.fromhex(m.group(2)) for m in KEYLOG.finditer(text)}


def _prf(secret: bytes, label: bytes, seed: bytes, size: int) -> bytes:
    """TLS 1.2's PRF with SHA-256 (RFC 5246, 5)."""
    out, a = b"", label + seed
    while len(out) < size:
        a = hmac.new(secret, a, hashlib.sha256).digest()
        out += hmac.new(secret, a + label + seed, hashlib.sha256).digest()
    return out[:size]


@dataclass
class Connection:
    """One TCP connection of the board's, each direction's bytes in order."""

    board_port: int
    server: tuple[IPv4, int]
    sent: bytes  # board -> server
    received: bytes  # server -> board


def tcp_connections(frames: Iterable[tuple[float, bytes]], board: IPv4 | str) -> list[Connection]:
    """The board's TCP connections in ``frames`` (Ethernet, IPv4), each direction reassembled by
    sequence number from its SYN (retransmissions taken once); in the order they opened."""
    board = IPv4(board)
    streams: dict[tuple[int, IPv4, int], dict[bool, tuple[int, dict[int, bytes]]]] = {}
    for t, frame in frames:
        pkt = parse_frame(t, frame)
        if pkt is None or pkt.proto != 6 or board not in (pkt.src, pkt.dst) or len(pkt.payload) < 20:
            continue
        tcp = pkt.payload
        sport, dport, seq = struct.unpack_from("!HHI", tcp, 0)
        flags, data = tcp[13], tcp[(tcp[12] >> 4) * 4:]
        outbound, src, dst = pkt.src == board, pkt.src, pkt.dst
        key = (sport, dst, dport) if outbound else (dport, src, sport)
        if flags & 0x02:  # SYN: this direction's first sequence number
            streams.setdefault(key, {})[outbound] = (seq + 1, {})
            continue
        direction = streams.get(key, {}).get(outbound)
        if direction is not None and data:
            direction[1].setdefault((seq - direction[0]) % 2**32, bytes(data))
    out = []
    for (port, server, server_port), sides in streams.items():
        out.append(Connection(port, (server, server_port), *(_join(sides.get(side)) for side in (True, False))))
    return out


def _join(side: tuple[int, dict[int, bytes]] | None) -> bytes:
    """A direction's bytes from its segments by offset, up to the first gap."""
    if side is None:
        return b""
    data = bytearray()
    for offset, chunk in sorted(side[1].items()):
        if offset > len(data):
            break  # a segment the capture lost: nothing after it can be placed
        data += chunk[len(data) - offset:]
    return bytes(data)


def _records(stream: bytes) -> list[tuple[int, bytes, bytes]]:
    """(content type, the 5-byte header, body) of each whole TLS record in ``stream``."""
    out, at = [], 0
    while at + 5 <= len(stream):
        length = struct.unpack_from("!H", stream, at + 3)[0]
        if at + 5 + length > len(stream):
            break
        out.append((stream[at], stream[at:at + 5], stream[at + 5:at + 5 + length]))
        at += 5 + length
    return out


def _hello(records: list[tuple[int, bytes, bytes]], kind: int) -> tuple[bytes, int] | None:
    """(random, cipher suite) of the first ClientHello (``kind`` 1) or ServerHello (2)."""
    for ctype, _, body in records:
        if ctype == HANDSHAKE and len(body) > 39 and body[0] == kind:
            random = body[6:38]
            at = 39 + body[38]  # past the session id
            suite = struct.unpack_from("!H", body, at)[0] if kind == 2 else 0
            return random, suite
    return None


def decrypt_sent(connection: Connection, secrets: dict[bytes, bytes]) -> tuple[str, bytes]:
    """(suite name, the application data the board sent) on a TLS 1.2 ``connection``, each record
    checked against its MAC or tag. TlsReadError when no secret fits it or a record does not check."""
    sent, received = _records(connection.sent), _records(connection.received)
    client, server = _hello(sent, 1), _hello(received, 2)
    if client is None or server is None:
        raise TlsReadError(f"the connection to {connection.server[0]}:{connection.server[1]} has no TLS handshake "
                           "in the capture (taken after it began?)")
    master = secrets.get(client[0])
    if master is None:
        raise TlsReadError(f"no key log line for the connection to {connection.server[0]}:{connection.server[1]} "
                           f"(client random {client[0].hex()[:16]}...)")
    suite = server[1]
    if suite in CBC_SHA256:
        name, mac_len, key_len, iv_len = CBC_SHA256[suite], 32, 16, 0
    elif suite in GCM_SHA256:
        name, mac_len, key_len, iv_len = GCM_SHA256[suite], 0, 16, 4
    else:
        raise TlsReadError(f"cipher suite 0x{suite:04x} is not one this reader knows",
                           fix="read it with Wireshark and the key log")
    block = _prf(master, b"key expansion", server[0] + client[0], 2 * (mac_len + key_len + iv_len))
    mac_key = block[:mac_len]
    key = block[2 * mac_len:2 * mac_len + key_len]
    salt = block[2 * (mac_len + key_len):2 * (mac_len + key_len) + iv_len]
    plain, seq, encrypted = bytearray(), 0, False
    for ctype, header, body in sent:
        if ctype == CHANGE_CIPHER_SPEC:
            encrypted = True
            continue
        if not encrypted:
            continue
        data = _open(ctype, header, body, seq, key, mac_key, salt)
        seq += 1
        if ctype == APPLICATION_DATA:
            plain += data
    return name, bytes(plain)


def _open(ctype: int, header: bytes, body: bytes, seq: int, key: bytes, mac_key: bytes, salt: bytes) -> bytes:
    """One record's plaintext, checked (CBC: its HMAC-SHA256 and padding; GCM: its tag)."""
    aad_head = struct.pack("!QB", seq, ctype) + header[1:3]
    if salt:  # AES-GCM: 8-byte explicit nonce, 16-byte tag
        nonce, sealed = salt + body[:8], body[8:]
        try:
            return AESGCM(key).decrypt(nonce, sealed, aad_head + struct.pack("!H", len(sealed) - 16))
        except InvalidTag:
            raise TlsReadError(f"record {seq} does not check (GCM tag): not this session's key") from None
    if len(body) < 32 or len(body) % 16:
        raise TlsReadError(f"record {seq} is not whole AES blocks")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(body[:16])).decryptor()
    padded = decryptor.update(body[16:]) + decryptor.finalize()
    pad = padded[-1]
    if pad + 1 + len(mac_key) > len(padded) or padded[-pad - 1:] != bytes([pad]) * (pad + 1):
        raise TlsReadError(f"record {seq}: bad padding: not this session's key")
    data, mac = padded[:-pad - 1 - len(mac_key)], padded[-pad - 1 - len(mac_key):-pad - 1]
    expected = hmac.new(mac_key, aad_head + struct.pack("!H", len(data)) + data, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected):
        raise TlsReadError(f"record {seq} does not check (its MAC): not this session's key")
    return data


def mqtt_packets(stream: bytes) -> list[bytes]:
    """The whole MQTT packets in ``stream``, each as sent (its Remaining Length as encoded)."""
    out, at = [], 0
    while at + 2 <= len(stream):
        length, shift, i = 0, 0, at + 1
        while i < len(stream) and i - at <= 4:
            length |= (stream[i] & 0x7F) << shift
            shift += 7
            i += 1
            if not stream[i - 1] & 0x80:
                break
        else:
            break
        if i + length > len(stream):
            break
        out.append(stream[at:i + length])
        at = i + length
    return out
