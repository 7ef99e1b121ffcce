"""Security PUBLISHes found on a TLS link by their record's size (harness.traffic.tls_publish)."""

from __future__ import annotations

import os

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.packet import Raw

from harness.traffic.capture import module_datagrams
from harness.traffic.tls_publish import TlsPublishMarks, publish_sizes, sealed_framing
from harness.traffic.windows import reduce_windows

from .test_capture import BOARD, HOST, inn, out

TOPIC = "devices/d/messages/events/%24.ifid=urn%3Aazureiot%3ASecurity%3ASecurityAgent%3A1&mti=2.3-1-0-0"
PAYLOAD = 187


def netx_publish(topic: str, payload_len: int) -> bytes:
    """An MQTT PUBLISH at QoS 1 as NetX Duo frames it (Remaining Length always 4 bytes)."""
    body = len(topic).to_bytes(2, "big") + topic.encode() + b"\x00\x07" + os.urandom(payload_len)
    n, rl = len(body), bytearray()
    for _ in range(4):
        rl.append((n & 0x7F) | 0x80)
        n >>= 7
    rl[-1] &= 0x7F
    return bytes([0x32]) + bytes(rl) + body


def tls_record(plaintext_len: int, overhead: int) -> bytes:
    """An application-data record carrying ``plaintext_len`` bytes (its content random: ciphertext)."""
    n = plaintext_len + overhead
    return bytes([0x17, 3, 3]) + n.to_bytes(2, "big") + os.urandom(n)


def over_tls(record: bytes, t: float):
    return out(IP(src=BOARD, dst=HOST) / TCP(sport=49152, dport=8883, flags="PA") / Raw(record), t)


def test_the_sizes_of_a_publish_are_those_of_both_remaining_length_encodings() -> None:
    assert len(netx_publish(TOPIC, PAYLOAD)) in publish_sizes(TOPIC, PAYLOAD)
    shortest = 1 + 2 + 2 + len(TOPIC) + 2 + PAYLOAD  # Remaining Length under 16384: 2 bytes
    assert publish_sizes(TOPIC, PAYLOAD) == {shortest, shortest + 2}


@pytest.mark.parametrize("overhead", [24, 17, 16], ids=["tls1.2-aes-gcm", "tls1.3", "tls1.2-chacha20"])
def test_a_record_the_size_of_a_received_security_message_is_a_publish(overhead: int) -> None:
    marks = TlsPublishMarks.of([(TOPIC, PAYLOAD)])
    size = len(netx_publish(TOPIC, PAYLOAD))
    assert f"aead+{overhead}" in marks.protections(tls_record(size, overhead))
    assert not marks.starts_publish(tls_record(size + 9, overhead))  # bytes more: another message
    assert not marks.starts_publish(b"\x16\x03\x03" + tls_record(size, overhead)[3:])  # a handshake record
    assert not TlsPublishMarks.of([]).starts_publish(tls_record(size, overhead))  # nothing received yet


def test_a_record_that_fits_only_under_another_protection_than_the_connections_is_not_a_publish() -> None:
    """AES-GCM (24 bytes a record): three security PUBLISHes, and one other message 7 bytes shorter,
    whose record is what a PUBLISH's would be under TLS 1.3's 17; the connection's protection is the
    one most of its records fit, so the odd one is not taken for a PUBLISH."""
    size = len(netx_publish(TOPIC, PAYLOAD))
    records = [tls_record(size, 24), tls_record(size, 24), tls_record(size, 17), tls_record(size, 24)]
    frames = [over_tls(r, 1.0 + i) for i, r in enumerate(records)]
    marked = [d.time for d in module_datagrams(frames, BOARD, tls=TlsPublishMarks.of([(TOPIC, PAYLOAD)]))
              if d.security_publish]
    assert marked == [1.0, 2.0, 4.0]


def test_a_cbc_record_is_a_publish_when_its_blocks_can_hold_one() -> None:
    size = len(netx_publish(TOPIC, PAYLOAD))
    marks = TlsPublishMarks.of([(TOPIC, PAYLOAD)])
    pad = 16 - (size + 32) % 16  # HMAC-SHA256, padded to whole blocks (1-16 bytes)
    assert marks.starts_publish(tls_record(size, 16 + 32 + pad))
    assert not marks.starts_publish(tls_record(size, 16 + 32 + pad + 16 + 5))  # not whole blocks


def test_windows_over_tls_split_where_they_split_over_plain_mqtt() -> None:
    """The same traffic, the board's PUBLISH in clear or in a TLS record: the same windows."""
    publish = netx_publish(TOPIC, PAYLOAD)
    traffic = [inn(IP(src=HOST, dst=BOARD) / UDP(sport=6000 + i, dport=7) / Raw(b"a" * i), 1.0 + i)
               for i in range(6)]
    def clear(t: float):  # type: ignore[no-untyped-def]
        return out(IP(src=BOARD, dst=HOST) / TCP(sport=49152, dport=8883, flags="PA") / Raw(publish), t)

    plain = [*traffic[:2], clear(2.5), *traffic[2:4], clear(4.5), *traffic[4:]]
    record = tls_record(len(publish), 24)
    secure = [*traffic[:2], over_tls(record, 2.5), *traffic[2:4], over_tls(record, 4.5), *traffic[4:]]
    marks = TlsPublishMarks.of([(TOPIC, PAYLOAD)])

    def split(frames, tls):  # type: ignore[no-untyped-def]
        return [(w.end, sorted(f.remote_port for f in w.flows() if f.remote_port != 8883))
                for w in reduce_windows(module_datagrams(frames, BOARD, tls=tls))]

    assert split(secure, marks) == split(plain, None) == [(2.5, [6000, 6001]), (4.5, [6002, 6003]),
                                                          (None, [6004, 6005])]
    assert len(split(secure, None)) == 1  # without the received messages' sizes, no window is found


def test_the_framing_of_sealed_publishes_is_told_by_their_size() -> None:
    messages = [(TOPIC, PAYLOAD), (TOPIC, PAYLOAD + 2), (TOPIC, 40)]
    netx = [len(netx_publish(t, n)) + 24 for t, n in messages]  # AES-GCM
    found = sealed_framing([33, 28, *netx], messages)  # a PINGREQ and a PUBACK's records besides
    assert found is not None and (found.protection, found.netx, found.shortest) == ("aead+24", 3, 0)
    # another MQTT client: the shortest Remaining Length, 2 bytes less (the message 2 bytes longer
    # in NetX framing has that size too, and counts for NetX: a size both ways is not held against it)
    shortest = [n - 2 for n in netx]
    found = sealed_framing(shortest, messages)
    assert found is not None and found.shortest == 2 and found.netx == 1
    assert sealed_framing([33, 28], messages) is None  # no record of a message's size


def test_a_cbc_connection_keeps_the_framing_hidden() -> None:
    size = len(netx_publish(TOPIC, PAYLOAD))
    assert sealed_framing([size + 16 + 32 + (16 - (size + 32) % 16)], [(TOPIC, PAYLOAD)]) is None


def test_one_record_that_happens_to_fit_is_no_framing() -> None:
    """Under CBC most records fit no AEAD overhead; one that happens to (here under TLS 1.3's 17)
    must not pass the framing off as judged."""
    messages = [(TOPIC, PAYLOAD + k) for k in range(6)]
    cbc = [len(netx_publish(t, n)) + 16 + 32 + (16 - (len(netx_publish(t, n)) + 32) % 16) for t, n in messages]
    lucky = len(netx_publish(TOPIC, PAYLOAD)) + 17
    assert sealed_framing([*cbc, lucky], messages) is None
