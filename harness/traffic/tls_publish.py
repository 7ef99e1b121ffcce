"""Security PUBLISHes on a capture whose MQTT runs over TLS, found by the size of their TLS record.

A collection window ends where the board's security PUBLISH is on the link (:mod:`harness.traffic.windows`).
Over TLS the PUBLISH cannot be read, but its size can: the collector received every security message
(topic and payload), so the PUBLISH the board sent is known to the byte, and a TLS record carrying
it is that size plus the record protection's fixed overhead. An outbound TLS application-data
record whose length is one of those is a security PUBLISH; nothing is decrypted and no clock is
compared (the capture keeps its own).

The sizes a PUBLISH (QoS 1) can take: fixed header byte, Remaining Length in its shortest encoding
or in NetX Duo's 4 bytes, topic length, topic, packet id, payload. The record protections counted:
AEAD suites of TLS 1.2 (AES-GCM and AES-CCM: 8-byte explicit nonce and 16-byte tag; CCM_8: 8 and 8;
ChaCha20-Poly1305: 16-byte tag), TLS 1.3 (the inner content type and a 16-byte tag), and CBC suites
of TLS 1.2 (16-byte explicit IV, an HMAC of 20, 32 or 48 bytes, 1-16 bytes of padding to a whole block).
A record that carries the PUBLISH with other MQTT packets, or split over records, is not found:
the stacks we know write each MQTT packet in one record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

TLS_APPLICATION_DATA = 0x17
TLS_RECORD_HEADER = 5
AEAD_OVERHEADS = (16, 17, 24)  # ChaCha20-Poly1305 / CCM_8 (1.2); TLS 1.3 AEAD; AES-GCM / AES-CCM (1.2)
CBC_MACS = (20, 32, 48)  # HMAC-SHA1, -SHA256, -SHA384
CBC_BLOCK = 16


def framed_sizes(topic: str, payload_len: int) -> tuple[int, int]:
    """The sizes of an MQTT 3.1.1 PUBLISH at QoS 1 of ``topic`` and ``payload_len`` payload bytes:
    (Remaining Length in NetX Duo's 4 bytes, in its shortest encoding)."""
    remaining = 2 + len(topic.encode()) + 2 + payload_len
    shortest = 1 if remaining < 128 else 2 if remaining < 16384 else 3 if remaining < 2097152 else 4
    return 1 + 4 + remaining, 1 + shortest + remaining


def publish_sizes(topic: str, payload_len: int) -> set[int]:
    """The sizes a PUBLISH of ``topic`` and ``payload_len`` payload bytes can take."""
    return set(framed_sizes(topic, payload_len))


@dataclass(frozen=True)
class SealedFraming:
    """How the security PUBLISHes sealed in a connection's TLS records were framed, told by size."""

    protection: str  # the AEAD overhead that explains the most records, e.g. "aead+24"
    netx: int  # records holding a PUBLISH with NetX Duo's 4-byte Remaining Length
    shortest: int  # records holding one with the shortest Remaining Length (another MQTT client)


def sealed_framing(records: Iterable[int], messages: Iterable[tuple[str, int]]) -> SealedFraming | None:
    """From the lengths of the board's outbound TLS application-data records and the (topic, payload
    length) of the security messages received: how their PUBLISHes were framed. The two framings
    differ by 2 bytes, which only an AEAD suite (a fixed overhead) keeps visible; None when no AEAD
    overhead makes the records of at least half the messages (and two) a PUBLISH's size (a CBC
    suite's padding, or a stack that splits a PUBLISH over records)."""
    lengths = list(records)
    netx, shortest = set(), set()
    for topic, n in messages:
        a, b = framed_sizes(topic, n)
        netx.add(a)
        if b != a:
            shortest.add(b)
    best: SealedFraming | None = None
    for extra in AEAD_OVERHEADS:
        found = SealedFraming(f"aead+{extra}", sum(n - extra in netx for n in lengths),  # a size both ways
                              sum(n - extra in shortest and n - extra not in netx for n in lengths))  # is NetX's
        if found.netx + found.shortest and (best is None or found.netx + found.shortest > best.netx + best.shortest):
            best = found
    # a protection is the connection's only if it explains most of the messages: one record that
    # happens to fit (under CBC, whose padding hides the 2 bytes) proves nothing
    if best is None or best.netx + best.shortest < max(2, (len(netx) + 1) // 2):
        return None
    return best


@dataclass(frozen=True)
class TlsPublishMarks:
    """The plaintext sizes of the security PUBLISHes a device sent (from what the collector received)."""

    sizes: frozenset[int]

    @classmethod
    def of(cls, messages: Iterable[tuple[str, int]]) -> TlsPublishMarks:
        """From (topic, payload length) of each security message received."""
        return cls(frozenset(s for topic, n in messages for s in publish_sizes(topic, n)))

    def protections(self, data: bytes) -> frozenset[str]:
        """The record protections under which the TCP data ``data`` starts a TLS application-data
        record of one of the sizes (empty: not a security PUBLISH under any)."""
        if len(data) < TLS_RECORD_HEADER or data[0] != TLS_APPLICATION_DATA or data[1] != 3:
            return frozenset()
        length = int.from_bytes(data[3:5], "big")
        found = {f"aead+{extra}" for extra in AEAD_OVERHEADS if length - extra in self.sizes}
        if length % CBC_BLOCK == 0 and any(length - CBC_BLOCK - mac - pad in self.sizes  # explicit IV, whole blocks
                                           for mac in CBC_MACS for pad in range(1, CBC_BLOCK + 1)):
            found.add("cbc")
        return frozenset(found)

    def starts_publish(self, data: bytes) -> bool:
        """Whether ``data`` starts a record of one of the sizes under any protection."""
        return bool(self.protections(data))


def elect(candidates: Iterable[tuple[object, frozenset[str]]]) -> set[int]:
    """Which of the records are security PUBLISHes: a connection's records are all under one
    protection, the one that explains most of them (a record of another message that happens to fit
    under another protection is not taken). ``candidates``: (connection, protections) per record;
    returns the positions of the records elected."""
    records = list(candidates)
    votes: dict[object, dict[str, int]] = {}
    for conn, found in records:
        for p in found:
            votes.setdefault(conn, {}).setdefault(p, 0)
            votes[conn][p] += 1
    chosen = {conn: max(sorted(v), key=v.__getitem__) for conn, v in votes.items()}
    return {i for i, (conn, found) in enumerate(records) if conn in chosen and chosen[conn] in found}
