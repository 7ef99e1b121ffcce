"""Framing of the GDB remote protocol, without a stub."""

from __future__ import annotations

import pytest

from harness.emulation.gdbremote import (
    GdbRemoteError,
    frame,
    parse_address,
    parse_stop_reply,
    unescape,
)


def test_frame_escapes_and_checksums() -> None:
    assert frame(b"g") == b"$g#67"
    framed = frame(b"X0,1:}#$*")
    body = framed[1:-3]
    assert body == b"X0,1:" + bytes((0x7D, ord("}") ^ 0x20, 0x7D, ord("#") ^ 0x20, 0x7D, ord("$") ^ 0x20,
                                     0x7D, ord("*") ^ 0x20))
    assert framed[-2:] == f"{sum(body) & 0xFF:02x}".encode()
    assert unescape(body) == b"X0,1:}#$*"


def test_run_length_decoding() -> None:
    assert unescape(b"0* ") == b"0" * 4  # ' ' is 32 → 3 repeats
    assert unescape(b"ab*\"c") == b"abbbbbbc"


def test_addresses() -> None:
    assert parse_address("unix:/tmp/x.sock")[1] == "/tmp/x.sock"
    assert parse_address("tcp:127.0.0.1:1234")[1] == ("127.0.0.1", 1234)
    with pytest.raises(GdbRemoteError, match="bad gdbstub address"):
        parse_address("tcp:localhost")


def test_stop_replies() -> None:
    stop = parse_stop_reply("T05thread:01;")
    assert stop is not None and stop.kind == "T" and stop.signal == 5
    assert parse_stop_reply("OK") is None
    assert parse_stop_reply("E14") is None
