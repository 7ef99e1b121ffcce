"""The console relay: buffers boot output for a late client, logs, follows a new UART socket."""

from __future__ import annotations

import socket
from pathlib import Path

from harness.emulation.console_relay import ConsoleRelay


def _uart(path: Path) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    return server


def _read(sock: socket.socket, n: int) -> bytes:
    sock.settimeout(5)
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def test_output_before_a_client_connects_is_kept_and_logged(tmp_path: Path) -> None:
    relay = ConsoleRelay(tmp_path / "console.log")
    try:
        uart = _uart(tmp_path / "uart0")
        relay.attach(tmp_path / "uart0")
        board, _ = uart.accept()
        board.sendall(b"boot banner\r\n")
        host, port = relay.url.removeprefix("socket://").split(":")
        client = socket.create_connection((host, int(port)), timeout=5)
        assert _read(client, 13) == b"boot banner\r\n"
        client.sendall(b"cmd\n")
        assert _read(board, 4) == b"cmd\n"

        # power-cycle: the old UART goes away, a new one appears at the same path; the client stays
        board.close()
        uart.close()
        (tmp_path / "uart0").unlink()
        uart = _uart(tmp_path / "uart0")
        relay.attach(tmp_path / "uart0")
        board, _ = uart.accept()
        board.sendall(b"second boot\r\n")
        assert _read(client, 13) == b"second boot\r\n"
        client.close()
        board.close()
        uart.close()
    finally:
        relay.close()
    assert (tmp_path / "console.log").read_bytes() == b"boot banner\r\nsecond boot\r\n"
