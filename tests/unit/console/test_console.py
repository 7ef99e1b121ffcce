"""Console capture: expect with deadlines over a pyserial socket:// URL (a loopback server)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.console import Console
from harness.errors import InfrastructureError, WaitTimeout


class FakeBoard:
    """A loopback TCP server that plays a board's UART."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.server.getsockname()[1]}"
        self.conn: socket.socket | None = None
        self._accepted = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.conn, _ = self.server.accept()
        self._accepted.set()

    def say(self, data: bytes) -> None:
        assert self._accepted.wait(5)
        assert self.conn is not None
        self.conn.sendall(data)

    def hang_up(self) -> None:
        assert self._accepted.wait(5) and self.conn is not None
        self.conn.close()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.close()


@pytest.fixture
def board() -> Iterator[FakeBoard]:
    b = FakeBoard()
    yield b
    b.close()


def test_expect_matches_whole_lines_in_order(board: FakeBoard, tmp_path: Path) -> None:
    with Console(board.url, tmp_path / "c.log") as console:
        board.say(b"HIL-REF 1.0.0 build x\r\nnet: addr")
        assert console.expect(r"^HIL-REF (\S+)", timeout=5).group(1) == "1.0.0"
        board.say(b"ess 10.0.0.5\r\n")
        assert console.expect(r"^net: address (\S+)$", timeout=5).group(1) == "10.0.0.5"
        board.say(b"HIL-REF 1.0.0 build y\r\n")  # a second boot: the earlier match is not reused
        assert console.expect(r"^HIL-REF .* build (\S+)", timeout=5).group(1) == "y"
    assert (tmp_path / "c.log").read_text() == "HIL-REF 1.0.0 build x\nnet: address 10.0.0.5\nHIL-REF 1.0.0 build y\n"


def test_timeout_says_what_it_saw_and_where_the_log_is(board: FakeBoard, tmp_path: Path) -> None:
    with Console(board.url, tmp_path / "c.log", name="b1 console") as console:
        board.say(b"provisioning: bad CRC\r\n")
        with pytest.raises(WaitTimeout) as info:
            console.expect(r"^mqtt: connected", timeout=0.5)
    text = str(info.value)
    assert "b1 console" in text and "mqtt: connected" in text and "within 0.5 s" in text
    assert "provisioning: bad CRC" in text and str(tmp_path / "c.log") in text


def test_a_partial_line_does_not_match(board: FakeBoard, tmp_path: Path) -> None:
    with Console(board.url, tmp_path / "c.log") as console:
        board.say(b"mqtt: connec")
        with pytest.raises(WaitTimeout):
            console.expect(r"^mqtt: connec", timeout=0.5)


def test_closed_console_ends_the_wait_early(board: FakeBoard, tmp_path: Path) -> None:
    with Console(board.url, tmp_path / "c.log", reconnect=False) as console:
        board.say(b"booting\r\n")
        console.expect("booting", timeout=5)
        board.hang_up()
        with pytest.raises(WaitTimeout, match="the console closed"):
            console.expect("never", timeout=30)


def test_unreachable_console(tmp_path: Path) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(InfrastructureError, match="cannot open console"):
        Console(f"socket://127.0.0.1:{port}", tmp_path / "c.log")


def test_what_the_board_printed_before_the_port_opened_is_kept(
    board: FakeBoard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyserial flushes input when it opens a port; an emulated console replays boot output to a
    client that connects late, so the flush would lose the banner. Make the replay land before the
    flush, deterministically, by holding the connect until the board has spoken."""
    import serial.urlhandler.protocol_socket as proto

    real_connect = proto.socket.create_connection

    def connect_then_wait_for_banner(*args: object, **kwargs: object) -> socket.socket:
        sock = real_connect(*args, **kwargs)  # type: ignore[arg-type]
        board.say(b"HIL-REF 1.0.0 build early\r\n")
        sock.setblocking(True)
        sock.settimeout(5)
        assert sock.recv(1, socket.MSG_PEEK) == b"H"  # the banner is in the socket buffer
        return sock

    monkeypatch.setattr(proto.socket, "create_connection", connect_then_wait_for_banner)
    with Console(board.url, tmp_path / "c.log") as console:
        assert console.expect(r"^HIL-REF .* build (\S+)$", timeout=5).group(1) == "early"


class ReturningBoard:
    """A board whose socket console drops and comes back: each accept serves one script."""

    def __init__(self, scripts: list[list[bytes]]) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.server.getsockname()[1]}"
        self.received = bytearray()
        self.served = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(scripts,), daemon=True)
        self._thread.start()

    def _run(self, scripts: list[list[bytes]]) -> None:
        for i, script in enumerate(scripts):
            conn, _ = self.server.accept()
            with conn:
                for line in script:
                    conn.sendall(line)
                if i == len(scripts) - 1:
                    conn.settimeout(5)
                    try:
                        while b"\n" not in self.received and (data := conn.recv(100)):
                            self.received += data
                    except OSError:
                        pass
                    self.served.set()
                    conn.recv(1)  # hold the line open until the console closes
        self.server.close()


def test_a_dropped_socket_console_reconnects_and_loses_nothing_printed_after(tmp_path: Path) -> None:
    board = ReturningBoard([[b"boot 1\r\n"], [b"boot 2\r\n", b"after return\r\n"]])
    with Console(board.url, tmp_path / "c.log") as console:
        console.expect("^boot 1$", timeout=5)
        console.expect("^boot 2$", timeout=10)  # a wait goes on through the gap
        console.expect("^after return$", timeout=5)
        assert len(console.outages) == 1 and console.outages[0].back is not None
        console.send_line("hello board")
        assert board.served.wait(5)
    assert bytes(board.received) == b"hello board\r\n"
    assert (tmp_path / "c.log").read_text() == "boot 1\nboot 2\nafter return\n"


def test_a_by_id_link_is_followed_to_the_device_that_returns(tmp_path: Path) -> None:
    """A USB adapter re-enumerates under a new tty name; its /dev/serial/by-id link follows it."""
    import os
    import pty
    import tty

    link = tmp_path / "usb-Board_Serial-if01"
    master1, slave1 = pty.openpty()
    os.symlink(os.ttyname(slave1), link)
    master2, slave2 = pty.openpty()
    tty.setraw(slave2)  # a serial adapter echoes nothing back
    try:
        with Console(str(link), tmp_path / "c.log") as console:
            os.close(slave1)
            os.write(master1, b"first adapter\r\n")
            console.expect("^first adapter$", timeout=5)
            link.unlink()
            os.symlink(os.ttyname(slave2), link)
            os.close(master1)  # the old adapter is gone: reading it fails, the console reopens the link
            os.write(master2, b"second adapter\r\n")
            console.expect("^second adapter$", timeout=10)
            assert len(console.outages) == 1
            console.send_line("typed")
            got = b""
            while b"\n" not in got:
                got += os.read(master2, 100)
            assert got.replace(b"\r", b"") == b"typed\n"
    finally:
        os.close(master2)
        os.close(slave2)
